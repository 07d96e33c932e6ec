"""Executing notebooks with papermill: one stage's notebook, in a separate process, with the run's
parameters (``python -m helpers.run.notebooks NOTEBOOK OUT PARAMS.json``, used by ``run_all.sh``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from helpers import paths
from helpers.run.artefacts import STAGES


def notebook_parameters(cfg) -> dict[str, Any]:
    return {
        "PROFILE": cfg.profile.name,
        "DATA_DIR": (os.pathsep.join(map(str, cfg.data_dirs)) if cfg.profile.data == "real" else ""),
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
        proc = subprocess.run([sys.executable, "-m", "helpers.run.notebooks", str(nb), str(out), fh.name],
                              capture_output=True, text=True)
    finally:
        Path(fh.name).unlink(missing_ok=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise RuntimeError(f"{nb.name} failed (exit {proc.returncode}); the executed notebook with the "
                           f"error is {out}. Last lines of its log:\n{tail}")
    print(f"{nb.name} finished in {time.time() - t0:.0f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.run.notebooks NOTEBOOK OUT PARAMS.json``: run one notebook (run_all.sh uses it)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m helpers.run.notebooks", description=main.__doc__)
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
