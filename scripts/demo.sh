#!/usr/bin/env bash
# The quick-start demo: migrate the default database, start the PEMS simulator, register two demo
# organizations, sync them with live progress, print the summary, and stop what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
PORT=${DEMO_PORT:-8900}
export PEMS_DEMO_PASSWORD=${PEMS_DEMO_PASSWORD:-pfasync-demo}
# The demo runs on a SQLite file when DATABASE_URL is unset, and its PEMS simulator speaks plain http.
export PFASYNC_ALLOW_SQLITE=true PEMS_ALLOW_HTTP=true
# The demo tenant's time zone: the simulator writes its times in it, and the connection must name it.
TIME_ZONE=America/Chicago

"$BIN/python" manage.py migrate --noinput >/dev/null
"$BIN/python" manage.py pems_simulator --port "$PORT" --orgs RIO=50000,HOU=20000 --seed 1 \
    --password-env PEMS_DEMO_PASSWORD --time-zone "$TIME_ZONE" &
SIMULATOR_PID=$!
trap 'kill "$SIMULATOR_PID" 2>/dev/null; wait "$SIMULATOR_PID" 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
    if "$BIN/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/_sim/state', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$SIMULATOR_PID" 2>/dev/null || { echo "The PEMS simulator did not start." >&2; exit 1; }
    sleep 0.5
done

for org in "RIO Rio Grande" "HOU Houston Terminal"; do
    set -- $org
    code=$1; shift
    "$BIN/python" manage.py add_organization "$code" --name "$*" --pems-url "http://127.0.0.1:$PORT" \
        --tenant PEMS_DEMO --username pfasync --password-env PEMS_DEMO_PASSWORD --timezone "$TIME_ZONE"
done
"$BIN/python" manage.py sync_pems --org RIO --org HOU --full
