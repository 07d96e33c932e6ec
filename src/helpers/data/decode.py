"""Decoding radiographs and lung masks.

:func:`read_image` is the one reader of radiographs (PNG, JPEG, TIFF, BMP, GIF and DICOM through
pydicom) and :func:`read_mask` the one reader of lung masks; curation, external validation and
prediction use them. Images are decoded and resized once (:func:`load_stack`) and cached as ``.npy``
arrays that later stages memory-map, so no epoch decodes a file again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from helpers.run import progress


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


DICOM_EXTS = (".dcm", ".dicom", ".dic")


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


MASK_GREY_SHARE = 0.01  # at most 1 % grey (anti-aliased edge) pixels in a 0/255 mask


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``/``.dicom`` file name or a file with the DICOM preamble (``DICM`` at 128)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Map any numeric (H, W) array to uint8 [0, 255] by its own min..max (constant -> zeros).

    The one policy for more-than-8-bit data: 16-bit PNG/TIFF and DICOM (after its LUTs) alike.
    """
    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    return a.round().astype(np.uint8)


def _dicom_dataset(path: Path, stop_before_pixels: bool = False):
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as exc:  # declared in pyproject.toml; only a broken install lands here
        raise ImageError(f"{path}: DICOM file but pydicom is not installed (pip install pydicom)") from exc
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise ImageError(f"{path}: unreadable DICOM ({type(exc).__name__}: {str(exc)[:120]})") from exc


def _dicom_pixels(path: Path, ds) -> tuple[np.ndarray, list[str]]:
    """Decoded, LUT-applied, 8-bit pixels of a DICOM dataset plus notes on what was done."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = str(getattr(ds, "SOPClassUID", "")) and getattr(ds.SOPClassUID, "name", str(ds.SOPClassUID))
        raise ImageError(f"{path}: DICOM object without pixel data (SOP class {sop or 'not stated'})")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(f"{path}: multi-frame DICOM ({frames} frames); one radiograph per file is supported")
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    photo = str(getattr(ds, "PhotometricInterpretation", "")).strip().upper()
    if spp != 1 or photo not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"{path}: DICOM with {spp} samples per pixel, photometric interpretation "
                         f"{photo or 'not stated'}; only grayscale (MONOCHROME1/2) radiographs are supported")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError by decoder
        if ts is not None and ts.is_compressed:
            raise ImageError(f"{path}: DICOM compressed as {ts.name} ({ts}) and no decoder for it could "
                             f"decode the pixels ({type(exc).__name__}: {str(exc)[:160]}); install a "
                             "pydicom pixel-data plugin (e.g. pylibjpeg) or convert the file") from exc
        raise ImageError(f"{path}: DICOM pixel data cannot be decoded ({type(exc).__name__}: "
                         f"{str(exc)[:160]})") from exc
    if raw.ndim != 2:
        raise ImageError(f"{path}: DICOM pixel array of shape {raw.shape}; expected one 2-D frame")
    notes = [f"DICOM {photo}, {int(getattr(ds, 'BitsStored', raw.itemsize * 8))}-bit"]
    a = apply_modality_lut(raw, ds)
    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        notes.append("modality LUT / rescale applied")
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        a = apply_voi_lut(a, ds, index=0)
        notes.append("VOI LUT / window applied")
    if photo == "MONOCHROME1":  # high values are dark: invert so that bone is bright as in PNGs
        a = np.asarray(a, dtype=np.float64)
        a = a.max() + a.min() - a
        notes.append("MONOCHROME1 inverted")
    notes.append("mapped min..max to 8-bit")
    return to_uint8(a), notes


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image from its header (PIL formats and DICOM); raises :class:`ImageError`."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if is_dicom(path):
        ds = _dicom_dataset(path, stop_before_pixels=True)
        if "Rows" not in ds or "Columns" not in ds:
            raise ImageError(f"{path}: DICOM object without image size (no Rows/Columns)")
        return int(ds.Rows), int(ds.Columns)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: unreadable image header ({exc})") from exc
    return h, w


def read_image(path: str | Path, require_8bit: bool = False, info: dict | None = None) -> np.ndarray:
    """Read a radiograph (PNG, JPEG, TIFF, BMP, GIF or DICOM) as uint8 (H, W) in [0, 255].

    * 8-bit grayscale: as stored. RGB/palette: PIL's ``L`` conversion. 16-bit and float images:
      rescaled by their own min..max (:func:`to_uint8`).
    * DICOM (through pydicom): modality LUT (rescale slope/intercept), then the VOI LUT or the
      first window where the file has one, MONOCHROME1 inverted, then min..max to 8 bits as for
      16-bit PNG. Multi-frame, colour, pixel-less objects and compressed transfer syntaxes that
      no installed decoder handles raise :class:`ImageError` saying what was found.

    With ``require_8bit`` anything that is not already 8-bit single-channel raises. ``info``
    (a dict) receives ``format``, ``mode``, ``notes`` (list of str) and, for DICOM, ``view``
    (ViewPosition, may be empty). Used by curation, external validation and prediction alike.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    info = {} if info is None else info
    info.update(format="", mode="", notes=[], view="")
    if is_dicom(path):
        if require_8bit:
            raise ImageError(f"{path}: expected 8-bit grayscale (mode L), found DICOM")
        ds = _dicom_dataset(path)
        a, notes = _dicom_pixels(path, ds)
        info.update(format="DICOM", mode=str(getattr(ds, "PhotometricInterpretation", "")), notes=notes,
                    view=str(getattr(ds, "ViewPosition", "") or "").strip())
        return a
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            info.update(format=im.format or "", mode=mode)
            if require_8bit and mode != "L":
                raise ImageError(f"{path}: expected 8-bit grayscale (mode L), found mode {mode}")
            if mode in SIXTEEN_BIT_MODES:
                info["notes"] = [f"mode {mode}: mapped min..max to 8-bit"]
                return to_uint8(np.asarray(im))
            if mode != "L":
                info["notes"] = [f"mode {mode}: converted to 8-bit grayscale (PIL 'L')"]
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: unreadable image ({exc})") from exc


