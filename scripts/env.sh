# Sourced by run_all.sh and run_tests.sh: use a suitable active environment, else make or reuse
# .venv in the repository and install the project into it (versions come from pyproject.toml only).
# shellcheck shell=bash

# Whether an interpreter has everything the project needs. It looks the packages up without
# importing them (importing torch, timm and ray takes seconds), and reads torch's version from its
# metadata.
_hrnet_ok() {
  "$1" - <<'PY' >/dev/null 2>&1
import importlib.util
from importlib import metadata
need = ("helpers", "torch", "timm", "segmentation_models_pytorch", "albumentations", "papermill", "nbval",
        "pytorch_grad_cam", "nbstripout", "ruff", "ray")
missing = [m for m in need if importlib.util.find_spec(m) is None]
assert not missing, missing
assert metadata.version("torch").split("+")[0] == "2.14.1", metadata.version("torch")
PY
}

hrnet_env() {
  local root stamp want py
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  # 1. an activated virtualenv / conda env that already has everything
  if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && command -v python >/dev/null && _hrnet_ok python; then
    PY="$(command -v python)"
    echo "[env] using the active environment: $PY"
    _hrnet_own_clone "$root"
    _hrnet_strip_filter "$root"
    return 0
  fi
  # 2. the repository's .venv, created or updated when pyproject.toml changed
  stamp="$root/.venv/.hrnet-cxr-installed"
  want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
  if [ ! -x "$root/.venv/bin/python" ]; then
    py="$(command -v python3.11 || command -v python3)"
    echo "[env] creating $root/.venv with $py"
    "$py" -m venv "$root/.venv"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! _hrnet_ok "$root/.venv/bin/python"; then
    echo "[env] installing the project into .venv (first time: a few minutes)"
    "$root/.venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    "$root/.venv/bin/python" -m pip install --quiet -e "$root[dev]" 2>&1 | grep -v "is ignored" || true
    _hrnet_ok "$root/.venv/bin/python" || { echo "[env] installation failed; see the pip output above" >&2; return 1; }
    echo "$want" > "$stamp"
  fi
  # shellcheck disable=SC1091
  source "$root/.venv/bin/activate"
  PY="$root/.venv/bin/python"
  echo "[env] using $PY"
  _hrnet_own_clone "$root"
  _hrnet_strip_filter "$root"
}

# The environment serves this clone: if its helpers package was installed from another checkout,
# put this clone's src/ first (notebook kernels inherit PYTHONPATH) and say so.
_hrnet_own_clone() {
  local root=$1 where
  where="$("$PY" -c 'import helpers, pathlib; print(pathlib.Path(helpers.__file__).resolve().parents[2])' 2>/dev/null || true)"
  if [ "$where" != "$root" ]; then
    export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
    echo "[env] this environment's helpers package comes from ${where:-nowhere}; using $root/src instead"
  fi
}

# Notebooks are committed without outputs. In a git checkout, install nbstripout's git filter once,
# so outputs written by Run All in JupyterLab never reach a commit.
_hrnet_strip_filter() {
  local root=$1
  [ -d "$root/.git" ] || return 0
  git -C "$root" config --get filter.nbstripout.clean >/dev/null 2>&1 && return 0
  if (cd "$root" && "$PY" -m nbstripout --install >/dev/null 2>&1); then
    # without this environment (a deleted .venv) git adds notebooks unfiltered instead of failing;
    # the hygiene test still refuses committed outputs
    git -C "$root" config filter.nbstripout.required false
    echo "[env] installed the nbstripout git filter: notebook outputs are stripped when you commit"
  fi
}
