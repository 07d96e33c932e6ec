"""Data augmentation of Table 3 (paper section 3.3), with albumentations 2.x.

Section 3.3 applies "the same set of augmentation" to the segmentation set (image + lung mask, for
the UNet, Algorithm 1 lines 8 and 11) and to the segmented COVID set (image only, Algorithm 2
lines 9 and 12). Table 3 lists nine processes with a probability each; they map one to one, in
the table's order, onto the transforms of :func:`table3_pipeline`:

=====================  ==========================  ====  ==============================================
Table 3 process        values                      p     albumentations transform
=====================  ==========================  ====  ==============================================
Scale                  X 0.8-1.1, Y none           1     ``Affine(scale={"x": (0.8, 1.1), "y": 1})``
Rotate                 -45..45 deg                 1     ``Affine(rotate=(-45, 45))``
Shear                  X -0.2..0.2, Y none         0.7   ``Affine(shear={"x": +-11.31 deg, "y": 0})``
Padding                512                         1     ``PadIfNeeded(size, size)``
Center Crop            512                         1     ``CenterCrop(size, size)``
Gamma Correction       0.5-3                       1     ``RandomGamma(gamma_limit=(50, 300))``
Salt and Pepper Noise  0.01                        0.3   ``SaltAndPepper(amount=(0.01, 0.01))``
Blur                   0.5, kernel (11, 11)        0.5   ``GaussianBlur(sigma 0.5, kernel 11 @ 512)``
Random Noise           0.5                         0.3   ``GaussNoise(std_range=(0, 0.05))``
=====================  ==========================  ====  ==============================================

Interpretations (the table gives bare numbers; :data:`TABLE3` carries these notes for the notebook):

* **Shear 0.2** is read as a shear *factor* (x' = x + 0.2 y); albumentations takes degrees, so the
  range is +-atan(0.2) = +-11.31 deg. Read as degrees, 0.2 deg would be invisible.
* **Gamma 0.5-3** is the exponent range; albumentations' ``gamma_limit`` is in percent: (50, 300).
* **Salt and pepper 0.01** is the fraction of pixels replaced (half white, half black).
* **Blur 0.5, kernel (11, 11)**: Gaussian with sigma 0.5 px and an 11 x 11 kernel at 512 px. The
  kernel is scaled with the image side (odd, at least 3); sigma stays 0.5 px as in the table (with
  sigma 0.5 the kernel size barely matters: weights beyond 2 px are < 1e-3).
* **Random noise 0.5**: read literally as a Gaussian std of 0.5 grey levels it is invisible, read
  as 0.5 of the intensity range it destroys the image. The numbers of Table 3 (blur sigma 0.5 with
  p 0.5, salt-and-pepper, per-axis scale/shear) match the canonical imgaug example pipeline, whose
  noise step is ``AdditiveGaussianNoise(scale=(0, 0.05*255), per_channel=0.5)``; we take the 0.5 to
  be that ``per_channel`` value (meaningless for grayscale) and use its noise scale: std drawn
  uniformly in [0, 0.05] of the range (up to about 13 grey levels), see :data:`NOISE_STD_RANGE`.
* **Padding / Center Crop 512** pad (zero fill) and crop to ``size``: they guarantee a
  ``size x size`` output and are no-ops for inputs already at ``size`` (the datasets resize first).
  Profiles that run below 512 px use ``size`` instead of 512.

Geometry uses a constant zero fill for image and mask, bilinear interpolation for images and
nearest-neighbour for masks, so masks stay binary. Intensity transforms (gamma, noise, blur) touch
the image only; albumentations does not apply them to masks.

Seeding and reproducibility
---------------------------
albumentations 2.0.8 seeds *every* transform of a ``Compose(seed=s)`` with the same ``s``: each
transform then draws the same first random number for its "apply or not" decision, so e.g. the two
p = 0.3 noise steps are always applied together (checked: 62 of 200 seeds applied both, none just
one). :class:`SeededCompose` fixes this by sharing one generator pair across all transforms, so the
draws are sequential and independent while a seed still fixes the whole stream.

A pipeline is a stateful random stream; for a ``Dataset`` that must give the same augmentations
across runs *and* regardless of the number of DataLoader workers (each worker receives a copy of
the same state), reseed per sample::

    pipe = table3_pipeline(size, seed=None)
    img, mask = apply(pipe, img, mask, seed=sample_seed(base_seed, epoch, index))

Alternatively :func:`seeded_pipeline` builds one stream per (epoch, worker) with seed
``base_seed + 1000 * epoch + worker``; that is reproducible for a fixed ``num_workers`` only.
"""
from __future__ import annotations

