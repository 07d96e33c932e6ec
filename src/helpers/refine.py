"""Mask refinement (section 3.2, Fig. 6): dilation, closing, and the lung-area quality threshold.

The paper dilates the predicted mask for 8 iterations and closes it for 2 iterations "to gain more
information from the edges of the lungs", then keeps an image only if the total segmented area is
at least 50,000 pixels (at 512 x 512). Iterations of a 3 x 3 structuring element grow the mask by
one pixel each, so at other resolutions both the iteration counts and the area threshold scale
with the image side (iterations linearly, area quadratically) to keep the same physical effect.
Images below the threshold are counted per class and reported, never dropped silently.
"""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from helpers.config import scaled_iterations

__all__ = ["scaled_iterations", "binarise", "refine_mask", "refine_all", "area_threshold", "pass_table",
           "pass_by_group", "pass_gap",
           "resize_masks", "apply_mask", "refine_cohort", "refine_counts"]

KERNEL = np.ones((3, 3), np.uint8)


def binarise(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """prob: float (H, W) in [0, 1] -> uint8 (H, W) in {0, 1}."""
    return (np.asarray(prob, dtype=np.float32) >= threshold).astype(np.uint8)


def refine_mask(mask: np.ndarray, dilate_iters: int, close_iters: int) -> np.ndarray:
    """Dilate then close a binary mask: uint8 (H, W) {0, 1} -> uint8 (H, W) {0, 1}.

    A mask never shrinks under refinement (dilation then closing are both extensive).
    """
    m = (np.asarray(mask) > 0).astype(np.uint8)
    if dilate_iters > 0:
        m = cv2.dilate(m, KERNEL, iterations=int(dilate_iters))
    if close_iters > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, KERNEL, iterations=int(close_iters))
    return m


