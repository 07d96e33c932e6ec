"""Reading images and writing artefacts.

Images are decoded and resized once (``load_stack``) and cached as ``.npy`` arrays that later
stages memory-map, so no epoch decodes a file again. Writes are atomic (temporary file, then
rename), so an interrupted run never leaves half a file behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from . import progress


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def read_gray(path: str | Path, require_8bit: bool = False) -> np.ndarray:
    """Read an image as 8-bit grayscale: uint8 (H, W) in [0, 255].

    16-bit images are rescaled min..max; RGB/palette images converted with PIL's ``L``.
    With ``require_8bit`` anything that is not already 8-bit single-channel raises.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if require_8bit and mode != "L":
                raise ImageError(f"{path}: expected 8-bit grayscale (mode L), found mode {mode}")
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                a = np.asarray(im, dtype=np.float64)
                lo, hi = float(a.min()), float(a.max())
                a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
                return a.round().astype(np.uint8)
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{path}: unreadable image ({exc})") from exc


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
               desc: str = "decode") -> np.ndarray:
    """Decode and square-resize every file once: uint8 (N, size, size).

    Masks are binarised at > 127 and resized with nearest neighbour; values {0, 1}.
    """
    files = list(files)
    out = np.zeros((len(files), size, size), dtype=np.uint8)
    for i, f in enumerate(progress.iterate(files, desc, unit="file")):
        a = read_gray(f)
        if mask:
            out[i] = square((a > 127).astype(np.uint8), size, cv2.INTER_NEAREST)
        else:
            out[i] = square(a, size)
    return out


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_json(obj: Any, path: str | Path) -> Path:
    def w(tmp):
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
            fh.write("\n")
    return _atomic(Path(path), w)


def load_json(path: str | Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def save_csv(df: pd.DataFrame, path: str | Path) -> Path:
    return _atomic(Path(path), lambda tmp: df.to_csv(tmp, index=False))


def save_npy(arr: np.ndarray, path: str | Path) -> Path:
    def w(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
    return _atomic(Path(path), w)


def load_npy(path: str | Path, mmap: bool = True) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the notebook that writes it first")
    return np.load(path, mmap_mode="r" if mmap else None)


def read_stage_csv(path: str | Path, producer: str) -> pd.DataFrame:
    """Read an artefact of an earlier stage; a missing file names the notebook that writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run notebooks/{producer} first (same OUT_DIR)")
    return pd.read_csv(path, keep_default_na=False)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
