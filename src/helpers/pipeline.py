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
