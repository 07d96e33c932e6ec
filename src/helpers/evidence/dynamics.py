"""Training dynamics: had each fold model settled when it was tested?

:func:`plateau_epochs` finds when each run's validation loss stopped improving and whether its
validation AUC was still moving over the last epochs; :func:`auc_gap_table` sets the fold AUCs
against the pooled out-of-fold AUC, with every fold's threshold. Fold models that still move
when training stops score each fold on its own scale: high fold AUCs, a lower pooled AUC and
spread thresholds.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from helpers.decision import as_binary
from helpers.evidence.metrics import auc_ci


def plateau_epochs(history: pd.DataFrame, col: str = "val_loss", smooth: int = 3,
                   window: int = 2, tol: float = 0.02,
                   by: Sequence[str] = ("model", "fold"), final: int = 3,
                   auc_tol: float = 0.03) -> pd.DataFrame:
    """The epoch at which each training run's validation loss stopped improving.

    history: the ``history.csv`` of :func:`helpers.train.cross_validate` (columns ``epoch`` and
    ``col``, plus the grouping columns ``by`` that are present). Per run, ``col`` is smoothed by
    a centred rolling mean of ``smooth`` epochs (1 = no smoothing); the plateau epoch is the
    first epoch ``e`` whose smoothed value the next ``window`` epochs improve on (lower it) by
    less than ``tol`` as a fraction of its value (``tol=0.02``: less than 2 %). A run with fewer
    than ``window`` epochs after any such point has not been shown to settle: ``plateau_epoch``
    is nan and ``reached`` False, i.e. it was still moving when training stopped.

    A first plateau can be followed by more movement (a constant learning rate often jumps
    again), so the end of the run is judged too: with ``val_auc`` in the history,
    ``last_auc_range`` is the range of the validation AUC over the ``final`` last epochs and
    ``settled`` says whether it is at most ``auc_tol``, i.e. the model that is tested had stopped
    moving.

    Columns: the ``by`` columns, ``epochs``, ``plateau_epoch``, ``reached``, ``best_epoch``
    (lowest raw ``col``), ``first_{col}``, ``min_{col}``, ``last_{col}``, and ``last_val_auc``,
    ``last_auc_range`` and ``settled`` when the history has ``val_auc``.
    """
    if col not in history.columns or "epoch" not in history.columns:
        raise KeyError(f"history needs columns 'epoch' and {col!r} (columns: {list(history.columns)})")
    if smooth < 1 or window < 1 or tol < 0:
        raise ValueError(f"need smooth >= 1, window >= 1, tol >= 0; got {smooth}, {window}, {tol}")
    keys = [c for c in by if c in history.columns]
    groups = history.groupby(keys, sort=True) if keys else [((), history)]
    rows = []
    for key, h in groups:
        key = key if isinstance(key, tuple) else (key,)
        h = h.sort_values("epoch")
        raw = h[col].to_numpy(dtype=np.float64)
        epochs = h["epoch"].to_numpy()
        sm = pd.Series(raw).rolling(smooth, center=True, min_periods=1).mean().to_numpy()
        plateau = float("nan")
        for i in range(len(sm) - window):
            if sm[i] - np.nanmin(sm[i + 1:i + 1 + window]) < tol * abs(sm[i]):
                plateau = epochs[i]
                break
        row = dict(zip(keys, key))
        ok = ~np.isnan(raw)
        row.update(epochs=len(h), plateau_epoch=plateau, reached=not np.isnan(plateau),
                   best_epoch=epochs[np.nanargmin(raw)] if ok.any() else np.nan)
        row[f"first_{col}"], row[f"min_{col}"], row[f"last_{col}"] = (
            (raw[0], np.nanmin(raw), raw[-1]) if ok.any() else (np.nan,) * 3)
        if "val_auc" in h.columns:
            auc = h["val_auc"].to_numpy(dtype=np.float64)
            tail = auc[-final:]
            row["last_val_auc"] = float(auc[-1])
            row["last_auc_range"] = (float(np.nanmax(tail) - np.nanmin(tail))
                                     if len(auc) >= final and np.isfinite(tail).any() else float("nan"))
            row["settled"] = bool(row["last_auc_range"] <= auc_tol)  # nan compares False
        rows.append(row)
    return pd.DataFrame(rows)


def auc_gap_table(preds: pd.DataFrame) -> pd.DataFrame:
    """Fold AUCs, their mean, the pooled out-of-fold AUC and every fold's threshold, per model.

    preds: predictions in the schema of :func:`helpers.train.cross_validate` (``fold, y, prob,
    model``, optional ``threshold`` and ``set``; only ``set == 'oof'`` rows are used). Fold
    models that rank well within their own fold but put their scores on different scales (the
    sign of models still moving when training stops) have high fold AUCs, a lower pooled AUC
    and widely spread thresholds; this table shows all three.

    Rows per model: one per fold (``kind='fold'``: ``n, n_pos, n_neg, auc, threshold``), then
    ``fold='mean'`` (mean of the fold AUCs, those without an AUC excluded; mean threshold) and
    ``fold='pooled'`` (the AUC of all out-of-fold predictions together). The two summary rows
    also carry ``auc_gap`` (mean fold AUC minus pooled AUC), ``threshold_min``,
    ``threshold_max`` and ``threshold_range``; nan on fold rows.
    """
    d = preds[preds["set"] == "oof"] if "set" in preds.columns else preds
    if "model" not in d.columns:
        d = d.assign(model="model")
    rows = []
    for model, m in d.groupby("model", sort=True):
        fold_rows = []
        for f, g in m.groupby("fold", sort=True):
            y = as_binary(g["y"].to_numpy())
            thr = np.unique(g["threshold"].to_numpy(dtype=np.float64)) if "threshold" in g else [np.nan]
            fold_rows.append(dict(model=model, fold=f, kind="fold", n=len(g), n_pos=int(y.sum()),
                                  n_neg=int(len(y) - y.sum()),
                                  auc=auc_ci(y, g["prob"].to_numpy(np.float64), n_boot=0)["auc"],
                                  threshold=float(thr[0]) if len(thr) == 1 else np.nan))
        fr = pd.DataFrame(fold_rows)
        y = as_binary(m["y"].to_numpy())
        pooled_auc = auc_ci(y, m["prob"].to_numpy(np.float64), n_boot=0)["auc"]
        aucs, thrs = fr["auc"].dropna(), fr["threshold"].dropna()
        mean_auc = float(aucs.mean()) if len(aucs) else np.nan
        summary = dict(auc_gap=mean_auc - pooled_auc,
                       threshold_min=float(thrs.min()) if len(thrs) else np.nan,
                       threshold_max=float(thrs.max()) if len(thrs) else np.nan)
        summary["threshold_range"] = summary["threshold_max"] - summary["threshold_min"]
        base = dict(model=model, n=len(m), n_pos=int(y.sum()), n_neg=int(len(y) - y.sum()))
        rows += fold_rows
        rows.append(dict(base, fold="mean", kind="mean over folds", auc=mean_auc,
                         threshold=float(thrs.mean()) if len(thrs) else np.nan, **summary))
        rows.append(dict(base, fold="pooled", kind="pooled out-of-fold", auc=pooled_auc,
                         threshold=np.nan, **summary))
    cols = ["model", "fold", "kind", "n", "n_pos", "n_neg", "auc", "threshold", "auc_gap",
            "threshold_min", "threshold_max", "threshold_range"]
    out = pd.DataFrame(rows, columns=cols)
    out["fold"] = out["fold"].astype(object)
    return out


#: a run "did not learn" when its training loss never fell below this fraction of the loss of a
#: constant predictor (the class frequency) from half its epochs on: within 2 % of it
LEARN_TOL = 0.02


def constant_loss(prevalence: float) -> float:
    """Binary cross-entropy of a model that predicts the class frequency ``prevalence`` for every
    film: the training loss a classifier has when it learned nothing (ln 2 at 50 %)."""
    p = float(prevalence)
    if not 0.0 < p < 1.0:
        return 0.0
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)))


def learning(history: pd.DataFrame, prevalence: dict[str, float] | float,
             tol: float = LEARN_TOL) -> pd.DataFrame:
    """Did each model learn? Per model: its fold runs, how many of them did not learn, and the
    verdict.

    A fold run did not learn when every training loss from half its epochs on (epoch >= ceil(E/2))
    stays at or above ``(1 - tol)`` times :func:`constant_loss` of the training class frequency
    (``prevalence``: one value, or one per model): a model that only learned the class balance
    sits at that loss. A model "did not learn" when at least half of its fold runs did not; it is
    kept out of every verdict. Columns: ``model, folds, folds_not_learned, constant_loss,
    first_train_loss, last_train_loss`` (means over folds), ``learned``.
    """
    cols = ["model", "folds", "folds_not_learned", "constant_loss", "first_train_loss",
            "last_train_loss", "learned"]
    if history is None or history.empty or "train_loss" not in history.columns:
        return pd.DataFrame(columns=cols)
    rows = []
    for model, h in history.groupby("model", sort=False):
        prev = prevalence.get(model, np.nan) if isinstance(prevalence, dict) else prevalence
        floor = constant_loss(prev) if np.isfinite(prev) else float(np.log(2))
        flags, first, last = [], [], []
        for _, f in h.groupby("fold") if "fold" in h.columns else [(0, h)]:
            f = f.sort_values("epoch")
            loss = f["train_loss"].to_numpy(dtype=np.float64)
            late = loss[int(np.ceil(len(loss) / 2)) - 1:] if len(loss) > 1 else loss
            flags.append(bool(np.all(late >= (1 - tol) * floor)))
            first.append(loss[0])
            last.append(loss[-1])
        n_not = int(sum(flags))
        rows.append({"model": model, "folds": len(flags), "folds_not_learned": n_not,
                     "constant_loss": floor, "first_train_loss": float(np.mean(first)),
                     "last_train_loss": float(np.mean(last)), "learned": not (2 * n_not >= len(flags))})
    return pd.DataFrame(rows, columns=cols)
