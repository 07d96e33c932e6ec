"""Evaluation metrics for the binary COVID / non-COVID classifier (paper section 4.3, eqs. 2-4).

The paper reports, per test fold, accuracy (eq. 2), sensitivity (eq. 3) and specificity (eq. 4)
of one confusion matrix (Table 6), their mean over the 10 folds, and the same three numbers for
three baseline networks (Table 7). This module recomputes those numbers, and more, from stored
predictions, so every figure in a results table can be regenerated from a predictions file:

* a predictions DataFrame has at least the columns ``image_id``, ``patient_id``, ``fold`` (int),
  ``y`` (0/1, 1 = COVID), ``prob`` (float in [0, 1]) and ``model`` (str); optionally
  ``threshold`` (per fold, chosen on the inner validation split with
  :func:`helpers.decision.choose_threshold`), ``source`` and ``view``;
* counts and rates: :func:`confusion`, :func:`rates` (with Wilson intervals, :func:`wilson_ci`);
* ranking: :func:`helpers.decision.auc_or_nan` (one plain ROC-AUC), :func:`auc_ci`,
  :func:`pr_auc_ci` (percentile bootstrap, optionally resampling patients instead of images),
  paired comparisons :func:`paired_auc_test` (DeLong or paired bootstrap) and :func:`mcnemar`,
  :func:`compare_to_reference`;
* calibration: :func:`brier`, :func:`ece`, :func:`reliability_table`;
* tables: :func:`fold_table` (per fold, pooled out-of-fold, and the paper's "mean over folds"),
  :func:`summarise_models`, :func:`stratified`, :func:`ppv_npv_at_prevalence`;

Everything is a pure function of its arguments (numpy / scipy / scikit-learn / pandas only).
Degenerate inputs (a fold with one class, empty strata, tiny counts) give ``nan`` with a reason,
never an exception or a warning.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from helpers.decision import as_binary, as_prob, check_same_length

__all__ = [
    "oof_rows",
    "confusion",
    "wilson_ci",
    "rates",
    "auc_ci",
    "pr_auc_ci",
    "brier",
    "ece",
    "reliability_table",
    "ppv_npv_at_prevalence",
    "fold_table",
    "summarise_models",
    "paired_auc_test",
    "delong_cov",
    "mcnemar",
    "compare_to_reference",
    "stratified",
    "predict",
]

_RATE_NAMES = ("accuracy", "sensitivity", "specificity", "ppv", "npv")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def predict(prob, threshold: float | Sequence[float] = 0.5) -> np.ndarray:
    """Hard predictions ``prob >= threshold`` (1 = COVID); threshold may be per row."""
    return (as_prob(prob) >= np.asarray(threshold, dtype=np.float64)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# confusion matrix and rates (eqs. 2-4)
# --------------------------------------------------------------------------------------------
def confusion(y, pred) -> dict:
    """Counts of the 2x2 confusion matrix with labels fixed as [0, 1] (1 = COVID = positive).

    Returns ``dict(tp, fn, fp, tn)`` of Python ints; a class absent from ``y`` gives zeros.
    """
    y = as_binary(y)
    pred = as_binary(pred)
    check_same_length(y, pred)
    if len(y) == 0:   # scikit-learn refuses empty inputs
        return dict(tp=0, fn=0, fp=0, tn=0)
    tn, fp, fn, tp = (int(v) for v in skm.confusion_matrix(y, pred, labels=[0, 1]).ravel())
    return dict(tp=tp, fn=fn, fp=fp, tn=tn)


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``; ``n == 0`` gives (nan, nan).

    Computed by ``scipy.stats.binomtest(k, n).proportion_ci(1 - alpha, method="wilson")``.
    """
    if n is None or n <= 0 or (isinstance(n, float) and math.isnan(n)):
        return (float("nan"), float("nan"))
    if k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if int(k) != k or int(n) != n:
        raise ValueError(f"counts must be whole numbers, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=1.0 - alpha, method="wilson")
    return (max(0.0, float(ci.low)), min(1.0, float(ci.high)))


def rates(tp: int, fn: int, fp: int, tn: int, alpha: float = 0.05) -> dict:
    """Accuracy (eq. 2), sensitivity (eq. 3), specificity (eq. 4), PPV and NPV of one matrix.

    Returns a flat dict: for each rate ``r`` the keys ``r`` (fraction in [0, 1]), ``r_lo``,
    ``r_hi`` (Wilson ``1 - alpha`` interval) and ``r_k``, ``r_n`` (the counts behind it).
    A rate whose denominator is 0 is nan.
    """
    tp, fn, fp, tn = (int(v) for v in (tp, fn, fp, tn))
    parts = {
        "accuracy": (tp + tn, tp + tn + fp + fn),
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
    }
    out: dict = {}
    for name, (k, n) in parts.items():
        out[name] = k / n if n > 0 else float("nan")
        out[f"{name}_lo"], out[f"{name}_hi"] = wilson_ci(k, n, alpha)
        out[f"{name}_k"] = k
        out[f"{name}_n"] = n
    return out


# --------------------------------------------------------------------------------------------
# ROC-AUC / PR-AUC with (cluster) bootstrap, via weighted statistics
# --------------------------------------------------------------------------------------------
def _grouped_weights(y: np.ndarray, prob: np.ndarray, W: np.ndarray):
    """Sum weights of positives and negatives per distinct score (ascending scores).

    W: (B, n) non-negative weights (bootstrap multiplicities). Returns P, N of shape (B, K).
    """
    order = np.argsort(prob, kind="mergesort")
    ps = prob[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    Wo = W[:, order]
    yo = y[order].astype(bool)
    P = np.add.reduceat(np.where(yo, Wo, 0.0), starts, axis=1)
    N = np.add.reduceat(np.where(yo, 0.0, Wo), starts, axis=1)
    return P, N


def _weighted_roc_auc(y: np.ndarray, prob: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count 1/2) for each row of weights; identical to the AUC of the resample."""
    P, N = _grouped_weights(y, prob, W)
    below = np.cumsum(N, axis=1) - N
    num = np.sum(P * (below + 0.5 * N), axis=1)
    tp, tn = P.sum(axis=1), N.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = num / (tp * tn)
    auc[(tp <= 0) | (tn <= 0)] = np.nan
    return auc


def _weighted_ap(y: np.ndarray, prob: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's step definition, ties grouped) for each row of weights."""
    P, N = _grouped_weights(y, prob, W)
    P, N = P[:, ::-1], N[:, ::-1]  # descending thresholds
    tps, fps = np.cumsum(P, axis=1), np.cumsum(N, axis=1)
    tot = tps[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = tps / (tps + fps)
        rec = tps / tot
    d_rec = np.diff(np.concatenate([np.zeros((len(P), 1)), rec], axis=1), axis=1)
    ap = np.sum(np.where(d_rec > 0, d_rec * np.nan_to_num(prec), 0.0), axis=1)
    ap[(tot[:, 0] <= 0) | (N.sum(axis=1) <= 0)] = np.nan
    return ap


def _bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator, groups=None):
    """Yield (b, n) bootstrap multiplicity matrices in chunks (images or whole patients).

    Kept by hand: ``scipy.stats.bootstrap`` resamples observations, not patients, one resample at
    a time; here every resample is a row of weights, computed at once."""
    if groups is None:
        idx, G = np.arange(n), n
    else:
        _, idx = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        G = int(idx.max()) + 1 if n else 0
    chunk = max(1, min(n_boot, int(4e6 // max(n, 1))))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        counts = rng.multinomial(G, np.full(G, 1.0 / G), size=b).astype(np.float64)
        yield counts[:, idx]
        done += b


def _bootstrap_stat(fn, y, prob, n_boot, seed, groups, alpha):
    rng = np.random.default_rng(seed)
    vals = [fn(y, prob, W) for W in _bootstrap_weights(len(y), n_boot, rng, groups)]
    vals = np.concatenate(vals) if vals else np.array([])
    ok = vals[~np.isnan(vals)]
    if len(ok) == 0:
        return float("nan"), float("nan"), 0
    lo, hi = np.percentile(ok, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi), int(len(ok))


def _ranking_ci(kind, y, prob, n_boot, seed, groups, alpha):
    y, prob = as_binary(y), as_prob(prob)
    check_same_length(y, prob)
    if groups is not None:
        groups = np.asarray(groups).ravel()
        check_same_length(y, groups)
    keep = ~np.isnan(prob)
    y, prob = y[keep], prob[keep]
    if groups is not None:
        groups = groups[keep]
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    key = "auc" if kind == "roc" else "pr_auc"
    out = {key: float("nan"), "lo": float("nan"), "hi": float("nan"), "n_pos": n_pos,
           "n_neg": n_neg, "n_boot": int(n_boot), "n_boot_valid": 0,
           "resample": "patients" if groups is not None else "images",
           "n_clusters": int(len(np.unique(groups))) if groups is not None else int(len(y)),
           "reason": ""}
    if n_pos == 0 or n_neg == 0:
        out["reason"] = (f"undefined: only one class present (n_pos={n_pos}, n_neg={n_neg})")
        return out
    fn = _weighted_roc_auc if kind == "roc" else _weighted_ap
    out[key] = float(fn(y, prob, np.ones((1, len(y))))[0])
    if n_boot and n_boot > 0:
        lo, hi, nv = _bootstrap_stat(fn, y, prob, int(n_boot), seed, groups, alpha)
        out.update(lo=lo, hi=hi, n_boot_valid=nv)
        if nv < n_boot:
            out["reason"] = f"{n_boot - nv} of {n_boot} resamples had one class and were skipped"
    else:
        out["reason"] = "no bootstrap requested"
    return out


def auc_ci(y, prob, n_boot: int = 2000, seed: int = 0, groups=None, alpha: float = 0.05) -> dict:
    """ROC-AUC with a percentile bootstrap ``1 - alpha`` interval.

    With ``groups`` (patient ids) whole patients are resampled (cluster bootstrap), so images
    of one patient stay together. Resamples containing a single class are skipped and counted.
    Returns ``dict(auc, lo, hi, n_pos, n_neg, n_boot, n_boot_valid, resample, n_clusters,
    reason)``; a single-class ``y`` gives ``auc = nan`` and the reason.
    """
    return _ranking_ci("roc", y, prob, n_boot, seed, groups, alpha)


def pr_auc_ci(y, prob, n_boot: int = 2000, seed: int = 0, groups=None,
              alpha: float = 0.05) -> dict:
    """PR-AUC as average precision (sklearn's definition) with a percentile bootstrap interval.

    Same resampling and return fields as :func:`auc_ci`, with ``pr_auc`` instead of ``auc``.
    """
    return _ranking_ci("pr", y, prob, n_boot, seed, groups, alpha)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
def brier(y, prob) -> float:
    """Brier score: mean squared difference between probability and 0/1 label (nan if empty).

    ``sklearn.metrics.brier_score_loss``; a missing (nan) probability gives nan, as empty input does.
    """
    y, prob = as_binary(y), as_prob(prob)
    check_same_length(y, prob)
    if len(y) == 0 or np.isnan(prob).any():
        return float("nan")
    return float(skm.brier_score_loss(y, prob, pos_label=1))


def reliability_table(y, prob, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width bins on [0, 1] (the last bin includes 1.0).

    Columns: ``bin_lo, bin_hi, n, mean_prob, frac_pos`` (nan for empty bins).
    """
    y, prob = as_binary(y), as_prob(prob)
    check_same_length(y, prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.floor(prob * n_bins).astype(np.int64) if len(prob) else prob.astype(np.int64),
                0, n_bins - 1)
    rows = []
    for i in range(n_bins):
        m = b == i
        k = int(m.sum())
        rows.append(dict(bin_lo=edges[i], bin_hi=edges[i + 1], n=k,
                         mean_prob=float(prob[m].mean()) if k else float("nan"),
                         frac_pos=float(y[m].mean()) if k else float("nan")))
    return pd.DataFrame(rows)


def ece(y, prob, n_bins: int = 10) -> float:
    """Expected calibration error: sum over equal-width bins of (n_b / n) |frac_pos - mean_prob|."""
    t = reliability_table(y, prob, n_bins)
    n = t["n"].sum()
    if n == 0:
        return float("nan")
    t = t[t["n"] > 0]
    return float(np.sum(t["n"] / n * np.abs(t["frac_pos"] - t["mean_prob"])))


# --------------------------------------------------------------------------------------------
# predictive values at other prevalences (Bayes' rule)
# --------------------------------------------------------------------------------------------
def _ppv(se, sp, p):
    with np.errstate(invalid="ignore", divide="ignore"):
        return se * p / (se * p + (1 - sp) * (1 - p))


def _npv(se, sp, p):
    with np.errstate(invalid="ignore", divide="ignore"):
        return sp * (1 - p) / (sp * (1 - p) + (1 - se) * p)


def ppv_npv_at_prevalence(sens: float, spec: float,
                          prevalences: Iterable[float] = np.linspace(0.01, 0.20, 20),
                          sens_lo: float | None = None, sens_hi: float | None = None,
                          spec_lo: float | None = None, spec_hi: float | None = None
                          ) -> pd.DataFrame:
    """PPV and NPV a test with this sensitivity/specificity (fractions) would have at each prevalence.

    PPV = se p / (se p + (1 - sp)(1 - p)); NPV = sp (1 - p) / (sp (1 - p) + (1 - se) p). Both are
    increasing in se and in sp, so given interval bounds the lower bound uses (se_lo, sp_lo) and
    the upper (se_hi, sp_hi): a conservative box, not a joint confidence interval. Columns:
    ``prevalence, ppv, npv`` and, when bounds are given, ``ppv_lo, ppv_hi, npv_lo, npv_hi``.
    """
    p = np.asarray(list(prevalences), dtype=np.float64)
    df = pd.DataFrame({"prevalence": p, "ppv": _ppv(sens, spec, p), "npv": _npv(sens, spec, p)})
    if any(v is not None for v in (sens_lo, sens_hi, spec_lo, spec_hi)):
        slo = sens if sens_lo is None else sens_lo
        shi = sens if sens_hi is None else sens_hi
        plo = spec if spec_lo is None else spec_lo
        phi = spec if spec_hi is None else spec_hi
        df["ppv_lo"], df["ppv_hi"] = _ppv(slo, plo, p), _ppv(shi, phi, p)
        df["npv_lo"], df["npv_hi"] = _npv(slo, plo, p), _npv(shi, phi, p)
    return df


# --------------------------------------------------------------------------------------------
# threshold choice (inner validation split only)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# tables from predictions
# --------------------------------------------------------------------------------------------
def fold_thresholds(df: pd.DataFrame, threshold_col: str | None, default: float) -> np.ndarray:
    if threshold_col and threshold_col in df.columns:
        t = df[threshold_col].to_numpy(dtype=np.float64)
        return np.where(np.isnan(t), default, t)
    return np.full(len(df), float(default))


def _single_threshold(t: np.ndarray) -> float:
    u = np.unique(t)
    return float(u[0]) if len(u) == 1 else float("nan")


def _matrix_row(y: np.ndarray, prob: np.ndarray, thr: np.ndarray, alpha: float) -> dict:
    cm = confusion(y, predict(prob, thr))
    r = rates(**cm, alpha=alpha)
    row = dict(n=len(y), n_pos=int(y.sum()), n_neg=int(len(y) - y.sum()),
               threshold=_single_threshold(thr), **cm)
    for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = r[name], r[f"{name}_lo"], r[f"{name}_hi"]
    a = auc_ci(y, prob, n_boot=0)
    row["auc"] = a["auc"]
    notes = []
    if row["n_pos"] == 0 or row["n_neg"] == 0:
        notes.append(a["reason"])
    row["note"] = "; ".join(notes)
    return row


def _one_model(preds: pd.DataFrame) -> None:
    if "model" in preds.columns and preds["model"].nunique() > 1:
        raise ValueError(
            f"predictions hold several models {sorted(preds['model'].unique())}; filter to one "
            "model first (or use summarise_models)")


def fold_table(preds: pd.DataFrame, threshold_col: str = "threshold",
               default_threshold: float = 0.5, alpha: float = 0.05) -> pd.DataFrame:
    """Per-fold confusion matrices and rates, the pooled out-of-fold matrix, and the fold mean.

    Rows: one per ``fold`` (kind ``"single matrix"``), ``fold="pooled"`` (all out-of-fold
    predictions in one matrix, kind ``"single matrix"``) and ``fold="mean"`` (the unweighted
    mean of the per-fold rates, as the paper's Table 6 "Average" row, kind
    ``"mean over folds"``; its counts are totals and it has no intervals). Thresholds come from
    ``threshold_col`` per row when present, else ``default_threshold``.

    Columns: ``fold, kind, n, n_pos, n_neg, threshold, tp, fn, fp, tn`` and for ``accuracy,
    sensitivity, specificity, ppv, npv`` the rate (fraction) with ``_lo``/``_hi`` Wilson bounds,
    then ``auc`` (nan when a fold has one class) and ``note``.
    """
    _one_model(preds)
    thr_all = fold_thresholds(preds, threshold_col, default_threshold)
    y_all = as_binary(preds["y"].to_numpy())
    p_all = preds["prob"].to_numpy(dtype=np.float64)
    folds = preds["fold"].to_numpy()
    rows = []
    for f in sorted(pd.unique(folds)):
        m = folds == f
        row = _matrix_row(y_all[m], p_all[m], thr_all[m], alpha)
        rows.append(dict(fold=int(f) if isinstance(f, (int, np.integer)) else f,
                         kind="single matrix", **row))
    per_fold = pd.DataFrame(rows)
    pooled = dict(fold="pooled", kind="single matrix", **_matrix_row(y_all, p_all, thr_all, alpha))
    pooled["note"] = "; ".join(x for x in [pooled["note"], "pooled out-of-fold predictions of "
                                           f"{len(rows)} fold models"] if x)
    mean = dict(fold="mean", kind="mean over folds")
    for c in ("n", "n_pos", "n_neg", "tp", "fn", "fp", "tn"):
        mean[c] = int(per_fold[c].sum()) if len(per_fold) else 0
    mean["threshold"] = _single_threshold(thr_all)
    for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "auc"):
        vals = per_fold[name].to_numpy(dtype=np.float64) if len(per_fold) else np.array([])
        ok = vals[~np.isnan(vals)]
        mean[name] = float(ok.mean()) if len(ok) else float("nan")
        if name != "auc":
            mean[f"{name}_lo"] = mean[f"{name}_hi"] = float("nan")
    n_missing = int(per_fold["auc"].isna().sum()) if len(per_fold) else 0
    mean["note"] = ("unweighted mean of per-fold rates; need not equal the pooled matrix"
                    + (f"; {n_missing} fold(s) without AUC excluded from its mean" if n_missing else ""))
    out = pd.DataFrame(rows + [pooled, mean])
    out["fold"] = out["fold"].astype(object)
    return out


def summarise_models(preds_all: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                     threshold_col: str = "threshold", default_threshold: float = 0.5,
                     cluster_col: str | None = "patient_id", n_bins: int = 10,
                     alpha: float = 0.05) -> pd.DataFrame:
    """One row per ``model`` from its pooled out-of-fold predictions.

    Columns: ``model, n, n_pos, n_neg, n_patients, tp, fn, fp, tn``, ``accuracy``,
    ``sensitivity``, ``specificity``, ``ppv``, ``npv`` (fractions, each with Wilson ``_lo``/
    ``_hi``), ``roc_auc, roc_auc_lo, roc_auc_hi, pr_auc, pr_auc_lo, pr_auc_hi`` (percentile
    bootstrap, resampling patients when ``cluster_col`` is present), ``n_boot_valid``,
    ``brier, ece, note``.
    """
    rows = []
    for model, d in preds_all.groupby("model", sort=True):
        y = as_binary(d["y"].to_numpy())
        prob = d["prob"].to_numpy(dtype=np.float64)
        thr = fold_thresholds(d, threshold_col, default_threshold)
        groups = d[cluster_col].to_numpy() if cluster_col and cluster_col in d.columns else None
        cm = confusion(y, predict(prob, thr))
        r = rates(**cm, alpha=alpha)
        row = dict(model=model, n=len(d), n_pos=int(y.sum()), n_neg=int(len(y) - y.sum()),
                   n_patients=int(len(np.unique(groups))) if groups is not None else np.nan, **cm)
        for name in _RATE_NAMES:
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = (r[name], r[f"{name}_lo"],
                                                               r[f"{name}_hi"])
        a = auc_ci(y, prob, n_boot=n_boot, seed=seed, groups=groups, alpha=alpha)
        p = pr_auc_ci(y, prob, n_boot=n_boot, seed=seed, groups=groups, alpha=alpha)
        row.update(roc_auc=a["auc"], roc_auc_lo=a["lo"], roc_auc_hi=a["hi"], pr_auc=p["pr_auc"],
                   pr_auc_lo=p["lo"], pr_auc_hi=p["hi"], n_boot_valid=a["n_boot_valid"],
                   brier=brier(y, prob), ece=ece(y, prob, n_bins), note=a["reason"])
        rows.append(row)
    return pd.DataFrame(rows)


def stratified(preds: pd.DataFrame, by: str = "view", threshold_col: str = "threshold",
               default_threshold: float = 0.5, alpha: float = 0.05) -> pd.DataFrame:
    """Metrics per stratum of ``by`` (e.g. ``"view"`` or ``"source"``), per model if several.

    Columns: ``model`` (when present), ``by`` value, ``n, n_pos, n_neg, tp, fn, fp, tn``,
    accuracy/sensitivity/specificity with Wilson ``_lo``/``_hi``, ``auc`` and ``note`` (why a
    number is nan, e.g. a stratum with one class). Missing stratum values are labelled
    ``"missing"``.
    """
    if by not in preds.columns:
        raise KeyError(f"predictions have no column {by!r} (columns: {list(preds.columns)})")
    d = preds.copy()
    d[by] = d[by].astype(object).where(d[by].notna(), "missing")
    keys = (["model"] if "model" in d.columns else []) + [by]
    rows = []
    for key, g in d.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        y = as_binary(g["y"].to_numpy())
        prob = g["prob"].to_numpy(dtype=np.float64)
        thr = fold_thresholds(g, threshold_col, default_threshold)
        cm = confusion(y, predict(prob, thr))
        r = rates(**cm, alpha=alpha)
        row = dict(zip(keys, key))
        row.update(n=len(g), n_pos=int(y.sum()), n_neg=int(len(y) - y.sum()), **cm)
        for name in ("accuracy", "sensitivity", "specificity"):
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = (r[name], r[f"{name}_lo"],
                                                               r[f"{name}_hi"])
        a = auc_ci(y, prob, n_boot=0)
        row["auc"] = a["auc"]
        row["note"] = "" if (row["n_pos"] and row["n_neg"]) else \
            f"AUC and one of sensitivity/specificity undefined: {a['reason']}"
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# paired comparisons on the same images
# --------------------------------------------------------------------------------------------
def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def _delong_components(y: np.ndarray, probs: np.ndarray):
    """Structural components (Sun & Xu 2014): AUCs (k,), V10 (k, m) over positives, V01 (k, n)."""
    pos, neg = probs[:, y == 1], probs[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    aucs, v10, v01 = [], [], []
    for k in range(probs.shape[0]):
        tx, ty = _midrank(pos[k]), _midrank(neg[k])
        tz = _midrank(np.r_[pos[k], neg[k]])
        aucs.append((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    return np.array(aucs), np.array(v10), np.array(v01)


def delong_cov(y, *probs, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their covariance matrix by DeLong's method (fast midrank algorithm).

    Kept by hand: neither scipy nor scikit-learn has DeLong, and none has its cluster-robust form.

    Without ``groups``: ``S = S10 / m + S01 / n`` (DeLong et al. 1988, computed as Sun & Xu
    2014). With ``groups`` (patient ids) a cluster-robust (sandwich) estimate in the spirit of
    Obuchowski (1997): the per-image influence terms are summed within each patient and the
    variance is ``K / (K - 1) * sum_k T_k T_k'`` over the K patients.
    Needs at least two positives and two negatives (else all nan).
    """
    y = as_binary(y)
    P = np.vstack([as_prob(p) for p in probs])
    if P.shape[1] != len(y):
        raise ValueError("probabilities and labels have different lengths")
    k = P.shape[0]
    m, n = int(y.sum()), int(len(y) - y.sum())
    if m < 2 or n < 2:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    aucs, v10, v01 = _delong_components(y, P)
    if groups is None:
        S = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
        return aucs, S
    g = np.asarray(groups).astype(str).ravel()
    if len(g) != len(y):
        raise ValueError("groups and labels have different lengths")
    infl = np.zeros((k, len(y)))
    infl[:, y == 1] = (v10 - aucs[:, None]) / m
    infl[:, y == 0] = (v01 - aucs[:, None]) / n
    _, gi = np.unique(g, return_inverse=True)
    K = int(gi.max()) + 1
    T = np.zeros((k, K))
    for j in range(k):
        T[j] = np.bincount(gi, weights=infl[j], minlength=K)
    if K < 2:
        return aucs, np.full((k, k), np.nan)
    S = K / (K - 1) * (T @ T.T)
    return aucs, S


def paired_auc_test(y, prob_a, prob_b, method: str = "delong", n_boot: int = 2000,
                    seed: int = 0, groups=None, alpha: float = 0.05) -> dict:
    """Compare two ROC-AUCs measured on the same images (diff = auc_a - auc_b).

    ``method="delong"``: DeLong's correlated-AUC variance (cluster-robust when ``groups``);
    z = diff / se, two-sided normal p, Wald interval. ``method="bootstrap"``: paired percentile
    bootstrap of the difference (resampling patients when ``groups``), p from the normal
    approximation with the bootstrap standard error.
    Returns ``dict(auc_a, auc_b, diff, lo, hi, p, se, var, z, method, n_pos, n_neg, reason)``.
    """
    y = as_binary(y)
    a, b = as_prob(prob_a), as_prob(prob_b)
    check_same_length(y, a, b)
    m, n = int(y.sum()), int(len(y) - y.sum())
    nan = float("nan")
    out = dict(auc_a=nan, auc_b=nan, diff=nan, lo=nan, hi=nan, p=nan, se=nan, var=nan, z=nan,
               method=method, n_pos=m, n_neg=n, reason="")
    if m == 0 or n == 0:
        out["reason"] = f"undefined: only one class present (n_pos={m}, n_neg={n})"
        return out
    W1 = np.ones((1, len(y)))
    out["auc_a"] = float(_weighted_roc_auc(y, a, W1)[0])
    out["auc_b"] = float(_weighted_roc_auc(y, b, W1)[0])
    out["diff"] = out["auc_a"] - out["auc_b"]
    zq = float(stats.norm.ppf(1 - alpha / 2))
    if method == "delong":
        if m < 2 or n < 2:
            out["reason"] = "DeLong variance needs at least two positives and two negatives"
            return out
        _, S = delong_cov(y, a, b, groups=groups)
        var = float(S[0, 0] + S[1, 1] - 2 * S[0, 1])
        se = math.sqrt(max(var, 0.0))
        out.update(var=var, se=se, lo=out["diff"] - zq * se, hi=out["diff"] + zq * se)
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        diffs = []
        for W in _bootstrap_weights(len(y), int(n_boot), rng, groups):
            diffs.append(_weighted_roc_auc(y, a, W) - _weighted_roc_auc(y, b, W))
        d = np.concatenate(diffs) if diffs else np.array([])
        d = d[~np.isnan(d)]
        if len(d) < 2:
            out["reason"] = "fewer than two valid bootstrap resamples"
            return out
        lo, hi = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        se = float(np.std(d, ddof=1))
        out.update(var=se * se, se=se, lo=float(lo), hi=float(hi))
        if len(d) < n_boot:
            out["reason"] = f"{n_boot - len(d)} of {n_boot} resamples had one class and were skipped"
    else:
        raise ValueError(f"method must be 'delong' or 'bootstrap', got {method!r}")
    se = out["se"]
    if se > 0:
        out["z"] = out["diff"] / se
        out["p"] = float(2 * stats.norm.sf(abs(out["z"])))
    elif out["diff"] == 0:
        out["z"], out["p"] = 0.0, 1.0
        out["reason"] = (out["reason"] + "; " if out["reason"] else "") + "zero variance"
    else:
        out["reason"] = (out["reason"] + "; " if out["reason"] else "") + \
            "zero variance with a non-zero difference; p undefined"
    return out


def mcnemar(y, pred_a, pred_b) -> dict:
    """McNemar's test for paired hard predictions on the same images.

    b = images model a gets right and b gets wrong, c = the reverse. With b + c < 25 the exact
    two-sided binomial test (``statistic`` = b); otherwise chi-square with continuity correction,
    ``(|b - c| - 1)^2 / (b + c)`` on 1 df. b + c = 0 gives p = 1.
    Returns ``dict(b, c, statistic, p, method, n)``.
    """
    y, pa, pb = as_binary(y), as_binary(pred_a), as_binary(pred_b)
    check_same_length(y, pa, pb)
    ca, cb = pa == y, pb == y
    b, c = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    if b + c == 0:
        return dict(b=b, c=c, statistic=0.0, p=1.0, method="none (no discordant pairs)", n=len(y))
    if b + c < 25:
        p = float(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
        return dict(b=b, c=c, statistic=float(b), p=min(1.0, p), method="exact binomial", n=len(y))
    stat = (abs(b - c) - 1.0) ** 2 / (b + c)
    return dict(b=b, c=c, statistic=float(stat), p=float(stats.chi2.sf(stat, 1)),
                method="chi-square with continuity correction", n=len(y))


def _aligned(preds_all: pd.DataFrame, reference: str, other: str) -> pd.DataFrame:
    ref = preds_all[preds_all["model"] == reference]
    oth = preds_all[preds_all["model"] == other]
    for name, d in ((reference, ref), (other, oth)):
        dup = d["image_id"].duplicated()
        if dup.any():
            raise ValueError(f"model {name!r} has duplicated image_id values, e.g. "
                             f"{d.loc[dup, 'image_id'].iloc[:3].tolist()}")
    a, b = set(ref["image_id"]), set(oth["image_id"])
    if a != b:
        raise ValueError(
            f"models {reference!r} and {other!r} were not evaluated on the same images: "
            f"{len(a - b)} only in {reference!r}, {len(b - a)} only in {other!r} "
            f"(e.g. {sorted(map(str, (a ^ b)))[:3]})")
    cols = ["image_id", "y", "prob", "fold"] + [c for c in ("threshold", "patient_id")
                                                if c in preds_all.columns]
    mrg = ref[cols].merge(oth[cols], on="image_id", suffixes=("_ref", "_oth"), validate="1:1")
    if (mrg["y_ref"] != mrg["y_oth"]).any():
        raise ValueError(f"labels differ between {reference!r} and {other!r} for "
                         f"{int((mrg['y_ref'] != mrg['y_oth']).sum())} images")
    if (mrg["fold_ref"] != mrg["fold_oth"]).any():
        raise ValueError(f"models {reference!r} and {other!r} were not evaluated on the same "
                         f"folds: {int((mrg['fold_ref'] != mrg['fold_oth']).sum())} images are in "
                         "different test folds")
    return mrg


def compare_to_reference(preds_all: pd.DataFrame, reference: str = "hrnet",
                         method: str = "delong", n_boot: int = 2000, seed: int = 0,
                         threshold_col: str = "threshold", default_threshold: float = 0.5,
                         cluster_col: str | None = "patient_id",
                         alpha: float = 0.05) -> pd.DataFrame:
    """Paired comparison of every other model with ``reference`` on the same pooled OOF images.

    Rows are aligned by ``image_id``; a ValueError names the problem when the two models were
    not evaluated on the same images, labels or folds. Columns: ``model, reference, n, n_pos,
    n_neg, auc_reference, auc_model, auc_diff`` (reference - model) ``, auc_diff_lo,
    auc_diff_hi, auc_p, auc_method, accuracy_reference, accuracy_model, mcnemar_b`` (reference
    right, model wrong) ``, mcnemar_c, mcnemar_statistic, mcnemar_p, mcnemar_method, note``.
    """
    models = sorted(preds_all["model"].unique())
    if reference not in models:
        raise ValueError(f"reference model {reference!r} not in predictions (models: {models})")
    rows = []
    for other in models:
        if other == reference:
            continue
        d = _aligned(preds_all, reference, other)
        y = as_binary(d["y_ref"].to_numpy())
        pr, po = d["prob_ref"].to_numpy(float), d["prob_oth"].to_numpy(float)
        tr = (fold_thresholds(d.rename(columns={f"{threshold_col}_ref": threshold_col}), threshold_col,
                          default_threshold))
        to = (fold_thresholds(d.rename(columns={f"{threshold_col}_oth": threshold_col}), threshold_col,
                          default_threshold))
        groups = None
        if cluster_col and f"{cluster_col}_ref" in d.columns:
            groups = d[f"{cluster_col}_ref"].to_numpy()
        t = paired_auc_test(y, pr, po, method=method, n_boot=n_boot, seed=seed, groups=groups,
                            alpha=alpha)
        qa, qb = predict(pr, tr), predict(po, to)
        mc = mcnemar(y, qa, qb)
        rows.append(dict(model=other, reference=reference, n=len(y), n_pos=int(y.sum()),
                         n_neg=int(len(y) - y.sum()), auc_reference=t["auc_a"],
                         auc_model=t["auc_b"], auc_diff=t["diff"], auc_diff_lo=t["lo"],
                         auc_diff_hi=t["hi"], auc_p=t["p"], auc_method=method,
                         accuracy_reference=float(np.mean(qa == y)) if len(y) else np.nan,
                         accuracy_model=float(np.mean(qb == y)) if len(y) else np.nan,
                         mcnemar_b=mc["b"], mcnemar_c=mc["c"], mcnemar_statistic=mc["statistic"],
                         mcnemar_p=mc["p"], mcnemar_method=mc["method"], note=t["reason"]))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# training dynamics: plateaus and the pooled-vs-fold AUC gap
# --------------------------------------------------------------------------------------------


def oof_rows(preds, finite: bool = False):
    """The out-of-fold rows of a predictions table (all rows when it has no ``set`` column) with a
    label; ``finite``: also only rows with a finite probability, ``y`` as int."""
    import pandas as pd

    d = preds[preds["set"].astype(str) == "oof"] if "set" in preds.columns else preds
    d = d[d["y"].notna()]
    if finite:
        d = d[np.isfinite(pd.to_numeric(d["prob"], errors="coerce").to_numpy(dtype=np.float64))]
        d = d.assign(y=d["y"].astype(int))
    return d


def model_order(models: Iterable[str], reference: str = "hrnet") -> list[str]:
    """The one order in which every table, figure and summary lists models: the reference (the
    proposed model) first, its unsegmented twin second, then the rest alphabetically."""
    ms = sorted(set(map(str, models)))
    head = [m for m in (reference, f"{reference}_unsegmented") if m in ms]
    return head + [m for m in ms if m not in head]
