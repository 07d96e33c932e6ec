import numpy as np
import pandas as pd
import pytest

from helpers.data import splits


def _cohort(n_pat=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_pat):
        lab = "covid" if p % 2 else "normal"
        for _ in range(rng.integers(1, 5)):
            rows.append({"patient_id": f"p{p}", "label": lab})
    return pd.DataFrame(rows)


def test_folds_are_patient_disjoint_and_stratified():
    df = _cohort()
    f = splits.patient_folds(df["patient_id"], df["label"], 5, seed=1)
    assert set(f) == set(range(5))
    splits.check_disjoint(df["patient_id"], f)
    # every fold holds both classes
    assert pd.crosstab(f, df["label"]).min().min() > 0


def test_folds_deterministic_per_seed():
    df = _cohort()
    a = splits.patient_folds(df["patient_id"], df["label"], 4, seed=3)
    b = splits.patient_folds(df["patient_id"], df["label"], 4, seed=3)
    c = splits.patient_folds(df["patient_id"], df["label"], 4, seed=4)
    assert (a == b).all() and not (a == c).all()


def test_check_disjoint_catches_leak():
    with pytest.raises(splits.SplitError, match="several folds"):
        splits.check_disjoint(["a", "a", "b"], [0, 1, 1])


def test_too_few_patients():
    with pytest.raises(splits.SplitError, match="cannot fill"):
        splits.patient_folds(["a", "b"], ["x", "y"], 3, 0)


def test_inner_split_grouped_and_about_ten_percent():
    df = _cohort(100)
    idx = np.arange(len(df))
    tr, va = splits.inner_split(idx, df["patient_id"], df["label"], 0.1, seed=0)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(idx)
    assert set(df.patient_id[tr]).isdisjoint(df.patient_id[va])
    assert 0.05 < len(va) / len(idx) < 0.2
    assert df.label[va].nunique() == 2


def test_inner_split_of_a_tiny_training_part_still_validates_both_classes():
    # three images per class cannot give a 10 % validation split: the split takes a third instead
    # of failing (sklearn refuses more splits than a class has members)
    ids = np.array([f"p{i}" for i in range(6)])
    labels = np.array(["covid"] * 3 + ["normal"] * 3)
    tr, va = splits.inner_split(np.arange(6), ids, labels, 0.1, seed=0)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == 6
    assert len(va) == 2 and set(labels[va]) == {"covid", "normal"}
