"""Shortcut audits: input builders, low-level features, the cross-validated logistic audit and its
permutation null, the audit tables, and the low-level audit on phantoms with a planted site marker."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from helpers import refine
from helpers.curate import image_ids
from helpers.data import decode, phantoms, splits
from helpers.data.manifest import read_manifest
from helpers.evidence import audits as A
from helpers.evidence import linear, metrics


# --- synthetic cohorts ----------------------------------------------------------------------------
def _cohort(n_patients: int = 120, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """An index like curation's: 1-3 images per patient, label per patient, grouped folds."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        y = int(i % 2)
        src = "ieee8023" if y and rng.random() < 0.9 else str(rng.choice(["nih", "chexpert"]))
        for j in range(int(rng.integers(1, 4))):
            rows.append(dict(image_id=f"img/p{i:04d}_{j}", patient_id=f"p{i:04d}", y=y,
                             label="covid" if y else "normal", source=src,
                             view=str(rng.choice(["PA", "AP"]))))
    df = pd.DataFrame(rows)
    df["fold"] = splits.patient_folds(df["patient_id"], df["label"], n_folds, seed)
    return df


def _features(index: pd.DataFrame, signal: float, n_feat: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(len(index), n_feat))
    X[:, 0] += signal * index["y"].to_numpy()
    return X


def _auc(preds: pd.DataFrame) -> float:
    return metrics.auc_ci(preds["y"], preds["prob"], n_boot=0)["auc"]


# --- 1. builders ----------------------------------------------------------------------------------
def test_blackout_lungs_zeroes_exactly_the_mask():
    rng = np.random.default_rng(0)
    imgs = rng.integers(1, 256, (5, 32, 32), dtype=np.uint8)
    masks = (rng.random((5, 32, 32)) < 0.4).astype(np.uint8)
    out = A.blackout_lungs(imgs, masks)
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    assert (out[masks == 1] == 0).all()
    np.testing.assert_array_equal(out[masks == 0], imgs[masks == 0])
    np.testing.assert_array_equal(A.blackout_lungs(imgs, masks * 255), out)  # 0/255 masks too
    with pytest.raises(ValueError, match="differ in shape"):
        A.blackout_lungs(imgs, masks[:, :16])


def test_mask_only_is_binary_0_255():
    rng = np.random.default_rng(1)
    masks = (rng.random((4, 24, 24)) < 0.5).astype(np.uint8)
    out = A.mask_only(masks)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 255}
    np.testing.assert_array_equal(out == 255, masks == 1)
    np.testing.assert_array_equal(A.mask_only(masks * 255), out)


def test_source_target_picks_covid_majority_source():
    idx = _cohort()
    y, desc = A.source_target(idx)
    assert desc == "ieee8023 vs rest"
    np.testing.assert_array_equal(y, (idx["source"] == "ieee8023").astype(int))
    y2, desc2 = A.source_target(idx, classes=["nih", "chexpert"])
    np.testing.assert_array_equal(y2, 1 - y)
    assert desc2 == "chexpert + nih vs ieee8023"
    # without y, the label column is used
    y3, _ = A.source_target(idx.drop(columns="y"))
    np.testing.assert_array_equal(y3, y)


def test_source_target_errors():
    idx = _cohort(20)
    with pytest.raises(ValueError, match="at least two sources"):
        A.source_target(idx.assign(source="only-one"))
    with pytest.raises(ValueError, match="unknown source"):
        A.source_target(idx, classes=["nope"])
    with pytest.raises(ValueError, match="one class"):
        A.source_target(idx, classes=sorted(idx["source"].unique()))
    with pytest.raises(KeyError):
        A.source_target(idx.drop(columns="source"))


def test_permuted_labels_patient_level():
    idx = _cohort(200)
    y, g = idx["y"].to_numpy(), idx["patient_id"].to_numpy()
    yp = A.permuted_labels(y, g, seed=3)
    per_patient = pd.Series(yp).groupby(g).nunique()
    assert (per_patient == 1).all()                                    # one label per patient
    before = pd.Series(y).groupby(g).first().value_counts().sort_index()
    after = pd.Series(yp).groupby(g).first().value_counts().sort_index()
    pd.testing.assert_series_equal(before, after)                      # patients per class kept
    assert (pd.Series(y).groupby(g).first() != pd.Series(yp).groupby(g).first()).mean() > 0.2
    np.testing.assert_array_equal(yp, A.permuted_labels(y, g, seed=3))  # deterministic
    assert not np.array_equal(yp, A.permuted_labels(y, g, seed=4))


