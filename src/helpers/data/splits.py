"""Patient-grouped, stratified folds (Algorithms 1 and 2: ``split(dataset, kfold=10)``).

The paper splits images with KFold; images of one patient can then fall in both the training and
the test part, which inflates test scores. Here every split groups by ``patient_id``
(``StratifiedGroupKFold``), is computed once in curation, saved as a table and checked
patient-disjoint before any model is trained.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold


class SplitError(ValueError):
    """Folds that cannot be made or that leak patients between parts."""


def split_groups(index: pd.DataFrame) -> pd.Series:
    """The unit every split keeps together: the duplicate-aware ``group_id`` when curation made one
    (near-duplicate films of different patient ids share it), else ``patient_id``."""
    return index["group_id"] if "group_id" in index else index["patient_id"]


def patient_folds(groups: np.ndarray | pd.Series, strata: np.ndarray | pd.Series, n_folds: int,
                  seed: int) -> np.ndarray:
    """Assign every row a test fold in ``0..n_folds-1``: int64 (N,).

    Rows sharing a group (patient) share a fold; folds are balanced over ``strata`` (label and
    source for classification, the source for segmentation) as far as the groups allow.
    """
    groups = np.asarray(groups).astype(str)
    strata = np.asarray(strata).astype(str)
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise SplitError(f"{n_groups} patients cannot fill {n_folds} folds; lower n_folds")
    folds = np.full(len(groups), -1, dtype=np.int64)
    skf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a stratum smaller than n_folds is balanced as far as it goes
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for k, (_, test) in enumerate(skf.split(np.zeros(len(groups)), strata, groups)):
            folds[test] = k
    assert (folds >= 0).all()
    return folds


def inner_split(train_idx: np.ndarray, groups: np.ndarray | pd.Series,
                strata: np.ndarray | pd.Series, fraction: float, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Split a training part into (train, validation) index arrays, grouped by patient.

    ``fraction`` of the patients (about; stratified) go to validation: Algorithm 1 line 5,
    ``split(train_data, split_size=0.1)``. A training part too small for that fraction (fewer
    images of a class than 1 / fraction, as in the paper profile's code-path test) gets a larger
    validation share: at most as many splits as the smallest class has images, and at least two.
    """
    train_idx = np.asarray(train_idx)
    g = np.asarray(groups).astype(str)[train_idx]
    s = np.asarray(strata).astype(str)[train_idx]
    n_splits = max(2, int(round(1.0 / fraction)))
    n_groups = len(np.unique(g))
    if n_groups < 2:
        raise SplitError("a training part with fewer than 2 patients cannot be split")
    n_splits = max(2, min(n_splits, n_groups, int(np.unique(s, return_counts=True)[1].min())))
    skf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    tr, va = next(iter(skf.split(np.zeros(len(g)), s, g)))
    return train_idx[tr], train_idx[va]


def check_disjoint(groups: np.ndarray | pd.Series, folds: np.ndarray | pd.Series) -> None:
    """Raise :class:`SplitError` if any patient appears in more than one fold."""
    df = pd.DataFrame({"g": np.asarray(groups).astype(str), "f": np.asarray(folds)})
    n = df.groupby("g")["f"].nunique()
    bad = n[n > 1]
    if len(bad):
        raise SplitError(f"{len(bad)} patient(s) appear in several folds, e.g. {list(bad.index[:5])}")


def fold_summary(df: pd.DataFrame, fold_col: str = "fold", by: str = "label") -> pd.DataFrame:
    """Images and patients per fold and stratum, for the curation notebook."""
    imgs = df.pivot_table(index=fold_col, columns=by, values="patient_id", aggfunc="size",
                          fill_value=0)
    imgs.columns = [f"images_{c}" for c in imgs.columns]
    pats = df.groupby(fold_col)["patient_id"].nunique().rename("patients")
    out = imgs.join(pats).reset_index()
    return out
