"""Apply a bundle's models to new radiographs (issue 11): mask, refinement, probability, heat map.

``Predictor.from_bundle(path).predict(path_or_array)`` for one image, ``predict_many(inputs,
out=...)`` for files, folders and lists (CLI: ``hrnet-cxr predict INPUT... --bundle B --out O``).
Every image goes through the code the notebooks ran, in the same order:

1. :func:`helpers.data.decode.read_image` (PNG/JPEG 8- or 16-bit, DICOM through pydicom with its LUTs,
   MONOCHROME1 inverted; multi-frame, pixel-less and undecodable objects refused with the reason)
   and the plausibility checks of :mod:`helpers.data.checks` (size, near-constant, a DICOM's
   non-frontal ViewPosition);
2. :func:`helpers.data.decode.square` to ``seg_size`` and ``cls_size`` (curation's geometry);
3. the mean of the fold UNets (:func:`helpers.segment.predict`), the section 3.2 refinement and
   lung-area check (:func:`helpers.refine.refine_all`, :func:`~helpers.refine.area_threshold`);
   a mask below the area threshold gives status ``no_lung_mask`` and no probability;
4. the segmented input (:func:`helpers.refine.apply_mask`) through each fold classifier
   (:func:`helpers.train.predict_proba`); their mean, min, max and sd; the decision is
   ``mean >= median of the fold thresholds`` (:func:`helpers.deploy.bundle.decision_threshold`);
5. Grad-CAM (:func:`helpers.explain.gradcam`) of every fold model for the decided class,
   averaged, with the share of heat inside the predicted lungs (:func:`helpers.explain.heat_share`,
   lungs = the unrefined mask, as notebook 04 measures it);
6. the out-of-distribution flags of :mod:`helpers.deploy.ood`.

Statuses: ``ok``; ``no_lung_mask`` (mask failed refinement); ``rejected`` (decoded but not a
usable frontal radiograph: too small, near-constant, lateral view); ``unreadable`` (not decodable:
corrupt file, multi-frame or pixel-less DICOM, unsupported compression, missing file).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import pandas as pd

from helpers import explain, refine, segment, train
from helpers.data import checks, decode
from helpers.deploy import bundle as bd
from helpers.deploy import ood
from helpers.run import progress, store

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif") + decode.DICOM_EXTS
STATUSES = ("ok", "no_lung_mask", "rejected", "unreadable")
COLUMNS = ["input", "status", "reason", "probability", "prob_min", "prob_max", "prob_sd", "fold_probs",
           "folds_positive", "threshold", "decision", "flags", "heat_share_lung", "lung_area_fraction",
           "lung_area_px", "area_threshold_px", "mask_png", "heatmap_png", "notes", "model"]
OVERLAY_SIZE = 256  # side of the heat-map PNG (px); masks are written at cls_size
CHUNK = 32          # images per forward pass


@dataclass
class _Item:
    """One input on its way through the pipeline."""

    name: str
    image: np.ndarray | None = None
    row: dict = field(default_factory=dict)


class Predictor:
    """The fold UNets and fold classifiers of one bundle, loaded once.

    ``folds``: use only these classifier folds (fold ids as in the bundle, from 0); the decision
    threshold is then the median of their thresholds. ``heatmaps``: compute Grad-CAM (needed for
    the heat-map PNG and ``heat_share_lung``).
    """

    def __init__(self, bundle_dir: str | Path, model: str | None = None, folds: Sequence[int] | None = None,
                 device: str = "cpu", heatmaps: bool = True):
        self.bundle_dir = Path(bundle_dir).resolve()
        self.meta = bd.read_meta(self.bundle_dir)
        self.model = model or self.meta["default_model"]
        if self.model not in self.meta["classifiers"]:
            raise bd.BundleError(f"model {self.model!r} is not in {self.bundle_dir}; it holds "
                                 f"{sorted(self.meta['classifiers'])}")
        c = self.meta["classifiers"][self.model]
        avail = [f["fold"] for f in c["folds"]]
        chosen = list(avail) if folds is None else [int(k) for k in folds]
        bad = [k for k in chosen if k not in avail]
        if bad or not chosen:
            raise ValueError(f"folds {bad or chosen} not in the bundle; it has folds {avail}")
        self.folds = chosen
        self.device, self.heatmaps = device, heatmaps
        self.profile = bd.profile_from_dict(self.meta["profile"])
        self.input_kind = c["input"]
        self.ranges = self.meta.get("ood", {})
        bd.verify(self.bundle_dir, self.meta, self.model)
        self.unet_states = [bd.load_state(self.bundle_dir, e) for e in self.meta["weights"]["unet"]]
        self.classifiers, self.thresholds = [], []
        for e in c["folds"]:
            if e["fold"] in chosen:
                m = train.build(self.profile, c["architecture"], device)
                m.load_state_dict(bd.load_state(self.bundle_dir, e))
                m.eval()
                _grad_only_from_target(m)
                self.classifiers.append(m)
                self.thresholds.append(float(e["threshold"]))
        self.threshold = bd.decision_threshold(self.thresholds)
        self.area_threshold = refine.area_threshold(self.profile, self.profile.seg_size)

    @classmethod
    def from_bundle(cls, path: str | Path, **kw) -> "Predictor":
        return cls(path, **kw)

    # ------------------------------------------------------------------------------------------
    def _decode(self, x, name: str | None = None) -> _Item:
        """Read and check one input (a path or an array); failures go into the row."""
        if isinstance(x, np.ndarray):
            it = _Item(name or "<array>")
            a = np.asarray(x)
            if a.ndim != 2:
                return self._fail(it, "unreadable", f"array of shape {a.shape}; expected one 2-D image")
            it.image = a if a.dtype == np.uint8 else decode.to_uint8(a)
            notes: list[str] = [] if a.dtype == np.uint8 else [f"{a.dtype} array: mapped min..max to 8-bit"]
            view = ""
        else:
            it = _Item(str(x))
            info: dict = {}
            try:
                it.image = decode.read_image(x, info=info)
            except decode.ImageError as exc:
                return self._fail(it, "unreadable", checks.short_reason(exc, x))
            notes, view = list(info.get("notes", [])), info.get("view", "")
        it.row["notes"] = "; ".join(notes)
        reason = checks.view_reason(view)
        if reason is not None:
            return self._fail(it, "rejected", reason + " (DICOM ViewPosition)")
        reason = checks.image_reason(it.image)
        if reason is not None:
            return self._fail(it, "rejected", reason)
        return it

    @staticmethod
    def _fail(it: _Item, status: str, reason: str) -> _Item:
        it.image = None
        it.row.update(status=status, reason=reason)
        return it

    def _run(self, items: list[_Item]) -> list[dict]:
        """Masks, probabilities, heat maps and flags for decoded items (in place); returns extras
        (arrays for the PNGs) per item."""
        P = self.profile
        good = [i for i, it in enumerate(items) if it.image is not None]
        extras: list[dict] = [{} for _ in items]
        if not good:
            return extras
        imgs = [items[i].image for i in good]
        cls_img = np.stack([decode.square(a, P.cls_size) for a in imgs])
        seg_img = np.stack([decode.square(a, P.seg_size) for a in imgs])
        probs = segment.predict(P, self.unet_states, seg_img, self.device, desc=None)
        raw, ref, area = refine.refine_all(probs, P)
        raw_c, ref_c = refine.resize_masks(raw, P.cls_size), refine.resize_masks(ref, P.cls_size)
        segmented = refine.apply_mask(cls_img, ref_c)
        inputs = segmented if self.input_kind == "segmented" else cls_img
        feats = ood.features(cls_img, ref).to_dict("records")
        passed = area >= self.area_threshold
        ok = np.flatnonzero(passed)
        fold_p = (np.stack([train.predict_proba(m, inputs[ok], self.device, P.bf16, P.channels_last)
                            for m in self.classifiers], axis=1) if len(ok)
                  else np.zeros((0, len(self.classifiers))))
        mean = fold_p.mean(1)
        decided = (mean >= self.threshold).astype(int)
        heat = np.zeros((len(ok), P.cls_size, P.cls_size), np.float32)
        if self.heatmaps and len(ok):
            for m in self.classifiers:
                heat += explain.gradcam(m, inputs[ok], decided, self.device)
            heat /= len(self.classifiers)
            share = explain.heat_share(heat, raw_c[ok])
        else:
            share = np.full(len(ok), np.nan)
        chance = explain.area_fraction(raw_c[ok]) if len(ok) else np.zeros(0)
        pos = {j: n for n, j in enumerate(ok)}
        for j, i in enumerate(good):
            row = items[i].row
            row.update(lung_area_px=int(area[j]), area_threshold_px=int(self.area_threshold))
            extras[i] = {"mask": ref_c[j], "lungs": raw_c[j], "image": cls_img[j]}
            flags = ood.range_flags(feats[j], self.ranges)
            if not passed[j]:
                row.update(status="no_lung_mask",
                           reason=f"refined lung mask {int(area[j])} px < {self.area_threshold} px "
                                  f"(section 3.2 area check at {P.seg_size} px)")
                row["flags"] = flags
                continue
            n = pos[j]
            p = fold_p[n]
            votes = int(sum(pk >= tk for pk, tk in zip(p, self.thresholds)))
            if 0 < votes < len(p):
                flags.append("fold_disagreement")
            if self.heatmaps and np.isfinite(share[n]) and share[n] <= chance[n]:
                flags.append("heat_not_in_lungs")
            row.update(status="ok", reason="", probability=float(mean[n]), prob_min=float(p.min()),
                       prob_max=float(p.max()), prob_sd=float(p.std()),
                       fold_probs=[float(v) for v in p], folds_positive=f"{votes}/{len(p)}",
                       threshold=self.threshold, decision="covid" if decided[n] else "normal",
                       heat_share_lung=float(share[n]), lung_area_fraction=float(chance[n]), flags=flags)
            extras[i]["heat"] = heat[n] if self.heatmaps else None
        return extras

    def _finish(self, it: _Item) -> dict:
        row = {c: None for c in COLUMNS}
        row.update(input=it.name, flags=[], fold_probs=[], model=self.model)
        row.update(it.row)
        return row

    # ------------------------------------------------------------------------------------------
    def predict(self, x, name: str | None = None) -> dict:
        """One image (path or uint8/uint16 (H, W) array) -> its row (dict of :data:`COLUMNS`)."""
        it = self._decode(x, name)
        self._run([it])
        return self._finish(it)

    def predict_many(self, inputs: Iterable, out: str | Path | None = None,
                     show_progress: bool = True) -> pd.DataFrame:
        """Rows for many inputs (paths or arrays), in order. With ``out`` (a new or empty folder,
        never one holding inputs) the CSV, JSON lines and PNGs are written there too."""
        inputs = list(inputs)
        out_dir = prepare_out(out, inputs) if out is not None else None
        rows: list[dict] = []
        t0 = time.time()
        it_inputs = (progress.iterate(inputs, "predict", unit="image")
                     if show_progress and len(inputs) > 1 else inputs)
        chunk: list[_Item] = []

        def flush():
            extras = self._run(chunk)
            for n, (item, ex) in enumerate(zip(chunk, extras)):
                row = self._finish(item)
                if out_dir is not None and ex:
                    stem = f"{len(rows) + 1:05d}_{_safe(item.name)}"
                    row["mask_png"] = _write_png(out_dir / "masks" / f"{stem}.png", ex["mask"] * 255, out_dir)
                    if ex.get("heat") is not None:
                        row["heatmap_png"] = _write_png(out_dir / "heatmaps" / f"{stem}.png",
                                                        overlay(ex["image"], ex["heat"], ex["lungs"],
                                                                caption=_caption(row)), out_dir)
                rows.append(row)
            chunk.clear()

        for i, x in enumerate(it_inputs):
            chunk.append(self._decode(x, None if not isinstance(x, np.ndarray) else f"array{i}"))
            if len(chunk) >= CHUNK:
                flush()
        if chunk:
            flush()
        df = pd.DataFrame(rows, columns=COLUMNS)
        for c in ("lung_area_px", "area_threshold_px"):
            df[c] = df[c].astype("Int64")
        if out_dir is not None:
            write_outputs(df, out_dir, self, time.time() - t0)
        return df


def _grad_only_from_target(model) -> None:
    """Let gradients reach the Grad-CAM layer and go no further back.

    Only the target layer's parameters require gradients, so a backward pass from the logit
    computes the gradients of the target activations (all Grad-CAM uses; they do not depend on
    which parameters require gradients) without running through the backbone below it: about
    3x faster Grad-CAM, the same maps. The model is used for inference only.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.target_layer.parameters():
        p.requires_grad_(True)


