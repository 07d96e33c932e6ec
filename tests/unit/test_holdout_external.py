import numpy as np
import pandas as pd
import pytest

from helpers import curate
from helpers.data import holdout, phantoms
from helpers.data import manifest as mf
from helpers.evidence import heldout


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return phantoms.generate(tmp_path_factory.mktemp("ph"), n_patients=10, n_seg_pairs=9, size=64, seed=2)


def test_split_is_patient_disjoint_and_points_at_originals(root, tmp_path):
    internal, ext = holdout.split(root, sources=["phantom-b"], patient_fraction=0.2, seed=0)
    assert not set(internal.patient_id) & set(ext.patient_id)
    assert "phantom-b" not in set(internal.source)
    assert len(internal) + len(ext) == len(mf.read_manifest(root))
    mf.write_manifest(ext, tmp_path / "ext")
    back = mf.read_manifest(tmp_path / "ext")  # absolute paths resolve, files exist
    assert len(back) == len(ext)


def test_split_unknown_source(root):
    with pytest.raises(ValueError, match="no source"):
        holdout.split(root, sources=["nih"])


def test_external_disjointness_check(root, tmp_path):
    import shutil
    df = mf.read_manifest(root)
    a, b = df.iloc[:20], df.iloc[20:]
    shared_pat = b.assign(patient_id=a.patient_id.iloc[0])
    with pytest.raises(ValueError, match="shares 1 patient"):
        curate.check_disjoint(a, shared_pat.iloc[:1], root, root)
    shutil.copy(root / a.path.iloc[0], tmp_path / "copy.png")  # the same film, filed elsewhere
    copy = a.iloc[:1].assign(patient_id="someone-else", path="copy.png")
    with pytest.raises(ValueError, match="near-duplicates"):
        curate.check_disjoint(a, copy, root, tmp_path)
    assert curate.check_disjoint(a, b[~b.patient_id.isin(a.patient_id)], root, root).empty


def test_external_table_mean_of_folds():
    rows = []
    for fold in (0, 1):
        for i, (y, p) in enumerate([(1, 0.9), (1, 0.6), (0, 0.2), (0, 0.7)]):
            rows.append({"model": "m", "fold": fold, "set": "external", "image_id": f"i{i}",
                         "patient_id": f"p{i}",
                         "source": "s", "y": y, "prob": p if fold == 0 else p - 0.1, "threshold": 0.5,
                         "pred": int((p if fold == 0 else p - 0.1) >= 0.5)})
    preds = pd.DataFrame(rows)
    mean = heldout.mean_of_folds(preds)
    assert np.allclose(mean.sort_values("image_id")["prob"], [0.85, 0.55, 0.15, 0.65])
    t = heldout.table(preds, n_boot=50)
    row = t[(t.fold == "mean") & (t.source == "all")].iloc[0]
    assert (row.tp, row.fn, row.fp, row.tn) == (2, 0, 1, 1) and row.auc == pytest.approx(0.75)
    assert set(t.fold) == {"0", "1", "mean"}


def test_a_held_out_set_is_named_by_its_sources():
    """External only when no source of it gave training films; otherwise a patient hold-out."""
    from helpers.evidence import heldout

    assert heldout.kind(["ieee8023", "nih-cxr8"], ["padchest"]) == {
        "kind": "external", "shared": [], "new": ["padchest"]}
    assert heldout.kind(["ieee8023", "nih-cxr8"], ["ieee8023", "nih-cxr8"])["kind"] == "patient hold-out"
    mixed = heldout.kind(["ieee8023", "nih-cxr8"], ["figure1", "ieee8023", "figure1"])
    assert mixed == {"kind": "patient hold-out and external", "shared": ["ieee8023"], "new": ["figure1"]}
