"""Cohort curation (section 3.1, Table 2): from a manifest folder to the tables and arrays every
later stage reads.

Outputs of the curation stage (``OUT_DIR/curation/``):

* ``cls_index.csv``   one row per classification image: manifest columns, ``image_id``, ``y``
                      (1 = covid), ``fold`` (patient-grouped, stratified by label);
* ``seg_index.csv``   one row per image/mask pair, ``fold`` (patient-grouped, stratified by source);
* ``cls_images.npy``  uint8 (N, cls_size, cls_size); ``cls_images_seg.npy`` the same images at
                      ``seg_size`` for the UNet; ``seg_images.npy`` / ``seg_masks.npy`` at seg_size;
* ``cls_masks_true.npy`` (only when the manifest has masks for classification images, as the
                      phantoms do) the true lung masks at seg_size, to score the UNet on them;
* ``cohort.csv``, ``flow.csv``, ``folds_summary.csv``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import io
from .data import splits


def image_ids(paths: pd.Series) -> pd.Series:
    """A stable identifier per image: its manifest path without extension."""
    return paths.str.replace(r"\.[A-Za-z0-9]+$", "", regex=True)


def limit_per_class(cls: pd.DataFrame, max_per_class: int, seed: int) -> pd.DataFrame:
    """Keep whole patients, at random, until each class has about ``max_per_class`` images."""
    if max_per_class <= 0:
        return cls
    rng = np.random.default_rng(seed)
    keep = []
    for _, part in cls.groupby("label"):
        pats = np.array(sorted(part["patient_id"].unique()), dtype=object)
        rng.shuffle(pats)
        counts = part.groupby("patient_id").size()
        total = 0
        for p in pats:
            if total >= max_per_class:
                break
            keep.append(p)
            total += int(counts[p])
    return cls[cls["patient_id"].isin(keep)]


def build_indices(manifest: pd.DataFrame, profile, seed: int
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a validated manifest into (classification index, segmentation index) with folds."""
    cls = manifest[manifest["split_role"] == "classify"].copy()
    cls = limit_per_class(cls, profile.max_images_per_class, seed)
    cls = cls.sort_values("path").reset_index(drop=True)
    cls.insert(0, "image_id", image_ids(cls["path"]))
    cls["y"] = (cls["label"] == "covid").astype(int)
    if cls["y"].nunique() < 2:
        raise ValueError("the classification set needs both covid and normal images; "
                         f"found only {cls['label'].unique().tolist()}")
    cls["fold"] = splits.patient_folds(cls["patient_id"], cls["label"], profile.n_folds, seed)
    seg = manifest[manifest["split_role"] == "segment"].copy().sort_values("path").reset_index(drop=True)
    if len(seg) < 3 * profile.seg_folds:
        raise ValueError(f"{len(seg)} image/mask pairs are too few for {profile.seg_folds} UNet folds")
    seg.insert(0, "image_id", image_ids(seg["path"]))
    seg["fold"] = splits.patient_folds(seg["patient_id"], seg["source"], profile.seg_folds, seed)
    splits.check_disjoint(cls["patient_id"], cls["fold"])
    splits.check_disjoint(seg["patient_id"], seg["fold"])
    return cls, seg


def cohort_table(cls: pd.DataFrame, seg: pd.DataFrame) -> pd.DataFrame:
    """Table 2 in spirit: images, patients, views, sex and age per source and label."""
    rows = []
    for (role, label, source), part in pd.concat([cls.assign(role="classify"),
                                                  seg.assign(role="segment", label="-")]
                                                 ).groupby(["role", "label", "source"]):
        age = pd.to_numeric(part["age"], errors="coerce")
        views = part["view"].replace("", "not stated").value_counts()
        rows.append({
            "role": role, "label": label, "source": source, "images": len(part),
            "patients": part["patient_id"].nunique(),
            "views": "; ".join(f"{k} {v}" for k, v in views.items()),
            "female_%": round(100 * (part["sex"] == "F").mean(), 1),
            "age_median": float(age.median()) if age.notna().any() else np.nan,
            "age_known": int(age.notna().sum()),
        })
    return pd.DataFrame(rows)


def decode_arrays(cls: pd.DataFrame, seg: pd.DataFrame, root: Path, profile, out: Path) -> dict:
    """Decode and resize every image once; write the ``.npy`` stacks listed in the module doc."""
    root = Path(root)
    files = [root / p for p in cls["path"]]
    written = {}
    written["cls_images"] = io.save_npy(io.load_stack(files, profile.cls_size, desc="classify images"),
                                        out / "cls_images.npy")
    written["cls_images_seg"] = io.save_npy(
        io.load_stack(files, profile.seg_size, desc="classify images @ seg size"),
        out / "cls_images_seg.npy")
    if (cls["mask_path"] != "").all():
        mfiles = [root / p for p in cls["mask_path"]]
        written["cls_masks_true"] = io.save_npy(
            io.load_stack(mfiles, profile.seg_size, mask=True, desc="true lung masks"),
            out / "cls_masks_true.npy")
    written["seg_images"] = io.save_npy(
        io.load_stack([root / p for p in seg["path"]], profile.seg_size, desc="seg images"),
        out / "seg_images.npy")
    written["seg_masks"] = io.save_npy(
        io.load_stack([root / p for p in seg["mask_path"]], profile.seg_size, mask=True,
                      desc="seg masks"), out / "seg_masks.npy")
    return {k: str(v) for k, v in written.items()}


def load_cohort(cfg) -> tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The run's data as (manifest folder, validated manifest, flow table, excluded rows).

    Synthetic profiles generate phantoms under ``OUT_DIR/data/phantoms`` (reused when the same
    parameters were generated before); real profiles read ``cfg.data_dir``.
    """
    from .data import manifest as mf

    p = cfg.profile
    if p.data == "synthetic":
        from .data import phantoms

        root = phantoms.generate(cfg.out_dir / "data" / "phantoms", n_patients=p.n_patients,
                                 images_per_patient=tuple(p.images_per_patient),
                                 n_seg_pairs=p.n_seg_pairs, size=p.phantom_size,
                                 shortcut_strength=p.shortcut_strength, seed=cfg.seed,
                                 finding_contrast=p.finding_contrast)
        df = mf.read_manifest(root)
        flow = pd.DataFrame([{"source": "phantoms", "step": "generated", "n_in": len(df),
                              "n_kept": len(df), "n_removed": 0, "reason": ""}])
        return Path(root), df, flow, pd.DataFrame(columns=["source", "path", "reason"])
    root = Path(cfg.data_dir)
    df = mf.read_manifest(root)
    flow = pd.DataFrame([{"source": "manifest", "step": "read manifest.csv", "n_in": len(df),
                          "n_kept": len(df), "n_removed": 0, "reason": ""}])
    return root, df, flow, pd.DataFrame(columns=["source", "path", "reason"])
