"""Stages, their folders and their order; resuming and archiving.

Each notebook is one stage and writes ``OUT_DIR/<stage>/``. A stage folder records the
configuration it was made with (``stage.json``). A stage that finds results of a *different*
configuration moves them aside to ``<stage>.old-<time>`` instead of overwriting them, and a
stage whose earlier work matches (same configuration and same upstream results) resumes
from it (finished folds are not trained again).

``require`` lets every notebook run on its own: when an upstream stage has not been run for this
``OUT_DIR``, it executes the upstream notebooks with papermill first (same parameters).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from . import io, paths

STAGES: dict[str, str] = {
    "curation": "01_data_curation.ipynb",
    "unet": "02_unet_training.ipynb",
    "refine": "03_mask_refinement.ipynb",
    "hrnet": "04_hrnet_cv_training.ipynb",
    "baselines": "05_baseline_comparison.ipynb",
    "figures": "06_figure_generation.ipynb",
}
UPSTREAM: dict[str, list[str]] = {
    "curation": [],
    "unet": ["curation"],
    "refine": ["curation", "unet"],
    "hrnet": ["curation", "refine"],
    "baselines": ["curation", "refine", "hrnet"],
    "figures": ["curation", "unet", "refine", "hrnet", "baselines"],
}


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_key(cfg) -> str:
    """What makes two runs comparable: profile settings, seed, data and external data folders."""
    d = cfg.to_dict()
    d.pop("out_dir", None)
    return _key(d)


def done_file(cfg, stage: str) -> Path:
    return cfg.out_dir / stage / "DONE.json"


def is_done(cfg, stage: str) -> bool:
    f = done_file(cfg, stage)
    if not f.is_file():
        return False
    return io.load_json(f).get("config_key") == config_key(cfg)


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
    d = cfg.out_dir / stage
    want = {"config_key": config_key(cfg), "upstream_key": upstream_key(cfg, stage)}
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


def mark_done(cfg, stage: str, **summary: Any) -> Path:
    """Write ``DONE.json``: later stages and ``require`` look for it."""
    return io.save_json({"config_key": config_key(cfg), "stage": stage,
                         "outputs_hash": outputs_hash(cfg.out_dir / stage),
                         "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary},
                        done_file(cfg, stage))


def notebook_parameters(cfg) -> dict[str, Any]:
    return {
        "PROFILE": cfg.profile.name,
        "DATA_DIR": str(cfg.data_dir) if cfg.data_dir and cfg.profile.data == "real" else "",
        "OUT_DIR": str(cfg.out_dir),
        "SEED": cfg.seed,
        "EXTERNAL_DATA_DIR": str(cfg.external_data_dir) if cfg.external_data_dir else "",
        "OVERRIDES": dict(cfg.overrides),
    }


def run_notebook(cfg, stage: str, log_dir: Path | None = None) -> Path:
    """Execute the notebook of ``stage`` with papermill, using ``cfg``'s parameters."""
    import papermill as pm

    nb = paths.repo_root() / "notebooks" / STAGES[stage]
    out = (log_dir or cfg.out_dir / "notebooks") / STAGES[stage]
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {nb.name} -> {out}")
    pm.execute_notebook(str(nb), str(out), parameters=notebook_parameters(cfg),
                        cwd=str(nb.parent), progress_bar=False, kernel_name="python3")
    return out


def require(cfg, *stages: str) -> None:
    """Make sure the given upstream stages are finished for this configuration, running them if not."""
    for stage in STAGES:  # in pipeline order
        if stage in stages and not is_done(cfg, stage):
            require(cfg, *UPSTREAM[stage])
            print(f"[{stage}] not finished for {cfg.out_dir}; running {STAGES[stage]} first")
            run_notebook(cfg, stage)
            if not is_done(cfg, stage):
                raise RuntimeError(f"{STAGES[stage]} ran but did not finish stage {stage!r}")
