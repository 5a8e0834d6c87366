#!/bin/sh
# The container image's entrypoint (Dockerfile): one process of the topology per container.
#
#   webserver   dagster-webserver on 0.0.0.0:${DAGSTER_WEBSERVER_PORT:-3000}
#   daemon      dagster-daemon run: schedules, sensors, the run queue, run monitoring, and the runs
#               themselves (default run launcher: a process per run, in this container)
#   receiver    the webhook receiver on 0.0.0.0:${SYNC_RECEIVER_PORT:-8780}
#   sandbox     the Zoho and Moodle simulators with the demo school (8770, 8771), for a demo only;
#               on ${SANDBOX_HOST:-127.0.0.1}: the Zoho simulator answers its own address as the
#               api_domain, so it has to be an address the daemon reaches it at (compose.yaml runs
#               it in the daemon's network namespace, where tenants.yaml's 127.0.0.1:8770 holds)
#   anything else is run as given (`sync-pipelines status`, `dagster …`, `sh`)
#
# The process replaces this shell (exec), so it receives the container's SIGTERM itself and stops
# cleanly; the daemon is the exception (below). Run the container with an init (`init: true` in
# compose.yaml, `docker run --init`) so that the run workers the daemon starts are reaped.
set -eu

# Dagster's `{env: …}` has no default: give the instance file's variables theirs here too, for a
# container started with an environment of its own (the image sets the same in ENV).
: "${DAGSTER_MAX_CONCURRENT_RUNS:=4}"
: "${DAGSTER_PG_PORT:=5432}"
export DAGSTER_MAX_CONCURRENT_RUNS DAGSTER_PG_PORT

WORKSPACE=${DAGSTER_WORKSPACE:-/opt/dagster/app/workspace.yaml}

# Whether a process other than this shell is left in its process group (field 5 of /proc/*/stat).
group_alive() {
  for stat in /proc/[0-9]*/stat; do
    { read -r line <"$stat"; } 2>/dev/null || continue
    set -- $line
    [ "$1" != "$$" ] && [ "$5" = "$$" ] && return 0
  done
  return 1
}

command=${1:-webserver}
[ "$#" -gt 0 ] && shift
case "$command" in
  webserver)
    exec dagster-webserver -w "$WORKSPACE" -h 0.0.0.0 -p "${DAGSTER_WEBSERVER_PORT:-3000}" "$@"
    ;;
  daemon)
    # `docker stop` signals the main process only. The runs are processes of the daemon's code
    # server: killed without a word when the container ends, they would stay STARTED and hold
    # their school's slot in the queue until run monitoring cancels them (max_runtime_seconds).
    # So the signal goes to the whole process group, as systemd's KillMode=control-group does: a
    # run in progress is interrupted and ends FAILURE (its webhook events are retried, the next
    # tick syncs again), and this shell waits for the daemon and the runs to be gone.
    dagster-daemon run -w "$WORKSPACE" "$@" &
    daemon=$!
    trap 'trap "" TERM INT; kill -TERM 0' TERM INT
    status=0
    while kill -0 "$daemon" 2>/dev/null; do
      wait "$daemon" || status=$?
    done
    trap - TERM INT
    # The rest of the process group (a run recording how it ended), up to the stop grace period.
    while group_alive; do sleep 0.5; done
    exit "$status"
    ;;
  receiver)
    exec python -m sync_pipelines.webhooks --host 0.0.0.0 --port "${SYNC_RECEIVER_PORT:-8780}" "$@"
    ;;
  sandbox)
    exec python -m sync_pipelines.sandbox --host "${SANDBOX_HOST:-127.0.0.1}" --port 8770 --moodle-port 8771 "$@"
    ;;
  *)
    exec "$command" "$@"
    ;;
esac
