"""Synthetic chest X-ray phantoms: the embedded default data set.

Every pipeline stage runs on these when no real data is present. They stand in for the paper's
classification sources (section 3.1, Table 2: COVID-19 and normal frontal chest X-rays) and for the
lung-mask set of Jaeger et al. used to train the UNet (section 3.2). Each phantom is a frontal
film: body outline, two lung fields with an exact binary mask (heart overlap excluded, as in the
SCR/Montgomery masks), heart, mediastinum, trachea, spine, ribs, clavicles and diaphragm domes.
COVID-positive images add bilateral, peripheral, lower-zone ground-glass opacity and consolidation,
clipped to the lungs; ``pneumonia`` images (a non-COVID finding) add a unilateral lobar
consolidation instead. All images carry nuisances (noise, gamma, rotation, shift, L/R markers,
lines and tubes), and two planted shortcuts:

* site: "site a" films carry a burned-in corner label and a bright frame outside the lungs, and
  the site depends on the label with strength ``shortcut_strength`` (pneumonia films come from the
  COVID films' site, as the real non-COVID films of the COVID sources do), so every site gives both
  classes and a within-site comparison exists;
* geometry (off unless ``aspect_cue`` > 0): that share of the COVID films is written taller than
  wide (5:4, the film continued below the diaphragm), the others square, as on the real data,
  where most COVID films are not square and most normal films are. Squaring such a film pads it
  with bars, so the shape reaches a classifier that sees the padded square.

numpy + OpenCV only; one 128 px image takes a few milliseconds. Same arguments give byte-identical
files. Coordinates below are fractions of the image side; y grows downwards, and the patient's
left (heart side) is on the image's right.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from helpers.data.manifest import validate, write_manifest
from helpers.run import store

VERSION = 1                      # bump when the rendering changes: old folders then regenerate
SITES = ("a", "b")
CLASSES = ("covid", "normal")    # the classes of a default folder; "pneumonia" on request
#: rng stream of each class (the segment pairs use 2); a class's phantoms do not depend on which
#: other classes a folder holds
_CLASS_KEY = {"covid": 0, "normal": 1, "pneumonia": 3}
TALL_ASPECT = 1.25               # height / width of a film written taller than wide (aspect_cue)
VIEWS = ("PA", "AP", "AP Supine")
_SHIFT = 4                       # fixed-point bits for sub-pixel OpenCV drawing


# --- anatomy ------------------------------------------------------------------------------------
def sample_anatomy(rng: np.random.Generator) -> dict:
    """Per-patient anatomy: a JSON-serialisable dict of floats (fractions of the image side)."""
    u = rng.uniform
    a = {
        "cx": 0.5 + u(-0.02, 0.02), "top": u(0.13, 0.18), "bottom": u(0.74, 0.80),
        "gap": u(0.04, 0.055), "width": u(0.24, 0.28), "left_scale": u(0.88, 0.94),
        "dome": u(0.05, 0.08), "apex": u(0.35, 0.45),
        "heart_dx": u(0.04, 0.07), "heart_rx": u(0.15, 0.18), "heart_ry": u(0.15, 0.18),
        "heart_angle": u(-25, -10), "wall": u(0.035, 0.07),
        "tissue": u(0.55, 0.68), "lung_dark": u(0.30, 0.40), "bg": u(0.02, 0.08),
        "rib_spacing": u(0.058, 0.068), "rib_phase": u(-0.01, 0.01), "rib_amp": u(0.03, 0.055),
        "spine_amp": u(0.06, 0.10), "heart_amp": u(0.03, 0.07), "bubble": u(0.0, 0.12),
        "sex": str(rng.choice(["M", "F"])), "texture_seed": int(rng.integers(2**31)),
    }
    return a


def jitter_anatomy(anat: dict, rng: np.random.Generator) -> dict:
    """The same patient on another day: depth of inspiration, projection and exposure vary a bit."""
    a = dict(anat)
    insp = rng.normal(0, 0.012)
    a["bottom"] += insp
    a["top"] += insp / 3
    a["width"] *= 1 + rng.normal(0, 0.02)
    a["heart_rx"] *= 1 + rng.normal(0, 0.03)
    a["tissue"] += rng.normal(0, 0.02)
    a["lung_dark"] += rng.normal(0, 0.015)
    return a


def _lung_outline(a: dict, side: int) -> np.ndarray:
    """Outline of one lung: float (N, 2) of (x, y) fractions. side -1: image left, +1: image right."""
    scale = a["left_scale"] if side > 0 else 1.0
    top, gap, w = a["top"], a["gap"] * (1.15 if side > 0 else 1.0), a["width"] * scale
    bottom = a["bottom"] + (0.02 if side > 0 else 0.0)   # the left hemidiaphragm sits lower
    h, dm, ua = bottom - top, a["apex"] * w, 0.22
    t = np.linspace(0, 1, 40)
    lat_d = gap + dm + (w - dm) * np.sqrt(1 - (1 - t) ** 2) ** 0.9           # apex -> costophrenic
    lat_y = top + t * h
    dome_d = gap + w * (1 - t)                                                 # lateral -> medial
    dome_y = bottom - a["dome"] * np.sin(np.pi * 0.8 * t) ** 0.7
    med_y = np.linspace(dome_y[-1], top + ua * h, 20)                          # medial edge, upwards
    med_d = gap + 0.012 * np.sin(np.pi * (med_y - med_y[0]) / (med_y[-1] - med_y[0]))
    s = np.linspace(1, 0, 20)                                                  # medial apex arc
    arc_d = gap + dm * (1 - np.sqrt(np.clip(1 - (1 - s) ** 2, 0, 1)))
    arc_y = top + s * ua * h
    d = np.concatenate([lat_d, dome_d, med_d, arc_d])
    y = np.concatenate([lat_y, dome_y, med_y, arc_y])
    return np.stack([a["cx"] + side * d, y], axis=1)


def _px(pts: np.ndarray, size: int) -> np.ndarray:
    """Fractions -> fixed-point pixel coordinates (pixel centres at integers) for OpenCV."""
    return np.round((np.asarray(pts) * size - 0.5) * (1 << _SHIFT)).astype(np.int32)


def _heart(a: dict, size: int) -> np.ndarray:
    """Heart silhouette: uint8 (size, size) in {0, 1}."""
    m = np.zeros((size, size), np.uint8)
    c = _px([a["cx"] + a["heart_dx"], a["bottom"] - 0.01], size)
    ax = (int(a["heart_rx"] * size * (1 << _SHIFT)), int(a["heart_ry"] * size * (1 << _SHIFT)))
    cv2.ellipse(m, (int(c[0]), int(c[1])), ax, a["heart_angle"], 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    return m


def canonical_masks(a: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lung mask and heart mask before any transform: two uint8 (size, size) arrays in {0, 1}."""
    lungs = np.zeros((size, size), np.uint8)
    for side in (-1, 1):
        cv2.fillPoly(lungs, [_px(_lung_outline(a, side), size)], 1, cv2.LINE_8, _SHIFT)
    heart = _heart(a, size)
    return lungs & (1 - heart), heart


