"""The stages, their order, and the registry of every file they write.

:data:`ART` is the one registry of what the stages write (stage, file, producing notebook); every
reader of a run goes through it, so a file name lives in one place.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.run import store

STAGES: dict[str, str] = {
    "curation": "01_data_curation.ipynb",
    "unet": "02_unet_training.ipynb",
    "refine": "03_mask_refinement.ipynb",
    "hrnet": "04_hrnet_cv_training.ipynb",
    "baselines": "05_baseline_comparison.ipynb",
    "ladder": "05b_deconfounding_ladder.ipynb",
    "figures": "06_figure_generation.ipynb",
}


UPSTREAM: dict[str, list[str]] = {
    "curation": [],
    "unet": ["curation"],
    "refine": ["curation", "unet"],
    "hrnet": ["curation", "refine"],
    "baselines": ["curation", "refine", "hrnet"],
    "ladder": ["curation", "refine", "hrnet"],
    "figures": ["curation", "unet", "refine", "hrnet", "baselines", "ladder"],
}


#: the folder of notebook 04's fold files (``hrnet/folds/fold{k}_*``; a baseline's are in
#: ``baselines/<model>/``)
MAIN_MODEL_DIR = "folds"


#: file-name prefix of the external set's artefacts beside the internal ones (``ext_cls_index.csv``)
EXTERNAL_PREFIX = "ext_"


#: folders renamed since runs were first written: (stage, old, new); :func:`migrate` renames them in
#: place, so a finished run keeps its results (``DONE.json`` and the hashes later stages recorded
#: stay valid: the bytes are the same)
RENAMED = (("hrnet", "hrnet", MAIN_MODEL_DIR),)


@dataclass(frozen=True)
class Artefact:
    """One file a stage writes: ``OUT_DIR/<stage>/<file>``.

    ``read`` is for inputs a notebook cannot do without (a missing file names the notebook that
    writes it); ``find`` is for the reports, which say what is missing instead of failing.
    """

    stage: str
    file: str

    @property
    def notebook(self) -> str:
        return STAGES[self.stage]

    def rel(self) -> str:
        """``<stage>/<file>``: how a report names the file."""
        return f"{self.stage}/{self.file}"

    def path(self, run) -> Path:
        """The file in a run: ``run`` is a RunConfig or a run folder (``OUT_DIR``)."""
        return run_dir(run) / self.rel()

    def exists(self, run) -> bool:
        return self.path(run).is_file()

    def read(self, run):
        """The artefact (csv: DataFrame with text kept as text; npy: array; npz: dict of arrays;
        json: dict); a missing file raises FileNotFoundError naming the notebook to run."""
        f = self.path(run)
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: run notebooks/{self.notebook} first (same OUT_DIR)")
        if f.suffix == ".csv":
            return pd.read_csv(f, keep_default_na=False)
        if f.suffix == ".npy":
            return store.load_npy(f)
        if f.suffix == ".npz":
            with np.load(f) as z:
                return {k: z[k] for k in z.files}
        if f.suffix == ".json":
            return store.load_json(f)
        raise ValueError(f"{f}: no reader for {f.suffix} files")

    def find(self, run):
        """The artefact or None when it is missing (csv with pandas' defaults, so empty cells are
        NaN; an empty csv is an empty frame; json that cannot be read is None)."""
        f = self.path(run)
        if not f.is_file():
            return None
        if f.suffix == ".csv":
            try:
                return pd.read_csv(f)
            except pd.errors.EmptyDataError:
                return pd.DataFrame()
        if f.suffix == ".json":
            try:
                return json.loads(f.read_text())
            except (OSError, ValueError):
                return None
        return self.read(run)


class ART:
    """Every artefact a later stage, a report or a bundle reads, by name."""

    # 01 curation
    cls_index = Artefact("curation", "cls_index.csv")
    cls_images = Artefact("curation", "cls_images.npy")
    cls_images_seg = Artefact("curation", "cls_images_seg.npy")
    cls_masks_true = Artefact("curation", "cls_masks_true.npy")
    seg_index = Artefact("curation", "seg_index.csv")
    seg_images = Artefact("curation", "seg_images.npy")
    seg_masks = Artefact("curation", "seg_masks.npy")
    cohort = Artefact("curation", "cohort.csv")
    flow = Artefact("curation", "flow.csv")
    excluded = Artefact("curation", "excluded.csv")
    duplicates = Artefact("curation", "duplicates.csv")
    folds_summary = Artefact("curation", "folds_summary.csv")
    # 01 curation of the external set (EXTERNAL_DATA_DIR), decoded as the internal one
    ext_cls_index = Artefact("curation", EXTERNAL_PREFIX + "cls_index.csv")
    ext_cls_images = Artefact("curation", EXTERNAL_PREFIX + "cls_images.npy")
    ext_cls_images_seg = Artefact("curation", EXTERNAL_PREFIX + "cls_images_seg.npy")
    ext_seg_index = Artefact("curation", EXTERNAL_PREFIX + "seg_index.csv")
    ext_seg_images = Artefact("curation", EXTERNAL_PREFIX + "seg_images.npy")
    ext_seg_masks = Artefact("curation", EXTERNAL_PREFIX + "seg_masks.npy")
    # 02 unet
    unet_history = Artefact("unet", "history.csv")
    unet_dice = Artefact("unet", "dice.csv")
    dice_table = Artefact("unet", "dice_table.csv")
    external_dice = Artefact("unet", "external_dice.csv")
    aug_samples = Artefact("unet", "aug_samples.npz")
    # 03 refine
    refine_index = Artefact("refine", "refine_index.csv")
    pass_counts = Artefact("refine", "pass_counts.csv")
    masks_refined = Artefact("refine", "masks_refined.npy")
    masks_raw_cls = Artefact("refine", "masks_raw_cls.npy")
    masks_refined_cls = Artefact("refine", "masks_refined_cls.npy")
    segmented = Artefact("refine", "segmented.npy")
    ext_refine_index = Artefact("refine", EXTERNAL_PREFIX + "refine_index.csv")
    ext_segmented = Artefact("refine", EXTERNAL_PREFIX + "segmented.npy")
    ext_masks_raw_cls = Artefact("refine", EXTERNAL_PREFIX + "masks_raw_cls.npy")
    ext_masks_refined_cls = Artefact("refine", EXTERNAL_PREFIX + "masks_refined_cls.npy")
    # 04 hrnet
    hrnet_preds = Artefact("hrnet", MAIN_MODEL_DIR + "/preds.csv")
    hrnet_history = Artefact("hrnet", MAIN_MODEL_DIR + "/history.csv")
    fold_table = Artefact("hrnet", "fold_table.csv")
    hrnet_heat_share = Artefact("hrnet", "heat_share.csv")
    plateau = Artefact("hrnet", "plateau.csv")
    auc_gap = Artefact("hrnet", "auc_gap.csv")
    randomisation_check = Artefact("hrnet", "randomisation_check.csv")
    # 05 baselines
    table7 = Artefact("baselines", "table7.csv")
    all_preds = Artefact("baselines", "all_preds.csv")
    external_preds = Artefact("baselines", "external_preds.csv")
    external_table = Artefact("baselines", "external_table.csv")
    external_table_all = Artefact("baselines", "external_table_all.csv")
    audit_table = Artefact("baselines", "audit_table.csv")
    unsegmented_heat_share = Artefact("baselines", "heat_share.csv")
    permutation_null = Artefact("baselines", "permutation_null.json")
    stratified = Artefact("baselines", "stratified.csv")
    baselines_plateau = Artefact("baselines", "plateau.csv")
    baselines_auc_gap = Artefact("baselines", "auc_gap.csv")
    # 05b ladder
    ladder_table = Artefact("ladder", "ladder_table.csv")
    # 06 figures: the evidence tables (helpers.evidence.recomputed.TABLES), computed once
    figures_manifest = Artefact("figures", "run_manifest.json")
    figure_index = Artefact("figures", "index.csv")
    calibration = Artefact("figures", "calibration.csv")
    reliability = Artefact("figures", "reliability.csv")
    ppv_npv = Artefact("figures", "ppv_npv.csv")
    comparisons = Artefact("figures", "comparisons.csv")
    ledger_paper = Artefact("figures", "ledger_paper.csv")
    ledger_companion = Artefact("figures", "ledger_companion.csv")
    heat_share_ci = Artefact("figures", "heat_share_ci.csv")


#: the evidence tables notebook 06 computes once and saves in ``OUT_DIR/figures/``
EVIDENCE_TABLES = ("calibration", "reliability", "ppv_npv", "comparisons", "ledger_paper",
                   "ledger_companion", "heat_share_ci")


def run_dir(run) -> Path:
    """``OUT_DIR`` of a RunConfig, or the folder itself."""
    return Path(getattr(run, "out_dir", run))


def kept(run) -> tuple[pd.DataFrame, np.ndarray]:
    """The classification images that passed refinement: (their rows of ``cls_index.csv``,
    reindexed from 0; their positions in the curated arrays). The one reader of
    ``refine_index.csv``'s ``passed`` column; index arrays with ``arr[positions]``."""
    ri = ART.refine_index.read(run)
    keep = np.flatnonzero(store.bool_column(ri, "passed"))
    cls = ART.cls_index.read(run)
    if len(cls) != len(ri):
        raise ValueError(f"{ART.cls_index.path(run)} has {len(cls)} rows but "
                         f"{ART.refine_index.path(run)} has {len(ri)}: re-run notebook 03")
    return cls.iloc[keep].reset_index(drop=True), keep


def migrate(run) -> list[Path]:
    """Rename folders of an earlier layout (:data:`RENAMED`) in the run ``run``; returns the new
    folders. Nothing is deleted; a folder is left alone when its new name is already taken."""
    moved = []
    for stage, old, new in RENAMED:
        src, dest = run_dir(run) / stage / old, run_dir(run) / stage / new
        if src.is_dir() and not dest.exists():
            src.rename(dest)
            print(f"[{stage}] renamed {src} to {dest} (the current layout)")
            moved.append(dest)
    return moved
