"""Reproducibility: seeding and the run manifest (git revision, versions, device, timings)."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from helpers import paths
from helpers.run import artefacts, compute, store

PACKAGES = ["torch", "torchvision", "timm", "segmentation-models-pytorch", "albumentations",
            "numpy", "scikit-learn", "scipy", "scikit-image", "pandas", "opencv-python-headless",
            "grad-cam", "papermill", "matplotlib", "seaborn", "torchxrayvision", "imagehash", "pydicom"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills the memory of every new tensor with NaN, a guard against
    # kernels that read memory they never wrote. A correct kernel's results do not depend on it
    # (runs stay byte-identical: tests/unit/test_determinism.py), and on the 2-core machine it
    # made a training step 7 % (hrnet_w18_small) to 11 % (EfficientNet-B4) slower
    # (docs/measurements.md), so it is off.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False


def setup_torch(profile) -> str:
    """Set thread count from the profile; return the device name ('cuda' or 'cpu')."""
    import torch

    if getattr(profile, "torch_threads", 0):
        torch.set_num_threads(int(profile.torch_threads))
    return "cuda" if torch.cuda.is_available() else "cpu"


def git_revision(root: Path | None = None) -> str:
    """``HEAD`` of the checkout, ``+dirty`` when tracked code differs from it, ``+unchecked`` when
    that could not be told in time; ``unknown`` outside a git checkout.

    The first status check after a checkout or a run can take tens of seconds (git re-runs the
    notebooks' nbstripout filter), so it gets a long timeout of its own."""
    root = root or paths.repo_root()
    rev = paths.head_commit(root)
    if not rev:
        return "unknown"
    try:
        # figures/ holds published run outputs (helpers.run.publish writes there), not code: it does
        # not make a checkout dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)figures"], cwd=root,
                               capture_output=True, text=True, timeout=180).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return rev + "+unchecked"
    return rev + ("+dirty" if dirty else "")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def device_info() -> dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native_cpu": compute.bf16_supported("cpu")}  # else a profile's bf16 runs in float32
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16_native_cuda"] = compute.bf16_supported("cuda")
    return info


def fingerprint_files(files: Iterable[str | Path], limit: int | None = None) -> str:
    """SHA-256 over (name, size, first 64 KiB) of each file: cheap, changes when data changes."""
    h = hashlib.sha256()
    for i, f in enumerate(sorted(str(x) for x in files)):
        if limit is not None and i >= limit:
            break
        p = Path(f)
        h.update(p.name.encode())
        try:
            h.update(str(p.stat().st_size).encode())
            with open(p, "rb") as fh:
                h.update(fh.read(65536))
        except OSError:
            h.update(b"missing")
    return h.hexdigest()[:16]


class RunLog:
    """Collects timings for a stage and writes ``run_manifest.json`` into the stage folder."""

    def __init__(self, cfg, stage: str, parameters: dict[str, Any] | None = None):
        self.cfg, self.stage = cfg, stage
        self.parameters = parameters or {}
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.extra: dict[str, Any] = {}

    @contextmanager
    def timed(self, name: str):
        t = time.time()
        try:
            yield
        finally:
            self.timings[name] = round(time.time() - t, 2)

    def _earlier_runs(self, path: Path) -> list[dict[str, Any]]:
        """Earlier runs of this stage in the same folder (a resumed run reuses their results):
        revision, finish time and total seconds of each, oldest first, at most 20."""
        try:
            prev = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(prev, dict):
            return []
        runs = [r for r in prev.get("earlier_runs", []) if isinstance(r, dict)]
        runs.append({"git_revision": prev.get("git_revision"), "finished_utc": prev.get("finished_utc"),
                     "total_s": (prev.get("timings_s") or {}).get("total")})
        return runs[-20:]

    def write(self, **extra: Any) -> Path:
        self.extra.update(extra)
        path = self.cfg.stage_dir(self.stage) / "run_manifest.json"
        manifest = {
            "stage": self.stage,
            "git_revision": git_revision(),
            "profile": self.cfg.profile.name,
            "parameters": self.parameters,
            "config": self.cfg.to_dict(),
            "seed": self.cfg.seed,
            "packages": package_versions(),
            "device": device_info(),
            "timings_s": {**self.timings, "total": round(time.time() - self.t0, 2)},
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "earlier_runs": self._earlier_runs(path),
            **self.extra,
        }
        return store.save_json(manifest, path)


def run_manifest(out_dir: Path, stage: str | None = None) -> dict:
    """``run_manifest.json`` of ``stage``, or of the latest stage that has one ({} if none)."""
    stages = [stage] if stage else list(artefacts.STAGES)[::-1]
    for s in stages:
        p = Path(out_dir) / s / "run_manifest.json"
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except (OSError, ValueError):
                continue
    return {}