# --- rendering ----------------------------------------------------------------------------------
def _blur(x: np.ndarray, sigma_px: float) -> np.ndarray:
    return cv2.GaussianBlur(x.astype(np.float32), (0, 0), max(sigma_px, 0.3))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth zero-mean noise: float32 (size, size), std about 1, features ~size/cells px."""
    n = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(n, (size, size), interpolation=cv2.INTER_CUBIC)


def _draw_curves(size: int, curves, thickness: float, sigma: float = 0.6,
                 values=None) -> np.ndarray:
    """Anti-aliased polylines (arrays of (x, y) fractions): float32 (size, size) in [0, 1].

    ``values`` (one per curve, in (0, 1]) sets each curve's brightness; all 1 when None.
    """
    layer = np.zeros((size, size), np.uint8)
    th = max(1, int(round(thickness * size)))
    values = [1.0] * len(curves) if values is None else values
    for c, v in zip(curves, values):
        cv2.polylines(layer, [_px(c, size)], False, int(255 * v), th, cv2.LINE_AA, _SHIFT)
    return _blur(layer / 255.0, sigma)


def _anatomy_image(a: dict, lungs: np.ndarray, heart: np.ndarray,
                   size: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free film of the anatomy and its air term: two float32 (size, size).

    The film lies roughly in [0, 1]; ``air`` (>= 0) is the darkening the lungs' air contributes,
    which opacities take back.
    """
    rng = np.random.default_rng(a["texture_seed"])
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    dx, h = xx - a["cx"], a["bottom"] - a["top"]
    # body: neck widening into sloping shoulders, convex chest wall, thinner (darker) at the edges
    chest = a["gap"] + a["width"] + a["wall"]
    ramp = np.clip(yy / (a["top"] + 0.08), 0, 1)
    bulge = 0.94 + 0.08 * np.sin(np.pi * np.clip((yy - a["top"] + 0.05) / (h + 0.15), 0, 1))
    half = 0.08 + (chest * bulge - 0.08) * np.sqrt(1 - (1 - ramp) ** 2)
    body = (np.abs(dx) < half).astype(np.uint8)
    dist = cv2.distanceTransform(body, cv2.DIST_L2, 3) / size
    img = a["bg"] + (a["tissue"] - a["bg"]) * np.clip(dist / 0.07, 0, 1) ** 0.7
    # below the domes: liver and abdomen, denser; gastric bubble under the left dome
    below = np.maximum.accumulate(lungs, axis=0) & (1 - lungs) & (yy > a["top"] + 0.5 * h)
    below_soft = _blur(below, 2.0 * size / 128)
    img += 0.10 * below_soft * body
    img -= a["bubble"] * np.exp(-((xx - a["cx"] - 0.15) ** 2 / 0.002
                                  + (yy - a["bottom"] - 0.06) ** 2 / 0.0008))
    # lungs: dark ("air"), darkest laterally, with vessels fanning out from the hila
    soft = lungs * _blur(lungs, max(0.8, 0.7 * size / 128))   # soft edge inside the mask only
    lateral = np.clip(np.abs(dx) / (a["gap"] + a["width"]), 0, 1)
    air = a["lung_dark"] * soft * (0.75 + 0.3 * lateral)
    hy = a["top"] + 0.42 * h
    vessels, fading = [], []
    for s in (-1, 1):
        for ang in rng.uniform(-1.3, 1.2, 12):
            r = np.linspace(0, rng.uniform(0.1, 0.3), 15)[:, None]
            bend = ang + rng.normal(0, 0.8) * r ** 2 / 0.1
            pts = np.concatenate([a["cx"] + s * (a["gap"] + 0.02 + r * np.cos(bend)),
                                  hy + r * np.sin(bend)], 1)
            vessels += [pts[:6], pts[5:11], pts[10:]]     # tapering: dimmer towards the periphery
            fading += [1.0, 0.6, 0.3]
    hdist = np.sqrt((np.abs(dx) - a["gap"] - 0.03) ** 2 + (yy - hy) ** 2)
    img += soft * (0.07 * _draw_curves(size, vessels, 0.009, 0.7, fading) + 0.08 * np.exp(-hdist / 0.05)
                   + 0.02 * _smooth_noise(rng, size, 16)) * np.exp(-hdist / 0.25)
    if a["sex"] == "F":    # breast shadows over the lower lateral lungs
        img += 0.06 * sum(np.exp(-((xx - a["cx"] - s * (a["gap"] + 0.7 * a["width"])) ** 2 / 0.012
                                   + (yy - a["bottom"] + 0.05) ** 2 / 0.008)) for s in (-1, 1))
    # mediastinum, aortic knob, heart, trachea and spine
    img += 0.06 * _blur((np.abs(dx) < a["gap"]) & (yy < a["bottom"]), 1.5) * (1 - soft)
    img += 0.05 * np.exp(-((xx - a["cx"] - a["gap"] - 0.01) ** 2 + (yy - a["top"] - 0.12) ** 2)
                         / (2 * 0.03 ** 2))
    img += a["heart_amp"] * _blur(heart, max(1.0, 1.5 * size / 128)) * (1 - below_soft)
    img -= 0.08 * _blur((np.abs(dx) < 0.014) & (yy < a["top"] + 0.22), 0.8)
    vert = 0.8 + 0.2 * np.cos(2 * np.pi * yy / 0.045)
    img += a["spine_amp"] * _blur(np.abs(dx) < 0.035, 1.0) * vert * body
    # ribs (posterior arcs, faint anterior arcs) and clavicles
    d = np.linspace(0.03, chest, 24)
    dn = d / d[-1]
    post, ant = [], []
    for k in range(10):
        y0 = a["top"] + a["rib_phase"] + k * a["rib_spacing"] * (1 + 0.03 * k)
        for s in (-1, 1):
            post.append(np.stack([a["cx"] + s * d, y0 - 0.06 * np.sin(np.pi / 2 * dn) + 0.12 * dn ** 3], 1))
            ant.append(np.stack([a["cx"] + s * d[8:], y0 + 0.06 + 0.15 * (1 - dn[8:])], 1))
    thorax = (np.abs(dx) < half) * (1 - 0.7 * below_soft)
    img += a["rib_amp"] * _draw_curves(size, post, 0.018) * thorax
    img += 0.5 * a["rib_amp"] * _draw_curves(size, ant, 0.012) * thorax
    clav = [np.stack([a["cx"] + s * (0.035 + 0.3 * dn), a["top"] + 0.04 - 0.07 * dn
                      + 0.015 * np.sin(np.pi * dn)], 1) for s in (-1, 1)]
    img += 0.15 * _draw_curves(size, clav, 0.028)
    img = _blur(img, 0.4 * size / 128) - air          # air after the blur: it stays inside the mask
    return img, air.astype(np.float32)


