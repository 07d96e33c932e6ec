"""Where things live: the repository, the outputs folder and the data root.

No absolute path is hard-coded. The data root comes from a parameter, else ``$CXR_DATA_DIR``,
else the shared folder next to the repository (``../shared/data/cxr``) when it exists.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV_DATA = "CXR_DATA_DIR"
ENV_OUT = "HRNET_CXR_OUT_ROOT"


def repo_root() -> Path:
    """The repository root: the first parent of this file that holds ``pyproject.toml``."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "notebooks").is_dir():
            return parent
    # installed non-editable: fall back to the working directory
    return Path.cwd()


def default_out_dir(profile: str) -> Path:
    """``$HRNET_CXR_OUT_ROOT/<profile>`` if set, else ``<repo>/outputs/<profile>``."""
    root = os.environ.get(ENV_OUT)
    base = Path(root).expanduser() if root else repo_root() / "outputs"
    return (base / profile).resolve()


def shared_data_candidates() -> list[Path]:
    """Folders searched for the shared real data, in order."""
    out = []
    env = os.environ.get(ENV_DATA)
    if env:
        p = Path(env).expanduser()
        out += [p, p / "cxr"]
    root = repo_root()
    out += [root.parent / "shared" / "data" / "cxr", root / ".." / "shared" / "data" / "cxr"]
    return out


def find_shared_data() -> Path | None:
    """The first candidate folder that holds a ``manifest.csv``, or None."""
    for p in shared_data_candidates():
        if (p / "manifest.csv").is_file():
            return p.resolve()
    return None


def shared_metadata_dir() -> Path | None:
    """``../shared/data/metadata`` (original ieee8023 / Figure 1 metadata.csv files), if present."""
    d = find_shared_data()
    if d is not None and (d.parent / "metadata").is_dir():
        return (d.parent / "metadata").resolve()
    return None


def resolve_data_dir(data_dir: str | Path = "") -> Path:
    """The real-data root: the argument, else ``$CXR_DATA_DIR``, else ``../shared/data/cxr``."""
    if str(data_dir):
        p = Path(data_dir).expanduser().resolve()
        if not p.exists():
            raise FileNotFoundError(
                f"DATA_DIR {p} does not exist. Point DATA_DIR (or ${ENV_DATA}) at a folder with a "
                "manifest.csv (see docs/data.md), or at one of the public sources in its "
                "original layout."
            )
        return p
    found = find_shared_data()
    if found is None:
        tried = ", ".join(str(p) for p in shared_data_candidates())
        raise FileNotFoundError(
            "No real chest X-ray data found. Set DATA_DIR (notebook parameter) or the environment "
            f"variable {ENV_DATA} to a folder holding manifest.csv (docs/data.md). "
            f"Looked in: {tried}. For a run without real data use PROFILE='smoke'."
        )
    return found


def display_path(p: Path) -> str:
    """``outputs/<profile>`` style path when the run lives in a repository, else the folder name."""
    p = Path(p).resolve()
    for parent in p.parents:
        if (parent / "pyproject.toml").is_file():
            return str(p.relative_to(parent))
    return p.name


def head_commit(root: str | Path) -> str:
    """The commit ``HEAD`` names in the git checkout ``root`` (this project, or a data source's
    clone); "" when ``root`` is not a checkout. Asks ``git`` when it is installed, else reads
    ``.git`` itself (plain checkouts, worktrees and submodules, loose and packed refs)."""
    root = Path(root)
    if not (root / ".git").exists():
        return ""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=30).stdout.strip()
        if rev:
            return rev
    except (OSError, subprocess.SubprocessError):
        pass
    git = root / ".git"
    try:
        if git.is_file():  # worktree / submodule: "gitdir: <path>"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        common = (git / (git / "commondir").read_text().strip()).resolve() if (
            git / "commondir").is_file() else git  # a worktree keeps its refs in the main .git
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except (OSError, IndexError):
        pass
    return ""
