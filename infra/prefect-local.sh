#!/usr/bin/env bash
# Local orchestration in one command: a Prefect server (SQLite in .prefect/) on 127.0.0.1, the process work pools
# `cpu` and `gpu`, the deployments of prefect.yaml, and one worker per pool, each started in its own folder with its
# own work root ($TRIMODAL_WORK/<pool>: the stage clones and that worker's DVC cache), as if on two machines.
# Runs execute committed revisions: the git remote is this repository itself (run branches trimodal/run-* appear
# here), and the DVC remote is this repository's default remote made absolute (dvc-storage/), unless
# TRIMODAL_GIT_REMOTE / TRIMODAL_DVC_REMOTE name others; training checkpoints go to $WORK/checkpoints (both pools
# reach it), unless TRIMODAL_CHECKPOINT_STORE names another. Flow runs send a heartbeat every 60 s and the server's
# automation (infra/automations.yaml) marks a run whose heartbeats stop Crashed. Ctrl-C stops the workers and the server.
#   bash infra/prefect-local.sh            then, in another shell:
#   export PREFECT_API_URL=http://127.0.0.1:4200/api && prefect deployment run train/full
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
PORT="${PREFECT_PORT:-4200}"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export TRIMODAL_GIT_REMOTE="${TRIMODAL_GIT_REMOTE:-$PWD}"
export TRIMODAL_DVC_REMOTE="${TRIMODAL_DVC_REMOTE:-$(python -c 'from flows.dvc_stages import remote_url; print(remote_url("."))')}"
WORK="${TRIMODAL_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/trimodal/local}"
export TRIMODAL_CHECKPOINT_STORE="${TRIMODAL_CHECKPOINT_STORE:-$WORK/checkpoints}"
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-60}"
mkdir -p "$PREFECT_HOME"
prefect server start --host 127.0.0.1 --port "$PORT" > "$PREFECT_HOME/server.log" 2>&1 &
SERVER=$!
WORKERS=()
halt() {  # SIGTERM; Prefect's CLI treats the first one as a graceful request, so repeat it, then SIGKILL
  local pid=$1
  for attempt in 1 2; do
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  done
  kill -KILL "$pid" 2>/dev/null || true
}
stop() {  # the workers first: they report their shutdown to the server
  for pid in "${WORKERS[@]}"; do halt "$pid"; done
  halt "$SERVER"
}
trap stop EXIT
trap 'exit 130' INT TERM
python - "$PREFECT_API_URL/health" <<'PY'
import sys, time, urllib.request
for _ in range(240):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2)
        sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit("Prefect server did not answer at " + sys.argv[1] + " (see .prefect/server.log)")
PY
for pool in cpu gpu; do
  prefect work-pool inspect "$pool" > /dev/null 2>&1 || prefect work-pool create "$pool" --type process
done
PWD="$PWD" prefect --no-prompt deploy --all
prefect automation inspect trimodal-crash-zombie-runs > /dev/null 2>&1 \
  || prefect automation create --from-file infra/automations.yaml
for pool in cpu gpu; do
  mkdir -p "$WORK/$pool"
  (cd "$WORK/$pool" && TRIMODAL_WORKDIR="$WORK/$pool/work" exec prefect worker start --pool "$pool") \
    > "$PREFECT_HOME/worker-$pool.log" 2>&1 &
  WORKERS+=("$!")
done
echo "trimodal: Prefect UI at http://127.0.0.1:$PORT ; run: PREFECT_API_URL=$PREFECT_API_URL prefect deployment run train/full"
echo "trimodal: git remote $TRIMODAL_GIT_REMOTE, DVC remote $TRIMODAL_DVC_REMOTE, work roots $WORK/{cpu,gpu}/work"
echo "trimodal: worker logs $PREFECT_HOME/worker-{cpu,gpu}.log"
wait -n  # until the server or a worker exits (or Ctrl-C)
