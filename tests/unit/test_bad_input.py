"""Issue 13, "bad input never trains silently": every broken input gets an exclusion reason or an
error message, in DATA_DIR and in the external set alike. Tiny fixtures, no real data."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import config, curate, inputs, refine
from helpers.data import checks, decode
from helpers.data import sources as S
from helpers.run import store

sys.path.insert(0, str(Path(__file__).parent))
import source_fixtures as fx  # noqa: E402

SIZE = (80, 96)  # W, H of the fixture radiographs
BOTH = (0.1, 0.2, 0.9, 0.8)  # a lung box covering 48 % of the image
HEADER = ["path", "split_role", "label", "source", "source_repo", "source_path", "source_commit",
          "patient_id", "view", "sex", "age", "license", "mask_path"]


# ----------------------------------------------------------------------------------------------
# fixture builders


def write_dicom(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12,
                slope: float | None = None, intercept: float | None = None,
                window: tuple[float, float] | None = None, view: str = "", frames: int = 1,
                pixels: bool = True, syntax=None) -> Path:
    """A minimal DX DICOM file (uncompressed unless ``syntax`` names a compressed one)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if view:
        ds.ViewPosition = view
    h, w = arr.shape[-2:]
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixels:
        data = np.ascontiguousarray(arr, dtype=np.uint16).tobytes()
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not a real JPEG-LS stream"]) if syntax else data
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def gradient(h: int = 96, w: int = 80) -> np.ndarray:
    """uint16 (h, w): 0 .. 4095 from left to right."""
    return np.tile(np.linspace(0, 4095, w).round().astype(np.uint16), (h, 1))


