"""De-confounded classifier inputs on phantoms: the crop keeps the lungs, standardisation ignores gain."""
import numpy as np
import pytest

from helpers import config, inputs, preprocess, refine
from helpers.data import decode, phantoms
from helpers.run import store


@pytest.fixture(scope="module")
def films():
    """Eight 96 px phantoms with their refined lung masks (dilated as in notebook 03)."""
    rng = np.random.default_rng(1)
    out = [phantoms.render(rng, 96, i % 2 == 0, "ab"[i % 2], severity=0.6) for i in range(8)]
    imgs = np.stack([o[0] for o in out])
    masks = np.stack([refine.refine_mask(o[1], 2, 1) for o in out])
    return imgs, masks


@pytest.mark.parametrize("margin", [0.0, 0.05, 0.3])
def test_crop_keeps_every_mask_pixel(films, margin):
    imgs, masks = films
    for im, m in zip(imgs, masks):
        y0, y1, x0, x1 = preprocess.lung_box(m, margin)
        ys, xs = np.nonzero(m)
        assert y0 <= ys.min() and ys.max() < y1 and x0 <= xs.min() and xs.max() < x1
        assert 0 <= y0 < y1 <= 96 and 0 <= x0 < x1 <= 96
        if margin <= 0.05:
            assert y1 - y0 == x1 - x0  # square when it fits in the image
        c_im, c_m = preprocess.crop_to_lungs(im, m, 64, margin)
        assert c_im.shape == c_m.shape == (64, 64) and c_im.dtype == np.uint8
        # the lungs fill at least as much of the crop as of the film
        assert c_m.mean() >= m.mean() - 0.01


def test_crop_near_the_edge_is_moved_inside_and_keeps_the_mask():
    m = np.zeros((50, 50), np.uint8)
    m[0:20, 35:50] = 1   # touches the top and right edges
    y0, y1, x0, x1 = preprocess.lung_box(m, 0.2)
    assert (y0, x1) == (0, 50) and y1 - y0 == x1 - x0 == 28
    assert preprocess.lung_box(np.zeros((10, 12), np.uint8)) == (0, 10, 0, 12)  # empty: whole image


def test_film_box_and_crop_inside_the_film():
    # a 400 x 500 film padded to 500 x 500 then resized to 100: bars of 10 px top and bottom
    assert preprocess.film_box((400, 500), 100) == (10, 90, 0, 100)
    film = decode.square(np.full((400, 500), 200, np.uint8), 100)
    m = np.zeros((100, 100), np.uint8)
    m[15:60, 20:80] = 1  # lung box 45 x 60: the square crop would reach the top bar
    bounds = preprocess.film_box((400, 500), 100)
    y0, y1, x0, x1 = preprocess.lung_box(m, 0.1, bounds)
    assert y0 >= 10 and y1 <= 90
    im, _ = preprocess.crop_to_lungs(film, m, 32, 0.1, bounds)
    assert im.min() == 200  # no padding in the crop
    assert preprocess.lung_box(m, 0.1)[0] < 10  # without the bounds it would have entered the bar


def test_standardisation_ignores_gain_and_offset(films):
    imgs, masks = films
    for im, m in zip(imgs, masks):
        a = preprocess.standardise_in_lungs(im, m)
        dim = np.clip(np.round(im * 0.7 + 20), 0, 255).astype(np.uint8)
        b = preprocess.standardise_in_lungs(dim, m)
        lung = m > 0
        diff = np.abs(a[lung].astype(int) - b[lung].astype(int))
        assert np.percentile(diff, 99) <= 2 and diff.mean() < 1.0
        lo, hi = np.percentile(a[lung], preprocess.LUNG_PERCENTILES)
        assert abs(lo - preprocess.LUNG_TARGETS[0]) <= 1 and abs(hi - preprocess.LUNG_TARGETS[1]) <= 1
    flat = np.full((8, 8), 90, np.uint8)
    assert (preprocess.standardise_in_lungs(flat, np.ones((8, 8))) == flat).all()


