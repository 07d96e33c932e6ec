#!/usr/bin/env bash
# The test suite: ruff over the package, the tests and the notebooks' code, then unit tests, the
# papermill smoke chain 01..06 with assertions, nbval over the notebooks, and notebook hygiene.
# Sets up the environment like run_all.sh. Extra arguments go to pytest alone (e.g.
# ./run_tests.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
hrnet_env
# nbval executes the notebooks with their defaults; keep those outputs out of the repository
export HRNET_CXR_OUT_ROOT="${HRNET_CXR_OUT_ROOT:-$(mktemp -d -t hrnet-cxr-nbval-XXXX)}"
if [ $# -gt 0 ]; then exec "$PY" -m pytest "$@"; fi
"$PY" -m ruff check src tests notebooks scripts  # rules in pyproject.toml; notebooks are linted natively
"$(dirname "$PY")/lint-imports" pyproject.toml  # the package's layers ([tool.importlinter])
"$PY" -m pytest tests -q --durations=12  # the slowest tests with their times: the tiers' cost
"$PY" -m pytest --nbval-lax notebooks -q -p no:cacheprovider
