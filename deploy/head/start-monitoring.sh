#!/usr/bin/env bash
# Prometheus and Grafana on the head node: the runs' metrics (deploy/prometheus.yml) and the Orrery
# dashboard (deploy/grafana/). deploy/cluster*.yaml run it after `ray start --head`; idempotent.
#
# Both listen on 127.0.0.1 only; reach them through SSH: `ray attach deploy/cluster.yaml -p 3000 -p 9090`,
# then http://127.0.0.1:3000 (dashboard "Orrery") and http://127.0.0.1:9090.
# Run drivers live on the head (the orrery_driver slots); Prometheus' config is deploy/prometheus.yml
# rendered for this user (deploy/render-prometheus.sh: $ORRERY_HOME/prometheus/*.json, Ray's temp dir).
# Their data stay on the head's own disk (ORRERY_MONITORING_DIR, default ~/.orrery/monitoring, mode 0700):
# Prometheus does not support NFS for its database.
#
#   ORRERY_PROMETHEUS_PORT  default 9090      ORRERY_GRAFANA_PORT  default 3000
#
# It succeeds only once both answer their health endpoints (up to 30 s each). Otherwise it exits non-zero
# with one line naming what failed (and that program's last log lines), and stops again whatever this call
# started, so a failed start leaves nothing half-running. deploy/head/stop.sh stops both.
set -euo pipefail
head=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$head")
. "$head/processes.sh"
state=${ORRERY_MONITORING_DIR:-$HOME/.orrery/monitoring}
prometheus_port=${ORRERY_PROMETHEUS_PORT:-9090}
grafana_port=${ORRERY_GRAFANA_PORT:-3000}
started=()  # pid files of what this call started: stopped again if a later step fails
fail() {  # CODE MESSAGE [LOG]
  echo "start-monitoring.sh: error: $2" >&2
  [ -z "${3:-}" ] || tail -n 5 "$3" 2>/dev/null | sed 's/^/  | /' >&2
  for pidfile in "${started[@]}"; do stop_process "$pidfile" "$(basename "$pidfile" .pid)" || true; done
  exit "$1"
}
for port in "$prometheus_port" "$grafana_port"; do
  case "$port" in '' | *[!0-9]*)
    fail 2 "ORRERY_PROMETHEUS_PORT and ORRERY_GRAFANA_PORT must be numbers, got '$port'" ;; esac
done
command -v curl >/dev/null || fail 2 "curl is not installed (health checks); run scripts/system-deps.sh --head"
(umask 077 && mkdir -p "$state/prometheus" "$state/grafana")
chmod 700 "$state"  # Grafana's database is in there

# free NAME PORT VARIABLE: nothing listens there yet, so a health check answered later is ours
free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
    fail 1 "$1 cannot start: another program listens on 127.0.0.1:$2; stop it or choose another $3"
  fi
}
# ready NAME URL PIDFILE PROGRAM LOG: wait until URL answers, at most 30 s, and not past the program's exit
ready() {
  for _ in $(seq 60); do
    curl -fsS -o /dev/null --max-time 1 "$2" 2>/dev/null && return 0
    alive "$3" "$4" >/dev/null || fail 1 "$1 exited before answering $2; its log: $5" "$5"
    sleep 0.5
  done
  fail 1 "$1 did not answer $2 within 30 s; its log: $5" "$5"
}

command -v prometheus >/dev/null || fail 2 "Prometheus is not installed; run scripts/system-deps.sh --head"
"$deploy/render-prometheus.sh" "$state/prometheus.yml"
if pid=$(alive "$state/prometheus.pid" prometheus); then
  kill -HUP "$pid"  # already running: reload, in case the rendered config changed
else
  free Prometheus "$prometheus_port" ORRERY_PROMETHEUS_PORT
  setsid nohup prometheus --config.file="$state/prometheus.yml" --storage.tsdb.path="$state/prometheus" \
    --web.listen-address="127.0.0.1:$prometheus_port" >"$state/prometheus.log" 2>&1 </dev/null &
  echo $! >"$state/prometheus.pid"
  started+=("$state/prometheus.pid")
fi
ready Prometheus "http://127.0.0.1:$prometheus_port/-/ready" "$state/prometheus.pid" prometheus "$state/prometheus.log"

# deploy/grafana/provisioning reads both variables: the datasource (this Prometheus) and the dashboards folder.
export ORRERY_PROMETHEUS_PORT=$prometheus_port ORRERY_GRAFANA_DASHBOARDS=$deploy/grafana
if command -v grafana >/dev/null; then grafana=(grafana server); elif command -v grafana-server >/dev/null; then
  grafana=(grafana-server); else fail 2 "Grafana is not installed; run deploy/head/setup.sh"; fi
if ! alive "$state/grafana.pid" grafana >/dev/null; then
  free Grafana "$grafana_port" ORRERY_GRAFANA_PORT
  setsid nohup "${grafana[@]}" --homepath /usr/share/grafana \
    cfg:default.paths.provisioning="$deploy/grafana/provisioning" cfg:default.paths.data="$state/grafana" \
    cfg:default.paths.logs="$state/grafana" cfg:default.server.http_addr=127.0.0.1 \
    cfg:default.server.http_port="$grafana_port" cfg:default.auth.anonymous.enabled=true \
    cfg:default.auth.anonymous.org_role=Viewer >"$state/grafana.log" 2>&1 </dev/null &
  echo $! >"$state/grafana.pid"
  started+=("$state/grafana.pid")
fi
ready Grafana "http://127.0.0.1:$grafana_port/api/health" "$state/grafana.pid" grafana "$state/grafana.log"
echo "Prometheus http://127.0.0.1:$prometheus_port and Grafana http://127.0.0.1:$grafana_port on the head (logs in $state)"