def _findings(rng: np.random.Generator, lungs: np.ndarray, air: np.ndarray, a: dict,
              severity: float, contrast: float = 1.0) -> np.ndarray:
    """COVID-like opacity as a brightening: float32 (size, size) >= 0, zero outside ``lungs``.

    Ground-glass (broad, smooth, partial loss of air) plus, from moderate severity on,
    consolidation (denser, irregular cores); bilateral, peripheral and lower-zone. The opacity
    takes back a fraction of the lungs' ``air`` term, so it never outshines soft tissue.
    """
    size = lungs.shape[0]
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    depth = cv2.distanceTransform(lungs, cv2.DIST_L2, 3) / size
    lower = 1 / (1 + np.exp(-((yy - a["top"]) / (a["bottom"] - a["top"]) - 0.5) / 0.1))
    lateral = np.clip(np.abs(xx - a["cx"]) / (a["gap"] + a["width"]), 0, 1) ** 2
    weight = lungs * np.exp(-depth / 0.04) * lower * lateral
    sev = float(np.clip(severity, 0, 1))
    ggo = np.zeros((size, size), np.float32)
    cons = np.zeros((size, size), bool)
    for side in (xx < a["cx"], xx >= a["cx"]):
        w = (weight * side).ravel()
        if w.sum() <= 0:
            continue
        n = 1 + int(round(sev * 3 + rng.uniform(0, 1)))
        for i in rng.choice(w.size, size=n, p=w / w.sum()):
            y0, x0 = (np.array(divmod(i, size)) + 0.5) / size
            sx, sy = rng.uniform(0.04, 0.075, 2) * (0.7 + 0.6 * sev)
            blob = np.exp(-((xx - x0) ** 2 / (2 * sx ** 2) + (yy - y0) ** 2 / (2 * sy ** 2)))
            ggo += rng.uniform(0.6, 1.0) * blob
            if sev > 0.35 and rng.random() < sev:      # denser, irregular core
                cons |= blob * (1 + 0.7 * _smooth_noise(rng, size, 10)) > 0.8
    ggo = np.minimum(ggo, 1.2) * np.clip(1 + 0.5 * _smooth_noise(rng, size, 18), 0.2, 2)
    opacity = (0.22 + 0.4 * sev) * ggo + (0.25 + 0.25 * sev) * _blur(cons, 1.0 * size / 128)
    return (air * np.clip(contrast * opacity, 0, 0.9) * lungs).astype(np.float32)


