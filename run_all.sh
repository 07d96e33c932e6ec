#!/usr/bin/env bash
# Run the whole pipeline: notebooks 01..06 (with 05b) with papermill, one profile.
#
#   ./run_all.sh                      smoke profile: generated phantoms, CPU, a few minutes
#   ./run_all.sh cpu                  real data at reduced size (DATA_DIR, $CXR_DATA_DIR or ../shared/data/cxr)
#   ./run_all.sh paper                the paper's full protocol (use a GPU)
#   ./run_all.sh --setup-only         only create/update the environment (.venv), e.g. before `jupyter lab`
#
# Options: --data DIR (twice or more: one cohort from every folder)  --out DIR  --seed N  --external DIR  --overrides JSON  --from N (1-6)
#          --reuse-from RUN_DIR   start from copies of another run's finished stages
#          --executor local|ray   folds one after another (default) or at once on Ray
#          --ray-address ADDR     join that Ray cluster (else $RAY_ADDRESS, else an embedded one)
#          --publish DIR          after notebook 06, copy the run's figures into DIR (e.g. figures/cpu)
#          --replace              with --publish: replace figures of another or unknown provenance
# Executed notebooks go to OUT/notebooks/ (OUT defaults to outputs/<profile>). Re-running resumes:
# finished folds are reused; results of a different configuration are moved aside, never deleted.
# --reuse-from copies (never links or moves) each finished stage of RUN_DIR that OUT lacks; a
# copied stage whose settings differ from this run's is moved aside and re-run as usual, so only
# stages with the same settings are reused (e.g. ./run_all.sh cpu-deconf --reuse-from outputs/cpu).
# --executor ray runs the folds of notebooks 02, 04, 05, 05a, 05b and 05c as Ray tasks (README, "Running on
# many GPUs / a cluster"); results are the same files, so a run can switch executor and resume.
# The notebooks write only into OUT. --publish DIR (relative to the repository) runs
# `python -m helpers.run.publish OUT DIR` once notebook 06 has finished: it copies the figures with a
# PROVENANCE.json and refuses, before anything runs, a DIR that holds figures of another provenance
# (profile, seed, data, external data, overrides) or of none recorded, unless --replace is given.
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "run_all.sh: $*" >&2; exit 2; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] && [[ "$2" != --* ]] || die "option $1 needs a value (see ./run_all.sh --help)"; }

PROFILE=smoke DATA="" OUT="" SEED=0 EXTERNAL="" OVERRIDES="{}" FROM=1 SETUP_ONLY=0 REUSE="" EXECUTOR=""
PUBLISH="" REPLACE=0
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then PROFILE="$1"; shift; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --data) need_value "$@"; [[ "$2" != *:* ]] || die "--data: '$2' holds ':'; give each folder its own --data"
            DATA="${DATA:+$DATA:}$2"; shift 2 ;;  # given twice: one cohort from both folders
    --out) need_value "$@"; OUT="$2"; shift 2 ;;
    --seed) need_value "$@"; SEED="$2"; shift 2 ;;
    --external) need_value "$@"; EXTERNAL="$2"; shift 2 ;;
    --overrides) need_value "$@"; OVERRIDES="$2"; shift 2 ;;
    --from) need_value "$@"; FROM="$2"; shift 2 ;;
    --reuse-from) need_value "$@"; REUSE="$2"; shift 2 ;;
    --executor) need_value "$@"; EXECUTOR="$2"; shift 2 ;;
    --ray-address) need_value "$@"; export RAY_ADDRESS="$2"; shift 2 ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    --publish) need_value "$@"; PUBLISH="$2"; shift 2 ;;
    --replace) REPLACE=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see ./run_all.sh --help)" ;;
  esac