import math
import random
from typing import Any

import albumentations as A
import cv2
import numpy as np

PAPER_SIZE = 512
SCALE_X = (0.8, 1.1)
ROTATE_DEG = (-45.0, 45.0)
SHEAR_FACTOR = 0.2
SHEAR_DEG = math.degrees(math.atan(SHEAR_FACTOR))  # 11.31 deg
GAMMA = (0.5, 3.0)
SALT_PEPPER_AMOUNT = 0.01
BLUR_SIGMA = 0.5
BLUR_KERNEL_512 = 11
NOISE_STD_RANGE = (0.0, 0.05)  # fraction of the intensity range (255 for uint8)

P_SCALE, P_ROTATE, P_SHEAR, P_PAD, P_CROP = 1.0, 1.0, 0.7, 1.0, 1.0
P_GAMMA, P_SALT_PEPPER, P_BLUR, P_NOISE = 1.0, 0.3, 0.5, 0.3

TABLE3: list[dict[str, Any]] = [
    {"process": "Scale", "values": "X-axis 0.8 to 1.1, Y-axis none", "probability": P_SCALE,
     "transform": "Affine(scale={'x': (0.8, 1.1), 'y': 1.0})",
     "interpretation": "horizontal scale factor; vertical unchanged"},
    {"process": "Rotate", "values": "angle -45 to 45", "probability": P_ROTATE,
     "transform": "Affine(rotate=(-45, 45))", "interpretation": "degrees, about the image centre"},
    {"process": "Shear", "values": "X-axis -0.2 to 0.2, Y-axis none", "probability": P_SHEAR,
     "transform": f"Affine(shear={{'x': (-{SHEAR_DEG:.2f}, {SHEAR_DEG:.2f}), 'y': 0}})",
     "interpretation": "0.2 read as shear factor x' = x + 0.2 y, i.e. atan(0.2) = 11.31 degrees"},
    {"process": "Padding", "values": "512", "probability": P_PAD,
     "transform": "PadIfNeeded(size, size, zero fill)",
     "interpretation": "pad to size x size (no-op when already that size); size = 512 in the paper"},
    {"process": "Center Crop", "values": "512", "probability": P_CROP,
     "transform": "CenterCrop(size, size)", "interpretation": "crop to size x size; size = 512 in the paper"},
    {"process": "Gamma Correction", "values": "0.5 to 3", "probability": P_GAMMA,
     "transform": "RandomGamma(gamma_limit=(50, 300))",
     "interpretation": "exponent range; albumentations takes percent"},
    {"process": "Salt and Pepper Noise", "values": "0.01", "probability": P_SALT_PEPPER,
     "transform": "SaltAndPepper(amount=(0.01, 0.01), salt_vs_pepper=(0.5, 0.5))",
     "interpretation": "fraction of pixels set to black or white"},
    {"process": "Blur", "values": "0.5, kernel size (11, 11)", "probability": P_BLUR,
     "transform": "GaussianBlur(blur_limit=(k, k), sigma_limit=(0.5, 0.5)), k = 11 at 512",
     "interpretation": "Gaussian sigma 0.5 px; kernel scaled with size (odd, >= 3)"},
    {"process": "Random Noise", "values": "0.5", "probability": P_NOISE,
     "transform": "GaussNoise(std_range=(0, 0.05))",
     "interpretation": "ambiguous; 0.5 taken as imgaug's per_channel of the canonical "
                       "AdditiveGaussianNoise(scale=(0, 0.05*255), per_channel=0.5): std up to 5% of range"},
]


