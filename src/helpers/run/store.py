"""Writing and reading a run's files.

Writes are atomic (temporary file, then rename), so an interrupted run never leaves half a file
behind; files get the user's umask.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_atomic(path: Path, write) -> Path:
    """Write through a temporary file in the same folder, then rename it into place.

    The file gets the mode a plain ``open()`` would give it (0666 less the user's umask), not
    the 0600 of the temporary file, so that a group sharing a results folder can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_json(obj: Any, path: str | Path) -> Path:
    def w(tmp):
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=json_default)
            fh.write("\n")
    return write_atomic(Path(path), w)


def load_json(path: str | Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def save_csv(df: pd.DataFrame, path: str | Path) -> Path:
    return write_atomic(Path(path), lambda tmp: df.to_csv(tmp, index=False))


def save_npy(arr: np.ndarray, path: str | Path) -> Path:
    def w(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
    return write_atomic(Path(path), w)


def save_npz(arrays: dict, path: str | Path) -> Path:
    """Write a dict of arrays as a compressed ``.npz``."""
    def w(tmp):
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return write_atomic(Path(path), w)


def load_npy(path: str | Path, mmap: bool = True) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the notebook that writes it first")
    return np.load(path, mmap_mode="r" if mmap else None)


def bool_column(df: pd.DataFrame, col: str) -> np.ndarray:
    """A true/false column of a saved table as a bool array.

    CSV round trips turn booleans into "True"/"False" text (or 1/0): this is the one place that
    reads them back, e.g. ``bool_column(refine_index, "passed")`` for the images that passed
    refinement."""
    if col not in df.columns:
        raise KeyError(f"no column {col!r} (columns: {list(df.columns)})")
    return df[col].astype(str).str.strip().str.lower().isin(("true", "1", "1.0")).to_numpy()


def json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
