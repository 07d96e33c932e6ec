"""Out-of-distribution flags for prediction: is a new radiograph like the ones the model learned from?

Beyond the paper. A classifier gives a probability for any input, also for images unlike its
training data; these flags say so in a way a user can check. Every flag is *computed* from the
image and the fold models, with a cut-off fixed at export time from the training cohort:

``outside_training_range:<feature>``
    One of the :data:`FEATURES` of the image lies outside the central 99 % (0.5-99.5 %
    quantiles) of the same feature over the training cohort (the classification images that
    passed refinement, as the fold classifiers saw them). The cut-off flags about 1 % of the
    training images per feature by construction; the share of training images that get at
    least one such flag is measured at export and stored in the bundle (``share_flagged``).
``fold_disagreement``
    The fold classifiers, each at its own decision threshold, do not all reach the same
    decision. Any disagreement flags: the folds were trained on overlapping data, so on images
    like their training data they mostly agree; a split vote means the decision rests on which
    training subset a model happened to see.
``heat_not_in_lungs``
    The share of Grad-CAM heat inside the predicted lungs is no larger than the lung area
    fraction, i.e. no better than uniform heat (the chance level of :mod:`helpers.explain`):
    the decision is not driven by the lung fields.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers import refine

#: feature -> what it measures (all on the classifier's unsegmented input, uint8, cls_size px)
FEATURES = {
    "mean": "mean grey level of the padded, resized film (0-255)",
    "sd": "standard deviation of the grey levels",
    "p01": "1st percentile grey level",
    "p99": "99th percentile grey level",
    "dark_share": "share of pixels darker than 10 (padding, collimation, black borders)",
    "lung_area": "refined lung mask area / image area (at seg_size)",
    "lung_mean": "mean grey level inside the refined lung mask",
}
QUANTILES = (0.005, 0.995)  # central 99 % of the training cohort
DARK_LEVEL = 10


def features(images: np.ndarray, refined: np.ndarray) -> pd.DataFrame:
    """One row of :data:`FEATURES` per image.

    images: uint8 (N, C, C), the classifier's unsegmented input (``io.square`` to cls_size);
    refined: uint8 (N, S, S) in {0, 1}, the refined lung masks at seg_size. ``lung_mean`` is nan
    for an empty mask.
    """
    images = np.asarray(images)
    refined = np.asarray(refined)
    n = len(images)
    if n == 0:
        return pd.DataFrame(columns=list(FEATURES))
    flat = images.reshape(n, -1).astype(np.float64)
    p01, p99 = np.percentile(flat, [1, 99], axis=1)
    lungs_c = refine.resize_masks(refined.astype(np.uint8), images.shape[-1]).reshape(n, -1) > 0
    inside = lungs_c.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        lung_mean = np.where(inside > 0, (flat * lungs_c).sum(1) / inside, np.nan)
    return pd.DataFrame({
        "mean": flat.mean(1), "sd": flat.std(1), "p01": p01, "p99": p99,
        "dark_share": (flat < DARK_LEVEL).mean(1),
        "lung_area": refined.reshape(n, -1).mean(1).astype(np.float64),
        "lung_mean": lung_mean,
    })


def training_ranges(feats: pd.DataFrame) -> dict:
    """Per feature: the 0.5 / 99.5 % quantiles (the cut-offs), min, median, max and n; plus
    ``share_flagged``, the share of the training images themselves outside at least one range."""
    lo_q, hi_q = QUANTILES
    out: dict = {"quantiles": list(QUANTILES), "n_images": int(len(feats)), "features": {}}
    for name in FEATURES:
        v = pd.to_numeric(feats[name], errors="coerce").dropna().to_numpy()
        if len(v) == 0:
            continue
        out["features"][name] = {"lo": float(np.quantile(v, lo_q)), "hi": float(np.quantile(v, hi_q)),
                                 "min": float(v.min()), "median": float(np.median(v)),
                                 "max": float(v.max()), "n": int(len(v)), "what": FEATURES[name]}
    flagged = [bool(range_flags(r, out)) for r in feats.to_dict("records")]
    out["share_flagged"] = float(np.mean(flagged)) if flagged else float("nan")
    return out


def range_flags(row: dict, ranges: dict) -> list[str]:
    """``outside_training_range:<feature>`` for each feature of ``row`` outside its range."""
    out = []
    for name, r in ranges.get("features", {}).items():
        v = row.get(name)
        if v is None or not np.isfinite(v):
            continue
        if v < r["lo"] or v > r["hi"]:
            out.append(f"outside_training_range:{name}")
    return out
