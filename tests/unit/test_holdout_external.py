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


def test_the_shipped_rule_is_the_mean_of_folds_at_the_bundles_threshold():
    """Two fold models on three held-out films; the bundle's threshold, not each fold's, decides."""
    from helpers.evidence import heldout

    rows = []
    for fold, probs, thr in ((0, (0.9, 0.5, 0.1), 0.8), (1, (0.7, 0.3, 0.2), 0.2)):
        for i, p in enumerate(probs):
            rows.append(dict(model="hrnet", set="external", fold=fold, image_id=f"i{i}", patient_id=f"p{i}",
                             source="s" if i < 2 else "t", label="covid" if i == 0 else "normal",
                             y=int(i == 0), prob=p, threshold=thr, pred=int(p >= thr)))
    preds = pd.DataFrame(rows + [dict(rows[0], set="oof")])
    t = heldout.shipped_rule(preds, "hrnet", 0.45, n_boot=20).set_index("source")
    a = t.loc["all"]
    assert (a["tp"], a["fn"], a["fp"], a["tn"]) == (1, 0, 0, 2)    # means 0.8, 0.4, 0.15 at 0.45
    assert a["n"] == 3 and t.loc["s", "n"] == 2 and t.loc["t", "n_pos"] == 0
    t2 = heldout.shipped_rule(preds, "hrnet", 0.3, n_boot=20).set_index("source")
    assert t2.loc["all", "fp"] == 1                                  # 0.4 >= 0.3
    assert heldout.shipped_rule(preds[preds["set"] == "oof"], "hrnet", 0.45).empty
