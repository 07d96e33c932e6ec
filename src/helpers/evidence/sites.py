"""Tests a new hospital cannot fool, read from the stored out-of-fold predictions of every model.

A classifier that recognises the hospital instead of the disease scores well wherever the classes
come from different sources. Three readings take the source away:

* :func:`within_source`: COVID vs non-COVID *inside* one source that gave both classes (ieee8023,
  Figure 1), per model, with a patient-bootstrap interval for the AUC;
* :func:`by_negative`: COVID against each kind of non-COVID film on its own (``normal``,
  ``pneumonia``), all sources pooled;
* :func:`negatives_called_covid`: per source, the share of its non-COVID films that each model calls
  COVID at its fold's frozen threshold, with a Wilson interval: a site where every film comes
  back COVID shows here even when a pooled AUC looks fine.

and, in notebook 05c, :func:`loso_table`: for every site, the proposed model and the thumbnail
floor trained *without* it, and the share of its non-COVID films they call COVID at the threshold
frozen on their training data.

The first three are computed on the pooled out-of-fold rows (``set == "oof"``); the models are
those of ``all_preds.csv`` (notebook 05).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.evidence import metrics
from helpers.evidence.metrics import model_order

__all__ = ["WITHIN_COLUMNS", "NEGATIVE_COLUMNS", "CALLED_COLUMNS", "LOSO_COLUMNS", "within_source",
           "by_negative", "negatives_called_covid", "loso_sites", "loso_folds", "loso_table"]

WITHIN_COLUMNS = ["model", "source", "n", "n_pos", "n_neg", "n_patients", "auc", "auc_lo", "auc_hi"]
NEGATIVE_COLUMNS = ["model", "negatives", "n", "n_pos", "n_neg", "auc", "auc_lo", "auc_hi"]
CALLED_COLUMNS = ["model", "source", "label", "n", "called_covid", "share", "share_lo", "share_hi"]


def _oof(preds: pd.DataFrame) -> pd.DataFrame:
    return metrics.oof_rows(preds, finite=True)


def _auc(part: pd.DataFrame, n_boot: int, seed: int) -> dict:
    a = metrics.auc_ci(part["y"], part["prob"], n_boot=n_boot, seed=seed, groups=part["patient_id"])
    return {"auc": a["auc"], "auc_lo": a["lo"], "auc_hi": a["hi"]}


def within_source(preds: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                  models: list[str] | None = None) -> pd.DataFrame:
    """Per model and per source that gave both classes: COVID vs non-COVID AUC inside that source
    with its patient-bootstrap 95 % interval. Sources with one class are left out (no AUC there);
    an empty frame when no source has both."""
    d = _oof(preds)
    if "source" not in d.columns or d.empty:
        return pd.DataFrame(columns=WITHIN_COLUMNS)
    rows = []
    for model in models or model_order(d["model"].unique()):
        m = d[d["model"] == model]
        for src, part in m.groupby("source", sort=True):
            if part["y"].nunique() < 2:
                continue
            rows.append({"model": model, "source": src, "n": len(part), "n_pos": int(part["y"].sum()),
                         "n_neg": int((part["y"] == 0).sum()),
                         "n_patients": int(part["patient_id"].nunique()), **_auc(part, n_boot, seed)})
    return pd.DataFrame(rows, columns=WITHIN_COLUMNS)


def by_negative(preds: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per model: every COVID film against the non-COVID films of one label at a time (``normal``,
    ``pneumonia``, ...), and against all of them (``all non-COVID``), with patient-bootstrap
    intervals. A model that separates COVID from normal films but not from other pneumonias has
    learned "abnormal" (or the source), not COVID-19."""
    d = _oof(preds)
    if "label" not in d.columns or d.empty:
        return pd.DataFrame(columns=NEGATIVE_COLUMNS)
    rows = []
    neg_labels = sorted(set(d.loc[d["y"] == 0, "label"].astype(str)))
    for model in model_order(d["model"].unique()):
        m = d[d["model"] == model]
        pos = m[m["y"] == 1]
        for lab in [*neg_labels, "all non-COVID"]:
            neg = m[m["y"] == 0] if lab == "all non-COVID" else m[(m["y"] == 0) & (m["label"] == lab)]
            if pos.empty or neg.empty:
                continue
            part = pd.concat([pos, neg])
            rows.append({"model": model, "negatives": lab, "n": len(part), "n_pos": len(pos),
                         "n_neg": len(neg), **_auc(part, n_boot, seed)})
    return pd.DataFrame(rows, columns=NEGATIVE_COLUMNS)


