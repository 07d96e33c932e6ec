"""Generated phantoms: determinism, exact masks, where findings and nuisances lie, the shortcut,
the manifest, overwrite protection and speed."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from helpers.data import phantoms as P
from helpers.data.decode import read_image
from helpers.data.manifest import read_manifest


def _render(seed, size=96, covid=False, site="b", severity=0.0):
    return P.render(np.random.default_rng(seed), size, covid, site, severity)


def _digest(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return P.generate(tmp_path_factory.mktemp("ph") / "set", n_patients=8, images_per_patient=(1, 3),
                      n_seg_pairs=6, size=96, shortcut_strength=0.9, seed=3)


# --- render ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [96, 128, 256])
def test_render_types_and_determinism(size):
    img, mask = _render(1, size, covid=True, site="a", severity=0.7)
    assert img.shape == mask.shape == (size, size)
    assert img.dtype == mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    img2, mask2 = _render(1, size, covid=True, site="a", severity=0.7)
    assert np.array_equal(img, img2) and np.array_equal(mask, mask2)
    img3, _ = _render(2, size, covid=True, site="a", severity=0.7)
    assert not np.array_equal(img, img3)


def test_render_rejects_unknown_site():
    with pytest.raises(ValueError, match="site"):
        _render(0, site="c")


def test_masks_plausible():
    two, fracs = 0, []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        anat = P.sample_anatomy(rng)
        lungs0, heart0 = P.canonical_masks(anat, 96)
        two += ndimage.label(lungs0)[1] == 2
        assert not (lungs0 & heart0).any()              # heart overlap excluded from the lungs
        img, mask = P.render(rng, 96, False, "b", anatomy=anat)
        fracs.append(mask.mean())
        # lungs darker than the body around them (mediastinum, heart, chest wall, below domes)
        ys, xs = np.nonzero(mask)
        box = np.zeros_like(mask, bool)
        box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        assert img[mask == 1].mean() + 40 < img[box & (mask == 0)].mean()
    assert two >= 36
    assert 0.15 <= min(fracs) and max(fracs) <= 0.45


def test_findings_only_inside_lungs_and_grow_with_severity():
    means = {}
    for sev in (0.15, 0.5, 1.0):
        for seed in range(6):
            normal, m0 = _render(seed)
            covid, m1 = _render(seed, covid=True, severity=sev)
            assert np.array_equal(m0, m1)
            diff = covid.astype(int) - normal.astype(int)
            assert not diff[m0 == 0].any(), "findings leaked outside the lung mask"
            assert (diff[m0 == 1] > 0).any()
            means.setdefault(sev, []).append(diff[m0 == 1].mean())
            if sev == 1.0:                       # bilateral and lower-zone
                ys, xs = np.nonzero(np.abs(diff) > 3)
                cx = np.nonzero(m0)[1].mean()
                assert (xs < cx).any() and (xs > cx).any()
                rows = np.nonzero(m0.any(1))[0]
                assert np.median(ys) > rows.min() + 0.45 * (rows.max() - rows.min())
    m = {k: float(np.mean(v)) for k, v in means.items()}
    assert 0 < m[0.15] < m[0.5] < m[1.0]
    assert m[1.0] < 60                           # visible but not a white-out


def test_site_nuisance_outside_lungs():
    for seed in range(8):
        a, ma = _render(seed, site="a")
        b, mb = _render(seed, site="b")
        assert np.array_equal(ma, mb)
        diff = a.astype(int) - b.astype(int)
        assert not diff[ma == 1].any(), "site nuisance inside the lungs"
        assert diff[2:10, 70:90].mean() > 60     # burned-in label, top right
        assert diff[:2].mean() > 20              # brighter frame


# --- generate -------------------------------------------------------------------------------------
def test_manifest(small):
    df = read_manifest(small)
    cls = df[df.split_role == "classify"]
    seg = df[df.split_role == "segment"]
    assert set(cls.label) == {"covid", "normal"} and len(seg) == 6
    assert set(cls.source) <= {"phantom-a", "phantom-b"} and set(seg.source) == {"phantom-seg"}
    per = cls.groupby("patient_id").agg(n=("path", "size"), labels=("label", "nunique"),
                                        sites=("source", "nunique"))
    assert len(per) == 16 and (per.n > 1).sum() >= 4
    assert (per.labels == 1).all() and (per.sites == 1).all()
    assert set(cls.view) <= set(P.VIEWS) and set(df.sex) <= {"M", "F"}
    assert df.age.astype(int).between(18, 90).all()
    assert (df.license == "CC0 (generated)").all() and (df.source_repo == "hrnet-cxr (generated)").all()
    sev = cls.severity.astype(float)
    assert (sev[cls.label == "normal"] == 0).all() and (sev[cls.label == "covid"] > 0).all()
    assert (df.mask_path != "").all() and (seg.label == "").all()
    img = read_image(small / cls.path.iloc[0])
    mask = read_image(small / cls.mask_path.iloc[0])
    assert img.shape == mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 255}


def test_generate_deterministic(small, tmp_path):
    again = P.generate(tmp_path / "again", n_patients=8, n_seg_pairs=6, size=96, seed=3)
    assert _digest(again) == _digest(small)
    other = P.generate(tmp_path / "other", n_patients=8, n_seg_pairs=6, size=96, seed=4)
    assert _digest(other) != _digest(small)


def test_shortcut_strength():
    def sites(s, n):
        plan = P._plan(n, (1, 1), 0, s, seed=0)
        return {lab: np.mean([r["_site"] == "a" for r in plan if r["label"] == lab])
                for lab in ("covid", "normal")}
    full = sites(1.0, 200)
    assert full == {"covid": 1.0, "normal": 0.0}
    none = sites(0.0, 400)
    assert all(0.42 < v < 0.58 for v in none.values())
    mid = sites(0.6, 400)
    assert abs(mid["covid"] - 0.8) < 0.06 and abs(mid["normal"] - 0.2) < 0.06
    # severity: about a fifth of the positives are faint
    plan = P._plan(300, (1, 1), 0, 0.0, seed=1)
    faint = np.mean([r["severity"] < 0.3 for r in plan if r["label"] == "covid"])
    assert 0.1 < faint < 0.35


def test_overwrite_protection(small, tmp_path):
    # same parameters again: nothing is rewritten
    before = {f: f.stat().st_mtime_ns for f in small.rglob("*") if f.is_file()}
    time.sleep(0.01)
    P.generate(small, n_patients=8, n_seg_pairs=6, size=96, seed=3)
    assert {f: f.stat().st_mtime_ns for f in small.rglob("*") if f.is_file()} == before
    # other parameters: refused, unless overwrite (then stale phantom files go)
    with pytest.raises(FileExistsError, match=str(small)):
        P.generate(small, n_patients=4, n_seg_pairs=6, size=96, seed=3)
    # a folder of unrelated files: refused; with overwrite the unrelated file survives
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(foreign)):
        P.generate(foreign, n_patients=2, n_seg_pairs=3, size=64)
    P.generate(foreign, n_patients=2, n_seg_pairs=3, size=64, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert len(read_manifest(foreign)) >= 7
    # an unrelated file where a phantom would go (a real data folder) is never replaced
    real = tmp_path / "real"
    real.mkdir()
    (real / "manifest.csv").write_text("somebody else's")
    with pytest.raises(FileExistsError, match="manifest.csv"):
        P.generate(real, n_patients=2, n_seg_pairs=3, size=64, overwrite=True)
    assert (real / "manifest.csv").read_text() == "somebody else's"


def test_overwrite_replaces_own_files(tmp_path):
    d = P.generate(tmp_path / "d", n_patients=6, images_per_patient=(2, 2), n_seg_pairs=3, size=64)
    P.generate(d, n_patients=3, images_per_patient=(2, 2), n_seg_pairs=3, size=64, overwrite=True)
    df = read_manifest(d)
    assert df.patient_id.nunique() == 6 + 3          # 3 per class + 3 seg pairs
    pngs = {str(f.relative_to(d)) for f in d.rglob("*.png")}
    assert pngs == set(df.path) | set(df.mask_path)   # no stale phantom left behind


def test_generation_time(tmp_path):
    t = time.perf_counter()
    P.generate(tmp_path / "t", n_patients=24, images_per_patient=(1, 3), n_seg_pairs=60, size=96)
    assert time.perf_counter() - t < 5.0


def test_pneumonia_findings_are_unilateral_and_inside_the_lungs():
    """A pneumonia phantom differs from the same clear film only inside the lungs, and only in one."""
    a = P.sample_anatomy(np.random.default_rng(5))
    clear, mask = P.render(np.random.default_rng(9), 128, False, "b", 0.0, a)
    sick, mask2 = P.render(np.random.default_rng(9), 128, False, "b", 0.8, a, finding="pneumonia")
    assert np.array_equal(mask, mask2)
    diff = sick.astype(int) - clear.astype(int)
    assert np.abs(diff[mask == 0]).max() == 0          # nothing outside the lungs
    assert diff[mask > 0].mean() > 1                   # brighter inside them
    half = mask.shape[1] // 2
    left, right = (np.abs(diff[:, :half]) > 3).sum(), (np.abs(diff[:, half:]) > 3).sum()
    assert min(left, right) < 0.1 * max(left, right)   # one lung
    with pytest.raises(ValueError, match="finding"):
        P.render(np.random.default_rng(9), 64, False, "b", finding="tuberculosis")


def test_pneumonia_folder_and_the_switchable_aspect_cue(tmp_path):
    """``classes`` writes a pneumonia-only folder from the COVID films' site; ``aspect_cue``
    writes that share of the COVID films taller than wide and leaves every other film, and every
    other draw, as it was."""
    pn = read_manifest(P.generate(tmp_path / "pn", 12, n_seg_pairs=0, size=64, classes=("pneumonia",),
                                  shortcut_strength=0.9))
    assert set(pn["label"]) == {"pneumonia"} and pn["patient_id"].str.startswith("phantom-pn-").all()
    assert (pn["source"] == "phantom-a").mean() > 0.7      # the COVID films' site
    off = tmp_path / "off"
    on = tmp_path / "on"
    P.generate(off, 20, n_seg_pairs=3, size=64)
    P.generate(on, 20, n_seg_pairs=3, size=64, aspect_cue=0.6)
    m_off, m_on = read_manifest(off), read_manifest(on)
    assert m_off.drop(columns=[]).equals(m_on)              # same films, same rows
    shapes = {r.path: read_image(on / r.path).shape for r in m_on.itertuples()}
    tall = {p for p, s in shapes.items() if s[0] > s[1]}
    covid = set(m_on.loc[m_on["label"] == "covid", "path"])
    assert tall <= covid and 0.4 < len(tall) / len(covid) < 0.8
    for p in tall:
        assert shapes[p] == (80, 64)                        # 5:4
        square = read_image(off / p)
        assert np.array_equal(read_image(on / p)[:64], square)  # the same film, continued below
    for p in set(shapes) - tall:
        assert np.array_equal(read_image(on / p), read_image(off / p))
    params = __import__("json").loads((off / "phantoms.json").read_text())["params"]
    assert "aspect_cue" not in params and "classes" not in params  # default folders keep their key
    with pytest.raises(ValueError, match="aspect_cue"):
        P.generate(tmp_path / "bad", 5, aspect_cue=1.5)
    with pytest.raises(ValueError, match="classes"):
        P.generate(tmp_path / "bad", 5, classes=("covid", "flu"))
