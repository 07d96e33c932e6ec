"""Stages, their folders and their order; resuming and archiving.

Each notebook is one stage and writes ``OUT_DIR/<stage>/``. A stage folder records the
configuration it was made with (``stage.json``). A stage that finds results of a *different*
configuration moves them aside to ``<stage>.old-<time>`` instead of overwriting them, and a
stage whose earlier work matches (same configuration and same upstream results) resumes
from it (finished folds are not trained again).

``require`` lets every notebook run on its own: when an upstream stage has not been run for this
``OUT_DIR``, it executes the upstream notebooks with papermill first (same parameters).

:data:`ART` is the one registry of what the stages write (stage, file, producing notebook); every
reader of a run goes through it, so a file name lives in one place. :func:`start` is the stage
object a notebook opens first: it seeds, runs missing upstream stages (:data:`UPSTREAM`), opens
the stage folder and owns its run log and ``DONE.json``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import io, paths

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
            return io.load_npy(f)
        if f.suffix == ".npz":
            with np.load(f) as z:
                return {k: z[k] for k in z.files}
        if f.suffix == ".json":
            return io.load_json(f)
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
    # 06 figures: the evidence tables (helpers.evidence.TABLES), computed once
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
    keep = np.flatnonzero(io.bool_column(ri, "passed"))
    cls = ART.cls_index.read(run)
    if len(cls) != len(ri):
        raise ValueError(f"{ART.cls_index.path(run)} has {len(cls)} rows but "
                         f"{ART.refine_index.path(run)} has {len(ri)}: re-run notebook 03")
    return cls.iloc[keep].reset_index(drop=True), keep


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_key(cfg, stage: str | None = None) -> str:
    """What makes two runs of ``stage`` comparable.

    The profile settings that stage reads (:data:`helpers.config.STAGE_FIELDS`), the seed and the
    external data folder; curation also the data folder (later stages see the data through
    curation's results). Without ``stage``: the whole configuration.
    """
    from .config import stage_settings

    if stage is None:
        d = cfg.to_dict()
        d.pop("out_dir", None)
        return _key(d)
    d = {"stage": stage, "settings": stage_settings(cfg.profile, stage), "seed": cfg.seed,
         "external_data_dir": str(cfg.external_data_dir) if cfg.external_data_dir else None}
    if stage in ("curation", "figures"):
        d["data_dir"] = str(cfg.data_dir) if cfg.data_dir else None
    return _key(d)


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


def done_file(cfg, stage: str) -> Path:
    return cfg.out_dir / stage / "DONE.json"


def is_done(cfg, stage: str) -> bool:
    f = done_file(cfg, stage)
    if not f.is_file():
        return False
    return io.load_json(f).get("config_key") == config_key(cfg, stage)


HASHED = (".csv", ".npy", ".pt")  # deterministic artefacts; zips, PNGs and logs carry timestamps


def outputs_hash(stage_dir: Path) -> str:
    """SHA-256 over the names and bytes of a stage's data files (csv, npy, pt).

    Re-running a stage that reproduces the same results gives the same hash, so later stages can
    resume; any change in the results changes it and moves later results aside.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in Path(stage_dir).rglob("*") if p.is_file() and p.suffix in HASHED):
        h.update(str(f.relative_to(stage_dir)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def upstream_key(cfg, stage: str) -> str:
    keys = {}
    for up in UPSTREAM[stage]:
        f = done_file(cfg, up)
        keys[up] = io.load_json(f).get("outputs_hash") if f.is_file() else None
    return _key(keys)


def open_stage(cfg, stage: str) -> Path:
    """Return ``OUT_DIR/<stage>``, ready for this configuration.

    Existing contents made with another configuration or other upstream results are moved to
    ``<stage>.old-<YYYYmmdd-HHMMSS>`` (never deleted); matching contents are kept for resuming.
    """
    migrate(cfg)
    d = cfg.out_dir / stage
    want = {"config_key": config_key(cfg, stage), "upstream_key": upstream_key(cfg, stage)}
    meta = d / "stage.json"
    if d.exists() and any(d.iterdir()):
        have = io.load_json(meta) if meta.is_file() else {}
        if {k: have.get(k) for k in want} != want:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            dest = d.with_name(f"{stage}.old-{stamp}")
            n = 1
            while dest.exists():
                dest, n = d.with_name(f"{stage}.old-{stamp}-{n}"), n + 1
            shutil.move(str(d), str(dest))
            print(f"[{stage}] earlier results were made with another configuration or other "
                  f"upstream results; moved them to {dest}")
        else:
            print(f"[{stage}] resuming in {d} (finished parts are reused)")
    d.mkdir(parents=True, exist_ok=True)
    io.save_json({**want, "stage": stage, "notebook": STAGES[stage]}, meta)
    return d


def mark_done(cfg, stage: str, **summary: Any) -> None:
    """Write ``DONE.json`` (later stages and ``require`` look for it) and say so in one line."""
    f = io.save_json({"config_key": config_key(cfg, stage), "stage": stage,
                      "outputs_hash": outputs_hash(cfg.out_dir / stage),
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary},
                     done_file(cfg, stage))
    print(f"[{stage}] finished: results in {f.parent}")


class Stage:
    """A notebook's stage, opened by :func:`start`: ``cfg`` (the resolved run), ``profile``,
    ``out`` (``OUT_DIR/<stage>/``), ``device`` and ``log`` (its :class:`helpers.repro.RunLog`)."""

    def __init__(self, name: str, cfg, run_upstream: bool = True):
        from . import repro

        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
        self.name, self.cfg, self.profile = name, cfg, cfg.profile
        repro.seed_everything(cfg.seed)
        self.device = repro.setup_torch(cfg.profile)
        if run_upstream:  # runs earlier notebooks first where their results are missing
            require(cfg, *UPSTREAM[name])
        self.out = open_stage(cfg, name)
        self.log = repro.RunLog(cfg, name, notebook_parameters(cfg))

    def timed(self, part: str):
        """``with stage.timed("train"): ...``: the part's seconds go into ``run_manifest.json``."""
        return self.log.timed(part)

    def done(self, **summary: Any) -> None:
        """Write ``run_manifest.json`` and ``DONE.json`` (with ``summary``): the stage is finished."""
        self.log.write(**summary)
        mark_done(self.cfg, self.name, **summary)


def start(stage: str, profile: str, data_dir: str = "", out_dir: str = "", seed: int = 0,
          external_data_dir: str = "", overrides: dict | None = None) -> Stage:
    """Open ``stage`` for a notebook's parameters: resolve the profile, seed, set torch up, run
    missing upstream stages, open the stage folder, and print what runs where."""
    from .config import resolve

    cfg = resolve(profile, data_dir, out_dir, seed, external_data_dir, overrides or {})
    st = Stage(stage, cfg)
    print(cfg.summary(), "\ndevice       ", st.device)
    return st


def notebook_parameters(cfg) -> dict[str, Any]:
    return {
        "PROFILE": cfg.profile.name,
        "DATA_DIR": str(cfg.data_dir) if cfg.data_dir and cfg.profile.data == "real" else "",
        "OUT_DIR": str(cfg.out_dir),
        "SEED": cfg.seed,
        "EXTERNAL_DATA_DIR": str(cfg.external_data_dir) if cfg.external_data_dir else "",
        "OVERRIDES": dict(cfg.overrides),
    }


def run_time_note(stage: str, profile: str) -> str:
    """The notebook's own run-time estimate for ``profile`` (its title cell's "Run time" line)."""
    nb = json.loads((paths.repo_root() / "notebooks" / STAGES[stage]).read_text())
    title = "".join(nb["cells"][0]["source"])
    for line in title.splitlines():
        if "Run time" in line:
            for part in line.split(":", 1)[-1].split("·"):
                words = part.strip().split(" ", 1)
                if words and words[0] == profile and len(words) > 1:
                    return words[1].strip().rstrip(".")
    return "run time not stated for this profile"


def execute(notebook: str | Path, out: str | Path, parameters: dict[str, Any],
            progress_bar: bool = False) -> Path:
    """Run one notebook with papermill (kernel ``python3`` over a private IPC socket).

    The kernel talks to papermill through Unix sockets in a private temporary folder instead of
    unencrypted local TCP ports, so neither the kernel's transport warning nor another user on the
    machine can reach it.
    """
    import tempfile

    import papermill as pm
    from jupyter_client.manager import AsyncKernelManager

    sock_dir = Path(tempfile.mkdtemp(prefix="hrnet-cxr-kernel-"))

    class _IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.transport = "ipc"
            self.ip = str(sock_dir / "kernel")

    notebook = Path(notebook)
    try:
        pm.execute_notebook(str(notebook), str(out), parameters=parameters, cwd=str(notebook.parent),
                            kernel_name="python3", progress_bar=progress_bar,
                            kernel_manager_class=_IPCKernelManager)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
    return Path(out)


def run_notebook(cfg, stage: str, log_dir: Path | None = None) -> Path:
    """Execute the notebook of ``stage`` with :func:`execute` in a separate process.

    Prints what runs and the notebook's own time estimate; the executed copy (with every output)
    goes to ``OUT_DIR/notebooks/``. The process's own log is shown only when it fails.
    """
    import subprocess
    import sys
    import tempfile

    nb = paths.repo_root() / "notebooks" / STAGES[stage]
    out = (log_dir or cfg.out_dir / "notebooks") / STAGES[stage]
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {nb.name} ({cfg.profile.name}: {run_time_note(stage, cfg.profile.name)}); "
          f"executed copy: {out}", flush=True)
    t0 = time.time()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(notebook_parameters(cfg), fh)
    try:
        proc = subprocess.run([sys.executable, "-m", "helpers.pipeline", str(nb), str(out), fh.name],
                              capture_output=True, text=True)
    finally:
        Path(fh.name).unlink(missing_ok=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise RuntimeError(f"{nb.name} failed (exit {proc.returncode}); the executed notebook with the "
                           f"error is {out}. Last lines of its log:\n{tail}")
    print(f"{nb.name} finished in {time.time() - t0:.0f} s", flush=True)
    return out


def require(cfg, *stages: str) -> None:
    """Make sure the given upstream stages are finished for this configuration, running them if not."""
    migrate(cfg)
    for stage in STAGES:  # in pipeline order
        if stage in stages and not is_done(cfg, stage):
            require(cfg, *UPSTREAM[stage])
            print(f"[{stage}] not finished for {cfg.out_dir}; running {STAGES[stage]} first")
            run_notebook(cfg, stage)
            if not is_done(cfg, stage):
                raise RuntimeError(f"{STAGES[stage]} ran but did not finish stage {stage!r}")


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.pipeline NOTEBOOK OUT PARAMS.json``: run one notebook (run_all.sh uses it)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m helpers.pipeline", description=main.__doc__)
    ap.add_argument("notebook")
    ap.add_argument("out")
    ap.add_argument("parameters", help="JSON file with the notebook parameters")
    a = ap.parse_args(argv)
    params = json.loads(Path(a.parameters).read_text())
    try:
        execute(a.notebook, a.out, params, progress_bar=sys.stderr.isatty())
    except Exception as exc:  # papermill's own error names the failing cell; no second traceback
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        print(f"{Path(a.notebook).name}: {type(exc).__name__}: {last}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
