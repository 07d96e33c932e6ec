"""The stages, their order, and the registry of every file they write.

:data:`ART` is the one registry of what the stages write (stage, file, producing notebook); every
reader of a run goes through it, so a file name lives in one place.
"""
from __future__ import annotations

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
    "audits": "05a_shortcut_audits.ipynb",
    "ladder": "05b_deconfounding_ladder.ipynb",
    "sites": "05c_leave_one_site_out.ipynb",
    "figures": "06_figure_generation.ipynb",
}
UPSTREAM: dict[str, list[str]] = {
    "curation": [],
    "unet": ["curation"],
    "refine": ["curation", "unet"],
    "hrnet": ["curation", "refine"],
    "baselines": ["curation", "refine", "hrnet"],
    "audits": ["curation", "refine", "hrnet", "baselines"],
    "ladder": ["curation", "refine", "hrnet"],
    "sites": ["curation", "refine", "hrnet"],
    "figures": ["curation", "unet", "refine", "hrnet", "baselines", "audits", "ladder", "sites"],
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

#: columns that are text wherever they appear in a saved table: read back as str, an empty cell
#: as "" (not NaN), and "NA" or "null" as the text it is (a patient called NA stays NA)
TEXT = ("image_id", "patient_id", "group_id", "path", "file", "split_role", "label", "source",
        "source_repo", "source_path", "source_commit", "view", "sex", "license", "mask_path",
        "finding", "set", "model", "reference", "quantity", "note", "notes", "kind", "name", "reason",
        "step", "auc_method", "mcnemar_method", "smallest_matrix", "matrix_at_expected", "role",
        "views", "findings", "rung", "steps", "within_source", "audit", "verdict", "stratum", "stratum_type",
        "row_id", "file_a", "file_b", "path_a", "path_b", "patient_a", "patient_b")
#: tables whose ``fold`` column mixes fold ids with "mean" / "pooled" rows: text there
FOLD_TEXT = ("fold",)


@dataclass(frozen=True)
class Artefact:
    """One file a stage writes: ``OUT_DIR/<stage>/<file>``, and how it is read back.

    ``text``: columns read as text besides :data:`TEXT`; ``flags``: columns holding True / False /
    empty (read as True, False or None). Every reader of a run reads through :meth:`read` (an
    input a notebook cannot do without: a missing file names the notebook that writes it) or
    :meth:`find` (the reports: None when missing); stages write through :meth:`write`.
    """

    stage: str
    file: str
    text: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

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
        """The artefact, typed: csv -> DataFrame (text columns as str with "" for empty, numbers
        parsed exactly, empty numeric cells NaN; an empty file gives an empty frame); npy -> array
        (memory-mapped); npz -> dict of arrays; json -> dict. A missing file raises
        FileNotFoundError naming the notebook to run."""
        f = self.path(run)
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: run notebooks/{self.notebook} first (same OUT_DIR)")
        return self._read_file(f)

    def find_in(self, folder):
        """:meth:`find` for a folder that holds this stage's files directly (a published copy of
        the figures stage, e.g. ``figures/cpu``): ``folder/<file>`` typed, or None when missing."""
        f = Path(folder) / self.file
        if not f.is_file():
            return None
        try:
            return self._read_file(f)
        except ValueError:
            if self.file.endswith(".json"):
                return None
            raise

    def _read_file(self, f: Path):
        if f.suffix == ".csv":
            return read_csv(f, (*TEXT, *self.text), self.flags)
        if f.suffix == ".npy":
            return store.load_npy(f)
        if f.suffix == ".npz":
            with np.load(f) as z:
                return {k: z[k] for k in z.files}
        if f.suffix == ".json":
            return store.load_json(f)
        raise ValueError(f"{f}: no reader for {f.suffix} files")

    def find(self, run):
        """:meth:`read`, or None when the file is missing (or is json that cannot be read)."""
        return self.find_in(run_dir(run) / self.stage)

    def write(self, run, value) -> Path:
        """Write ``value`` atomically: csv <- DataFrame, npy <- array, npz <- dict of arrays
        (compressed), json <- dict. Returns the path."""
        f = self.path(run)
        kind = {".csv": pd.DataFrame, ".npy": np.ndarray, ".npz": dict, ".json": dict}.get(f.suffix)
        if kind is None or not isinstance(value, kind):
            raise TypeError(f"{self.rel()} takes a {getattr(kind, '__name__', '?')}, "
                            f"got {type(value).__name__}")
        if f.suffix == ".csv":
            return store.save_csv(value, f)
        if f.suffix == ".npy":
            return store.save_npy(value, f)
        if f.suffix == ".npz":
            return store.save_npz(value, f)
        return store.save_json(value, f)


def read_csv(path: Path, text=TEXT, flags=()) -> pd.DataFrame:
    """A saved table with declared types (see :meth:`Artefact.read`)."""
    try:
        df = pd.read_csv(path, dtype={c: str for c in text}, keep_default_na=False, na_values=[""],
                         float_precision="round_trip")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    for col in set(text) & set(df.columns):  # an empty cell of a text column is "" again, not NaN
        df[col] = df[col].astype(object).where(df[col].notna(), "")
    for col in set(flags) & set(df.columns):
        df[col] = pd.Series([_flag(v) for v in df[col]], index=df.index, dtype=object)
    return df


def _flag(v):
    """True / False / None from a saved cell ("True", "False", empty)."""
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.strip().lower())
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return bool(v)