def test_classifier_inputs_off_is_identity_and_on_is_consistent(films):
    imgs, masks = films
    off = config.make_profile("smoke", {"cls_size": 64})
    x = preprocess.classifier_inputs(imgs, masks, off)
    assert (x["images"] == imgs).all() and not preprocess.uses_preprocessing(off)
    on = config.make_profile("cpu", {"cls_size": 64, "cls_crop_lungs": True, "cls_lung_standardise": True,
                                     "cls_film_only": True})
    assert preprocess.uses_preprocessing(on)
    shapes = np.tile([96, 96], (len(imgs), 1))
    raw = (masks > 0) & (np.arange(96) % 2 == 0)[None, None, :]  # any carried mask
    u = preprocess.classifier_inputs(imgs, masks, on, segmented=False, shapes=shapes, carry={"raw": raw})
    s = preprocess.classifier_inputs(refine.apply_mask(imgs, masks), masks, on, segmented=True, shapes=shapes)
    assert u["images"].shape == s["images"].shape == u["raw"].shape == (len(imgs), 64, 64)
    assert (s["images"][s["masks"] == 0] == 0).all()       # segmented background stays black
    # inside the lungs (away from the edge, which resizing blends with black) it equals its unsegmented twin
    inside = np.stack([refine.cv2.erode(m, np.ones((3, 3), np.uint8), iterations=2) for m in s["masks"]]) > 0
    assert np.abs(s["images"][inside].astype(int) - u["images"][inside]).max() <= 1
    with pytest.raises(ValueError, match="original shapes"):
        preprocess.classifier_inputs(imgs, masks, on)


def test_deconf_profile_is_cpu_plus_the_ladder():
    cpu, dec = config.make_profile("cpu"), config.make_profile("cpu-deconf")
    for p in ("smoke", "cpu", "paper"):
        q = config.make_profile(p)
        assert not (q.cls_crop_lungs or q.cls_lung_standardise or q.cls_film_only)
    changed = {k for k, v in cpu.to_dict().items() if dec.to_dict()[k] != v}
    assert changed == {"name", "ladder"} and dec.ladder == config.LADDER_RUNGS
    with pytest.raises(ValueError, match="cls_crop_lungs"):
        config.make_profile("cpu", {"cls_film_only": True})


@pytest.mark.parametrize("with_file_column", [True, False])
def test_external_films_keep_their_own_geometry_under_film_only(films, tmp_path, with_file_column):
    """``cls_film_only`` needs each external film's original size: from the index's ``file`` column
    (what curation writes), or from ``path`` in runs curated before it had one (absolute there)."""
    import pandas as pd
    from PIL import Image

    from helpers.run.artefacts import ART

    imgs, masks = films
    ext = tmp_path / "ext"
    ext.mkdir()
    paths = []
    for i, (w, h) in enumerate([(120, 96), (96, 140), (96, 96), (200, 100)]):
        paths.append(str(ext / f"f{i}.png"))
        Image.fromarray(np.zeros((h, w), np.uint8)).save(paths[-1])
    cfg = config.resolve("smoke", out_dir=tmp_path / "run", external_data_dir=ext,
                         overrides={"cls_size": 96, "cls_crop_lungs": True, "cls_film_only": True})
    idx = pd.DataFrame({"image_id": [f"e{i}" for i in range(4)], "path": paths, "y": [1, 0, 1, 0]})
    if with_file_column:
        idx["file"] = paths
    store.save_csv(idx, ART.ext_cls_index.path(cfg))
    store.save_csv(idx[["image_id"]].assign(area=100, passed=True), ART.ext_refine_index.path(cfg))
    store.save_npy(imgs[:4], ART.ext_segmented.path(cfg))
    store.save_npy(masks[:4], ART.ext_masks_refined_cls.path(cfg))
    (e,) = inputs.external_set(cfg, segmented=True).values()
    assert e["images"].shape == (4, 96, 96) and e["images"].dtype == np.uint8
    assert not np.array_equal(e["images"], imgs[:4])  # the crop acted
