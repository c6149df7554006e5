#!/usr/bin/env bash
# Every node of an Orrery Ray cluster: system packages, the shared disk, a virtualenv with Orrery and Ray.
# deploy/cluster*.yaml run it from the checkout they sync to ~/orrery, with ~/.orrery/cluster.env sourced; idempotent.
#
#   ORRERY_SHARED  the disk every node shares (default /mnt/orrery): run directories (the learner writes
#                  checkpoints on its node, the driver reads them on the head) and the replay's append-only file
#   ORRERY_EFS     AWS: the EFS file system id mounted at ORRERY_SHARED; empty: it is mounted already (NFS on-premise)
#   ORRERY_VENV    default ~/orrery-venv; activated in ~/.bashrc so that `ray` and `orrery` are on PATH
#   TORCH          default torch==2.13.0 (the PyPI wheel for Linux carries CUDA, so GPU nodes need nothing else)
# Root: runs as root, or as a user with passwordless sudo (never prompts: scripts/as-root.sh).
set -euo pipefail
die() { echo "node-setup.sh: error: $*" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/as-root.sh"
shared=${ORRERY_SHARED:-/mnt/orrery}
venv=${ORRERY_VENV:-$HOME/orrery-venv}
export DEBIAN_FRONTEND=noninteractive

"$repo/scripts/system-deps.sh" --node  # what a node runs with; the head adds its part in deploy/head/setup.sh
# Debian starts the packaged redis-server as a service on port 6379, which is Ray's GCS on the head;
# the replay Redis is Orrery's own (deploy/head/start-replay.sh, embedded ones per run).
if systemctl is-enabled --quiet redis-server 2>/dev/null || systemctl is-active --quiet redis-server 2>/dev/null; then
  as_root systemctl disable --now redis-server
fi
if [ -n "${ORRERY_EFS:-}" ] && ! mountpoint -q "$shared"; then
  token=$(curl -fsS -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 60")
  region=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/placement/region)
  as_root mkdir -p "$shared"
  as_root mount -t nfs4 -o nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport \
    "$ORRERY_EFS.efs.$region.amazonaws.com:/" "$shared"
  as_root chown "$(id -u):$(id -g)" "$shared"
fi
mountpoint -q "$shared" || die "$shared is not a mounted shared disk; set ORRERY_EFS (AWS) or mount it on every node (NFS)"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "${TORCH:-torch==2.13.0}"
"$venv/bin/python" -m pip install -q -e "$repo"
grep -q "# orrery-venv" ~/.bashrc || echo "source $venv/bin/activate  # orrery-venv" >>~/.bashrc