class ART:
    """Every file a stage writes and a later stage, a report or a bundle reads, by name."""

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
    notes = Artefact("curation", "notes.csv")
    duplicates = Artefact("curation", "duplicates.csv")
    folds_summary = Artefact("curation", "folds_summary.csv")
    # 01 curation of the external set (EXTERNAL_DATA_DIR), decoded as the internal one
    ext_cls_index = Artefact("curation", EXTERNAL_PREFIX + "cls_index.csv")
    ext_cls_images = Artefact("curation", EXTERNAL_PREFIX + "cls_images.npy")
    ext_cls_images_seg = Artefact("curation", EXTERNAL_PREFIX + "cls_images_seg.npy")
    ext_seg_index = Artefact("curation", EXTERNAL_PREFIX + "seg_index.csv")
    ext_seg_images = Artefact("curation", EXTERNAL_PREFIX + "seg_images.npy")
    ext_seg_masks = Artefact("curation", EXTERNAL_PREFIX + "seg_masks.npy")
    ext_flow = Artefact("curation", EXTERNAL_PREFIX + "flow.csv")
    ext_excluded = Artefact("curation", EXTERNAL_PREFIX + "excluded.csv")
    ext_notes = Artefact("curation", EXTERNAL_PREFIX + "notes.csv")
    # 02 unet
    unet_history = Artefact("unet", "history.csv")
    unet_dice = Artefact("unet", "dice.csv")
    dice_table = Artefact("unet", "dice_table.csv")
    external_dice = Artefact("unet", "external_dice.csv", text=FOLD_TEXT)
    aug_samples = Artefact("unet", "aug_samples.npz")
    # 03 refine
    refine_index = Artefact("refine", "refine_index.csv")
    pass_counts = Artefact("refine", "pass_counts.csv")
    pass_by_group = Artefact("refine", "pass_by_group.csv")
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
    fold_table = Artefact("hrnet", "fold_table.csv", text=FOLD_TEXT)
    hrnet_heat_share = Artefact("hrnet", "heat_share.csv")
    plateau = Artefact("hrnet", "plateau.csv")
    auc_gap = Artefact("hrnet", "auc_gap.csv", text=FOLD_TEXT)
    randomisation_check = Artefact("hrnet", "randomisation_check.csv")
    # 05 baselines
    table7 = Artefact("baselines", "table7.csv")
    all_preds = Artefact("baselines", "all_preds.csv")
    external_preds = Artefact("baselines", "external_preds.csv")
    unsegmented_heat_share = Artefact("baselines", "heat_share.csv")
    baselines_plateau = Artefact("baselines", "plateau.csv")
    baselines_auc_gap = Artefact("baselines", "auc_gap.csv", text=FOLD_TEXT)
    # 05a shortcut audits
    audit_preds = Artefact("audits", "audit_preds.csv")
    audit_table = Artefact("audits", "audit_table.csv")
    permutation_null = Artefact("audits", "permutation_null.json")
    stratified = Artefact("audits", "stratified.csv")
    audits_plateau = Artefact("audits", "plateau.csv")
    # 05b ladder
    ladder_table = Artefact("ladder", "ladder_table.csv")
    probe_preds = Artefact("ladder", "probe_preds.csv")
    ladder_heat_share = Artefact("ladder", "heat_share.csv")
    favoured = Artefact("ladder", "favoured.json")
    # 05c leave one site out: every model trained without a site, on that site's films
    loso_preds = Artefact("sites", "loso_preds.csv", text=("site",))
    # 06 figures: the evidence tables (EVIDENCE_TABLES), computed once from the stored predictions
    figures_manifest = Artefact("figures", "run_manifest.json")
    figure_index = Artefact("figures", "index.csv")
    calibration = Artefact("figures", "calibration.csv")
    reliability = Artefact("figures", "reliability.csv")
    ppv_npv = Artefact("figures", "ppv_npv.csv")
    comparisons = Artefact("figures", "comparisons.csv")
    ledger_paper = Artefact("figures", "ledger_paper.csv", flags=("between", "consistent"),
                            text=("alternative",))
    ledger_companion = Artefact("figures", "ledger_companion.csv", flags=("between", "consistent"))
    heat_share_ci = Artefact("figures", "heat_share_ci.csv", text=FOLD_TEXT)
    external_table = Artefact("figures", "external_table.csv", text=FOLD_TEXT)
    external_table_all = Artefact("figures", "external_table_all.csv", text=FOLD_TEXT)
    within_source = Artefact("figures", "within_source.csv")        # COVID vs non-COVID inside a source
    by_negative = Artefact("figures", "by_negative.csv", text=("negatives",))  # COVID vs each negative
    negatives_called = Artefact("figures", "negatives_called.csv")  # non-COVID films called COVID
    learning = Artefact("figures", "learning.csv", flags=("learned",))  # did each model learn?
    loso_table = Artefact("figures", "loso_table.csv", text=("site",))  # leave one site out
    cohort_manifest = Artefact("figures", "cohort_manifest.csv", text=("age", "fold"))  # text only
    verdict = Artefact("figures", "verdict.csv", text=("claim", "paper", "measured", "side"))  # claims


#: the evidence tables notebook 06 computes once and saves in ``OUT_DIR/figures/``
EVIDENCE_TABLES = ("calibration", "reliability", "ppv_npv", "comparisons", "ledger_paper",
                   "ledger_companion", "heat_share_ci", "external_table", "external_table_all",
                   "within_source", "by_negative", "negatives_called", "learning", "loso_table",
                   "cohort_manifest", "verdict")


def artefact(name: str) -> Artefact:
    """The registered artefact called ``name``; KeyError listing the names otherwise."""
    a = getattr(ART, name, None)
    if not isinstance(a, Artefact):
        names = sorted(n for n, v in vars(ART).items() if isinstance(v, Artefact))
        raise KeyError(f"no artefact {name!r} in the registry (helpers.run.artefacts.ART): {names}")
    return a


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
