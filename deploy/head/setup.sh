#!/usr/bin/env bash
# Head node only, after deploy/node-setup.sh: Grafana, from Grafana's apt repository, with its packaged
# service off (deploy/head/start-monitoring.sh starts it, as it does Prometheus, with Orrery's settings).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v grafana >/dev/null && ! command -v grafana-server >/dev/null; then
  sudo mkdir -p /etc/apt/keyrings
  curl -fsSL https://apt.grafana.com/gpg.key | sudo gpg --dearmor --yes -o /etc/apt/keyrings/grafana.gpg
  echo "deb [signed-by=/etc/apt/keyrings/grafana.gpg] https://apt.grafana.com stable main" |
    sudo tee /etc/apt/sources.list.d/grafana.list >/dev/null
  sudo apt-get update -qq
  sudo apt-get install -y -qq grafana >/dev/null
  sudo systemctl disable --now grafana-server 2>/dev/null || true
fi