def mask_values(a: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Normalise a stored lung mask to uint8 {0, 1}; returns (mask, note or None).

    Recognised encodings: {0, 255} (the manifest convention), {0, 1} and {False, True}
    (mode ``1``), 16-bit {0, 65535}, and a single value (all 0: empty; the caller's checks
    exclude it). A 0/255 (or 0/65535) mask with at most ``MASK_GREY_SHARE`` (1 %) of grey edge
    pixels (anti-aliasing) is binarised at half its maximum, with a note. Anything else raises
    :class:`ImageError` with the values found: label values such as {0, 38} or a grey-level
    image given as a mask are ambiguous and are not thresholded silently.
    """
    a = np.asarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8), None
    vals = np.unique(a)
    if len(vals) > 2:
        top = float(vals[-1])
        extreme = float(np.mean((a == 0) | (a == top)))
        if vals[0] == 0 and top in (255, 65535) and extreme >= 1 - MASK_GREY_SHARE:
            return ((a > top / 2).astype(np.uint8),
                    f"mask with {100 * (1 - extreme):.2f} % grey edge pixels (anti-aliased): "
                    "binarised at half its maximum")
        shown = ", ".join(str(v) for v in vals[:6]) + (", ..." if len(vals) > 6 else "")
        raise ImageError(f"mask is not binary: {len(vals)} distinct values ({shown}); "
                         "expected {0, 255}, {0, 1} or {False, True}")
    sv = {int(v) if float(v).is_integer() else float(v) for v in vals}
    if sv <= {0, 255}:
        return (a > 0).astype(np.uint8), None
    if sv <= {0, 1}:
        return (a > 0).astype(np.uint8), "mask stored as {0, 1}: normalised"
    if sv <= {0, 65535}:
        return (a > 0).astype(np.uint8), "mask stored as 16-bit {0, 65535}: normalised"
    raise ImageError(f"mask values {sorted(sv)} not recognised; expected {{0, 255}}, {{0, 1}} or "
                     "{False, True}")


def read_mask(path: str | Path, image_shape: tuple[int, int] | None = None,
              info: dict | None = None) -> np.ndarray:
    """Read a lung mask as uint8 (H, W) in {0, 1} (see :func:`mask_values` for the encodings).

    With ``image_shape`` (H, W of its radiograph) a mask of another size is resized to it with
    nearest neighbour when the aspect ratios agree within 2 % - so that padding and resizing
    treat mask and image alike - and raises :class:`ImageError` otherwise. ``info`` receives
    ``notes`` (list of str).
    """
    path = Path(path)
    info = {} if info is None else info
    info["notes"] = []
    if not path.is_file():
        raise ImageError(f"{path}: mask file not found")
    try:
        if is_dicom(path):
            ds = _dicom_dataset(path)
            raw = ds.pixel_array
        else:
            with Image.open(path) as im:
                im.load()
                raw = np.asarray(im if im.mode in ("1", "L") + SIXTEEN_BIT_MODES else im.convert("L"))
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"{path}: unreadable mask ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if raw.ndim != 2:
        raise ImageError(f"{path}: mask of shape {raw.shape}; expected one 2-D image")
    try:
        m, note = mask_values(raw)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None
    if note:
        info["notes"].append(note)
    if image_shape is not None and m.shape != tuple(image_shape):
        (mh, mw), (h, w) = m.shape, image_shape
        if abs(mw / mh - w / h) > 0.02 * (w / h):
            raise ImageError(f"{path}: mask size {mw}x{mh} does not match image size {w}x{h} "
                             "(different aspect ratio)")
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
        info["notes"].append(f"mask resized {mw}x{mh} -> {w}x{h} (nearest), the size of its image")
    return m


def square(img: np.ndarray, size: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Pad to a centred square with zeros (Table 3 'Padding'), then resize to ``size``.

    img: (H, W) any dtype; returns (size, size) of the same dtype. Use ``cv2.INTER_NEAREST``
    for masks.
    """
    h, w = img.shape[:2]
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    canvas = np.zeros((s, s), dtype=img.dtype)
    canvas[top:top + h, left:left + w] = img
    if s == size:
        return canvas
    interp = interpolation if s > size else (cv2.INTER_LINEAR if interpolation != cv2.INTER_NEAREST
                                             else cv2.INTER_NEAREST)
    return cv2.resize(canvas, (size, size), interpolation=interp)


def load_stack(files: Iterable[str | Path], size: int, mask: bool = False,
               desc: str = "decode", images: Iterable[str | Path] | None = None) -> np.ndarray:
    """Decode and square-resize every file once: uint8 (N, size, size).

    Images go through :func:`read_image`. Masks (``mask=True``) through :func:`read_mask`:
    values normalised to {0, 1}, resized with nearest neighbour. With ``images`` (the radiograph
    of each mask, same order) every mask is first brought to its image's size, or refused when
    the geometry differs, so that padding to a square puts mask and image in the same place.
    """
    files = list(files)
    imgs = list(images) if images is not None else None
    if imgs is not None and len(imgs) != len(files):
        raise ValueError(f"{len(files)} masks but {len(imgs)} images")
    out = np.zeros((len(files), size, size), dtype=np.uint8)
    for i, f in enumerate(progress.iterate(files, desc, unit="file")):
        if mask:
            shape = image_size(imgs[i]) if imgs is not None else None
            out[i] = square(read_mask(f, shape), size, cv2.INTER_NEAREST)
        else:
            out[i] = square(read_image(f), size)
    return out


def original_shapes(paths: Iterable[str | Path]) -> np.ndarray:
    """(height, width) of each image file before any resizing: int64 (N, 2).

    Reads only the file header (PIL or DICOM; :func:`helpers.data.decode.image_size`). A missing or
    unreadable file raises :class:`ImageError` naming it.
    """
    out = [image_size(p) for p in paths]
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)
