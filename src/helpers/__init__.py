"""hrnet-cxr helpers: the logic behind the notebooks.

Each module names the paper section it implements. Notebooks call these functions and show the
results; nothing here keeps state between calls.
"""
import warnings as _warnings
from pathlib import Path as _Path

__version__ = "0.1.0"


def _check_clone() -> None:
    """Warn when this package comes from another checkout than the one being worked in.

    An environment made in one clone and used from another would otherwise run (and write
    outputs) in the first clone without a word.
    """
    here = _Path(__file__).resolve().parents[2]
    if not (here / "pyproject.toml").is_file():
        return  # installed as a regular package, not from a checkout
    try:
        cwd = _Path.cwd().resolve()
    except OSError:
        return
    for p in (cwd, *cwd.parents):
        if (p / "pyproject.toml").is_file() and (p / "src" / "helpers" / "__init__.py").is_file():
            if p != here:
                _warnings.warn(
                    f"helpers is imported from {here / 'src'}, but the working directory is in the "
                    f"checkout {p}: code, notebooks and outputs of {here} are used. Run this "
                    f"clone's ./run_all.sh --setup-only (it makes {p / '.venv'}), or set "
                    f"PYTHONPATH={p / 'src'}.", stacklevel=2)
            return


_check_clone()
