"""Is this a usable chest radiograph, and is this a usable lung mask? (paper section 3.1 selection)

One set of checks, shared by curation (every source adapter and the manifest folder), external
validation and prediction, so that a film refused in one place is refused everywhere with the
same reason. Each check returns the reason a file is excluded (a short sentence naming what was
found and the threshold), or ``None``.

Thresholds (none of them excludes an image or mask of the shared real data: tested by
``tests/unit/test_sources.py::test_real_manifest_folder``; the margins are in the
docs/measurements.md):

``MIN_SIDE = 64``
    An image whose shorter side is below 64 px is not a radiograph (a thumbnail or an icon); it
    would be upsampled into training. 64 px is the smallest size any profile trains at.
``MIN_RANGE = 16``
    An image whose 1st-99th percentile range spans fewer than 16 of 256 grey levels is
    constant or nearly so (an all-black or all-white film, a failed export).
``MASK_MIN_FRACTION = 0.01`` / ``MASK_MAX_FRACTION = 0.95``
    A lung mask covering less than 1 % of its image is empty or near-empty; one covering more than
    95 % is a blank or inverted export. Both are excluded: as UNet targets they teach garbage.
``LUNG_FRACTION_RANGE = (0.10, 0.60)``
    Lung masks outside this range are kept but reported (a note per file): small lungs, a
    collapsed lung or a mask drawn on a cropped film can be real.

Views: :func:`view_class` reads the metadata's view (``PA``, ``AP``, ``AP Supine``, ``L``,
``Lateral``, ``LL``, ...). Only frontal films are used; lateral and other views are excluded, an
unstated view is kept (with a note where the adapter records one). DICOM files state their view
in ``ViewPosition``, which is used when the metadata says nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers.data import decode

MIN_SIDE = 64
MIN_RANGE = 16
MASK_MIN_FRACTION = 0.01
MASK_MAX_FRACTION = 0.95
LUNG_FRACTION_RANGE = (0.10, 0.60)


def view_class(view: str) -> str:
    """'frontal', 'lateral', 'other' or '' (not stated)."""
    v = re.sub(r"\s+", " ", str(view).strip().lower())
    if not v:
        return ""
    if v in ("pa", "ap", "aps") or v.startswith(("ap ", "pa ")) or v.startswith("frontal"):
        return "frontal"
    if v in ("l", "ll", "rl", "lat") or "lateral" in v:
        return "lateral"
    return "other"


def view_reason(view: str) -> str | None:
    """Why a film with this metadata view is excluded (not frontal), or None (frontal / not stated)."""
    c = view_class(view)
    if c in ("", "frontal"):
        return None
    return f"not frontal: view {str(view).strip()}"


def image_reason(a: np.ndarray) -> str | None:
    """Why a decoded image uint8 (H, W) cannot be a radiograph (too small, near-constant), or None."""
    h, w = a.shape[:2]
    if min(h, w) < MIN_SIDE:
        return f"too small for a radiograph: {w}x{h} px (shorter side < {MIN_SIDE})"
    lo, hi = np.percentile(a, [1, 99])
    if hi - lo < MIN_RANGE:
        level = "black" if hi < 64 else "white" if lo > 191 else "gray"
        return (f"near-constant image ({level}): 1st-99th percentile range {hi - lo:.0f} grey levels "
                f"(< {MIN_RANGE})")
    return None


def mask_reason(mask: np.ndarray) -> tuple[str | None, str | None]:
    """(reason to exclude, note) for a normalised lung mask uint8 (H, W) in {0, 1}."""
    frac = float(np.mean(np.asarray(mask) > 0))
    if frac == 0:
        return "empty lung mask (all zero)", None
    if frac < MASK_MIN_FRACTION:
        return (f"near-empty lung mask: {100 * frac:.2f} % of the image "
                f"(< {100 * MASK_MIN_FRACTION:g} %)"), None
    if frac > MASK_MAX_FRACTION:
        return (f"lung mask covers {100 * frac:.1f} % of the image (> {100 * MASK_MAX_FRACTION:g} %): "
                "blank or inverted export"), None
    lo, hi = LUNG_FRACTION_RANGE
    if not lo <= frac <= hi:
        return None, (f"lung fraction {frac:.2f} outside the plausible range {lo:g}-{hi:g} "
                      "(kept; check the mask)")
    return None, None


@dataclass
class Check:
    """Outcome of :func:`check_radiograph`: ``reason`` (exclude) or ``notes`` (keep, remarks)."""

    path: str
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    shape: tuple[int, int] = (0, 0)
    view: str = ""
    mask_reason: str | None = None
    mask_notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reason is None and self.mask_reason is None

    @property
    def note(self) -> str:
        return "; ".join(self.notes)


def check_radiograph(path: str | Path, view: str = "", mask_path: str | Path | None = None) -> Check:
    """Decode ``path`` with :func:`helpers.data.decode.read_image` and run every check on it.

    ``view`` is the metadata's view (empty: not stated; a DICOM's ViewPosition is then used).
    With ``mask_path`` the mask is read with :func:`helpers.data.decode.read_mask` against the image's
    size (values normalised, same-aspect sizes resized, other sizes refused) and checked by
    :func:`mask_reason`. Never raises for a bad file: the problem is the returned reason.
    """
    c = Check(str(path))
    info: dict = {}
    try:
        a = decode.read_image(path, info=info)
    except decode.ImageError as exc:
        c.reason = short_reason(exc, path)
        return c
    c.shape = a.shape
    c.notes += [n for n in info.get("notes", []) if info.get("format") == "DICOM"]
    c.view = view or info.get("view", "")
    vr = view_reason(c.view)
    if vr is not None:
        c.reason = vr + (" (DICOM ViewPosition)" if not view else "")
        return c
    c.reason = image_reason(a)
    if c.reason is not None or mask_path is None or str(mask_path) == "":
        return c
    minfo: dict = {}
    try:
        m = decode.read_mask(mask_path, image_shape=a.shape, info=minfo)
    except decode.ImageError as exc:
        c.mask_reason = short_reason(exc, mask_path, prefix="mask: ")
        return c
    c.mask_notes += minfo.get("notes", [])
    c.mask_reason, note = mask_reason(m)
    if note:
        c.mask_notes.append(note)
    return c


def short_reason(exc: Exception, path: str | Path, prefix: str = "") -> str:
    """An ImageError's message without the leading file path (tables name the file already)."""
    msg = str(exc)
    p = str(path)
    if msg.startswith(p):
        msg = msg[len(p):].lstrip(": ")
    if prefix and "mask" not in msg:
        msg = prefix + msg
    return msg
