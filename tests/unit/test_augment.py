"""Table 3 augmentation: parameters, joint image/mask geometry, binary masks, seeding."""
from __future__ import annotations

import math
import pickle

import albumentations as A
import cv2
import numpy as np
import pytest

from helpers import augment as ag

SIZE = 128


def _synthetic(size=SIZE):
    """Grey image with a bright square planted inside an off-centre rectangular 'lung' mask, so that
    rotations about the centre move both."""
    img = np.full((size, size), 70, np.uint8)
    img[::7, :] = 90  # some texture
    s0, s1 = int(size * 0.2), int(size * 0.4)
    img[s0:s1, s0:s1] = 255
    mask = np.zeros((size, size), np.uint8)
    mask[s0 - 3: s1 + 3, s0 - 3: s1 + 3] = 1      # tight around the square
    return img, mask, (s1 - s0) ** 2


def test_table3_parameters_in_pipeline():
    pipe = ag.table3_pipeline(512, seed=0)
    t = list(pipe.transforms)
    assert [type(x) for x in t] == [A.Affine, A.Affine, A.Affine, A.PadIfNeeded, A.CenterCrop,
                                    A.RandomGamma, A.SaltAndPepper, A.GaussianBlur, A.GaussNoise]
    assert [x.p for x in t] == [1, 1, 0.7, 1, 1, 1, 0.3, 0.5, 0.3]
    scale, rot, shear, pad, crop, gamma, sp, blur, noise = t
    assert scale.scale == {"x": (0.8, 1.1), "y": (1.0, 1.0)}
    assert rot.rotate == (-45, 45)
    assert shear.shear["x"] == pytest.approx((-math.degrees(math.atan(0.2)), math.degrees(math.atan(0.2))))
    assert shear.shear["y"] == (0, 0)
    for geo in (scale, rot, shear):
        assert geo.border_mode == cv2.BORDER_CONSTANT and geo.fill == 0 and geo.fill_mask == 0
        assert geo.mask_interpolation == cv2.INTER_NEAREST
    assert (pad.min_height, pad.min_width, pad.border_mode, pad.fill) == (512, 512, cv2.BORDER_CONSTANT, 0)
    assert (crop.height, crop.width) == (512, 512)
    assert gamma.gamma_limit == (50, 300)
    assert sp.amount == (0.01, 0.01)
    assert blur.blur_limit == (11, 11) and blur.sigma_limit == (0.5, 0.5)
    assert noise.std_range == ag.NOISE_STD_RANGE
    assert len(ag.TABLE3) == 9
    assert [r["probability"] for r in ag.TABLE3] == [x.p for x in t]
    keys = {"process", "values", "probability", "transform", "interpretation"}
    assert all(keys <= set(r) for r in ag.TABLE3)


def test_blur_kernel_scales_with_size():
    assert ag.blur_kernel(512) == 11
    for s in (32, 64, 96, 160, 256, 384, 1024):
        k = ag.blur_kernel(s)
        assert k % 2 == 1 and k >= 3
    assert ag.blur_kernel(64) == 3
    assert ag.table3_pipeline(64).transforms[7].blur_limit == (3, 3)


def test_same_seed_same_output_different_seed_different():
    img, mask, _ = _synthetic()
    a = ag.augmentation_samples(img, mask, SIZE, 4, seed=3)
    b = ag.augmentation_samples(img, mask, SIZE, 4, seed=3)
    c = ag.augmentation_samples(img, mask, SIZE, 4, seed=4)
    for (ia, ma), (ib, mb) in zip(a, b):
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
    assert any(not np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c))
    # successive draws of one stream differ
    assert not np.array_equal(a[0][0], a[1][0])


def test_per_sample_seed_is_order_and_copy_independent():
    img, mask, _ = _synthetic()
    pipe = ag.table3_pipeline(SIZE)
    clone = pickle.loads(pickle.dumps(pipe))  # what a DataLoader worker receives
    s = ag.sample_seed(0, 1, 5)
    x1, m1 = ag.apply(pipe, img, mask, seed=s)
    ag.apply(pipe, img, mask, seed=ag.sample_seed(0, 1, 6))
    x2, m2 = ag.apply(clone, img, mask, seed=s)
    assert np.array_equal(x1, x2) and np.array_equal(m1, m2)
    assert ag.sample_seed(0, 1, 5) != ag.sample_seed(0, 2, 5) != ag.sample_seed(1, 1, 5)


def test_seeded_pipeline_epoch_and_worker():
    img, _, _ = _synthetic()
    out = lambda p: ag.apply(p, img)[0]  # noqa: E731
    assert np.array_equal(out(ag.seeded_pipeline(SIZE, 7, epoch=2)),
                          out(ag.seeded_pipeline(SIZE, 7, 2, worker=0)))
    assert not np.array_equal(out(ag.seeded_pipeline(SIZE, 7, 2, worker=0)),
                              out(ag.seeded_pipeline(SIZE, 7, 2, worker=1)))
    assert not np.array_equal(out(ag.seeded_pipeline(SIZE, 7, 2)), out(ag.seeded_pipeline(SIZE, 7, 3)))


