"""Classifier inputs that show the disease more than the hospital (beyond the paper; issue 9).

The paper's COVID and normal films come from different collections, and the shortcut audits of
notebook 05 find the collection in the pixels: outside the lungs (borders, labels, the zero
padding that squares a non-square film), in the field of view and in the exposure (DeGrave,
Janizek & Lee, "AI for radiographic COVID-19 detection selects shortcuts over signal", Nature
Machine Intelligence 2021; Maguolo & Nanni, "A critic evaluation of methods for COVID-19
automatic detection from X-ray images", Information Fusion 2021). Segmentation (section 3.2)
already blanks everything outside the refined lung mask; the steps below remove more of what
varies by collection. Each is a profile field, off in ``smoke``, ``cpu`` and ``paper`` (so
``paper`` stays the paper's protocol), on in ``cpu-deconf``:

``cls_lung_standardise`` (:func:`standardise_in_lungs`)
    Exposure, detector response and post-processing differ by collection. Grey levels are
    rescaled per image so that the 1st and 99th percentiles *of the lung pixels* land on fixed
    values: a global gain and offset of the film no longer reach the network.
``cls_crop_lungs`` (:func:`crop_to_lungs`, margin ``cls_crop_margin``)
    Patient size, positioning and collimation differ by collection, so the lungs sit at
    different places and scales in the frame. Each image is cropped to a square around the
    bounding box of its refined lung mask (plus a margin) and resized to the classifier's
    size: the lungs fill the same part of every input.
``cls_film_only`` (with ``cls_crop_lungs``; :func:`film_box`)
    :func:`helpers.data.decode.square` pads a non-square film with zeros before resizing. In these data
    the COVID sources are non-square (about 500 x 400) and the NIH normals square (512 x 512),
    so black bars mark the class; DeGrave et al. found the networks' attributions at such image
    edges. The lung crop is kept inside the film itself, so no padding enters it (where the
    lung mask reaches into the padding, the crop still keeps the whole mask).
Table 3 augmentation of the classifier (``cls_augment``) is the fourth step of the ladder.

Segmented inputs are re-masked after standardisation (the background stays 0), so a segmented
input is exactly its unsegmented twin with the outside of the refined mask set to 0, as in
notebook 03. numpy and OpenCV only.
"""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

__all__ = ["lung_box", "film_box", "crop_to_lungs", "standardise_in_lungs", "classifier_inputs",
           "uses_preprocessing", "describe_inputs", "LUNG_PERCENTILES", "LUNG_TARGETS"]

LUNG_PERCENTILES = (1.0, 99.0)   # in-lung percentiles that define an image's grey scale
LUNG_TARGETS = (32.0, 224.0)     # where they land: room on both sides for bone and air


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1), end exclusive, of the non-zero pixels; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _fit(start: float, side: int, lo: int, hi: int) -> tuple[int, int]:
    """An interval of length ``side`` starting near ``start``, moved (then clipped) into [lo, hi)."""
    s = int(round(start))
    s = min(max(s, lo), max(hi - side, lo))
    return s, min(s + side, hi)