class SeededCompose(A.Compose):
    """``A.Compose`` whose transforms share one random stream (see the module docstring).

    Kept: albumentations seeds each transform with the same value, which correlates them."""

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        # one shared generator pair instead of one identically seeded pair per transform
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))


def table3_frame():
    """Table 3 as printed (Process, Values, Probability) plus how each row is implemented and read."""
    import pandas as pd

    return pd.DataFrame([{"Process": r["process"], "Values": r["values"], "Probability": r["probability"],
                          "Implemented as": r.get("transform", ""), "Reading": r.get("interpretation", "")}
                         for r in TABLE3])


def blur_kernel(size: int) -> int:
    """Table 3's 11 x 11 blur kernel scaled from 512 px to ``size`` (odd, at least 3)."""
    k = int(round(BLUR_KERNEL_512 * size / PAPER_SIZE))
    if k % 2 == 0:
        k += 1
    return max(3, k)


#: classifier augmentation modes (``Profile.cls_augment_mode``): "table3" is the paper's Table 3;
#: "light" keeps its salt-and-pepper, blur and noise steps but no rotation, scale or shear and a
#: gamma of 0.8-1.25 (:data:`LIGHT_GAMMA`). On standardised lung crops trained from scratch for 16
#: epochs, Table 3's geometry (rotation up to 45 degrees, scale, shear) or its gamma of 0.5-3, each
#: alone, kept the training loss at the class prior (docs/measurements.md, 2026-12-06).
AUGMENT_MODES = ("table3", "light")
LIGHT_GAMMA = (0.8, 1.25)


def table3_pipeline(size: int, seed: int | None = None, mode: str = "table3") -> A.Compose:
    """The nine Table 3 transforms, in the table's order, producing ``size x size`` outputs
    (``mode="light"``: without the geometric steps, gamma :data:`LIGHT_GAMMA`)."""
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augmentation mode must be one of {AUGMENT_MODES}, got {mode!r}")
    zero = dict(border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0)
    geo = dict(interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST, **zero)
    k = blur_kernel(size)
    gamma = GAMMA if mode == "table3" else LIGHT_GAMMA
    geometric = [
        A.Affine(scale={"x": SCALE_X, "y": (1.0, 1.0)}, keep_ratio=False, p=P_SCALE, **geo),
        A.Affine(rotate=ROTATE_DEG, p=P_ROTATE, **geo),
        A.Affine(shear={"x": (-SHEAR_DEG, SHEAR_DEG), "y": (0.0, 0.0)}, p=P_SHEAR, **geo),
    ] if mode == "table3" else []
    transforms = [
        *geometric,
        A.PadIfNeeded(min_height=size, min_width=size, position="center", p=P_PAD, **zero),
        A.CenterCrop(height=size, width=size, p=P_CROP),
        A.RandomGamma(gamma_limit=(gamma[0] * 100, gamma[1] * 100), p=P_GAMMA),
        A.SaltAndPepper(amount=(SALT_PEPPER_AMOUNT, SALT_PEPPER_AMOUNT), salt_vs_pepper=(0.5, 0.5),
                        p=P_SALT_PEPPER),
        A.GaussianBlur(blur_limit=(k, k), sigma_limit=(BLUR_SIGMA, BLUR_SIGMA), p=P_BLUR),
        A.GaussNoise(std_range=NOISE_STD_RANGE, mean_range=(0.0, 0.0), p=P_NOISE),
    ]
    return SeededCompose(transforms, p=1.0, is_check_shapes=True, strict=True,
                         mask_interpolation=cv2.INTER_NEAREST, seed=seed)


def sample_seed(base_seed: int, epoch: int, index: int) -> int:
    """A well-mixed 32-bit seed for one (run seed, epoch, sample index): worker-count independent."""
    return int(np.random.SeedSequence([int(base_seed), int(epoch), int(index)]).generate_state(1)[0])