def test_permuted_labels_within_strata_keeps_fold_balance():
    idx = _cohort(200)
    y, g, f = idx["y"].to_numpy(), idx["patient_id"].to_numpy(), idx["fold"].to_numpy()
    yp = A.permuted_labels(y, g, seed=0, strata=f)
    pat = idx.assign(yp=yp).groupby("patient_id").first()
    pd.testing.assert_series_equal(pat.groupby("fold")["y"].sum(), pat.groupby("fold")["yp"].sum(),
                                   check_names=False)
    with pytest.raises(ValueError, match="constant within"):
        A.permuted_labels(y, g, 0, strata=np.arange(len(y)))


# --- 2. low-level features ------------------------------------------------------------------------
def test_features_match_numpy():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 40, 50), dtype=np.uint8)
    imgs[0] = 77                                                       # constant image
    imgs[1, :, :25], imgs[1, :, 25:] = 0, 255                          # half black, half white
    f = A.lowlevel_features(imgs)
    x = imgs.reshape(7, -1).astype(np.float64)
    np.testing.assert_allclose(f["mean"], x.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(f["std"], x.std(axis=1), rtol=1e-9, atol=1e-9)
    for q in A.PERCENTILES:
        np.testing.assert_allclose(f[f"p{q:02d}"], np.percentile(x, q, axis=1), rtol=1e-12)
    np.testing.assert_allclose(f["skew"][2:], stats.skew(x[2:], axis=1), rtol=1e-8)
    np.testing.assert_allclose(f["kurtosis"][2:], stats.kurtosis(x[2:], axis=1), rtol=1e-8)
    assert f.loc[0, "skew"] == 0 and f.loc[0, "kurtosis"] == 0 and f.loc[0, "entropy"] == 0
    assert f.loc[1, "frac_0"] == 0.5 and f.loc[1, "frac_255"] == 0.5
    assert f.loc[1, "entropy"] == pytest.approx(1.0)
    assert f.loc[1, "asym_lr"] == pytest.approx(-255.0) and f.loc[1, "asym_tb"] == 0
    assert not f.isna().any().any()


def test_border_and_corner_features():
    imgs = np.full((2, 100, 100), 20, np.uint8)
    imgs[1, :5], imgs[1, -5:], imgs[1, :, :5], imgs[1, :, -5:] = 250, 250, 250, 250  # bright frame
    imgs[0, :10, :10] = 200                                                           # bright corner
    f = A.lowlevel_features(imgs)
    assert f.loc[1, "border_mean"] == pytest.approx(250)
    assert f.loc[0, "border_mean"] < 80
    assert f.loc[0, "corner_tl"] == pytest.approx(200)
    assert f.loc[0, ["corner_tr", "corner_bl", "corner_br"]].tolist() == [20, 20, 20]
    assert f.loc[0, "grad_mean"] > 0 and f.loc[1, "grad_mean"] > f.loc[0, "grad_mean"]


def test_mask_and_shape_features():
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)
    masks = (rng.random((4, 32, 32)) < 0.3).astype(np.uint8)
    masks[3] = 0                                                       # no lungs found
    shapes = np.array([[1000, 800], [2000, 2000], [512, 1024], [300, 300]])
    f = A.lowlevel_features(imgs, masks, shapes)
    for i in range(3):
        inside, outside = imgs[i][masks[i] == 1].astype(float), imgs[i][masks[i] == 0].astype(float)
        assert f.loc[i, "in_mean"] == pytest.approx(inside.mean())
        assert f.loc[i, "out_std"] == pytest.approx(outside.std())
        assert f.loc[i, "in_p75"] == pytest.approx(np.percentile(inside, 75))
        assert f.loc[i, "lung_area_frac"] == pytest.approx(masks[i].mean())
    assert np.isnan(f.loc[3, "in_mean"]) and f.loc[3, "lung_area_frac"] == 0
    assert f.loc[3, "out_mean"] == pytest.approx(imgs[3].mean())
    np.testing.assert_allclose(f["orig_aspect"], [0.8, 1.0, 2.0, 1.0])
    np.testing.assert_allclose(f["orig_log_pixels"], np.log(shapes[:, 0] * shapes[:, 1]))
    assert f.shape[1] == 22 + 2 * 14 + 1 + 4


