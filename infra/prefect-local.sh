#!/usr/bin/env bash
# Local orchestration in one command: a Prefect server (SQLite in .prefect/) on 127.0.0.1, the process work
# pool `local`, the deployments of prefect.yaml, and a worker. Ctrl-C stops the worker and the server.
#   bash infra/prefect-local.sh            then, in another shell:
#   export PREFECT_API_URL=http://127.0.0.1:4200/api && prefect deployment run train/full
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
PORT="${PREFECT_PORT:-4200}"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
mkdir -p "$PREFECT_HOME"
prefect server start --host 127.0.0.1 --port "$PORT" > "$PREFECT_HOME/server.log" 2>&1 &
SERVER=$!
WORKER=""
halt() {  # SIGTERM; Prefect's CLI treats the first one as a graceful request, so repeat it, then SIGKILL
  local pid=$1
  for attempt in 1 2; do
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  done
  kill -KILL "$pid" 2>/dev/null || true
}
stop() {  # the worker first: it reports its shutdown to the server
  if [ -n "$WORKER" ]; then halt "$WORKER"; fi
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
prefect work-pool inspect local > /dev/null 2>&1 || prefect work-pool create local --type process
PWD="$PWD" prefect --no-prompt deploy --all
echo "trimodal: Prefect UI at http://127.0.0.1:$PORT ; run: PREFECT_API_URL=$PREFECT_API_URL prefect deployment run train/full"
prefect worker start --pool local &
WORKER=$!
wait "$WORKER"