# ----------------------------------------------------------------------------------------------
# inputs and outputs
# ----------------------------------------------------------------------------------------------
def expand_inputs(args: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded (recursively, sorted) to their image and DICOM files;
    hidden files and files of other types inside folders are skipped. A path that does not
    exist is kept (its row says 'file not found')."""
    out: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if f.is_file() and not any(s.startswith(".") for s in rel.parts) and \
                        (f.suffix.lower() in IMAGE_EXTS or decode.is_dicom(f)):
                    out.append(f)
        else:
            out.append(p)
    return out


def prepare_out(out: str | Path, inputs: Sequence = ()) -> Path:
    """Create the output folder: refused when it exists and is not empty (earlier results are
    never overwritten), when it lies inside a folder given as input, or when it is the folder of
    an input file (outputs are never written among the inputs)."""
    out = Path(out).resolve()
    for x in inputs:
        if isinstance(x, np.ndarray):
            continue
        p = Path(x).resolve()
        if p.is_dir() and (out == p or p in out.parents):
            raise ValueError(f"--out {out} lies inside the input folder {p}; outputs are never "
                             "written among the inputs: choose a folder elsewhere")
        if not p.is_dir() and out == p.parent:
            raise ValueError(f"--out {out} is the folder of the input {p.name}; outputs are never "
                             "written next to the inputs: choose a new folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; predictions never overwrite "
                              "earlier results: choose a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _safe(name: str) -> str:
    stem = Path(name).stem if name else "input"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "input"


def _write_png(path: Path, arr: np.ndarray, base: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr).astype(np.uint8))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    store.write_atomic(path, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))
    return path.relative_to(base).as_posix()


def overlay(image: np.ndarray, heat: np.ndarray, lungs: np.ndarray, size: int = OVERLAY_SIZE,
            caption: str = "") -> np.ndarray:
    """The film with its Grad-CAM heat (jet, 40 %), the lung outline (white) and a caption strip
    below: uint8 (size + 18 if caption else size, size, 3) BGR.

    image: uint8 (C, C); heat: float (C, C) in [0, 1]; lungs: uint8 (C, C) in {0, 1}.
    """
    img = cv2.resize(np.asarray(image, np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
    h = cv2.resize(np.clip(np.nan_to_num(heat), 0, 1).astype(np.float32), (size, size),
                   interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((h * 255).astype(np.uint8), cv2.COLORMAP_JET)
    base = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    out = cv2.addWeighted(base, 0.6, colour, 0.4, 0)
    m = cv2.resize(np.asarray(lungs, np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    if caption:
        strip = np.zeros((18, size, 3), np.uint8)
        cv2.putText(strip, caption, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1, cv2.LINE_AA)
        out = np.vstack([out, strip])
    return out


def _caption(row: dict) -> str:
    return (f"p={row['probability']:.2f} {row['decision']} | heat in lungs "
            f"{100 * row['heat_share_lung']:.0f}% (uniform {100 * row['lung_area_fraction']:.0f}%)")


def _csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    d = df.copy()
    d["flags"] = d["flags"].map(lambda v: ";".join(v) if isinstance(v, list) else (v or ""))
    d["fold_probs"] = d["fold_probs"].map(
        lambda v: ";".join(f"{x:.6f}" for x in v) if isinstance(v, list) else "")
    return d


def write_outputs(df: pd.DataFrame, out_dir: Path, pred: Predictor, seconds: float) -> None:
    """``predictions.csv``, ``predictions.jsonl`` and ``run.json`` (bundle, model, folds, timing)."""
    store.save_csv(_csv_frame(df), out_dir / "predictions.csv")

    def w(tmp):
        with open(tmp, "w") as fh:
            for r in df.to_dict("records"):
                fh.write(json.dumps({k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                     for k, v in r.items()}, default=store.json_default) + "\n")
    store.write_atomic(out_dir / "predictions.jsonl", w)
    counts = df["status"].value_counts().to_dict()
    store.save_json({"bundle": str(pred.bundle_dir), "model": pred.model, "folds": pred.folds,
                  "threshold": pred.threshold, "decision_rule": bd.DECISION_RULE,
                  "n_inputs": len(df), "status_counts": counts, "seconds": round(seconds, 2),
                  "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "intended_use": "research only; not for diagnosis"}, out_dir / "run.json")
