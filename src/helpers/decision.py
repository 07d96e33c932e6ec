"""The decision rule of Algorithm 2 (section 4.3): each fold's threshold, chosen on its inner
validation split, and the plain ROC-AUC of a validation pass.

Part of the method, so training uses it directly; :mod:`helpers.evidence.metrics` builds every
reported table on the same two functions and label checks.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def as_binary(y) -> np.ndarray:
    """Labels as int64 (N,) in {0, 1} (1 = COVID); raises ValueError on NaN or other values."""
    a = np.asarray(y)
    if a.size == 0:
        return a.astype(np.int64).ravel()
    a = a.ravel()
    if a.dtype == bool:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
        raise ValueError("labels contain NaN")
    u = np.unique(a)
    if not np.isin(u, [0, 1]).all():
        raise ValueError(f"labels must be 0/1 (1 = COVID); found values {u[:10].tolist()}")
    return a.astype(np.int64)


def as_prob(p) -> np.ndarray:
    """Scores as float64 (N,)."""
    return np.asarray(p, dtype=np.float64).ravel()


def check_same_length(*arrays: np.ndarray) -> None:
    """Raise ValueError naming the lengths when the arrays differ in length."""
    n = {len(a) for a in arrays}
    if len(n) > 1:
        raise ValueError(f"inputs have different lengths: {[len(a) for a in arrays]}")


def auc_or_nan(y, score) -> float:
    """ROC-AUC by ``sklearn.metrics.roc_auc_score`` (ties count 1/2); nan unless ``y`` holds two classes.

    The one plain AUC of the package: training's validation AUC and the audits' permutation test
    use it. (:func:`auc_ci` keeps its own weighted form, which scores all bootstrap resamples at once.)
    """
    y = np.asarray(y).ravel()
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(skm.roc_auc_score(y, np.asarray(score).ravel()))


def choose_threshold(y_val, prob_val, rule: str = "youden") -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 on a validation split.

    Must only ever be given the *inner validation* split of a training fold, never the test
    fold: a threshold tuned on the test fold makes the reported test metrics optimistic.

    Candidates are the midpoints between consecutive distinct validation probabilities plus
    0.5; the prediction is ``prob >= threshold``. Ties in J go to the candidate closest to 0.5.
    A validation split with one class (or no usable rows) gives 0.5, without an error.
    """
    if rule != "youden":
        raise ValueError(f"unknown rule {rule!r}; only 'youden' is implemented")
    y, prob = as_binary(y_val), as_prob(prob_val)
    check_same_length(y, prob)
    keep = ~np.isnan(prob)
    y, prob = y[keep], prob[keep]
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    u = np.unique(prob)
    cand = np.unique(np.r_[(u[1:] + u[:-1]) / 2.0, 0.5])
    order = np.sort(prob[y == 1]), np.sort(prob[y == 0])
    tp = n_pos - np.searchsorted(order[0], cand, side="left")  # prob >= t
    tn = np.searchsorted(order[1], cand, side="left")  # prob < t
    j = tp / n_pos + tn / n_neg - 1.0
    best = j.max()
    tied = cand[j >= best - 1e-12]
    return float(tied[np.argmin(np.abs(tied - 0.5))])