def refine_all(probs: np.ndarray, profile, threshold: float = 0.5
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine a stack of predicted probabilities at ``profile.seg_size``.

    probs: float (N, S, S) in [0, 1]. Returns (raw uint8 (N,S,S) {0,1}, refined uint8 (N,S,S) {0,1},
    area int64 (N,) of the refined masks in pixels).
    """
    size = probs.shape[-1]
    di = scaled_iterations(profile.dilate_iters, size)
    ci = scaled_iterations(profile.close_iters, size)
    raw = (np.stack([binarise(p, threshold) for p in probs]) if len(probs)
           else np.zeros((0, size, size), np.uint8))
    ref = np.stack([refine_mask(m, di, ci) for m in raw]) if len(raw) else raw.copy()
    area = ref.reshape(len(ref), -1).sum(1).astype(np.int64)
    return raw, ref, area


def area_threshold(profile, size: int) -> int:
    """The 50,000 px threshold at 512 x 512 scaled by area to ``size`` x ``size``
    (:meth:`helpers.config.Profile.area_threshold_at`)."""
    return profile.area_threshold_at(size)


def pass_table(labels: pd.Series, passed: np.ndarray) -> pd.DataFrame:
    """Images passing / failing the area threshold per class, with the share kept."""
    df = pd.DataFrame({"label": np.asarray(labels), "passed": np.asarray(passed, bool)})
    t = df.groupby("label")["passed"].agg(total="size", passed="sum")
    t["failed"] = t["total"] - t["passed"]
    t.loc["all"] = t.sum()
    t["kept_%"] = (100.0 * t["passed"] / t["total"]).round(1)
    return t.reset_index()


def _pass_counts(part: pd.DataFrame, **keys) -> dict:
    """``keys`` plus total, passed and failed films of ``part`` (a bool ``passed`` column): the
    counts both pass tables (:func:`pass_by_group`, :func:`refine_counts`) are built on."""
    n, k = len(part), int(part["passed"].sum())
    return {**keys, "total": n, "passed": k, "failed": n - k}


def pass_by_group(index: pd.DataFrame, area: np.ndarray, passed: np.ndarray, size: int) -> pd.DataFrame:
    """The refinement pass rate and the predicted lung area per label x source (item 4 of the
    sites issue): opaque lungs that the UNet under-segments fail the area threshold, so a gap
    between COVID and non-COVID films means the refinement selects by disease.

    index: the classification rows (``label``, ``source``); area: refined lung pixels per film at
    ``size`` x ``size``; passed: bool per film. Rows per (label, source), then per label over all
    sources (source "all"), then "non-covid" (every label but covid) and "all". Columns: label,
    source, total, passed, failed, kept_%, lung_area_% (median refined lung area, % of the
    image), lung_area_%_q1 and _q3.
    """
    if not len(index) == len(np.asarray(area)) == len(np.asarray(passed)):
        raise ValueError(f"{len(index)} index rows but {len(np.asarray(area))} areas and "
                         f"{len(np.asarray(passed))} pass flags")
    d = pd.DataFrame({"label": index["label"].astype(str).to_numpy(),
                      "source": index["source"].astype(str).to_numpy(),
                      "area": 100.0 * np.asarray(area, np.float64) / float(size * size),
                      "passed": np.asarray(passed, bool)})

    def agg(part: pd.DataFrame, **keys) -> dict:
        r = _pass_counts(part, **keys)
        q = part["area"].quantile([0.25, 0.5, 0.75]).round(1).tolist() if len(part) else [np.nan] * 3
        return {**r, "kept_%": round(100.0 * r["passed"] / r["total"], 1) if r["total"] else np.nan,
                "lung_area_%": q[1], "lung_area_%_q1": q[0], "lung_area_%_q3": q[2]}

    rows = [agg(part, label=lab, source=src)
            for (lab, src), part in d.groupby(["label", "source"], sort=True)]
    rows += [agg(part, label=lab, source="all") for lab, part in d.groupby("label", sort=True)]
    rows.append(agg(d[d["label"] != "covid"], label="non-covid", source="all"))
    rows.append(agg(d, label="all", source="all"))
    return pd.DataFrame(rows)


def pass_gap(table: pd.DataFrame) -> float:
    """COVID minus non-COVID share kept by refinement, in percentage points, from
    :func:`pass_by_group` (nan when a side is missing). Negative: the refinement drops COVID films
    more often."""
    t = table[table["source"].astype(str) == "all"].set_index(table["label"].astype(str)[
        table["source"].astype(str) == "all"])
    if not {"covid", "non-covid"} <= set(t.index):
        return float("nan")
    gap = pd.to_numeric(t.loc["covid", "kept_%"]) - pd.to_numeric(t.loc["non-covid", "kept_%"])
    return round(float(gap), 1)


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of uint8 (N, S, S) masks to (N, size, size)."""
    if masks.shape[-1] == size:
        return np.ascontiguousarray(masks)
    return np.stack([cv2.resize(np.ascontiguousarray(m), (size, size), interpolation=cv2.INTER_NEAREST)
                     for m in masks]) if len(masks) else np.zeros((0, size, size), masks.dtype)


def apply_mask(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Keep the lungs, zero the rest: uint8 (N, H, W) x {0,1} (N, H, W) -> uint8 (N, H, W)."""
    if images.shape != masks.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} differ in shape")
    return (np.asarray(images) * (np.asarray(masks) > 0)).astype(np.uint8)


def refine_cohort(profile, states: list[dict], images_seg: np.ndarray, images_cls: np.ndarray,
                  device: str = "cpu", desc: str = "predict masks",
                  held_out=None) -> dict[str, np.ndarray]:
    """Section 3.2 for one cohort: lung masks from the mean of the fold UNets, refined, measured
    against the area threshold, and the films segmented.

    images_seg: uint8 (N, seg_size, seg_size) for the UNet; images_cls: the same films uint8 (N,
    cls_size, cls_size). Returns ``raw`` and ``refined`` masks (uint8 {0, 1} at seg_size),
    ``area`` (refined lung pixels), ``threshold`` (the scaled area threshold), ``passed`` (bool),
    ``raw_cls`` and ``refined_cls`` (the masks at cls_size) and ``segmented`` (the films with
    everything outside the refined mask set to 0). Every film is refined and segmented, also
    those below the threshold, so that they can be counted and scored apart.

    ``held_out``: int (N,), per film the UNet fold whose test set held it (a segmentation film
    classified as well), or -1; such a film's mask comes from that fold's UNet alone, which never
    trained on it.
    """
    from helpers import segment

    images_seg = np.asarray(images_seg)
    held = np.full(len(images_seg), -1) if held_out is None else np.asarray(held_out, dtype=np.int64)
    probs = np.zeros(images_seg.shape, dtype=np.float32)
    rest = np.flatnonzero(held < 0)
    if len(rest):
        probs[rest] = segment.predict(profile, states, images_seg[rest], device, desc=desc)
    for k in sorted(set(held[held >= 0].tolist())):
        if k >= len(states):
            raise ValueError(f"held_out names UNet fold {k}, but there are {len(states)} fold models")
        rows = np.flatnonzero(held == k)
        probs[rows] = segment.predict(profile, [states[k]], images_seg[rows], device,
                                      desc=f"{desc} (UNet fold {k + 1}, held-out films)")
    raw, refined, area = refine_all(probs, profile)
    thr = area_threshold(profile, profile.seg_size)
    raw_c, ref_c = resize_masks(raw, profile.cls_size), resize_masks(refined, profile.cls_size)
    return {"raw": raw, "refined": refined, "area": area, "threshold": thr, "passed": area >= thr,
            "raw_cls": raw_c, "refined_cls": ref_c, "segmented": apply_mask(np.asarray(images_cls), ref_c)}


def refine_counts(ri: pd.DataFrame) -> pd.DataFrame:
    """Films that passed / failed refinement per source and label, with totals.

    ri: a refine index with ``source``, ``label`` and ``passed`` (bool or "True"/"False").
    Returns columns source, label, total, passed, failed, failed_% ; rows per (source, label),
    then per source over both labels (label "all") and the overall row (source "all").
    """
    from helpers.run import store

    cols = ["source", "label", "total", "passed", "failed", "failed_%"]
    if ri is None or ri.empty:
        return pd.DataFrame(columns=cols)
    d = ri.assign(passed=store.bool_column(ri, "passed"))

    def agg(part: pd.DataFrame, **keys) -> dict:
        r = _pass_counts(part, **keys)
        return {**r, "failed_%": round(100.0 * r["failed"] / r["total"], 1) if r["total"] else float("nan")}

    rows = [agg(part, source=s, label=lab) for (s, lab), part in d.groupby(["source", "label"], sort=True)]
    rows += [agg(part, source=s, label="all") for s, part in d.groupby("source", sort=True)]
    rows += [agg(part, source="all", label=lab) for lab, part in d.groupby("label", sort=True)]
    rows.append(agg(d, source="all", label="all"))
    return pd.DataFrame(rows, columns=cols)
