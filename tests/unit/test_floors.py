"""The thumbnail logistic-regression floor: the CNNs' folds, inner splits and prediction schema."""
import numpy as np
import pandas as pd
import pytest

from helpers.data import phantoms, splits
from helpers.evidence import floors, linear, metrics

SCHEMA = ["image_id", "patient_id", "source", "view", "label", "fold", "set", "y", "prob", "threshold",
          "pred", "model"]  # the columns of train.cross_validate, in its order


@pytest.fixture(scope="module")
def cohort():
    """60 phantoms of 30 patients; site marker planted on every COVID film (a pure shortcut)."""
    rng = np.random.default_rng(0)
    imgs, rows = [], []
    for p in range(30):
        covid = p % 2 == 0
        anat = phantoms.sample_anatomy(rng)
        for j in range(2):
            img, _ = phantoms.render(rng, 64, covid, "a" if covid else "b", severity=0.5, anatomy=anat)
            imgs.append(img)
            rows.append({"image_id": f"p{p}_{j}", "patient_id": f"p{p}",
                         "source": "site_" + ("a" if covid else "b"),
                         "view": "PA", "label": "covid" if covid else "normal", "y": int(covid)})
    index = pd.DataFrame(rows)
    index["fold"] = splits.patient_folds(index["patient_id"], index["label"], 3, 0)
    return np.stack(imgs), index


def test_thumbnails_shape_and_range():
    x = floors.thumbnails(np.full((2, 64, 48), 255, np.uint8), size=8)
    assert x.shape == (2, 64) and x.dtype == np.float32 and np.allclose(x, 1.0)
    with pytest.raises(ValueError, match="grayscale"):
        floors.thumbnails(np.zeros((2, 8, 8, 3), np.uint8))


def test_floor_schema_folds_and_shortcut(cohort, monkeypatch):
    imgs, index = cohort
    X = floors.thumbnails(imgs)
    fitted = []
    real = linear.fit_predict

    def spy(X_fit, y_fit, X_pred, C, seed, **model):
        fitted.append({r.tobytes() for r in X_fit})
        return real(X_fit, y_fit, X_pred, C, seed, **model)

    monkeypatch.setattr(linear, "fit_predict", spy)
    p = floors.thumbnail_logreg(imgs, index["y"], index, seed=0, model_name="thumbnail_logreg_unsegmented")
    assert list(p.columns) == SCHEMA
    assert sorted(p["image_id"]) == sorted(index["image_id"]) and (p["set"] == "oof").all()
    assert (p["model"] == "thumbnail_logreg_unsegmented").all()
    assert (p.groupby("fold")["threshold"].nunique() == 1).all()
    assert ((p["prob"] >= p["threshold"]).astype(int) == p["pred"]).all()
    # the test fold never enters a fit; one fit per fold
    assert len(fitted) == 3
    folds = index.set_index("image_id").loc[p["image_id"], "fold"].to_numpy()
    assert (folds == p["fold"].to_numpy()).all()
    for k, rows in zip(sorted(index["fold"].unique()), fitted):
        test = {r.tobytes() for r in X[index["fold"].to_numpy() == k]}
        assert not (test & rows)
    # a planted site marker is an easy target for 32 x 32 pixels
    assert metrics.summarise_models(p, n_boot=0).iloc[0]["roc_auc"] > 0.9


def test_floor_rejects_misaligned_inputs(cohort):
    imgs, index = cohort
    with pytest.raises(ValueError, match="differ in length"):
        floors.thumbnail_logreg(imgs[:-1], index["y"], index)
    with pytest.raises(KeyError, match="fold"):
        floors.thumbnail_logreg(imgs, index["y"], index.drop(columns="fold"))


def test_floor_scores_held_out_sets_with_each_folds_fit(cohort):
    """A held-out set gets one row per film and fold, at that fold's threshold; the out-of-fold
    rows are those of the run without it."""
    imgs, index = cohort
    held = index.iloc[:10].assign(image_id=lambda d: "held_" + d["image_id"]).reset_index(drop=True)
    ext = {"external": {"images": imgs[:10][:, ::-1].copy(), "y": held["y"].to_numpy(), "index": held}}
    plain = floors.thumbnail_logreg(imgs, index["y"], index, seed=0)
    p = floors.thumbnail_logreg(imgs, index["y"], index, seed=0, extra=ext)
    assert list(p.columns) == SCHEMA
    oof, e = p[p["set"] == "oof"].reset_index(drop=True), p[p["set"] == "external"]
    pd.testing.assert_frame_equal(oof, plain)
    assert len(e) == 10 * 3 and (e.groupby("image_id")["fold"].nunique() == 3).all()
    thr = oof.groupby("fold")["threshold"].first()
    assert (e["threshold"].to_numpy() == e["fold"].map(thr).to_numpy()).all()
    assert ((e["prob"] >= e["threshold"]).astype(int) == e["pred"]).all()
    assert (e["y"].to_numpy() == np.tile(held["y"].to_numpy(), 3)).all()
    # each fold's scores differ (three different fits), so no fold's row was copied
    assert e.pivot(index="image_id", columns="fold", values="prob").nunique(axis=1).gt(1).any()