def test_features_are_fast():
    imgs = np.random.default_rng(0).integers(0, 256, (1000, 160, 160), dtype=np.uint8)
    masks = np.zeros_like(imgs)
    masks[:, 30:130, 20:140] = 1
    t = time.perf_counter()
    f = A.lowlevel_features(imgs, masks)
    assert time.perf_counter() - t < 5.0
    assert len(f) == 1000


def test_original_shapes_reads_headers(tmp_path: Path):
    sizes = [(30, 50), (64, 64), (100, 20)]                            # (height, width)
    files = []
    for i, (h, w) in enumerate(sizes):
        p = tmp_path / f"im{i}.png"
        mode = "RGB" if i == 1 else "L"
        Image.new(mode, (w, h)).save(p)
        files.append(p)
    np.testing.assert_array_equal(decode.original_shapes(files), np.array(sizes))
    assert decode.original_shapes(files).dtype == np.int64
    with pytest.raises(decode.ImageError, match="not found"):
        decode.original_shapes([tmp_path / "missing.png"])


# --- cv_logistic ----------------------------------------------------------------------------------
def _cross_validate_columns(tmp_path: Path, index: pd.DataFrame) -> list[str]:
    """The columns train.cross_validate writes, from a run with training replaced by a stub."""
    from helpers import train

    class _Prof:
        cls_val_fraction, bf16, channels_last, executor, torch_threads = 0.1, False, False, "local", 0

        def for_network(self, name, role="proposed"):
            return self

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(train, "train_fold", lambda *a, **k: (None, pd.DataFrame({"epoch": [1]})))
        mp.setattr(train, "predict_proba", lambda model, images, *a, **k: np.full(len(images), 0.5))
        preds = train.cross_validate(_Prof(), "stub", "stub", np.zeros((len(index), 8, 8), np.uint8),
                                     index["y"].to_numpy(), index, tmp_path, seed=0,
                                     save_weights=False)
    finally:
        mp.undo()
    return list(preds.columns)


def test_cv_logistic_planted_signal_schema_and_disjoint_fits(tmp_path, monkeypatch):
    idx = _cohort(150)
    X = _features(idx, signal=3.0)
    X[:, -1] = np.arange(len(idx))                                     # row id, for the spy
    fits: list[set] = []
    orig = linear.logistic

    class Spy:
        def __init__(self, C, seed, **model):
            self.m = orig(C, seed, **model)

        def fit(self, Xf, yf):
            fits.append(set(Xf[:, -1].astype(int).tolist()))
            self.m.fit(Xf, yf)
            return self

        def predict_proba(self, Xp):
            return self.m.predict_proba(Xp)

    monkeypatch.setattr(linear, "logistic", Spy)
    preds = A.cv_logistic(X, idx["y"], idx, seed=0, model_name="lowlevel")
    assert _auc(preds) > 0.9
    assert list(preds.columns) == _cross_validate_columns(tmp_path, idx)
    assert sorted(preds["image_id"]) == sorted(idx["image_id"])        # every image exactly once
    assert (preds["set"] == "oof").all() and (preds["model"] == "lowlevel").all()
    merged = preds.merge(idx[["image_id", "fold", "y"]], on="image_id", suffixes=("", "_idx"))
    assert (merged["fold"] == merged["fold_idx"]).all() and (merged["y"] == merged["y_idx"]).all()
    assert ((preds["prob"] >= preds["threshold"]).astype(int) == preds["pred"]).all()
    folds = idx["fold"].to_numpy()
    ks = sorted(np.unique(folds))
    assert len(fits) == 2 * len(ks)                                    # inner fit, then refit
    for i, k in enumerate(ks):
        test, train = set(np.flatnonzero(folds == k)), set(np.flatnonzero(folds != k))
        assert fits[2 * i] < train and not fits[2 * i] & test          # inner training rows only
        assert fits[2 * i + 1] == train                                # refit: whole training part
    # summarise_models reads the output unchanged
    s = metrics.summarise_models(preds, n_boot=50)
    assert s.loc[0, "roc_auc"] > 0.9


