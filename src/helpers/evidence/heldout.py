"""Held-out films scored by every fold model and by the mean of the fold models.

Films kept out of the cross-validation (``EXTERNAL_DATA_DIR``) are predicted by every fold model
of every classifier (:func:`helpers.train.cross_validate` with ``extra=``); here their results
are tabulated per model, per fold model and for the mean of the fold models, per source and
overall, with 95 % intervals (Wilson for the rates, a patient bootstrap for the AUC).
"""
from __future__ import annotations

import pandas as pd

from helpers.evidence import metrics


def mean_of_folds(preds: pd.DataFrame, set_name: str = "external") -> pd.DataFrame:
    """Per model, average the fold models' probabilities on each external image.

    The decision threshold of the mean model is the mean of the folds' thresholds (each chosen
    on its own inner validation split). Returned rows have ``fold = "mean"``.
    """
    e = preds[preds["set"] == set_name]
    if e.empty:
        return e.copy()
    keys = [c for c in ("model", "image_id", "patient_id", "source", "view", "label", "y") if c in e]
    g = (e.groupby(keys, dropna=False)
         .agg(prob=("prob", "mean"), threshold=("threshold", "mean")).reset_index())
    g["pred"] = (g["prob"] >= g["threshold"]).astype(int)
    g["fold"], g["set"] = "mean", set_name
    return g


def _row(part: pd.DataFrame, n_boot: int, seed: int) -> dict:
    m = metrics.confusion(part["y"], part["pred"])
    r = metrics.rates(**m)
    a = metrics.auc_ci(part["y"], part["prob"], n_boot=n_boot, seed=seed, groups=part["patient_id"])
    out = {"n": len(part), "n_pos": int(part["y"].sum()), "n_neg": int((1 - part["y"]).sum()), **m,
           "auc": a["auc"], "auc_lo": a["lo"], "auc_hi": a["hi"]}
    for k in ("accuracy", "sensitivity", "specificity"):
        out.update({k: r[k], f"{k}_lo": r[f"{k}_lo"], f"{k}_hi": r[f"{k}_hi"]})
    return out


def table(preds: pd.DataFrame, n_boot: int = 1000, seed: int = 0, set_name: str = "external") -> pd.DataFrame:
    """External results: per model, per fold model and the mean of folds, per source and overall."""
    e = preds[preds["set"] == set_name].copy()
    if e.empty:
        return pd.DataFrame()
    both = pd.concat([e.assign(fold=e["fold"].astype(str)), mean_of_folds(preds, set_name)],
                     ignore_index=True)
    rows = []
    for (model, fold), part in both.groupby(["model", "fold"], sort=True):
        rows.append({"model": model, "fold": fold, "source": "all", **_row(part, n_boot, seed)})
        for src, sp in part.groupby("source"):
            rows.append({"model": model, "fold": fold, "source": src, **_row(sp, n_boot, seed)})
    return pd.DataFrame(rows)



def shipped_rule(preds: pd.DataFrame, model: str, threshold: float, n_boot: int = 1000, seed: int = 0,
                 set_name: str = "external") -> pd.DataFrame:
    """The exported bundle's own decision on held-out films: per image the mean of ``model``'s fold
    probabilities, called COVID at ``threshold`` (the bundle's one threshold, not each fold's).

    Only films no fold trained on can be scored this way (an out-of-fold film was seen by every
    other fold model). Rows per source and "all" with the confusion counts, rates (Wilson) and
    AUC (patient bootstrap); empty when the run scored no such film.
    """
    p = preds[(preds["model"].astype(str) == model)] if "model" in preds else preds
    m = mean_of_folds(p, set_name)
    if m.empty:
        return pd.DataFrame()
    m = m.assign(threshold=float(threshold), pred=(m["prob"] >= float(threshold)).astype(int))
    rows = [{"model": model, "threshold": float(threshold), "source": "all", **_row(m, n_boot, seed)}]
    rows += [{"model": model, "threshold": float(threshold), "source": src, **_row(sp, n_boot, seed)}
             for src, sp in m.groupby("source")]
    return pd.DataFrame(rows)


def kind(training_sources, heldout_sources) -> dict:
    """What a held-out set is, honestly named from its sources and the training sources.

    A held-out set whose every source also gave training films is a **patient hold-out**: its
    films are new, their hospital is not, so a source signal learned in training still helps.
    Only a source never used in training is **external**. Returns ``{"kind": "external" |
    "patient hold-out" | "patient hold-out and external", "shared": [...], "new": [...]}`` with
    the held-out sources sorted into the two lists.
    """
    train = {str(s) for s in training_sources}
    held = sorted({str(s) for s in heldout_sources})
    shared, new = [s for s in held if s in train], [s for s in held if s not in train]
    name = ("external" if not shared else "patient hold-out" if not new
            else "patient hold-out and external")
    return {"kind": name, "shared": shared, "new": new}
