import numpy as np
import pandas as pd
import pytest

from helpers import config, curate
from helpers.data import manifest as mf
from helpers.data import phantoms


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    return phantoms.generate(tmp_path_factory.mktemp("ph"), n_patients=8, images_per_patient=(1, 3),
                             n_seg_pairs=12, size=64, seed=1)


def test_indices_folds_and_arrays(phantom_root, tmp_path):
    p = config.make_profile("smoke", {"n_folds": 3, "seg_folds": 3, "cls_size": 32, "seg_size": 48})
    df = mf.read_manifest(phantom_root)
    cls, seg = curate.build_indices(df, p, seed=0)
    assert cls["image_id"].is_unique and set(cls["y"]) == {0, 1}
    assert cls.groupby("patient_id")["fold"].nunique().max() == 1
    assert set(cls["fold"]) == {0, 1, 2} and set(seg["fold"]) == {0, 1, 2}
    written = curate.decode_arrays(cls, seg, phantom_root, p, tmp_path)
    assert np.load(written["cls_images"]).shape == (len(cls), 32, 32)
    assert np.load(written["cls_images_seg"]).shape == (len(cls), 48, 48)
    m = np.load(written["seg_masks"])
    assert m.shape == (len(seg), 48, 48) and set(np.unique(m)) <= {0, 1}
    assert "cls_masks_true" in written  # phantoms carry true masks for classification images
    t = curate.cohort_table(cls, seg)
    assert t["images"].sum() == len(cls) + len(seg)


def test_limit_per_class_keeps_whole_patients(phantom_root):
    df = mf.read_manifest(phantom_root)
    cls = df[df.split_role == "classify"]
    small = curate.limit_per_class(cls, 5, seed=0)
    for _, part in small.groupby("label"):
        assert 5 <= len(part) <= 5 + 2  # stops after the patient that reaches the cap
    kept = small["patient_id"].unique()
    assert (cls[cls["patient_id"].isin(kept)].shape[0]) == len(small)


def test_one_class_cohort_is_rejected(phantom_root):
    df = mf.read_manifest(phantom_root)
    with pytest.raises(ValueError, match="both covid and non-covid"):
        curate.build_indices(df[df["label"] != "normal"], config.make_profile("smoke"), 0)


def test_duplicate_guard_groups_patients_under_their_smallest_id(monkeypatch):
    from helpers.data import dedup

    manifest = pd.DataFrame({"path": [f"f{i}.png" for i in range(7)],
                             "patient_id": ["p5", "p3", "p9", "p1", "p3", "p7", "p8"]})
    pairs = pd.DataFrame({"patient_a": ["p5", "p9", "p7", "", "p8"],
                          "patient_b": ["p3", "p5", "p7", "p1", "elsewhere"]})
    monkeypatch.setattr(dedup, "find_duplicates", lambda m, root=None: pairs)
    got_pairs, out = curate.duplicate_guard(manifest, root=None)
    assert got_pairs is pairs
    # p5-p3 and p9-p5 join {p3, p5, p9}; a self pair, an empty id and an unknown id join nothing
    assert out["group_id"].tolist() == ["p3", "p3", "p3", "p1", "p3", "p7", "p8"]
    assert out.drop(columns="group_id").equals(manifest)