def test_transforms_are_independent_draws():
    """albumentations seeds each transform identically; SeededCompose must decorrelate them."""
    img, _, _ = _synthetic(32)
    both = single = 0
    for s in range(200):
        pipe = ag.table3_pipeline(32, seed=s)
        pipe.save_applied_params = True
        names = {n for n, _ in pipe(image=img)["applied_transforms"]}
        sp, gn = "SaltAndPepper" in names, "GaussNoise" in names
        both += sp and gn
        single += sp != gn
    assert single > 40          # expected 84 of 200 if independent, 0 with identical seeding
    assert 5 <= both <= 35      # expected 18


def _check_joint(seed):
    img, mask, square_area = _synthetic()
    out, m = ag.apply(ag.table3_pipeline(SIZE, seed=seed), img, mask)
    assert out.shape == (SIZE, SIZE) and m.shape == (SIZE, SIZE)
    assert out.dtype == np.uint8 and m.dtype == np.uint8
    assert set(np.unique(m)) <= {0, 1}
    bright = cv2.medianBlur(out, 3) > 200          # the planted square, salt pixels removed
    n = int(bright.sum())
    assert 0.5 * square_area < n < 1.5 * square_area
    inside = cv2.dilate(m, np.ones((3, 3), np.uint8)).astype(bool)
    assert bright[inside].sum() / n > 0.97
    return m


@pytest.mark.parametrize("seed", range(12))
def test_image_and_mask_move_together(seed):
    """The planted square's bright pixels stay inside the transformed mask, and the mask moved."""
    _, mask, _ = _synthetic()
    m = _check_joint(seed)
    overlap = 2 * (m & mask).sum() / (m.sum() + mask.sum())
    assert overlap < 0.97   # rotation/scale moved the mask (a no-op pipeline would fail here)


def test_mask_stays_binary_and_shape_is_size():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (100, 140), dtype=np.uint8)     # not the target size: pad + crop
    mask = (rng.random((100, 140)) > 0.5).astype(np.uint8) * 255
    for s in range(5):
        out, m = ag.apply(ag.table3_pipeline(SIZE, seed=s), img, mask)
        assert out.shape == (SIZE, SIZE) and m.shape == (SIZE, SIZE)
        assert set(np.unique(m)) <= {0, 1}
    out, none = ag.apply(ag.table3_pipeline(SIZE, seed=0), img)
    assert none is None and out.shape == (SIZE, SIZE)


def test_apply_rejects_bad_input():
    with pytest.raises(TypeError):
        ag.apply(ag.table3_pipeline(SIZE), np.zeros((SIZE, SIZE), np.float32))
    with pytest.raises(ValueError):
        ag.apply(ag.table3_pipeline(SIZE), np.zeros((SIZE, SIZE), np.uint8), np.zeros((4, 4), np.uint8))


def test_lung_opacity_brightens_the_lungs_only_and_keeps_the_mask():
    """The UNet's opacity augmentation takes lung pixels towards the soft-tissue grey, never
    darker, leaves the film away from the lungs untouched, and is reproducible from its generator."""
    from scipy import ndimage

    from helpers.data import phantoms

    img, mask = phantoms.render(np.random.default_rng(3), 96, False, "b")
    far = ~ndimage.binary_dilation(mask > 0, iterations=6)
    gains = []
    for seed in range(12):
        out = ag.lung_opacity(img, mask, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.array_equal(out[far], img[far])
        assert (out.astype(int) >= img.astype(int)).all()
        gains.append(out[mask > 0].mean() - img[mask > 0].mean())
        again = ag.lung_opacity(img, mask, np.random.default_rng(seed))
        assert np.array_equal(out, again)
    assert min(gains) > 0.5 and max(gains) > 10          # every draw shows; some are dense
    assert np.array_equal(ag.lung_opacity(img, np.zeros_like(mask), np.random.default_rng(0)), img)
    with pytest.raises(ValueError, match="shape"):
        ag.lung_opacity(img, mask[:10], np.random.default_rng(0))


def test_light_mode_keeps_the_geometry_and_narrows_the_gamma():
    """``mode="light"``: Table 3 without rotation, scale or shear (a mask comes back unchanged)
    and with gamma 0.8-1.25; "table3" moves the mask; an unknown mode fails."""
    rng = np.random.default_rng(0)
    img = rng.integers(40, 200, (64, 64)).astype(np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 5:25] = 1
    light = ag.seeded_pipeline(64, 3, 0, mode="light")
    moved = 0
    table3 = ag.seeded_pipeline(64, 3, 0)
    for _ in range(20):
        out, m = ag.apply(light, img, mask)
        assert np.array_equal(m, mask)
        moved += not np.array_equal(ag.apply(table3, img, mask)[1], mask)
    assert moved >= 15
    gammas = [t for t in ag.table3_pipeline(64, 0, mode="light").transforms if isinstance(t, A.RandomGamma)]
    assert len(gammas) == 1 and tuple(gammas[0].gamma_limit) == (80, 125)
    with pytest.raises(ValueError, match="mode"):
        ag.table3_pipeline(64, 0, mode="heavy")
