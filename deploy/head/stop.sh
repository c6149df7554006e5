#!/usr/bin/env bash
# Stops what the head's start scripts started: the replay Redis (deploy/head/start-replay.sh), Prometheus and
# Grafana (deploy/head/start-monitoring.sh). `ray down` does not: on your own machines they keep running
# (on AWS the head instance is terminated anyway). Run it before `ray down`, with the cluster's settings:
#
#   ray exec deploy/cluster-local.yaml 'set -a && . ~/.orrery/cluster.env && set +a && ~/orrery/deploy/head/stop.sh'
#
# The same environment as the start scripts: ORRERY_REDIS_PASSWORD, ORRERY_REPLAY_HOST, ORRERY_REPLAY_PORT,
# ORRERY_SHARED / ORRERY_REPLAY_DIR, ORRERY_MONITORING_DIR. Redis gets SHUTDOWN (password through REDISCLI_AUTH,
# never on a command line), which writes its append-only file before it exits. Idempotent: what is not
# running is reported as such. Exit code 2 and one line on bad input, before anything is stopped.
set -euo pipefail
head=$(cd "$(dirname "$0")" && pwd)
. "$head/processes.sh"
die() { echo "stop.sh: error: $1" >&2; exit "${2:-2}"; }  # MESSAGE [CODE]
shared=${ORRERY_SHARED:-/mnt/orrery}
dir=${ORRERY_REPLAY_DIR:-$shared/redis}
state=${ORRERY_MONITORING_DIR:-$HOME/.orrery/monitoring}

if redis_pid=$(alive "$dir/redis.pid" redis-server); then
  [ -n "${ORRERY_REDIS_PASSWORD:-}" ] ||
    die "ORRERY_REDIS_PASSWORD is not set; source ~/.orrery/cluster.env first (set -a && . ~/.orrery/cluster.env && set +a)"
  host=${ORRERY_REPLAY_HOST:-$(hostname -I | awk '{print $1}')}
  port=${ORRERY_REPLAY_PORT:-6390}
  command -v redis-cli >/dev/null || die "redis-cli not found; run scripts/system-deps.sh --node"
  export REDISCLI_AUTH="$ORRERY_REDIS_PASSWORD"
  # SHUTDOWN closes the connection without a reply when it works; a reply is an error (wrong password, ...)
  reply=$(redis-cli -h "$host" -p "$port" --no-auth-warning shutdown 2>&1 | tr '\n' ' ' | sed 's/ *$//' || true)
  [ -n "$reply" ] || for _ in $(seq 300); do alive "$dir/redis.pid" redis-server >/dev/null || break; sleep 0.1; done
  alive "$dir/redis.pid" redis-server >/dev/null &&
    die "replay Redis (pid $redis_pid) did not stop on SHUTDOWN at $host:$port: ${reply:-no reply}; see $dir/redis.log" 1
  echo "stopped the replay Redis (pid $redis_pid); its append-only file is in $dir"
else
  echo "replay Redis not running (no live $dir/redis.pid)"
fi
for program in grafana prometheus; do
  if pid=$(alive "$state/$program.pid" "$program"); then
    stop_process "$state/$program.pid" "$program"
    echo "stopped $program (pid $pid)"
  else
    rm -f "$state/$program.pid"
    echo "$program not running (no live $state/$program.pid)"
  fi
done
