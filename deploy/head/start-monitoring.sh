#!/usr/bin/env bash
# Prometheus and Grafana on the head node: the runs' metrics (deploy/prometheus.yml) and the Orrery
# dashboard (deploy/grafana/). deploy/cluster*.yaml run it after `ray start --head`; idempotent.
#
# Both listen on 127.0.0.1 only; reach them through SSH: `ray attach deploy/cluster.yaml -p 3000 -p 9090`,
# then http://127.0.0.1:3000 (dashboard "Orrery") and http://127.0.0.1:9090.
# Run drivers live on the head (the orrery_driver slots), so Prometheus finds every run in
# /tmp/orrery/prometheus/*.json and Ray's node metrics in /tmp/ray/prom_metrics_service_discovery.json.
# Their data stay on the head's own disk (ORRERY_MONITORING_DIR, default ~/.orrery/monitoring):
# Prometheus does not support NFS for its database.
set -euo pipefail
deploy=$(cd "$(dirname "$0")/.." && pwd)
state=${ORRERY_MONITORING_DIR:-$HOME/.orrery/monitoring}
mkdir -p "$state/prometheus" "$state/grafana"
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if ! running "$state/prometheus.pid"; then
  setsid nohup prometheus --config.file="$deploy/prometheus.yml" --storage.tsdb.path="$state/prometheus" \
    --web.listen-address=127.0.0.1:9090 >"$state/prometheus.log" 2>&1 </dev/null &
  echo $! >"$state/prometheus.pid"
fi

# deploy/grafana/provisioning: the datasource (this Prometheus) and a dashboards provider reading /etc/orrery/grafana.
sudo mkdir -p /etc/orrery && sudo ln -sfn "$deploy/grafana" /etc/orrery/grafana
if ! running "$state/grafana.pid"; then
  if command -v grafana >/dev/null; then grafana=(grafana server); else grafana=(grafana-server); fi
  setsid nohup "${grafana[@]}" --homepath /usr/share/grafana \
    cfg:default.paths.provisioning="$deploy/grafana/provisioning" cfg:default.paths.data="$state/grafana" \
    cfg:default.paths.logs="$state/grafana" cfg:default.server.http_addr=127.0.0.1 \
    cfg:default.server.http_port=3000 cfg:default.auth.anonymous.enabled=true \
    cfg:default.auth.anonymous.org_role=Viewer >"$state/grafana.log" 2>&1 </dev/null &
  echo $! >"$state/grafana.pid"
fi
echo "Prometheus http://127.0.0.1:9090 and Grafana http://127.0.0.1:3000 on the head (logs in $state)"
