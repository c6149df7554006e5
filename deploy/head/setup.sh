#!/usr/bin/env bash
# Head node only, after deploy/node-setup.sh: the head's Debian packages (Prometheus, curl) and Grafana, from
# Grafana's apt repository, with both packaged services off: deploy/head/start-monitoring.sh starts them
# with Orrery's settings. Root: as root, or a user with passwordless sudo (scripts/as-root.sh); idempotent.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/scripts/as-root.sh"
export DEBIAN_FRONTEND=noninteractive
"$repo/scripts/system-deps.sh" --head
if ! command -v grafana >/dev/null && ! command -v grafana-server >/dev/null; then
  as_root mkdir -p /etc/apt/keyrings
  curl -fsSL https://apt.grafana.com/gpg.key | as_root gpg --dearmor --yes -o /etc/apt/keyrings/grafana.gpg
  echo "deb [signed-by=/etc/apt/keyrings/grafana.gpg] https://apt.grafana.com stable main" |
    as_root tee /etc/apt/sources.list.d/grafana.list >/dev/null
  as_root apt-get update -qq
  as_root apt-get install -y -qq grafana >/dev/null
fi
# The packaged services would listen on 0.0.0.0 with Debian's settings and hold ports 9090 and 3000.
for service in prometheus grafana-server; do
  if systemctl is-enabled --quiet "$service" 2>/dev/null || systemctl is-active --quiet "$service" 2>/dev/null; then
    as_root systemctl disable --now "$service"
  fi
done
