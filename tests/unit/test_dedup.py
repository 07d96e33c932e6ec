"""Near-duplicate guard (helpers.data.dedup; paper 3.1 / Table 2) on planted fixtures and the shared data."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import source_fixtures as fx  # noqa: E402

from helpers.data import dedup as D  # noqa: E402
from helpers.data.manifest import read_manifest  # noqa: E402
from helpers.paths import find_shared_data  # noqa: E402


def _planted(tmp_path: Path) -> pd.DataFrame:
    """An original, three altered copies of it and four unrelated images."""
    orig = fx.cxr_like(1, size=(240, 300))
    Image.fromarray(orig).save(tmp_path / "orig.png")
    # copy 1: resized to 70 %, brightened, re-encoded as JPEG
    small = Image.fromarray(orig).resize((168, 210), Image.LANCZOS)
    small = Image.eval(small, lambda v: min(255, int(v * 1.08 + 10)))
    small.save(tmp_path / "copy_small_bright.jpg", quality=80)
    # copy 2: the same film stored as an RGB PNG (different file, same pixels)
    Image.fromarray(np.stack([orig] * 3, -1)).save(tmp_path / "copy_rgb.png")
    # copy 3: 16-bit export of the same image
    Image.fromarray(orig.astype(np.uint16) * 257).save(tmp_path / "copy16.png")
    for k in range(4):
        Image.fromarray(fx.cxr_like(10 + k, size=(240, 300))).save(tmp_path / f"other{k}.png")
    rows = [("orig.png", "ieee8023", "ieee-1", "covid"),
            ("copy_small_bright.jpg", "figure1", "fig1-COVID-00001", "covid"),
            ("copy_rgb.png", "ieee8023", "ieee-1", "covid"),
            ("copy16.png", "nih-cxr8", "nih-00000001", "normal")]
    rows += [(f"other{k}.png", "nih-cxr8", f"nih-0000001{k}", "normal") for k in range(4)]
    return pd.DataFrame(rows, columns=["path", "source", "patient_id", "label"])


def test_planted_duplicates(tmp_path):
    df = _planted(tmp_path)
    pairs = D.find_duplicates(df, root=tmp_path)
    assert list(pairs.columns) == D.PAIR_COLUMNS
    found = {frozenset((a, b)) for a, b in zip(pairs["path_a"], pairs["path_b"])}
    group = ["orig.png", "copy_small_bright.jpg", "copy_rgb.png", "copy16.png"]
    expect = {frozenset((a, b)) for i, a in enumerate(group) for b in group[i + 1:]}
    assert found == expect  # all 6 pairs of the planted group, nothing with the other images
    assert (pairs["hamming"] <= 6).all() and (pairs["corr"] >= 0.95).all()
    assert (pairs["detail_corr"] >= 0.85).all()
    p = pairs.set_index(["path_a", "path_b"])
    key = ("orig.png", "copy_rgb.png")
    same = p.loc[key] if key in p.index else p.loc[key[::-1]]
    assert same["hamming"] == 0 and same["corr"] > 0.999
    assert bool(same["same_patient"]) and not bool(same["cross_source"])
    assert not bool(same["conflicting_label"])
    conflict = pairs[(pairs["path_a"].isin(["copy16.png"])) | (pairs["path_b"].isin(["copy16.png"]))]
    assert conflict["conflicting_label"].all() and conflict["cross_source"].all()
    assert pairs.attrs["n_images"] == 8 and pairs.attrs["errors"] == {}

    groups = D.duplicate_groups(pairs)
    assert set(groups["path"]) == set(group) and groups["group"].nunique() == 1
    g = groups.iloc[0]
    assert g["size"] == 4 and g["n_patients"] == 3 and g["n_sources"] == 3 and g["n_labels"] == 2


def test_absolute_paths_and_unreadable(tmp_path):
    df = _planted(tmp_path)
    df["path"] = [str(tmp_path / p) for p in df["path"]]
    fx.write_image(tmp_path / "bad.png", "corrupt")
    df = pd.concat([df, pd.DataFrame([{"path": str(tmp_path / "bad.png"), "source": "x",
                                       "patient_id": "x-1", "label": "covid"},
                                      {"path": str(tmp_path / "gone.png"), "source": "x",
                                       "patient_id": "x-2", "label": "covid"}])], ignore_index=True)
    pairs = D.find_duplicates(df)
    assert len(pairs) == 6
    assert set(pairs.attrs["errors"]) == {str(tmp_path / "bad.png"), str(tmp_path / "gone.png")}
    assert pairs.attrs["errors"][str(tmp_path / "gone.png")] == "missing file"


def test_thresholds_are_applied(tmp_path):
    df = _planted(tmp_path)
    fp = D.fingerprints([str(tmp_path / p) for p in df["path"]])
    loose = D.find_duplicates(df, tmp_path, max_hamming=64, min_corr=None, min_detail_corr=None, fp=fp)
    assert len(loose) == 8 * 7 // 2  # every pair is a candidate at distance <= 64
    strict = D.find_duplicates(df, tmp_path, max_hamming=0, min_corr=0.999, min_detail_corr=0.99, fp=fp)
    assert {frozenset(x) for x in zip(strict["path_a"], strict["path_b"])} >= {
        frozenset(("orig.png", "copy_rgb.png"))}
    assert (strict["hamming"] == 0).all()


def test_hamming_matrix_matches_python():
    rng = np.random.default_rng(0)
    a = (rng.integers(0, 2**63, size=20, dtype=np.uint64) * np.uint64(2)
         + rng.integers(0, 2, 20).astype(np.uint64))
    b = rng.integers(0, 2**63, size=7, dtype=np.uint64)
    got = D.hamming_matrix(a, b)
    want = np.array([[bin(int(x) ^ int(y)).count("1") for y in b] for x in a])
    assert (got == want).all()
    i, j, d = D.candidate_pairs(np.concatenate([a, a[:3]]), max_hamming=0, block=8)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 20), (1, 21), (2, 22)] and (d == 0).all()


def test_duplicate_groups_components():
    pairs = pd.DataFrame({"path_a": ["a", "b", "d"], "path_b": ["b", "c", "e"],
                          "source_a": ["s1", "s1", "s2"], "source_b": ["s1", "s2", "s2"],
                          "patient_a": ["p1", "p1", "p3"], "patient_b": ["p1", "p2", "p4"],
                          "label_a": ["covid", "covid", ""], "label_b": ["covid", "normal", ""]})
    g = D.duplicate_groups(pairs)
    assert g.groupby("group")["path"].apply(list).tolist() == [["a", "b", "c"], ["d", "e"]]
    c = g.set_index("path").loc["c", ["size", "n_patients", "n_sources", "n_labels"]]
    assert c.tolist() == [3, 2, 2, 2]
    assert g.set_index("path").loc["d", "n_labels"] == 0
    assert D.duplicate_groups(pairs.iloc[:0]).empty



def _union_find_roots(nodes, a, b):
    """Reference: the union-find this module used before scipy (smallest member as the root)."""
    parent = {x: x for x in nodes}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in zip(a, b):
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    return {x: find(x) for x in nodes}


def test_component_roots_match_union_find():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 60))
        nodes = [f"n{int(k):03d}" for k in rng.permutation(200)[:n]]
        m = int(rng.integers(0, 2 * n))
        a = [nodes[int(k)] for k in rng.integers(0, n, m)]
        b = [nodes[int(k)] for k in rng.integers(0, n, m)]   # self-loops and repeats included
        assert D.component_roots(nodes, a, b) == _union_find_roots(nodes, a, b), trial
    assert D.component_roots([], [], []) == {}
    assert D.component_roots(["b", "a"], [], []) == {"a": "a", "b": "b"}


def test_duplicate_groups_numbered_by_smallest_path():
    pairs = pd.DataFrame({"path_a": ["z", "m", "y", "k"], "path_b": ["b", "x", "m", "z"],
                          "source_a": "s", "source_b": "s", "patient_a": "p", "patient_b": "p",
                          "label_a": "", "label_b": ""})
    g = D.duplicate_groups(pairs)
    assert g.groupby("group")["path"].apply(list).tolist() == [["b", "k", "z"], ["m", "x", "y"]]

SHARED = find_shared_data()


@pytest.fixture(scope="module")
def shared_fp():
    df = read_manifest(SHARED)
    return df, D.fingerprints([str(SHARED / p) for p in df["path"]])


@pytest.mark.realdata
@pytest.mark.skipif(SHARED is None, reason="shared real data (manifest.csv) not found; set CXR_DATA_DIR")
def test_shared_data_has_no_duplicates(shared_fp):
    """The shared folder was de-duplicated by its curators (README 'Curation'); confirm it.

    With the full rule (pHash <= 6, 32x32 corr >= 0.95, detail corr >= 0.85): no pair. The
    pHash + 32x32 rule alone flags 4 pairs (3 NIH, 1 Shenzhen) that are different films
    (checked by eye; detail correlation 0.15-0.36) - why the detail check is on by default.
    """
    df, fp = shared_fp
    assert fp.ok.all() and len(df) == 964
    pairs = D.find_duplicates(df, SHARED, fp=fp)
    assert pairs.empty, pairs
    coarse = D.find_duplicates(df, SHARED, min_detail_corr=None, fp=fp)
    assert len(coarse) <= 10
    assert not (coarse["cross_source"] & coarse["conflicting_label"]).any()
    assert (coarse["detail_corr"] < 0.5).all()
