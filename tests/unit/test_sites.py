"""Issue 21: one cohort from several data folders (labels covid | normal | pneumonia, a patient in
two folders refused), and the tests a new hospital cannot fool (within-source AUC, COVID against
each kind of negative, the share of a site's negatives called COVID) on fixtures with known answers."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import config, curate
from helpers.data import manifest as mf
from helpers.evidence import recomputed, sites
from helpers.run.artefacts import ART, EVIDENCE_TABLES

HEADER = [*mf.COLUMNS]


def _film(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:80]
    a = (60 + 1.2 * x + 0.8 * y + rng.normal(0, 12, (96, 80))).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _folder(root: Path, rows: list[tuple[str, str, str, str]], seed: int = 0) -> Path:
    """A manifest folder: rows of (file, label, source, patient_id); a few segment pairs beside."""
    recs = []
    for i, (f, label, source, pid) in enumerate(rows):
        _film(root / f, seed * 1000 + i)
        recs.append(dict(path=f, split_role="classify", label=label, source=source, patient_id=pid,
                         view="PA", finding="Klebsiella" if label == "pneumonia" else ""))
    pd.DataFrame(recs).reindex(columns=HEADER).fillna("").to_csv(root / "manifest.csv", index=False)
    return root


def _rows(prefix: str, label: str, source: str, n: int) -> list[tuple[str, str, str, str]]:
    return [(f"{label}/{prefix}{i}.png", label, source, f"{source}-{prefix}{i}") for i in range(n)]


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("sites")
    a = _folder(base / "cxr", _rows("c", "covid", "ieee8023", 6) + _rows("n", "normal", "nih-cxr8", 6), 0)
    b = _folder(base / "cxr-pneumonia", _rows("p", "pneumonia", "ieee8023", 5), 1)
    return a, b


def test_config_reads_several_data_folders(two_folders, tmp_path):
    a, b = two_folders
    for given in (f"{a}{os.pathsep}{b}", [a, b]):
        cfg = config.resolve("cpu", given, tmp_path / "o", 0)
        assert cfg.data_dirs == (a.resolve(), b.resolve())
        assert cfg.to_dict()["extra_data_dirs"] == [str(b.resolve())]
    one = config.resolve("cpu", a, tmp_path / "o", 0)
    assert one.data_dirs == (a.resolve(),) and "extra_data_dirs" not in one.to_dict()
    # the profile's extra_data names folders beside DATA_DIR; a missing one is an error naming it
    cfg = config.resolve("cpu", a, tmp_path / "o", 0, overrides={"extra_data": ["cxr-pneumonia"]})
    assert cfg.data_dirs == (a.resolve(), b.resolve())
    with pytest.raises(FileNotFoundError, match="cxr-nowhere"):
        config.resolve("cpu", a, tmp_path / "o", 0, overrides={"extra_data": ["cxr-nowhere"]})


def test_one_cohort_from_two_folders_with_the_pneumonia_label(two_folders, tmp_path):
    a, b = two_folders
    cfg = config.resolve("cpu", [a, b], tmp_path / "o", 0, overrides={"n_folds": 2})
    root, man, flow, excluded, notes = curate.load_cohort(cfg)
    cls = man[man["split_role"] == "classify"]
    assert cls.groupby("label").size().to_dict() == {"covid": 6, "normal": 6, "pneumonia": 5}
    assert set(cls.loc[cls["label"] == "pneumonia", "finding"]) == {"Klebsiella"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in cls["path"])
    assert excluded.empty
    # COVID vs non-COVID: a pneumonia film is a negative
    p = config.make_profile("cpu", {"n_folds": 2, "seg_folds": 2})
    idx = curate.build_indices(pd.concat([man, _seg_rows(a)], ignore_index=True), p, 0)[0]
    assert idx.groupby("label")["y"].unique().map(list).to_dict() == {
        "covid": [1], "normal": [0], "pneumonia": [0]}
    # the cohort table shows label x source with the source's findings
    t = curate.cohort_table(idx, idx.iloc[:0])
    row = t[(t["label"] == "pneumonia")].iloc[0]
    assert row["source"] == "ieee8023" and row["findings"] == "Klebsiella 5"


def _seg_rows(root: Path) -> pd.DataFrame:
    return pd.DataFrame([dict(path=str(root / f"seg{i}.png"), split_role="segment", label="", source="jsrt",
                              patient_id=f"jsrt-{i}", mask_path=str(root / f"m{i}.png"))
                         for i in range(6)]).reindex(columns=HEADER).fillna("")


def test_a_patient_in_two_folders_is_refused(two_folders, tmp_path):
    a, _ = two_folders
    c = _folder(tmp_path / "clash", [("normal/x.png", "normal", "nih-cxr8", "nih-cxr8-n0")], 2)
    cfg = config.resolve("cpu", [a, c], tmp_path / "o", 0)
    with pytest.raises(curate.CurationError) as e:
        curate.load_cohort(cfg)
    msg = str(e.value)
    assert "nih-cxr8-n0" in msg and str(a) in msg and str(c) in msg


# ----------------------------------------------------------------------------------------------
# the tests a hospital cannot fool, on predictions with known answers

def _preds() -> pd.DataFrame:
    """Two sources. In "mixed" the model ranks COVID above its normals perfectly (AUC 1) and calls
    1 of 4 negatives COVID; in "inverse" every COVID film scores below every pneumonia film
    (AUC 0), and all 3 negatives are called COVID. "nih" gives normals only."""
    rows = []

    def add(source, label, y, probs, pred):
        for i, (p, d) in enumerate(zip(probs, pred)):
            pid = f"{source}-{label}-{i}"
            rows.append(dict(model="hrnet", image_id=pid, patient_id=pid, source=source, label=label,
                             y=y, prob=p, pred=d, fold=i % 2, set="oof", threshold=0.5))
    add("mixed", "covid", 1, [0.9, 0.8, 0.95], [1, 1, 1])
    add("mixed", "normal", 0, [0.1, 0.2, 0.3, 0.6], [0, 0, 0, 1])
    add("inverse", "covid", 1, [0.51, 0.52], [1, 1])
    add("inverse", "pneumonia", 0, [0.7, 0.8, 0.9], [1, 1, 1])
    add("nih", "normal", 0, [0.05, 0.07], [0, 0])
    return pd.DataFrame(rows)


def test_within_source_auc_has_the_known_answers():
    w = sites.within_source(_preds(), n_boot=200, seed=0).set_index("source")
    assert list(w.index) == ["inverse", "mixed"]            # nih has one class: no AUC there
    assert w.loc["mixed", "auc"] == 1.0 and w.loc["inverse", "auc"] == 0.0
    assert (w.loc["mixed", "n_pos"], w.loc["mixed", "n_neg"]) == (3, 4)
    # every patient resample keeps the perfect (or perfectly inverted) ranking
    assert w.loc["inverse", "auc_hi"] == 0.0 and w.loc["mixed", "auc_lo"] == 1.0


def test_covid_against_each_kind_of_negative():
    b = sites.by_negative(_preds(), n_boot=200, seed=0).set_index("negatives")
    assert set(b.index) == {"normal", "pneumonia", "all non-COVID"}
    from sklearn.metrics import roc_auc_score

    covid = [0.9, 0.8, 0.95, 0.51, 0.52]                     # every COVID film, both sources
    for neg, p in (("normal", [0.1, 0.2, 0.3, 0.6, 0.05, 0.07]), ("pneumonia", [0.7, 0.8, 0.9])):
        want = roc_auc_score(np.r_[np.ones(5), np.zeros(len(p))], np.r_[covid, p])
        assert b.loc[neg, "auc"] == pytest.approx(want)
    assert b.loc["normal", "auc"] > 0.9 > 0.5 > b.loc["pneumonia", "auc"]  # "abnormal", not COVID
    assert (b.loc["pneumonia", "n_pos"], b.loc["pneumonia", "n_neg"]) == (5, 3)


def test_share_of_a_sites_negatives_called_covid():
    c = sites.negatives_called_covid(_preds()).set_index(["source", "label"])
    assert c.loc[("inverse", "pneumonia"), "share"] == 1.0
    assert c.loc[("mixed", "normal"), "called_covid"] == 1 and c.loc[("mixed", "normal"), "n"] == 4
    assert c.loc[("nih", "normal"), "share"] == 0.0
    lo, hi = c.loc[("inverse", "pneumonia"), ["share_lo", "share_hi"]]
    assert 0.3 < lo < 1.0 and hi == 1.0                      # Wilson: 3 of 3 is not certainty


def test_the_site_tables_are_evidence_tables():
    for name in ("within_source", "by_negative", "negatives_called"):
        assert name in EVIDENCE_TABLES and getattr(ART, name).stage == "figures"
        assert name in recomputed.TABLES


# ----------------------------------------------------------------------------------------------
# film geometry: an aspect cue planted in the classes, read by the geometry-only audit and by the
# "film shape from the classifier's inputs" probe, and gone once the input keeps no film shape

def _geometry_cohort(n: int = 120, size: int = 48):
    from helpers import preprocess
    from helpers.data import decode, splits

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(n // 2), np.zeros(n // 2)].astype(int)
    shapes = np.array([(90, 120) if v else (110, 110) for v in y])      # COVID films landscape
    padded, film_only = [], []
    for (h, w) in shapes:
        film = rng.normal(120, 30, (h, w)).clip(0, 255).astype(np.uint8)  # the same texture
        sq = decode.square(film, size)
        y0, y1, x0, x1 = preprocess.film_box((h, w), size)
        lungs = np.zeros((size, size), np.uint8)
        lungs[y0 + 4:y1 - 4, x0 + 6:x1 - 6] = 1                          # lungs inside the film
        padded.append(sq)
        film_only.append(preprocess.crop_to_lungs(sq, lungs, size, margin=0.0,
                                                  bounds=(y0, y1, x0, x1))[0])
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                          "y": y, "label": np.where(y == 1, "covid", "normal")})
    index["fold"] = splits.patient_folds(index["patient_id"], index["label"], 3, 0)
    return y, shapes, np.stack(padded), np.stack(film_only), index


def _pooled_auc(preds: pd.DataFrame, target) -> float:
    from sklearn.metrics import roc_auc_score

    t = pd.Series(np.asarray(target), index=[f"i{i}" for i in range(len(target))])
    return roc_auc_score(t.loc[preds["image_id"]].to_numpy(), preds["prob"].to_numpy())


def test_geometry_audit_reads_a_planted_aspect_cue_and_the_film_only_input_removes_it():
    from helpers.evidence import audits, floors

    y, shapes, padded, film_only, index = _geometry_cohort()
    feats = audits.lowlevel_features(padded, None, shapes)
    assert set(audits.geometry_features(feats).columns) == {
        "orig_height", "orig_width", "orig_aspect", "orig_log_pixels"}
    assert not any(c.startswith("orig_") for c in audits.pixel_features(feats).columns)
    geo = audits.cv_logistic(audits.geometry_features(feats), y, index, 0, model_name="geometry")
    assert _pooled_auc(geo, y) > 0.95                                    # the cue is in the geometry
    # the same films with the class made independent of the shape: the geometry audit is at chance
    y_null = np.random.default_rng(1).permutation(y)
    geo_null = audits.cv_logistic(audits.geometry_features(feats), y_null, index.assign(y=y_null), 0)
    assert abs(_pooled_auc(geo_null, y_null) - 0.5) < 0.2
    # "not square originally" from the classifier's inputs: zero padding keeps it, the film-only
    # lung crop (cls_crop_lungs + cls_film_only) does not
    square = audits.not_square(shapes)
    assert (square == y).all()
    keep = floors.thumbnail_logreg(padded, square, index, 0, "not_square_from_inputs")
    gone = floors.thumbnail_logreg(film_only, square, index, 0, "not_square_from_inputs")
    assert _pooled_auc(keep, square) > 0.95
    assert _pooled_auc(gone, square) < 0.7


def test_the_ladder_probes_read_the_film_shape_per_input_mode():
    """Each ladder rung reports how well "not square originally" reads from its inputs: high on
    padded squares, near chance on the film-only crop, and absent when every film has one shape."""
    from helpers.evidence import probes

    y, shapes, padded, film_only, index = _geometry_cohort()
    masks = np.zeros_like(padded)
    masks[:, 12:36, 8:40] = 1
    found = {}
    for mode, imgs in (("padded", padded), ("film_only", film_only)):
        x = {"segmented": imgs, "unsegmented": imgs, "refined": masks, "lungs": masks}
        found[mode] = probes.probe_audits(x, y, index, 0, 0.1, shapes=shapes)
    assert _pooled_auc(found["padded"]["not_square_from_inputs"], audits_not_square(shapes)) > 0.95
    assert _pooled_auc(found["film_only"]["not_square_from_inputs"], audits_not_square(shapes)) < 0.7
    x = {"segmented": padded, "unsegmented": padded, "refined": masks, "lungs": masks}
    assert "not_square_from_inputs" not in probes.probe_audits(x, y, index, 0, 0.1,
                                                               shapes=np.full_like(shapes, 100))
    assert "audit_not_square_from_inputs" in probes.TABLE_COLUMNS


def audits_not_square(shapes):
    from helpers.evidence import audits

    return audits.not_square(shapes)


# ----------------------------------------------------------------------------------------------
# leave one site out

def test_sites_to_leave_out_and_their_folds():
    idx = pd.DataFrame({"source": ["nih"] * 12 + ["ieee"] * 8 + ["jsrt"] * 3,
                        "y": [0] * 12 + [1] * 4 + [0] * 4 + [0] * 3})
    assert sites.loso_sites(idx, 3) == ["nih", "ieee", "jsrt"]      # most non-COVID films first
    assert sites.loso_sites(idx, 4) == ["nih", "ieee"]
    f = sites.loso_folds(idx, "ieee")
    assert (f[idx["source"] == "ieee"] == 0).all() and (f[idx["source"] != "ieee"] == 1).all()


def test_loso_table_reports_the_false_positive_rate_at_the_left_out_site():
    def rows(site, ys, preds, probs, model="hrnet"):
        return [dict(model=model, site=site, source=site, image_id=f"{site}{i}", patient_id=f"{site}{i}",
                     y=a, pred=b, prob=c, set="oof", fold=0)
                for i, (a, b, c) in enumerate(zip(ys, preds, probs))]
    loso = pd.DataFrame(rows("nih", [0] * 10, [1] * 8 + [0] * 2, [0.9] * 8 + [0.1] * 2)
                        + rows("ieee", [1, 1, 0, 0], [1, 1, 1, 0], [0.9, 0.8, 0.7, 0.1]))
    # in cross-validation, where NIH was in training, 1 of 10 NIH films was called COVID
    cv = pd.DataFrame(rows("nih", [0] * 10, [1] + [0] * 9, [0.6] + [0.2] * 9))
    t = sites.loso_table(loso, cv, n_boot=100, seed=0).set_index("site")
    assert t.loc["nih", "share"] == 0.8 and t.loc["nih", "called_covid"] == 8
    assert t.loc["nih", "n_neg"] == 10
    assert t.loc["nih", "share_lo"] < 0.8 < t.loc["nih", "share_hi"]
    assert np.isnan(t.loc["nih", "auc"])                            # one class: no AUC
    assert t.loc["nih", "cv_share"] == 0.1                          # the site it had seen
    assert t.loc["ieee", "share"] == 0.5 and t.loc["ieee", "auc"] == 1.0
    assert np.isnan(t.loc["ieee", "cv_share"])                       # not in the CV predictions
    assert sites.loso_table(loso.iloc[:0]).empty


def test_the_cohort_manifest_names_every_film_by_its_origin_and_holds_no_path(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import test_evidence as te

    run = te.make_run(tmp_path / "run")
    m = recomputed.cohort_manifest(run)
    cls = ART.cls_index.read(run)
    assert list(m.columns) == recomputed.MANIFEST_COLUMNS
    assert (m["role"] == "classify").sum() == len(cls)
    assert set(m.loc[m["role"] == "classify", "image_id"]) == set(cls["image_id"])
    assert not {"path", "file", "mask_path"} & set(m.columns)   # text about the films, no machine path
    assert "cohort_manifest" in EVIDENCE_TABLES
