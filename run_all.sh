#!/usr/bin/env bash
# Run the whole pipeline: notebooks 01..06 with papermill, one profile.
#
#   ./run_all.sh                      smoke profile: generated phantoms, CPU, a few minutes
#   ./run_all.sh cpu                  real data at reduced size (DATA_DIR, $CXR_DATA_DIR or ../shared/data/cxr)
#   ./run_all.sh paper                the paper's full protocol (use a GPU)
#
# Options: --data DIR  --out DIR  --seed N  --external DIR  --overrides JSON  --from NN
# Executed notebooks go to OUT/notebooks/ (OUT defaults to outputs/<profile>). Re-running resumes:
# finished folds are reused; results of a different configuration are moved aside, never deleted.
set -euo pipefail
cd "$(dirname "$0")"

PROFILE=smoke DATA="" OUT="" SEED=0 EXTERNAL="" OVERRIDES="{}" FROM=1
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then PROFILE="$1"; shift; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --external) EXTERNAL="$2"; shift 2 ;;
    --overrides) OVERRIDES="$2"; shift 2 ;;
    --from) FROM="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see ./run_all.sh --help)" >&2; exit 2 ;;
  esac
done
case "$PROFILE" in smoke|cpu|paper) ;; *) echo "unknown profile '$PROFILE' (smoke, cpu or paper)" >&2; exit 2 ;; esac

source scripts/env.sh
hrnet_env
[ -n "$OUT" ] || OUT="outputs/$PROFILE"
mkdir -p "$OUT/notebooks"
OUT="$(cd "$OUT" && pwd)"

export PROFILE DATA OUT SEED EXTERNAL OVERRIDES
"$PY" - <<'PY'
import json, os, sys
from helpers import config
try:
    cfg = config.resolve(os.environ["PROFILE"], os.environ["DATA"], os.environ["OUT"],
                         int(os.environ["SEED"]), os.environ["EXTERNAL"], json.loads(os.environ["OVERRIDES"]))
except Exception as exc:  # configuration errors are the user's to fix: say what, not a traceback
    sys.exit(f"configuration error: {exc}")
print(cfg.summary())
PY

NOTEBOOKS=(
  01_data_curation
  02_unet_training
  03_mask_refinement
  04_hrnet_cv_training
  05_baseline_comparison
  06_figure_generation
)
DEVICE=$("$PY" -c "import torch; print('GPU: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')")
echo "[run_all] profile $PROFILE on $DEVICE -> $OUT"
start=$(date +%s)
for nb in "${NOTEBOOKS[@]}"; do
  [ "$((10#${nb:0:2}))" -lt "$FROM" ] && continue
  t0=$(date +%s)
  echo "[run_all] $nb ..."
  "$PY" -m papermill "notebooks/$nb.ipynb" "$OUT/notebooks/$nb.ipynb" --cwd notebooks \
    -p PROFILE "$PROFILE" -p DATA_DIR "$DATA" -p OUT_DIR "$OUT" -p SEED "$SEED" \
    -p EXTERNAL_DATA_DIR "$EXTERNAL" -y "OVERRIDES: $OVERRIDES" --log-level WARNING \
    || { echo "[run_all] $nb failed; the executed notebook with the error is $OUT/notebooks/$nb.ipynb" >&2; exit 1; }
  echo "[run_all] $nb done in $(( $(date +%s) - t0 )) s"
done
echo "[run_all] all notebooks done in $(( $(date +%s) - start )) s; figures in $OUT/figures"