def seeded_pipeline(size: int, seed: int, epoch: int, worker: int | None = None,
                    mode: str = "table3") -> A.Compose:
    """Table 3 pipeline seeded with ``seed + 1000 * epoch + worker``.

    ``worker`` defaults to the current DataLoader worker id (0 in the main process). Build it
    inside the worker (e.g. lazily in ``__getitem__`` or in ``worker_init_fn``), not before the
    DataLoader forks, or every worker gets the same stream.
    """
    if worker is None:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
    return table3_pipeline(size, seed=int(seed) + 1000 * int(epoch) + int(worker), mode=mode)


def apply(pipeline: A.Compose, image: np.ndarray, mask: np.ndarray | None = None,
          seed: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment a uint8 (H, W) image and optionally its mask jointly.

    ``mask`` may be bool or integer (anything > 0 is lung); it comes back as uint8 {0, 1}.
    ``seed`` (optional) reseeds the pipeline first, for per-sample reproducibility.
    Returns ``(image uint8 (size, size), mask uint8 (size, size) or None)``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise ValueError(f"image must be a grayscale (H, W) array, got shape {image.shape}")
    if seed is not None:
        pipeline.set_random_seed(int(seed))
    if mask is None:
        return np.ascontiguousarray(pipeline(image=image)["image"]), None
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    out = pipeline(image=image, mask=mask)
    return np.ascontiguousarray(out["image"]), (np.asarray(out["mask"]) > 0).astype(np.uint8)


def augmentation_samples(image: np.ndarray, mask: np.ndarray | None, size: int, n: int,
                         seed: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``n`` augmented versions of one image (and mask) for Fig. 7, reproducible from ``seed``."""
    pipe = table3_pipeline(size, seed=seed)
    return [apply(pipe, image, mask) for _ in range(n)]


# ------------------------------------------------------------------------------------------------
# beyond Table 3: opaque lungs for the UNet (the mask stays as it is)
# ------------------------------------------------------------------------------------------------
#: how far an opacity may take a lung pixel towards the soft-tissue grey around the lungs
OPACITY_STRENGTH = (0.3, 0.9)


def lung_opacity(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same film with a synthetic opacity over its lungs: uint8 (H, W); the mask is unchanged.

    COVID-19 and other pneumonias make the lungs as dense as the soft tissue around them, and a
    UNet trained on clear lungs under-segments them (the refinement then drops the very films
    a classifier needs). This draws one to four smooth blobs inside the lung mask (or, one time in
    four, a haze over the whole of it), each taking the lung grey levels a random fraction
    (:data:`OPACITY_STRENGTH`) of the way towards the soft-tissue grey (the median of a ring just
    outside the lungs), never darker than they were. Training on such films with the true mask
    teaches the network that an opaque lung is still lung. A film without lung pixels comes back
    unchanged.
    """
    image, lung = np.asarray(image), np.asarray(mask) > 0
    if image.shape != lung.shape:
        raise ValueError(f"image {image.shape} and mask {lung.shape} differ in shape")
    if lung.sum() < 4:
        return image.copy()
    h, w = image.shape
    side = max(h, w)
    kernel = np.ones((3, 3), np.uint8)
    ring = cv2.dilate(lung.astype(np.uint8), kernel, iterations=max(2, side // 32)).astype(bool) & ~lung
    tissue = float(np.median(image[ring])) if ring.any() else float(np.percentile(image, 90))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.25:                                   # a haze over both lungs
        field = np.full((h, w), 1.0, np.float32)
    else:
        field = np.zeros((h, w), np.float32)
        ys, xs = np.nonzero(lung)
        for k in rng.choice(len(ys), size=int(rng.integers(1, 5))):
            s = side * rng.uniform(0.06, 0.18)
            field += np.exp(-((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2) / (2 * s * s))
        field = np.clip(field, 0, 1)
    soft = cv2.GaussianBlur(lung.astype(np.float32), (0, 0), max(1.0, side / 128))
    weight = field * soft * rng.uniform(*OPACITY_STRENGTH)
    img = image.astype(np.float32)
    out = img + weight * np.maximum(tissue - img, 0)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
