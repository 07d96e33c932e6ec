import numpy as np
import pandas as pd
import pytest

from helpers import config, refine


def test_iterations_scale_with_side():
    assert refine.scaled_iterations(8, 512) == 8
    assert refine.scaled_iterations(8, 256) == 4
    assert refine.scaled_iterations(2, 64) == 1  # never below one
    assert refine.scaled_iterations(0, 64) == 0


def test_dilation_of_a_single_pixel_grows_a_square():
    m = np.zeros((41, 41), np.uint8)
    m[20, 20] = 1
    r = refine.refine_mask(m, dilate_iters=8, close_iters=0)
    ys, xs = np.nonzero(r)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (12, 28, 12, 28)
    assert r.sum() == 17 * 17


def test_closing_fills_a_small_gap_and_never_shrinks():
    m = np.zeros((40, 40), np.uint8)
    m[10:30, 5:18] = 1
    m[10:30, 20:35] = 1  # two-pixel gap at columns 18-19
    r = refine.refine_mask(m, dilate_iters=0, close_iters=2)
    assert r[20, 18] == 1 and r[20, 19] == 1
    assert (r >= m).all()


def test_refine_all_area_threshold_and_pass_table():
    p = config.make_profile("paper", {"seg_size": 64})
    probs = np.zeros((3, 64, 64), np.float32)
    probs[0, 10:50, 10:50] = 0.9   # big lungs
    probs[1, 30:33, 30:33] = 0.9   # tiny blob
    raw, ref, area = refine.refine_all(probs, p)
    thr = refine.area_threshold(p, 64)
    assert thr == round(50_000 / 64)
    assert raw[2].sum() == 0 and area[2] == 0
    assert area[0] >= thr > area[1]
    t = refine.pass_table(pd.Series(["covid", "covid", "normal"]), area >= thr)
    row = t.set_index("label").loc["covid"]
    assert (row["total"], row["passed"], row["failed"]) == (2, 1, 1)
    assert t.set_index("label").loc["all", "total"] == 3


def test_apply_mask_zeros_outside():
    img = np.full((1, 8, 8), 200, np.uint8)
    m = np.zeros((1, 8, 8), np.uint8)
    m[0, 2:4, 2:4] = 1
    out = refine.apply_mask(img, m)
    assert out.sum() == 4 * 200 and out[0, 2, 2] == 200


def test_resize_masks_nearest_stays_binary():
    m = (np.random.default_rng(0).random((2, 64, 64)) > 0.5).astype(np.uint8)
    r = refine.resize_masks(m, 32)
    assert r.shape == (2, 32, 32) and set(np.unique(r)) <= {0, 1}


def test_pass_rate_and_lung_area_per_label_and_source():
    """Known answers: covid keeps 1 of 2, non-covid (normal + pneumonia) 3 of 3; gap -50 points."""
    idx = pd.DataFrame({"label": ["covid", "covid", "normal", "normal", "pneumonia"],
                        "source": ["a", "b", "b", "b", "a"]})
    area = np.array([10, 40, 50, 60, 30])                 # of a 10 x 10 image
    t = refine.pass_by_group(idx, area, area >= 30, size=10)
    row = t.set_index(["label", "source"])
    assert row.loc[("covid", "all"), "kept_%"] == 50.0
    assert row.loc[("non-covid", "all"), "passed"] == 3
    assert row.loc[("normal", "b"), "lung_area_%"] == 55.0
    assert row.loc[("all", "all"), "total"] == 5
    assert refine.pass_gap(t) == -50.0
    assert np.isnan(refine.pass_gap(refine.pass_by_group(idx.iloc[:2], area[:2], area[:2] >= 30, 10)))
    with pytest.raises(ValueError, match="index rows"):
        refine.pass_by_group(idx, area[:3], area[:3] >= 30, 10)
