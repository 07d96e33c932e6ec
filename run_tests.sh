#!/usr/bin/env bash
# The test suite: unit tests, the papermill smoke chain 01..06 with assertions, nbval over the
# notebooks, and notebook hygiene. Sets up the environment like run_all.sh. Extra arguments go to
# pytest (e.g. ./run_tests.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
hrnet_env
# nbval executes the notebooks with their defaults; keep those outputs out of the repository
export HRNET_CXR_OUT_ROOT="${HRNET_CXR_OUT_ROOT:-$(mktemp -d -t hrnet-cxr-nbval-XXXX)}"
if [ $# -gt 0 ]; then exec "$PY" -m pytest "$@"; fi
"$PY" -m pytest tests -q
"$PY" -m pytest --nbval-lax notebooks -q -p no:cacheprovider
