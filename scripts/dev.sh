#!/usr/bin/env bash
# `make dev`: the Dagster UI with the demo school loaded.
#
# 1. starts the Zoho and Moodle simulators (python -m sync_pipelines.sandbox: 8770 and 8771, the
#    ports tenants.yaml names);
# 2. exports the demo tenant's credentials under the variable names tenants.yaml gives (the
#    simulators' own, not secrets), unless they are already set;
# 3. adds the demo school's partition to the instance in DAGSTER_HOME (the tenants sensor would
#    too, on its first tick), so a materialization can be launched from the UI at once;
# 4. runs `dg dev` (Dagster's project tool, [tool.dg] in pyproject.toml: the webserver and the
#    daemon) on http://127.0.0.1:${DAGSTER_PORT:-3000}.
# Ctrl-C (or a TERM) stops dagster dev, then the simulators; they are stopped on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
PORT=${DAGSTER_PORT:-3000}
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD}
export PYTHONUNBUFFERED=1
# dg runs the project in the venv it finds in the project folder: say that this is the one.
export VIRTUAL_ENV=${VIRTUAL_ENV:-$PWD/.venv}

sandbox_pid=""
dagster_pid=""
stop_all() {
  trap - INT TERM
  if [[ -n "$dagster_pid" ]] && kill -0 "$dagster_pid" 2>/dev/null; then
    # One interrupt: dagster dev stops its webserver and daemon (a second one would cut that short).
    kill -INT "$dagster_pid" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$dagster_pid" 2>/dev/null || break; sleep 0.25; done
  fi
  if [[ -n "$dagster_pid" ]]; then
    kill -KILL -- "-$dagster_pid" 2>/dev/null || true # whatever is left of its process group
    wait "$dagster_pid" 2>/dev/null || true
  fi
  if [[ -n "$sandbox_pid" ]] && kill -0 "$sandbox_pid" 2>/dev/null; then
    kill -TERM "$sandbox_pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$sandbox_pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$sandbox_pid" 2>/dev/null || true
    wait "$sandbox_pid" 2>/dev/null || true
    echo "dev: simulators stopped"
  fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8770 8771 "$PORT"; do
  if port_in_use "$port"; then
    echo "dev: port $port is already in use (another \`make dev\` or \`make demo\`?)" >&2
    exit 1
  fi
done

mkdir -p .local
# The simulators start from the demo school every time, so the warehouse does too (as in `make
# demo`): Moodle ids it kept from an earlier session would point at courses that are gone. The
# embedded file is recreated; in a warehouse named by WAREHOUSE_URL or SYNC_DATABASE_URL only the
# demo tenant's rows are deleted.
"$BIN/python" -c '
from sync_pipelines.demo import fresh_demo_warehouse
store, what = fresh_demo_warehouse()
print(f"dev: warehouse {store!r}: {what}")
store.dispose()
'
"$BIN/python" -m sync_pipelines.sandbox --port 8770 --moodle-port 8771 2>.local/sandbox.log &
sandbox_pid=$!
for _ in $(seq 1 120); do
  port_in_use 8770 && port_in_use 8771 && break
  kill -0 "$sandbox_pid" 2>/dev/null || { cat .local/sandbox.log >&2; echo "dev: the simulators did not start" >&2; exit 1; }
  sleep 0.25
done
port_in_use 8771 || { echo "dev: the simulators did not start in 30 s (see .local/sandbox.log)" >&2; exit 1; }
echo "dev: Zoho simulator at http://127.0.0.1:8770, Moodle at http://127.0.0.1:8771 (log: .local/sandbox.log)"

# The demo tenant's credentials, and its partition in the instance.
exports=$("$BIN/python" - <<'PY'
import os
import shlex

import dagster as dg

from sync_pipelines.sandbox import DEMO_MOODLE_TOKEN, demo_credentials
from sync_pipelines.tenants import read_tenants, tenant_partitions

tenant = read_tenants().get("demo_school")
creds = demo_credentials()
values = {
    tenant.zoho.client_id_env: creds.client_id,
    tenant.zoho.client_secret_env: creds.client_secret,
    tenant.zoho.refresh_token_env: creds.refresh_token,
}
if tenant.moodle is not None:
    values[tenant.moodle.token_env] = DEMO_MOODLE_TOKEN
for name, value in values.items():
    if not os.environ.get(name):
        print(f"export {name}={shlex.quote(value)}")
with dg.DagsterInstance.get() as instance:
    if tenant.id not in instance.get_dynamic_partitions(tenant_partitions.name):
        instance.add_dynamic_partitions(tenant_partitions.name, [tenant.id])
PY
)
eval "$exports"
echo "dev: demo_school's credentials exported; its partition is in the instance at $DAGSTER_HOME"
echo "dev: the Dagster UI at http://127.0.0.1:$PORT (Ctrl-C to stop)"

# dagster dev runs in a process group of its own, with SIGINT and SIGTERM at their defaults (a
# command started in the background by a script inherits them ignored, and dagster dev would then
# ignore both). Ctrl-C, or a TERM to this script, reaches it once, through stop_all above.
"$BIN/python" -c '
import os, signal, sys
os.setsid()
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])
' "$BIN/dagster" dev -w workspace.yaml -h 127.0.0.1 -p "$PORT" &
dagster_pid=$!
status=0
wait "$dagster_pid" || status=$?
exit "$status"