def film_box(shape: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """Where a film of original ``shape`` (height, width) lies after :func:`helpers.data.decode.square`.

    Returns (y0, y1, x0, x1), end exclusive, in the ``size`` x ``size`` image: the rest is the
    zero padding that made the film square.
    """
    h, w = int(shape[0]), int(shape[1])
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    f = size / s
    y0, x0 = int(np.ceil(top * f)), int(np.ceil(left * f))
    y1, x1 = int(np.floor((top + h) * f)), int(np.floor((left + w) * f))
    return y0, max(y1, y0 + 1), x0, max(x1, x0 + 1)


def lung_box(mask: np.ndarray, margin: float = 0.05,
             bounds: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int]:
    """The crop of :func:`crop_to_lungs`: (y0, y1, x0, x1), end exclusive.

    A square of side ``(1 + 2 * margin) * max(box height, box width)`` centred on the bounding box
    of ``mask > 0``, moved inside ``bounds`` (default: the whole image) and clipped to it when it
    does not fit. The result always contains every mask pixel (``bounds`` is widened to the mask's
    bounding box where the mask leaves it). An empty mask gives the whole image (or ``bounds``).
    """
    H, W = mask.shape
    by0, by1, bx0, bx1 = bounds if bounds is not None else (0, H, 0, W)
    b = _bbox(mask)
    if b is None:
        return by0, by1, bx0, bx1
    y0, y1, x0, x1 = b
    by0, by1, bx0, bx1 = min(by0, y0), max(by1, y1), min(bx0, x0), max(bx1, x1)
    side = int(np.ceil(max(y1 - y0, x1 - x0) * (1 + 2 * margin)))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    ry0, ry1 = _fit(cy - side / 2, side, by0, by1)
    rx0, rx1 = _fit(cx - side / 2, side, bx0, bx1)
    return ry0, ry1, rx0, rx1


def crop_to_lungs(image: np.ndarray, mask: np.ndarray, out_size: int, margin: float = 0.05,
                  bounds: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Crop to the lungs' square box (:func:`lung_box`) and resize to ``out_size``.

    image: uint8 (H, W); mask: (H, W), non-zero = lung (the refined mask). Returns (uint8
    (out_size, out_size) image, uint8 (out_size, out_size) mask in {0, 1}; nearest neighbour).
    A box clipped at the image (or ``bounds``) edge is not square and is stretched a little.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if image.shape != mask.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be equal 2-D shapes")
    y0, y1, x0, x1 = lung_box(mask, margin, bounds)
    im, m = image[y0:y1, x0:x1], (mask[y0:y1, x0:x1] > 0).astype(np.uint8)
    interp = cv2.INTER_AREA if max(im.shape) > out_size else cv2.INTER_LINEAR
    im = cv2.resize(np.ascontiguousarray(im), (out_size, out_size), interpolation=interp)
    m = cv2.resize(np.ascontiguousarray(m), (out_size, out_size), interpolation=cv2.INTER_NEAREST)
    return im.astype(np.uint8), m


def standardise_in_lungs(image: np.ndarray, mask: np.ndarray,
                         percentiles: tuple[float, float] = LUNG_PERCENTILES,
                         targets: tuple[float, float] = LUNG_TARGETS) -> np.ndarray:
    """Rescale grey levels so the in-lung percentiles land on ``targets``: uint8 (H, W).

    image: uint8 (H, W); mask: (H, W), non-zero = lung. The map is linear,
    ``out = t0 + (image - p_lo) * (t1 - t0) / (p_hi - p_lo)``, clipped to [0, 255], with
    ``p_lo, p_hi`` the ``percentiles`` of the lung pixels only; so ``gain * image + offset``
    (gain > 0) gives the same output up to uint8 rounding. Fewer than 2 lung pixels or a flat
    lung field leave the image unchanged.
    """
    image, mask = np.asarray(image), np.asarray(mask) > 0
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape")
    lung = image[mask].astype(np.float64)
    if lung.size < 2:
        return image.astype(np.uint8)
    lo, hi = np.percentile(lung, percentiles)
    if hi - lo < 1e-6:
        return image.astype(np.uint8)
    out = targets[0] + (image.astype(np.float64) - lo) * (targets[1] - targets[0]) / (hi - lo)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def describe_inputs(profile, segmented: bool = True, short: bool = False) -> str:
    """What a classifier of ``profile`` sees, from its input settings (crop, film only,
    standardise, augmentation), for table and figure titles: e.g. "segmented lungs, square lung
    crop kept inside the film (no padding), grey levels standardised inside the lungs, light
    augmentation"; ``short`` gives "segmented lungs, lung crop in film, standardised, light aug.".
    A setting the profile lacks counts as off."""
    crop, film, std, aug = (bool(getattr(profile, k, False)) for k in
                            ("cls_crop_lungs", "cls_film_only", "cls_lung_standardise", "cls_augment"))
    mode = getattr(profile, "cls_augment_mode", "table3")
    aug_name = "Table 3" if mode == "table3" else mode
    if short:
        parts = ["segmented lungs" if segmented else "full image"]
        parts += ["lung crop in film" if film else "lung crop"] if crop else []
        parts += ["standardised"] if std else []
        parts += [f"{aug_name} aug."] if aug else []
        return ", ".join(parts)
    parts = ["segmented lungs" if segmented else "full image"]
    parts += ["square lung crop kept inside the film (no padding)" if film
              else "square crop around the lungs"] if crop else []
    parts += ["grey levels standardised inside the lungs"] if std else []
    parts += [f"{aug_name} augmentation"] if aug else []
    return ", ".join(parts)


def uses_preprocessing(profile) -> bool:
    """True when the profile turns on any step of :func:`classifier_inputs`."""
    return bool(profile.cls_crop_lungs or profile.cls_lung_standardise)


def classifier_inputs(images: np.ndarray, masks: np.ndarray, profile, segmented: bool = False,
                      shapes: np.ndarray | None = None,
                      carry: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The classifier's inputs under the profile's de-confounding steps (all off: unchanged).

    images: uint8 (N, S, S), segmented or not (``segmented``: re-mask after standardising);
    masks: the refined lung masks (N, S, S) the segmentation used; shapes: int (N, 2) original
    (height, width) of each film (:func:`helpers.data.decode.original_shapes`), needed by
    ``cls_film_only``; carry: other (N, S, S) masks (e.g. the raw lung masks for heat shares)
    cropped with the same boxes. Returns ``{"images", "masks", **carry}``, each (N, out, out)
    with ``out = profile.cls_size``; masks uint8 {0, 1}.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    carry = {k: np.asarray(v) for k, v in (carry or {}).items()}
    if images.shape != masks.shape or any(v.shape != images.shape for v in carry.values()):
        raise ValueError(f"images {images.shape}, masks {masks.shape} and carried masks "
                         f"{[v.shape for v in carry.values()]} must have one shape")
    if profile.cls_film_only and profile.cls_crop_lungs and shapes is None:
        raise ValueError("cls_film_only needs the films' original shapes: pass "
                         "shapes=decode.original_shapes(cls['file'])")
    out = {"images": images.copy(), "masks": (masks > 0).astype(np.uint8),
           **{k: (v > 0).astype(np.uint8) for k, v in carry.items()}}
    if not uses_preprocessing(profile):
        return out
    size = profile.cls_size if profile.cls_crop_lungs else images.shape[-1]
    res = {k: np.zeros((len(images), size, size), np.uint8) for k in out}
    for i in range(len(images)):
        im, m = images[i], out["masks"][i]
        if profile.cls_lung_standardise:
            im = standardise_in_lungs(im, m)
            if segmented:
                im = im * m
        others = {k: out[k][i] for k in carry}
        if profile.cls_crop_lungs:
            bounds = film_box(shapes[i], im.shape[0]) if profile.cls_film_only else None
            box = lung_box(m, profile.cls_crop_margin, bounds)
            im, m = crop_to_lungs(im, m, size, profile.cls_crop_margin, bounds)
            others = {k: _crop_mask(v, box, size) for k, v in others.items()}
            if segmented:
                im = im * m
        res["images"][i], res["masks"][i] = im, m
        for k, v in others.items():
            res[k][i] = v
    return res


def _crop_mask(mask: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    y0, y1, x0, x1 = box
    return cv2.resize(np.ascontiguousarray(mask[y0:y1, x0:x1]), (size, size),
                      interpolation=cv2.INTER_NEAREST)


