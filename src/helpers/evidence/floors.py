"""Trivial floors for Table 7: what a linear model on tiny thumbnails scores on the same folds.

Not in the paper. A deep network is worth its cost only if it beats the crudest model that sees
the same images. :func:`thumbnail_logreg` downsamples every image to ``size`` x ``size`` pixels
(32 x 32 by default: far too coarse to show ground-glass opacities, fine enough to show a
collection's exposure, borders, text and field of view), standardises every pixel and fits an L2
logistic regression with a fixed ``C``. When such a model matches the CNNs, internal AUC is
measuring how recognisable the collections are, not the disease (DeGrave, Janizek & Lee,
Nature Machine Intelligence 2021).

The protocol is the CNNs' (:func:`helpers.train.cross_validate`, Algorithm 2): per test fold,
a patient-grouped inner split of the training part (:func:`helpers.data.splits.inner_split`,
same fraction and seed ``seed + k``); the model is fitted on the inner training rows, the
decision threshold chosen on the inner validation rows (:func:`helpers.evidence.decision.choose_threshold`)
and the test fold predicted once. Predictions come in the schema of ``cross_validate``, so
:func:`helpers.evidence.metrics.summarise_models` puts them straight into Table 7.

numpy / pandas / OpenCV / scikit-learn only; no torch.
"""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from helpers import decision
from helpers.data.splits import inner_split, split_groups
from helpers.evidence import linear

__all__ = ["FLOOR_SIZE", "FLOOR_C", "thumbnails", "thumbnail_logreg"]

FLOOR_SIZE = 32    # thumbnail side: 1,024 pixels per image
# Strong L2: 1,024 correlated pixels against a few hundred training images. Fixed in advance,
# never tuned on the folds (a tuned floor would need its own nested validation).
FLOOR_C = 0.01


def thumbnails(images, size: int = FLOOR_SIZE) -> np.ndarray:
    """Area-averaged thumbnails: uint8 (N, H, W) -> float32 (N, size * size) in [0, 1]."""
    imgs = np.asarray(images)
    if imgs.ndim != 3:
        raise ValueError(f"images must be (N, H, W) grayscale, got shape {imgs.shape}")
    out = np.empty((len(imgs), size * size), np.float32)
    for i, im in enumerate(imgs):
        out[i] = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA).reshape(-1) / 255.0
    return out


def thumbnail_logreg(images, y, index: pd.DataFrame, seed: int = 0, model_name: str = "thumbnail_logreg",
                     size: int = FLOOR_SIZE, C: float = FLOOR_C, val_fraction: float = 0.1,
                     extra: dict[str, dict] | None = None) -> pd.DataFrame:
    """Out-of-fold predictions of the thumbnail logistic regression over ``index['fold']``.

    images: uint8 (N, H, W); y: int (N,) in {0, 1}; index: the N rows of the classification
    index (``image_id``, ``patient_id``, ``fold``, optional ``group_id``/``source``/``view``/
    ``label``). ``val_fraction`` and ``seed`` should be the CNNs' (``profile.cls_val_fraction``,
    the run seed) so the inner splits are theirs. Returns the columns of
    :func:`helpers.train.cross_validate` in its order: ``image_id, patient_id`` (and
    ``source, view, label`` when present), ``fold, set`` ('oof')``, y, prob, threshold, pred,
    model``; every image once, ordered by fold. ``extra``: named held-out sets ``{"images", "y",
    "index"}`` (those of :func:`helpers.train.cross_validate`) that every fold's fit also scores,
    as rows with ``set`` = the name, so a floor stands beside the CNNs on held-out films too.
    """
    X = thumbnails(images, size)
    y = np.asarray(y).astype(np.int64).ravel()
    if not (len(X) == len(y) == len(index)):
        raise ValueError(f"images ({len(X)}), y ({len(y)}) and index ({len(index)}) differ in length")
    if "fold" not in index:
        raise KeyError("index has no 'fold' column (the patient-grouped folds of curation)")
    groups = split_groups(index)
    folds = index["fold"].to_numpy()
    keep_cols = [c for c in ("image_id", "patient_id", "source", "view", "label") if c in index]
    ext = {name: (thumbnails(e["images"], size), np.asarray(e["y"]).astype(np.int64).ravel(), e["index"])
           for name, e in (extra or {}).items()}
    parts = []
    with threadpool_limits(1):  # small fits: extra BLAS threads only contend with other work
        for k in sorted(np.unique(folds)):
            test = np.flatnonzero(folds == k)
            tr, va = inner_split(np.flatnonzero(folds != k), groups, y, val_fraction, seed + int(k))
            scored = np.concatenate([X[va], X[test], *(e[0] for e in ext.values())])
            model_fit = linear.fit_predict(X[tr], y[tr], scored, C, seed, max_iter=5000)
            pv, pt = model_fit[:len(va)], model_fit[len(va):len(va) + len(test)]
            thr = decision.choose_threshold(y[va], pv)
            t = index.iloc[test][keep_cols].copy().reset_index(drop=True)
            t["fold"], t["set"], t["y"], t["prob"] = k, "oof", y[test], pt
            fold_parts = [t]
            at = len(va) + len(test)
            for name, (xe, ye, ie) in ext.items():
                e = ie[[c for c in keep_cols if c in ie]].copy().reset_index(drop=True)
                e["fold"], e["set"], e["y"], e["prob"] = k, name, ye, model_fit[at:at + len(xe)]
                at += len(xe)
                fold_parts.append(e)
            for f in fold_parts:
                f["threshold"] = thr
                f["pred"] = (f["prob"] >= thr).astype(int)
                f["model"] = model_name
            parts.extend(fold_parts)
    return pd.concat(parts, ignore_index=True)