def _pneumonia_findings(rng: np.random.Generator, lungs: np.ndarray, air: np.ndarray, a: dict,
                        severity: float, contrast: float = 1.0) -> np.ndarray:
    """A non-COVID pneumonia as a brightening: float32 (size, size) >= 0, zero outside ``lungs``.

    One lung only, one zone (upper, middle or lower), a dense, fairly homogeneous lobar
    consolidation with a sharp-ish edge: the pattern of a bacterial pneumonia, unlike the
    bilateral, peripheral ground-glass of :func:`_findings`.
    """
    size = lungs.shape[0]
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    side = xx < a["cx"] if rng.random() < 0.5 else xx >= a["cx"]
    zone = a["top"] + (a["bottom"] - a["top"]) * rng.choice([0.25, 0.5, 0.75])
    sev = float(np.clip(severity, 0, 1))
    half = (0.08 + 0.08 * sev) * (1 + 0.2 * _smooth_noise(rng, size, 6))
    band = np.clip(1 - np.abs(yy - zone) / np.maximum(half, 1e-3), 0, 1) ** 0.5
    opacity = (0.45 + 0.35 * sev) * band * np.clip(1 + 0.25 * _smooth_noise(rng, size, 14), 0.5, 1.5)
    return (air * np.clip(contrast * opacity, 0, 0.9) * lungs * side).astype(np.float32)