def test_cv_logistic_noise_is_near_chance():
    idx = _cohort(150, seed=1)
    preds = A.cv_logistic(_features(idx, signal=0.0, seed=1), idx["y"], idx, seed=0,
                          model_name="noise")
    assert 0.35 <= _auc(preds) <= 0.65


# --- permutation null -----------------------------------------------------------------------------
def test_permutation_null_signal_and_noise():
    idx = _cohort(120, seed=2)
    X = _features(idx, signal=1.5, seed=2)
    r = A.permutation_null(X, idx["y"], idx, n_perm=60, seed=0)
    assert r["p_value"] < 0.05 and r["null_aucs"].shape == (60,)
    assert r["observed_auc"] == pytest.approx(_auc(A.cv_logistic(X, idx["y"], idx, 0, "m")))
    noise = A.permutation_null(_features(idx, signal=0.0, seed=5), idx["y"], idx, n_perm=60, seed=0)
    assert noise["p_value"] > 0.05
    assert abs(noise["null_mean"] - 0.5) < 0.05
    assert noise["null_q95"] > noise["null_mean"]
    assert r["p_value"] == (1 + np.sum(r["null_aucs"] >= r["observed_auc"])) / 61


# --- reading the audits ---------------------------------------------------------------------------
def _crafted(n_patients: int, shift: float, seed: int, name: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.arange(n_patients) % 2
    prob = 1 / (1 + np.exp(-(shift * y + rng.normal(size=n_patients))))
    return pd.DataFrame(dict(image_id=[f"i{i}" for i in range(n_patients)],
                             patient_id=[f"p{i}" for i in range(n_patients)],
                             fold=np.arange(n_patients) % 5, set="oof", y=y, prob=prob,
                             threshold=0.5, pred=(prob >= 0.5).astype(int), model=name,
                             view=np.where(np.arange(n_patients) % 3, "PA", "AP"),
                             source=np.where(y == 1, "ieee8023", "nih")))


def test_audit_table_verdicts():
    signal = _crafted(200, 5.0, 0, "src")
    noise = _crafted(200, 0.0, 1, "perm")
    weak = _crafted(6000, 0.3, 2, "low")                               # AUC about 0.58
    extra = signal.assign(set="external", y=0, prob=0.99)              # ignored: not 'oof'
    t = A.audit_table({"source": pd.concat([signal, extra]), "permuted_labels": noise,
                       "lowlevel": weak, "my_audit": noise}, n_boot=200, seed=0)
    t = t.set_index("audit")
    assert t.loc["source", "verdict"] == "shortcut signal" and t.loc["source", "n"] == 200
    assert t.loc["permuted_labels", "verdict"] == "no evidence"
    assert 0.5 < t.loc["lowlevel", "auc_lo"] <= 0.6 and t.loc["lowlevel", "verdict"] == "weak"
    assert t.loc["source", "tests"] == A.AUDITS["source"].long
    assert "my_audit" in t.loc["my_audit", "tests"]
    assert (t["auc_lo"] <= t["auc"]).all() and (t["auc"] <= t["auc_hi"]).all()
    assert t.loc["source", "n_patients"] == 200


def test_stratified_table_stacks_view_and_source():
    p = pd.concat([_crafted(200, 3.0, 0, "hrnet"), _crafted(200, 0.0, 1, "lowlevel")])
    t = A.stratified_table(p)
    assert set(t["stratum_type"]) == {"view", "source"}
    assert {"stratum", "stratum_type", "model", "auc", "n"} <= set(t.columns)
    assert len(t) == 2 * 2 + 2 * 2
    by_view = t[(t["stratum_type"] == "view") & (t["model"] == "hrnet")]
    assert by_view["n"].sum() == 200
    # a source holds one class: its AUC is undefined and says why
    assert t[t["stratum_type"] == "source"]["auc"].isna().all()


# --- the low-level audit on phantoms with a planted site marker ------------------------------------
def _phantom_cohort(root: Path, strength: float, finding_contrast: float = 1.0, masks: bool = False):
    folder = phantoms.generate(root, n_patients=30, images_per_patient=(1, 3), n_seg_pairs=0,
                               size=64, shortcut_strength=strength, seed=0,
                               finding_contrast=finding_contrast)
    m = read_manifest(folder)
    m = m[m["split_role"] == "classify"].sort_values("path").reset_index(drop=True)
    m.insert(0, "image_id", image_ids(m["path"]))
    m["y"] = (m["label"] == "covid").astype(int)
    m["fold"] = splits.patient_folds(m["patient_id"], m["label"], 5, 0)
    images = decode.load_stack([folder / p for p in m["path"]], 64)
    if not masks:
        return m, A.lowlevel_features(images)
    lungs = decode.load_stack([folder / p for p in m["mask_path"]], 64, mask=True)
    lungs = np.stack([refine.refine_mask(k, 1, 1) for k in lungs])  # dilated, as refinement does
    return m, A.lowlevel_features(images, lungs)


@pytest.fixture(scope="module")
def phantom_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_phantoms")
    return {s: _phantom_cohort(root / f"s{s}", s) for s in (1.0, 0.0)}


def test_lowlevel_audit_finds_planted_site_marker(phantom_sets):
    idx, f = phantom_sets[1.0]
    y, desc = A.source_target(idx)
    assert desc == "phantom-a vs rest"
    preds = A.cv_logistic(f, y, idx, seed=0, model_name="lowlevel_source")
    assert _auc(preds) > 0.9
    # with strength 1 the site is the label, so the disease audit sees it too
    assert _auc(A.cv_logistic(f, idx["y"], idx, seed=0, model_name="lowlevel")) > 0.9


def test_lowlevel_audit_without_shortcut(phantom_sets):
    idx, f = phantom_sets[0.0]
    preds = A.cv_logistic(f, idx["y"], idx, seed=0, model_name="lowlevel")
    assert _auc(preds) < 0.75
    # the marker is still recognisable as a source, it just no longer tells the label
    y, _ = A.source_target(idx)
    assert _auc(A.cv_logistic(f, y, idx, seed=0, model_name="lowlevel_source")) > 0.9


# --- the outside-lung low-level audit: the disease brightens the lungs, the shortcut lies outside --
def test_outside_lung_features_columns():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)
    masks = np.zeros((4, 32, 32), np.uint8)
    masks[:, 8:24, 8:24] = 1
    f = A.lowlevel_features(imgs, masks, np.array([[100, 80]] * 4))
    o = A.outside_lung_features(f)
    assert all(c.startswith(("out_", "corner_")) or c == "border_mean" for c in o.columns)
    assert "out_mean" in o and "border_mean" in o
    assert "orig_aspect" in f and not any(c.startswith("orig_") for c in o.columns)  # pixels only
    assert not any(c.startswith("in_") for c in o.columns)
    assert not {"mean", "std", "grad_mean", "asym_lr", "lung_area_frac"} & set(o.columns)
    # changing only the pixels inside the mask leaves every outside feature unchanged
    imgs2 = imgs.copy()
    imgs2[:, 8:24, 8:24] = 255
    o2 = A.outside_lung_features(A.lowlevel_features(imgs2, masks, np.array([[100, 80]] * 4)))
    pd.testing.assert_frame_equal(o, o2)
    with pytest.raises(ValueError, match="out_"):
        A.outside_lung_features(A.lowlevel_features(imgs))


@pytest.mark.parametrize("strength", [0.9, 0.0])
def test_outside_lung_audit_tracks_the_shortcut(tmp_path, strength):
    idx, f = _phantom_cohort(tmp_path / f"s{strength}", strength, finding_contrast=4.0, masks=True)
    whole = _auc(A.cv_logistic(f, idx["y"], idx, seed=0))
    outside = _auc(A.cv_logistic(A.outside_lung_features(f), idx["y"], idx, seed=0,
                                 model_name="lowlevel_outside"))
    # the strong findings make the in-lung statistics informative whatever the shortcut does
    assert whole > 0.8, whole
    if strength:
        assert outside > 0.8, outside
    else:
        assert outside < 0.7, outside