def negatives_called_covid(preds: pd.DataFrame) -> pd.DataFrame:
    """Per model, source and non-COVID label: how many of the films are called COVID at their fold
    model's own threshold (``pred``), as a share with its Wilson 95 % interval."""
    d = _oof(preds)
    if d.empty or "source" not in d.columns:
        return pd.DataFrame(columns=CALLED_COLUMNS)
    d = d[d["y"] == 0]
    if "label" not in d.columns:
        d = d.assign(label="non-COVID")
    rows = []
    for model in model_order(d["model"].unique()):
        m = d[d["model"] == model]
        for (src, lab), part in m.groupby(["source", "label"], sort=True):
            k, n = int(part["pred"].astype(int).sum()), len(part)
            lo, hi = metrics.wilson_ci(k, n)
            rows.append({"model": model, "source": src, "label": lab, "n": n, "called_covid": k,
                         "share": k / n, "share_lo": lo, "share_hi": hi})
    return pd.DataFrame(rows, columns=CALLED_COLUMNS)


# --------------------------------------------------------------------------------------------
# leave one site out (notebook 05c)
# --------------------------------------------------------------------------------------------
LOSO_COLUMNS = ["model", "site", "n", "n_pos", "n_neg", "called_covid", "share", "share_lo", "share_hi",
                "auc", "auc_lo", "auc_hi", "cv_share", "cv_share_lo", "cv_share_hi"]


def loso_sites(index: pd.DataFrame, min_negatives: int = 10) -> list[str]:
    """The sources to leave out one at a time: every source with at least ``min_negatives``
    non-COVID films, most films first (ties by name)."""
    if "source" not in index.columns:
        return []
    neg = index[index["y"].astype(int) == 0].groupby("source").size()
    neg = neg[neg >= min_negatives]
    return sorted(neg.index, key=lambda s: (-int(neg[s]), str(s)))


def loso_folds(index: pd.DataFrame, site: str) -> np.ndarray:
    """A fold column for training without ``site``: 0 for its films (the test set), 1 for every
    other film (trained on, with the inner validation split that freezes the threshold)."""
    return np.where(index["source"].astype(str).to_numpy() == str(site), 0, 1).astype(np.int64)


def loso_table(loso_preds: pd.DataFrame, cv_preds: pd.DataFrame | None = None, n_boot: int = 1000,
               seed: int = 0) -> pd.DataFrame:
    """Per model and left-out site: how many of the site's non-COVID films the model trained
    without it calls COVID at the threshold frozen on its training data (``pred``), with a
    Wilson interval: the false-positive rate at a hospital the model never saw. Where the site
    gave both classes, its AUC too (patient bootstrap). ``cv_preds`` (the cross-validated
    out-of-fold predictions, where the site was in training) adds the same share for
    comparison (``cv_share``)."""
    if loso_preds is None or loso_preds.empty:
        return pd.DataFrame(columns=LOSO_COLUMNS)
    d = loso_preds.assign(y=loso_preds["y"].astype(int), pred=loso_preds["pred"].astype(int))
    cv = _oof(cv_preds) if cv_preds is not None and len(cv_preds) else None
    rows = []
    for model in model_order(d["model"].unique()):
        m = d[d["model"] == model]
        for site, part in m.groupby("site", sort=False):
            neg = part[part["y"] == 0]
            k, n = int(neg["pred"].sum()), len(neg)
            lo, hi = metrics.wilson_ci(k, n) if n else (np.nan, np.nan)
            row = {"model": model, "site": site, "n": len(part), "n_pos": int(part["y"].sum()),
                   "n_neg": n, "called_covid": k, "share": k / n if n else np.nan,
                   "share_lo": lo, "share_hi": hi, "auc": np.nan, "auc_lo": np.nan, "auc_hi": np.nan,
                   "cv_share": np.nan, "cv_share_lo": np.nan, "cv_share_hi": np.nan}
            if part["y"].nunique() == 2:
                row.update(_auc(part, n_boot, seed))
            if cv is not None:
                c = cv[(cv["model"] == model) & (cv["source"].astype(str) == str(site)) & (cv["y"] == 0)]
                if len(c):
                    kc = int(c["pred"].astype(int).sum())
                    clo, chi = metrics.wilson_ci(kc, len(c))
                    row.update(cv_share=kc / len(c), cv_share_lo=clo, cv_share_hi=chi)
            rows.append(row)
    return pd.DataFrame(rows, columns=LOSO_COLUMNS)