def _site_layer(rng: np.random.Generator, size: int, site: str) -> np.ndarray:
    """Site 'a' nuisance in image coordinates: burned-in label top right plus a bright frame.

    float32 (size, size) >= 0; all zeros for site 'b'.
    """
    layer = np.zeros((size, size), np.float32)
    if site != "a":
        return layer
    b = max(2, round(0.025 * size))
    layer[:b], layer[-b:], layer[:, :b], layer[:, -b:] = 0.22, 0.22, 0.22, 0.22
    x0, x1, y0, y1 = (int(round(f * size)) for f in (0.70, 0.96, 0.035, 0.115))
    label = np.zeros((size, size), np.uint8)
    label[y0:y1, x0:x1] = 200
    txt = f"{rng.integers(10, 99)}{chr(65 + int(rng.integers(26)))}"
    cv2.putText(label, txt, (x0 + 1, y1 - max(1, size // 64)), cv2.FONT_HERSHEY_PLAIN,
                (y1 - y0) / 14, 30, 1, cv2.LINE_AA)
    return np.maximum(layer, label.astype(np.float32) / 250)


def _clutter(rng: np.random.Generator, size: int, outside: np.ndarray) -> np.ndarray:
    """Everyday nuisances: an L/R marker and sometimes ECG leads or a line/tube.

    float32 (size, size) in [0, 1) (opacity). The marker stays in a lower or the top-left
    corner, outside the lungs (``outside``: float (size, size), 1 off the lung mask); leads and
    tubes may cross the lungs as on real films.
    """
    marker = np.zeros((size, size), np.uint8)
    corner = int(rng.integers(3))    # the top-right corner is reserved for the site label
    fx, fy = [(0.05, 0.12), (0.05, 0.95), (0.82, 0.95)][corner]
    org = (int((fx + rng.uniform(0, 0.05)) * size), int((fy - rng.uniform(0, 0.03)) * size))
    cv2.putText(marker, str(rng.choice(["L", "R"])), org, cv2.FONT_HERSHEY_SIMPLEX, size / 320,
                220, max(1, size // 96), cv2.LINE_AA)
    layer = np.zeros((size, size), np.uint8)
    curves = []
    t = np.linspace(0, 1, 30)[:, None]
    n_leads = int(rng.integers(1, 4)) if rng.random() < 0.4 else 0
    for _ in range(n_leads):                                          # ECG leads and electrodes
        p0 = np.array([rng.choice([0.0, 1.0]), rng.uniform(0.2, 0.9)])
        p2 = rng.uniform([0.2, 0.2], [0.8, 0.75])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.12, 2)
        curves.append((1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t ** 2 * p2)
        cv2.circle(layer, tuple(int(v) for v in _px(p2, size)), int(0.025 * size * (1 << _SHIFT)), 200, -1,
                   cv2.LINE_AA, _SHIFT)
    if rng.random() < 0.3:                                            # tube down the mediastinum
        x = 0.5 + rng.uniform(-0.02, 0.02) + 0.02 * np.sin(np.pi * t * rng.uniform(1, 2))
        curves.append(np.concatenate([x, 0.02 + t * rng.uniform(0.5, 0.85)], 1))
    if curves:
        cv2.polylines(layer, [_px(c, size) for c in curves], False, 170,
                      max(1, size // 110), cv2.LINE_AA, _SHIFT)
    return (np.maximum(layer, marker * outside) / 255 * 0.5).astype(np.float32)


def render(rng: np.random.Generator, size: int, covid: bool, site: str, severity: float = 0.0,
           anatomy: dict | None = None, contrast: float = 1.0,
           finding: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: image uint8 (size, size) in [0, 255], lung mask uint8 (size, size) in {0, 1}.

    ``anatomy`` (from :func:`sample_anatomy`) is drawn from ``rng`` when None. ``covid`` adds
    COVID-like findings of extent ``severity`` in [0, 1] inside the lungs (``finding="pneumonia"``
    a unilateral lobar consolidation instead); ``site`` "a" adds the shortcut nuisance outside
    them. The number of draws from ``rng`` depends on neither the finding nor ``site``, so two
    calls with equal generators differ only by the findings (inside the mask) or the site
    nuisance (outside it). ``contrast`` scales the findings' opacity (1 = default).
    """
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    finding = finding or ("covid" if covid else None)
    if finding not in (None, "covid", "pneumonia"):
        raise ValueError(f"finding must be None, 'covid' or 'pneumonia', got {finding!r}")
    a = sample_anatomy(rng) if anatomy is None else anatomy
    find_rng, site_rng = (np.random.default_rng(int(s)) for s in rng.integers(2**31, size=2))
    lungs0, heart0 = canonical_masks(a, size)
    img0, air0 = _anatomy_image(a, lungs0, heart0, size)
    draw = {"covid": _findings, "pneumonia": _pneumonia_findings}.get(finding or "")
    find0 = draw(find_rng, lungs0, air0, a, severity, contrast) if draw else None
    # rotation (+-5 deg) and shift (+-5 %) of film and mask together; the mask by nearest neighbour
    m = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), rng.uniform(-5, 5), 1.0)
    m[:, 2] += rng.uniform(-0.05, 0.05, 2) * size
    warp = dict(dsize=(size, size), borderMode=cv2.BORDER_CONSTANT)
    img = cv2.warpAffine(img0, m, flags=cv2.INTER_LINEAR, borderValue=a["bg"], **warp)
    mask = cv2.warpAffine(lungs0, m, flags=cv2.INTER_NEAREST, borderValue=0, **warp)
    if find0 is not None:            # clipped to the final mask, so it never leaks outside it
        img += cv2.warpAffine(find0, m, flags=cv2.INTER_LINEAR, borderValue=0, **warp) * mask
    outside = (1 - mask).astype(np.float32)
    img += _site_layer(site_rng, size, site) * outside
    clutter = _clutter(rng, size, outside)
    img = np.maximum(img, img * (1 - clutter) + clutter * 1.6)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)
    img += rng.normal(0, rng.uniform(0.008, 0.025), img.shape).astype(np.float32)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8), mask


# --- data set -----------------------------------------------------------------------------------
def _severity(rng: np.random.Generator) -> float:
    """Patient severity: about 20 % faint (0.05-0.25), the rest 0.3-1."""
    return float(rng.uniform(0.05, 0.25) if rng.random() < 0.2 else rng.uniform(0.3, 1.0))


def _plan(n_patients: int, images_per_patient: tuple[int, int], n_seg_pairs: int,
          shortcut_strength: float, seed: int, classes: tuple[str, ...] = CLASSES,
          aspect_cue: float = 0.0) -> list[dict]:
    """Every image to write, with its manifest fields and how to render it (no pixels yet)."""
    rows = []
    lo, hi = images_per_patient
    s = float(shortcut_strength)
    for label in classes:
        ci = _CLASS_KEY[label]
        # the non-COVID films of the COVID films' sources (label pneumonia) share their site
        p_a = 0.5 - s / 2 if label == "normal" else 0.5 + s / 2
        for i in range(n_patients):
            rng = np.random.default_rng([seed, ci, i])
            site = "a" if rng.random() < p_a else "b"
            anat, age, sev = sample_anatomy(rng), int(rng.integers(18, 91)), _severity(rng)
            pid = (f"phantom-pn-{i:04d}" if label == "pneumonia"    # unique whatever the other folder
                   else f"phantom-{ci * n_patients + i:04d}")
            for j in range(int(rng.integers(lo, hi + 1))):
                name = f"{label}/{pid}_{j}.png"
                sev_j = float(np.clip(sev + rng.normal(0, 0.08), 0.05, 1)) if label != "normal" else 0.0
                # a stream of its own, so switching the cue leaves every other draw as it was
                tall = (label == "covid" and aspect_cue > 0
                        and bool(np.random.default_rng([seed, ci, i, j, 7]).random() < aspect_cue))
                rows.append(dict(
                    path=name, split_role="classify", label=label, source=f"phantom-{site}",
                    patient_id=pid, view=str(rng.choice(VIEWS)), sex=anat["sex"], age=str(age),
                    mask_path=f"masks/{name}", severity=round(sev_j, 4),
                    finding="lobar consolidation (phantom)" if label == "pneumonia" else "",
                    _key=[seed, ci, i, j], _anat=anat, _finding=None if label == "normal" else label,
                    _site=site, _tall=tall))
    for k in range(n_seg_pairs):
        rng = np.random.default_rng([seed, 2, k])
        anat = sample_anatomy(rng)
        covid = bool(rng.random() < 0.3)
        rows.append(dict(
            path=f"seg/images/seg-{k:04d}.png", split_role="segment", label="", source="phantom-seg",
            patient_id=f"phantom-seg-{k:04d}", view=str(rng.choice(VIEWS)), sex=anat["sex"],
            age=str(int(rng.integers(18, 91))), mask_path=f"seg/masks/seg-{k:04d}.png",
            severity=round(_severity(rng), 4) if covid else 0.0, finding="",
            _key=[seed, 2, k, 0], _anat=anat, _finding="covid" if covid else None,
            _site=str(rng.choice(SITES)), _tall=False))
    return rows


def make_tall(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A square phantom continued below its bottom edge to ``TALL_ASPECT`` (the film mirrored
    there, no lung added): image and mask of shape (round(side * TALL_ASPECT), side)."""
    extra = int(round(img.shape[1] * TALL_ASPECT)) - img.shape[0]
    return (cv2.copyMakeBorder(img, 0, extra, 0, 0, cv2.BORDER_REFLECT_101),
            cv2.copyMakeBorder(mask, 0, extra, 0, 0, cv2.BORDER_CONSTANT, value=0))


def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(buf.tobytes())


def generate(folder: str | Path, n_patients: int, images_per_patient: tuple[int, int] = (1, 3),
             n_seg_pairs: int = 60, size: int = 128, shortcut_strength: float = 0.9,
             seed: int = 0, overwrite: bool = False, finding_contrast: float = 1.0,
             classes: tuple[str, ...] = CLASSES, aspect_cue: float = 0.0) -> Path:
    """Write a manifest folder of phantoms and return it.

    Contents: manifest.csv (schema of :mod:`helpers.data.manifest` plus a ``severity`` column),
    <class>/*.png for each of ``classes`` (classify rows, ``n_patients`` per class, several images
    per patient sharing label and site; ``aspect_cue`` > 0 writes that share of the COVID films
    taller than wide), masks/<class>/*.png (their exact lung masks, 0/255),
    seg/images/*.png with seg/masks/*.png (segment rows) and phantoms.json (the parameters and the
    files written). Same arguments give byte-identical files.

    An existing folder whose phantoms.json has identical parameters is reused as it is when all
    its files exist (and completed otherwise). Any other non-empty folder raises FileExistsError
    unless ``overwrite``; then only files listed in its phantoms.json are replaced, and a file
    this generator did not write is never touched (FileExistsError if one is in the way).
    """
    folder = Path(folder)
    lo, hi = images_per_patient
    if not (0.0 <= shortcut_strength <= 1.0 and 1 <= lo <= hi and n_patients >= 1 and size >= 32):
        raise ValueError("need 0 <= shortcut_strength <= 1, 1 <= lo <= hi, n_patients >= 1, size >= 32")
    classes = tuple(classes)
    if not classes or set(classes) - set(_CLASS_KEY) or len(set(classes)) < len(classes):
        raise ValueError(f"classes must be distinct names from {tuple(_CLASS_KEY)}, got {classes}")
    if not 0.0 <= aspect_cue <= 1.0:
        raise ValueError(f"aspect_cue must lie in [0, 1], got {aspect_cue}")
    params = json.loads(json.dumps(dict(
        version=VERSION, n_patients=n_patients, images_per_patient=[lo, hi], n_seg_pairs=n_seg_pairs,
        size=size, shortcut_strength=float(shortcut_strength), seed=seed,
        **({} if finding_contrast == 1.0 else {"finding_contrast": float(finding_contrast)}),
        # only when not the defaults, so a default folder's parameters (and reuse) stay as they were
        **({} if classes == CLASSES else {"classes": list(classes)}),
        **({} if aspect_cue == 0.0 else {"aspect_cue": float(aspect_cue)}))))
    meta_file = folder / "phantoms.json"
    try:
        old = store.load_json(meta_file) if meta_file.is_file() else None
    except (OSError, ValueError):
        old = "unreadable"
    ours = set(old.get("files", [])) | {"phantoms.json"} if isinstance(old, dict) else set()
    if isinstance(old, dict) and old.get("params") == params:
        if old.get("complete") and all((folder / f).is_file() for f in old["files"]):
            return folder
    elif folder.is_dir() and any(folder.iterdir()) and not overwrite:
        why = "phantoms with other parameters" if isinstance(old, dict) else "files that are not phantoms"
        raise FileExistsError(f"{folder} already holds {why}; choose an empty folder or pass "
                              "overwrite=True (only files listed in its phantoms.json are replaced)")
    plan = _plan(n_patients, (lo, hi), n_seg_pairs, shortcut_strength, seed, classes, aspect_cue)
    files = sorted({r[k] for r in plan for k in ("path", "mask_path")} | {"manifest.csv"})
    clash = [f for f in files if (folder / f).exists() and f not in ours]
    if clash:
        raise FileExistsError(f"{folder}: {len(clash)} file(s) not written by this generator are in "
                              f"the way (e.g. {clash[0]}); refusing to replace them")
    for f in sorted(ours - set(files) - {"phantoms.json"}):      # stale files of an earlier run
        (folder / f).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    store.save_json({"params": params, "files": files, "complete": False}, meta_file)
    for r in plan:
        img, mask = render(np.random.default_rng(r["_key"]), size, False, r["_site"],
                           r["severity"], jitter_anatomy(r["_anat"], np.random.default_rng(r["_key"] + [1])),
                           contrast=finding_contrast, finding=r["_finding"])
        if r["_tall"]:
            img, mask = make_tall(img, mask)
        _write_png(folder / r["path"], img)
        _write_png(folder / r["mask_path"], mask * 255)
    df = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in plan])
    df["license"], df["source_repo"] = "CC0 (generated)", "hrnet-cxr (generated)"
    df["severity"] = df["severity"].map(lambda v: f"{v:.4f}")
    validate(df, where=f"phantoms in {folder}", root=folder)
    write_manifest(df, folder, overwrite=True)
    store.save_json({"params": params, "files": files, "complete": True}, meta_file)
    return folder
