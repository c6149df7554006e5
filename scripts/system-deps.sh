#!/usr/bin/env bash
# Debian/Ubuntu packages Orrery needs; installs only what is missing (root or passwordless sudo for that).
#
#   scripts/system-deps.sh          this machine runs Orrery and its test suite (make test, CI): run + test
#   scripts/system-deps.sh --node   a cluster node (deploy/node-setup.sh): run + node
#   scripts/system-deps.sh --head   what the cluster head adds (deploy/head/setup.sh): head
#
# run:  redis-server (replay), EGL + Mesa (headless MuJoCo rendering)
# node: python3-venv (the node's virtualenv), nfs-common (the shared disk)
# head: prometheus (scrapes the runs' metrics; Grafana comes from deploy/head/setup.sh), curl (health checks)
# test: prometheus (tests/e2e/test_prometheus.py), chromium (the report test renders report.html headless).
#       Only tests need chromium: Ubuntu has no such Debian package (a snap stub), so nodes never ask for it.
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
run=(redis-server libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libgles2 libglvnd0)
case "${1:-}" in
  "") packages=("${run[@]}" prometheus chromium) ;;
  --node) packages=("${run[@]}" python3-venv nfs-common) ;;
  --head) packages=(prometheus curl) ;;
  *) echo "system-deps.sh: error: unknown option '$1'; use no option (run and test), --node or --head" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "system-deps.sh: error: one option at most, got: $*" >&2; exit 2; }
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
have_root || {
  echo "system-deps.sh: error: missing Debian packages ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
}
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