done
# checks that need no Python, so a typo fails before any set-up
[[ "$SEED" =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer, got '$SEED'"
[[ "$FROM" =~ ^0?[1-6]$ ]] || die "--from must be a notebook number from 1 to 6, got '$FROM'"
IFS=: read -ra DATA_FOLDERS <<< "$DATA"
for d in "${DATA_FOLDERS[@]}"; do [ -e "$d" ] || die "--data: '$d' does not exist"; done
[ -z "$EXTERNAL" ] || [ -d "$EXTERNAL" ] || die "--external: '$EXTERNAL' is not a folder"
[ -z "$EXECUTOR" ] || [[ "$EXECUTOR" =~ ^(local|ray)$ ]] || die "--executor must be 'local' or 'ray', got '$EXECUTOR'"
[ -z "$REUSE" ] || ls "$REUSE"/*/DONE.json >/dev/null 2>&1 || die "--reuse-from: '$REUSE' holds no finished stage (no */DONE.json)"
[ -z "$PUBLISH" ] || [ ! -e "$PUBLISH" ] || [ -d "$PUBLISH" ] || die "--publish: '$PUBLISH' is a file, not a folder"
[ "$REPLACE" = 0 ] || [ -n "$PUBLISH" ] || die "--replace only applies with --publish DIR"

source scripts/env.sh
hrnet_env
if [ "$SETUP_ONLY" = 1 ]; then
  echo "[run_all] environment ready: $PY (start JupyterLab with: .venv/bin/jupyter lab notebooks/)"
  exit 0
fi
[ -n "$OUT" ] || OUT="outputs/$PROFILE"
PROFILE_NAMES=$("$PY" -c "from helpers import config; print(' '.join(config.PROFILES))")
[[ " $PROFILE_NAMES " == *" $PROFILE "* ]] || die "unknown profile '$PROFILE' (one of: $PROFILE_NAMES)"

# Resolve the configuration once (errors name the option), and write the notebook parameters.
PARAMS="$(mktemp -t hrnet-cxr-params-XXXX.json)"
export PROFILE DATA OUT SEED EXTERNAL OVERRIDES PARAMS EXECUTOR PUBLISH REPLACE
"$PY" - <<'PY'
import json, os, sys
from helpers import config
from helpers.run import notebooks, publish
try:
    overrides = json.loads(os.environ["OVERRIDES"])
except json.JSONDecodeError as exc:
    sys.exit(f"run_all.sh: --overrides must be a JSON object such as '{{\"cls_epochs\": 2}}': {exc}")
if not isinstance(overrides, dict):
    sys.exit(f"run_all.sh: --overrides must be a JSON object such as '{{\"cls_epochs\": 2}}', got {overrides!r}")
if os.environ["EXECUTOR"]:
    overrides["executor"] = os.environ["EXECUTOR"]
try:
    cfg = config.resolve(os.environ["PROFILE"], os.environ["DATA"], os.environ["OUT"],
                         int(os.environ["SEED"]), os.environ["EXTERNAL"], overrides)
except Exception as exc:  # configuration errors are the user's to fix: say what, not a traceback
    sys.exit(f"run_all.sh: configuration error: {exc}")
if os.environ["PUBLISH"]:  # refused now rather than after the run
    try:
        publish.check(os.environ["PUBLISH"], publish.provenance(cfg.to_dict()), os.environ["REPLACE"] == "1")
    except publish.PublishRefused as exc:
        sys.exit(f"run_all.sh: --publish: {exc}")
json.dump(notebooks.notebook_parameters(cfg), open(os.environ["PARAMS"], "w"))
print(cfg.summary())
PY
OUT="$(cd "$OUT" && pwd)"
mkdir -p "$OUT/notebooks"
if [ -n "$REUSE" ]; then
  REUSE="$(cd "$REUSE" && pwd)"
  [ "$REUSE" != "$OUT" ] || die "--reuse-from: '$REUSE' is the output folder itself"
  STAGE_NAMES=" $("$PY" -c "from helpers.run import artefacts; print(' '.join(artefacts.STAGES))") "
  for done in "$REUSE"/*/DONE.json; do
    stage="$(basename "$(dirname "$done")")"
    [ "$stage" = figures ] && continue  # always re-drawn
    # only stage folders: not results another configuration made (moved aside to <stage>.old-*)
    # nor any other copy a user kept there
    [[ "$STAGE_NAMES" == *" $stage "* ]] || continue
    if [ -e "$OUT/$stage" ]; then
      echo "[run_all] --reuse-from: $OUT/$stage exists; kept as it is"
    else
      cp -a "$REUSE/$stage" "$OUT/$stage"
      echo "[run_all] --reuse-from: copied $stage from $REUSE"
    fi
  done
fi

# Stopping this script (Ctrl-C, `kill PID`, a scheduler's time limit) stops the notebook it runs
# and that notebook's kernel; nothing goes on writing into OUT.
CHILD=""
kill_tree() {
  local pid=$1 c
  for c in $(pgrep -P "$pid" 2>/dev/null); do kill_tree "$c"; done
  kill -TERM "$pid" 2>/dev/null || true
}
on_stop() {
  trap - TERM INT HUP
  [ -n "$CHILD" ] && kill_tree "$CHILD"
  wait 2>/dev/null || true
  rm -f "$PARAMS"
  echo "[run_all] stopped; finished folds are kept, and the next run resumes from them" >&2
  exit 143
}
trap on_stop TERM INT HUP
trap 'rm -f "$PARAMS"' EXIT

NOTEBOOKS=(
  01_data_curation
  02_unet_training
  03_mask_refinement
  04_hrnet_cv_training
  05_baseline_comparison
  05a_shortcut_audits
  05b_deconfounding_ladder
  05c_leave_one_site_out
  06_figure_generation
)
DEVICE=$("$PY" -c "import torch; print('GPU: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')")
echo "[run_all] profile $PROFILE on $DEVICE -> $OUT"
start=$(date +%s)
for nb in "${NOTEBOOKS[@]}"; do
  [ "$((10#${nb:0:2}))" -lt "$((10#$FROM))" ] && continue
  t0=$(date +%s)
  echo "[run_all] $nb ..."
  "$PY" -m helpers.run.notebooks "notebooks/$nb.ipynb" "$OUT/notebooks/$nb.ipynb" "$PARAMS" &
  CHILD=$!
  if ! wait "$CHILD"; then
    echo "[run_all] $nb failed; the executed notebook with the error is $OUT/notebooks/$nb.ipynb" >&2
    exit 1
  fi
  CHILD=""
  echo "[run_all] $nb done in $(( $(date +%s) - t0 )) s"
done
echo "[run_all] all notebooks done in $(( $(date +%s) - start )) s; figures in $OUT/figures"
if [ -n "$PUBLISH" ]; then
  REPLACE_ARG=()
  [ "$REPLACE" = 0 ] || REPLACE_ARG=(--replace)
  "$PY" -m helpers.run.publish "$OUT" "$PUBLISH" "${REPLACE_ARG[@]}" || { echo "[run_all] not published; the figures are in $OUT/figures" >&2; exit 1; }
fi