def mask_array(size=SIZE, box=BOTH, values=(0, 255)) -> np.ndarray:
    w, h = size
    m = np.full((h, w), values[0], np.uint8)
    x0, y0, x1, y1 = box
    m[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = values[1]
    return m


def _row(path, role="classify", label="covid", pid=None, view="PA", mask="", source="s"):
    return [path, role, label if role == "classify" else "", source, "", path, "",
            pid or f"p-{Path(path).stem}", view, "", "", "", mask]


def build_folder(root: Path, bad: bool = True) -> Path:
    """A manifest folder: 6 good classify rows, 6 good image/mask pairs, and (``bad``) one row per
    broken input, named after what is wrong with it."""
    rows = []
    for k in range(6):
        p = f"cls/good{k}.png"
        fx.write_image(root / p, "gray", seed=10 + k, size=SIZE)
        rows.append(_row(p, label="covid" if k % 2 else "normal"))
    for k in range(6):
        p, m = f"seg/good{k}.png", f"seg/good{k}_mask.png"
        fx.write_image(root / p, "gray", seed=30 + k, size=SIZE)
        Image.fromarray(mask_array()).save(root / m)
        rows.append(_row(p, "segment", mask=m))
    if not bad:
        pd.DataFrame(rows, columns=HEADER).to_csv(root / "manifest.csv", index=False)
        return root

    def img(name, kind="gray", size=SIZE, seed=50):
        fx.write_image(root / name, kind, seed=seed, size=size)
        return name

    def seg(name, mask):  # an image/mask pair whose mask is ``mask`` (array) or a writer
        p, m = img(f"seg/{name}.png"), f"seg/{name}_mask.png"
        if callable(mask):
            mask(root / m)
        elif mask is not None:
            Image.fromarray(mask).save(root / m)
        rows.append(_row(p, "segment", mask=m))

    # views
    rows.append(_row(img("cls/lateral_L.png"), view="L"))
    rows.append(_row(img("cls/lateral_word.png"), view="Lateral"))
    rows.append(_row(img("cls/lateral_LL.png"), view="LL"))
    # images that cannot be radiographs
    rows.append(_row(img("cls/tiny.png", size=(10, 10))))
    Image.fromarray(np.zeros((96, 80), np.uint8)).save(root / "cls/black.png")
    rows.append(_row("cls/black.png"))
    Image.fromarray(np.full((96, 80), 255, np.uint8)).save(root / "cls/white.png")
    rows.append(_row("cls/white.png"))
    # missing and broken files
    rows.append(_row("cls/missing.png"))
    full = fx.write_image(root / "cls/full.png", "gray", seed=60, size=SIZE).read_bytes()
    (root / "cls/full.png").unlink()
    (root / "cls/truncated.png").write_bytes(full[:300])
    rows.append(_row("cls/truncated.png"))
    (root / "cls/text.png").write_text("this is not an image")
    rows.append(_row("cls/text.png"))
    # masks
    seg("mask_other_aspect", mask_array(size=(96, 80)))              # rotated: misaligned
    seg("mask_half_size", mask_array(size=(40, 48)))                 # same aspect: resized
    seg("mask_01", mask_array(values=(0, 1)))                        # 0/1 export
    seg("mask_bool", lambda p: Image.fromarray(mask_array() > 0).save(p))  # mode "1"
    seg("mask_empty", np.zeros((96, 80), np.uint8))
    seg("mask_near_empty", mask_array(box=(0.5, 0.5, 0.55, 0.55)))  # 0.25 % of the image
    seg("mask_full", np.full((96, 80), 255, np.uint8))
    seg("mask_small_lungs", mask_array(box=(0.3, 0.3, 0.6, 0.5)))    # 6 % : kept, reported
    seg("mask_grey", fx.cxr_like(3, SIZE))                           # a radiograph given as mask
    seg("mask_text", lambda p: p.write_text("not a mask"))
    seg("mask_missing", None)
    pd.DataFrame(rows, columns=HEADER).to_csv(root / "manifest.csv", index=False)
    return root


EXPECTED = {  # file -> start of its exclusion reason
    "cls/lateral_L.png": "not frontal: view L",
    "cls/lateral_word.png": "not frontal: view Lateral",
    "cls/lateral_LL.png": "not frontal: view LL",
    "cls/tiny.png": "too small for a radiograph: 10x10 px",
    "cls/black.png": "near-constant image (black)",
    "cls/white.png": "near-constant image (white)",
    "cls/missing.png": "missing file",
    "cls/truncated.png": "unreadable image",
    "cls/text.png": "unreadable image",
    "seg/mask_other_aspect.png": "mask size 96x80 does not match image size 80x96",
    "seg/mask_empty.png": "empty lung mask",
    "seg/mask_near_empty.png": "near-empty lung mask",
    "seg/mask_full.png": "lung mask covers 100.0 %",
    "seg/mask_grey.png": "mask is not binary",
    "seg/mask_text.png": "unreadable mask",
    "seg/mask_missing.png": "mask file not found",
}
KEPT_WITH_NOTE = {
    "seg/mask_half_size.png": "mask resized 40x48 -> 80x96 (nearest)",
    "seg/mask_01.png": "mask stored as {0, 1}: normalised",
    "seg/mask_small_lungs.png": "lung fraction 0.06 outside the plausible range",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_folder(tmp_path_factory.mktemp("bad"))


def _cfg(data: Path, out: Path, external_dir: Path | None = None, **over):
    over = {"seg_folds": 2, "n_folds": 2, "seg_size": 32, "cls_size": 32, **over}
    return config.resolve("cpu", data, out, 0, external_dir or "", over)


def _reasons(excluded: pd.DataFrame) -> dict[str, str]:
    return dict(zip(excluded["source_path"], excluded["reason"]))


# ----------------------------------------------------------------------------------------------
# DATA_DIR: every broken input is an exclusion with its reason


def test_every_broken_input_is_excluded_with_its_reason(folder, tmp_path, capsys):
    root, man, flow, excluded, notes = curate.load_cohort(_cfg(folder, tmp_path))
    got = _reasons(excluded)
    assert set(got) == set(EXPECTED)
    for f, want in EXPECTED.items():
        assert got[f].startswith(want), (f, got[f])
    kept = set(Path(p).relative_to(folder).as_posix() for p in man["path"])
    assert kept.isdisjoint(EXPECTED) and set(KEPT_WITH_NOTE) <= kept and "seg/mask_bool.png" in kept
    assert len(man) == 12 + len(KEPT_WITH_NOTE) + 1
    n = dict(zip(notes["source_path"], notes["note"]))
    for f, want in KEPT_WITH_NOTE.items():
        assert want in n[f], (f, n[f])
    line = capsys.readouterr().out
    assert "16 excluded" in line and "missing file (1)" in line and "not frontal (3)" in line
    assert "near-constant image (2)" in line
    steps = flow.set_index("step")
    assert steps.loc["frontal view", "n_removed"] == 3 and steps.loc["lung mask check", "n_removed"] == 7


def test_bad_masks_never_reach_training(folder, tmp_path):
    cfg = _cfg(folder, tmp_path)
    root, man, *_ = curate.load_cohort(cfg)
    cls, seg = curate.build_indices(man, cfg.profile, 0, root)
    curate.decode_arrays(cls, seg, root, cfg.profile, tmp_path)
    masks = np.load(tmp_path / "seg_masks.npy")
    images = np.load(tmp_path / "seg_images.npy")
    frac = masks.reshape(len(masks), -1).mean(1)
    assert set(np.unique(masks)) <= {0, 1}
    assert frac.min() > checks.MASK_MIN_FRACTION and frac.max() < checks.MASK_MAX_FRACTION
    ids = list(seg["path"].map(lambda p: Path(p).stem))
    good = masks[ids.index("good0")]
    assert (masks[ids.index("mask_01")] == good).all()     # 0/1 normalised, not binarised to zero
    assert (masks[ids.index("mask_bool")] == good).all()
    half = masks[ids.index("mask_half_size")]  # resized to its image first: same place, edges +-1 px
    assert np.mean(half != good) < 0.05 and half.sum() > 0.9 * good.sum()
    assert images.shape == masks.shape


def test_load_stack_refuses_a_misaligned_mask(folder):
    with pytest.raises(decode.ImageError, match="does not match image size"):
        decode.load_stack([folder / "seg/mask_other_aspect_mask.png"], 32, mask=True,
                      images=[folder / "seg/mask_other_aspect.png"])
    with pytest.raises(decode.ImageError, match="not binary"):
        decode.load_stack([folder / "seg/mask_grey_mask.png"], 32, mask=True)


def test_strict_fails_at_the_first_bad_file(folder, tmp_path):
    with pytest.raises(curate.CurationError, match=r"strict is set and \d+ row\(s\) failed"):
        curate.load_cohort(_cfg(folder, tmp_path, strict=True))
    good = build_folder(tmp_path / "good", bad=False)
    _, man, *_ = curate.load_cohort(_cfg(good, tmp_path / "o", strict=True))
    assert len(man) == 12


def test_empty_manifest_and_nothing_usable(tmp_path):
    (tmp_path / "empty").mkdir()
    pd.DataFrame(columns=HEADER).to_csv(tmp_path / "empty/manifest.csv", index=False)
    with pytest.raises(curate.CurationError, match="no rows to curate"):
        curate.load_cohort(_cfg(tmp_path / "empty", tmp_path / "o1"))
    (tmp_path / "gone").mkdir()
    pd.DataFrame([_row("a.png"), _row("b.png", label="normal")], columns=HEADER).to_csv(
        tmp_path / "gone/manifest.csv", index=False)
    with pytest.raises(curate.CurationError, match=r"nothing usable is left.*missing file \(2\)"):
        curate.load_cohort(_cfg(tmp_path / "gone", tmp_path / "o2"))


def test_no_classification_rows_is_a_clear_error(folder, tmp_path):
    cfg = _cfg(folder, tmp_path)
    _, man, *_ = curate.load_cohort(cfg)
    with pytest.raises(curate.CurationError, match="no classification"):
        curate.build_indices(man[man["split_role"] == "segment"], cfg.profile, 0)


# ----------------------------------------------------------------------------------------------
# the external set gets the same checks


def test_external_set_is_curated_like_data_dir(folder, tmp_path):
    internal = build_folder(tmp_path / "internal", bad=False)
    man = pd.read_csv(internal / "manifest.csv", dtype=str, keep_default_na=False)
    man["patient_id"] = "int-" + man["patient_id"]
    man.to_csv(internal / "manifest.csv", index=False)
    cfg = _cfg(internal, tmp_path / "o", external_dir=folder)
    root, ext, flow, ex, notes = curate.load_external(cfg)
    got = _reasons(ex)
    assert set(got) == set(EXPECTED)
    assert got["cls/truncated.png"].startswith("unreadable image")  # checked now, not late
    assert len(flow) and list(notes.columns) == list(curate.NOTE_COLUMNS)
    out = tmp_path / "dec"
    out.mkdir()
    ext_cls, ext_seg = curate.external_indices(ext, root)
    curate.decode_arrays(ext_cls, ext_seg, root, cfg.profile, out, prefix="ext_")
    masks = np.load(out / "ext_seg_masks.npy")
    assert len(ext_seg) == len(masks) and masks.reshape(len(masks), -1).mean(1).min() > 0.01


def test_external_refine_counts_and_failed_images(tmp_path):
    ri = pd.DataFrame({"image_id": list("abcdef"), "patient_id": list("abcdef"),
                       "source": ["x", "x", "x", "y", "y", "y"],
                       "label": ["covid", "covid", "normal", "covid", "normal", "normal"],
                       "area": [10, 900, 900, 5, 900, 900], "passed": [False, True, True, False, True, True]})
    t = refine.refine_counts(ri).set_index(["source", "label"])
    assert t.loc[("x", "covid"), ["total", "passed", "failed"]].tolist() == [2, 1, 1]
    assert t.loc[("all", "covid"), "failed"] == 2 and t.loc[("all", "all"), "failed_%"] == pytest.approx(33.3)
    assert t.loc[("y", "all"), "failed"] == 1
    cfg = _cfg(build_folder(tmp_path / "d", bad=False), tmp_path / "o")
    (cfg.out_dir / "curation").mkdir(parents=True)
    (cfg.out_dir / "refine").mkdir(parents=True)
    store.save_csv(ri.assign(y=(ri["label"] == "covid").astype(int)),
                   cfg.out_dir / "curation/ext_cls_index.csv")
    store.save_csv(ri.astype({"passed": str}), cfg.out_dir / "refine/ext_refine_index.csv")
    store.save_npy(np.arange(6, dtype=np.uint8)[:, None, None] * np.ones((6, 4, 4), np.uint8),
                cfg.out_dir / "curation/ext_cls_images.npy")
    failed = inputs.external_set(cfg, segmented=False, include="failed")["external_failed"]
    assert failed["index"]["image_id"].tolist() == ["a", "d"] and failed["y"].tolist() == [1, 1]
    assert failed["images"][:, 0, 0].tolist() == [0, 3]
    assert len(inputs.external_set(cfg, segmented=False)["external"]["y"]) == 4
    with pytest.raises(ValueError, match="include"):
        inputs.external_set(cfg, segmented=False, include="some")


# ----------------------------------------------------------------------------------------------
# DICOM


def test_dicom_reader_luts_inversion_and_window(tmp_path):
    g = gradient()
    a = decode.read_image(write_dicom(tmp_path / "m2.dcm", g))
    assert a.dtype == np.uint8 and a.shape == (96, 80) and a[0, 0] == 0 and a[0, -1] == 255
    info = {}
    inv = decode.read_image(write_dicom(tmp_path / "m1.dcm", g, "MONOCHROME1"), info=info)
    assert inv[0, 0] == 255 and inv[0, -1] == 0 and "MONOCHROME1 inverted" in info["notes"]
    # rescale first (raw - 1024), then the window [-512, 512] in rescaled units = raw 512..1536
    win = decode.read_image(write_dicom(tmp_path / "w.dcm", g, slope=1.0, intercept=-1024,
                                    window=(0, 1024)), info=info)
    raw = g[0]
    assert (win[0, raw < 500] == 0).all() and (win[0, raw > 1540] == 255).all()
    assert 0 < win[0, np.argmin(abs(raw.astype(int) - 1024))] < 255
    assert "modality LUT / rescale applied" in info["notes"] and "VOI LUT / window applied" in info["notes"]
    assert decode.image_size(tmp_path / "w.dcm") == (96, 80)
    # the same file without the .dcm name is recognised by its preamble
    (tmp_path / "noext").write_bytes((tmp_path / "m2.dcm").read_bytes())
    assert (decode.read_image(tmp_path / "noext") == a).all()


def test_unsupported_dicom_objects_say_what_was_found(tmp_path):
    from pydicom.uid import JPEGLSLossless

    g = gradient()
    cases = {
        write_dicom(tmp_path / "nopix.dcm", g, pixels=False): "DICOM object without pixel data",
        write_dicom(tmp_path / "multi.dcm", np.stack([g, g]), frames=2): "multi-frame DICOM (2 frames)",
        write_dicom(tmp_path / "jls.dcm", g, syntax=JPEGLSLossless):
            "DICOM compressed as JPEG-LS Lossless Image Compression",
    }
    for path, want in cases.items():
        with pytest.raises(decode.ImageError, match=want.replace("(", r"\(").replace(")", r"\)")):
            decode.read_image(path)
        assert want in checks.check_radiograph(path).reason
    (tmp_path / "fake.dcm").write_bytes(b"not dicom at all")
    assert checks.check_radiograph(tmp_path / "fake.dcm").reason.startswith("unreadable DICOM")


def test_dicom_in_manifests_and_source_layouts(tmp_path):
    root = build_folder(tmp_path / "man", bad=False)
    write_dicom(root / "cls/d_ok.dcm", gradient())
    write_dicom(root / "cls/d_lateral.dcm", gradient(), view="LL")
    write_dicom(root / "cls/d_multi.dcm", np.stack([gradient()] * 2), frames=2)
    man = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    extra = pd.DataFrame([_row("cls/d_ok.dcm", view=""), _row("cls/d_lateral.dcm", view=""),
                          _row("cls/d_multi.dcm")], columns=HEADER)
    pd.concat([man, extra]).to_csv(root / "manifest.csv", index=False)
    res = S.adapt_manifest(root)
    got = _reasons(res.excluded)
    assert got == {"cls/d_lateral.dcm": "not frontal: view LL (DICOM ViewPosition)",
                   "cls/d_multi.dcm": got["cls/d_multi.dcm"]}
    assert got["cls/d_multi.dcm"].startswith("multi-frame DICOM")
    note = dict(zip(res.notes["source_path"], res.notes["note"]))["cls/d_ok.dcm"]
    assert "DICOM MONOCHROME2, 12-bit" in note and "mapped min..max to 8-bit" in note
    # a source in its original layout lists .dcm files too (Shenzhen: CXR_png/ + mask/)
    shz = fx.build_shenzhen(tmp_path / "shz")
    write_dicom(shz / "CXR_png" / "CHNCXR_0009_0.dcm", gradient())
    Image.fromarray(mask_array()).save(shz / "mask" / "CHNCXR_0009_0_mask.png")
    res = S.adapt_shenzhen(shz, tmp_path / "derived")
    assert "shenzhen-CHNCXR_0009_0" in set(res.manifest["patient_id"])


# ----------------------------------------------------------------------------------------------
# checks, notes, file modes


def test_check_thresholds():
    ok = fx.cxr_like(0, (64, 64))
    assert checks.image_reason(ok) is None
    assert checks.image_reason(ok[:63]).startswith("too small")
    flat = np.full((100, 100), 128, np.uint8)
    flat[:, :50] += checks.MIN_RANGE - 1
    assert "near-constant image (gray)" in checks.image_reason(flat)
    flat[:, :50] += 1
    assert checks.image_reason(flat) is None
    for view, cls in {"PA": "frontal", "AP Supine": "frontal", "": "", "L": "lateral",
                      "Lateral": "lateral", "LL": "lateral", "Axial": "other"}.items():
        assert checks.view_class(view) == cls
    m = np.zeros((100, 100), np.uint8)
    assert checks.mask_reason(m)[0] == "empty lung mask (all zero)"
    m[:1, :99] = 1
    assert checks.mask_reason(m)[0].startswith("near-empty")
    m[:5] = 1
    assert checks.mask_reason(m) == (None, "lung fraction 0.05 outside the plausible range 0.1-0.6 (kept; "
                                     "check the mask)")
    m[:30] = 1
    assert checks.mask_reason(m) == (None, None)
    m[:] = 1
    assert "blank or inverted" in checks.mask_reason(m)[0]
    assert decode.mask_values(np.array([[0, 1]]))[1] == "mask stored as {0, 1}: normalised"
    with pytest.raises(decode.ImageError, match=r"values \[0, 38\] not recognised"):
        decode.mask_values(np.array([[0, 38]], np.uint8))
    aa = mask_array().astype(np.uint8)
    aa[0, :10] = 128  # a few anti-aliased edge pixels
    m2, note = decode.mask_values(aa)
    assert "anti-aliased" in note and set(np.unique(m2)) == {0, 1}


def test_colour_conversion_notes_are_written_per_file(tmp_path):
    root = build_folder(tmp_path / "d", bad=False)
    fx.write_image(root / "cls/rgb.png", "rgb_gray", seed=5, size=SIZE)
    man = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    pd.concat([man, pd.DataFrame([_row("cls/rgb.png")], columns=HEADER)]).to_csv(root / "manifest.csv",
                                                                                index=False)
    *_, notes = curate.load_cohort(_cfg(root, tmp_path / "o"))
    row = notes[notes["source_path"] == "cls/rgb.png"]
    assert len(row) == 1 and "converted to 8-bit grayscale" in row["note"].iloc[0]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_artefacts_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        store.save_csv(pd.DataFrame({"a": [1]}), tmp_path / "x.csv")
        store.save_npy(np.zeros(2), tmp_path / "x.npy")
    finally:
        os.umask(old)
    for f in ("x.csv", "x.npy"):
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o666 & ~umask

