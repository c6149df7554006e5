#!/usr/bin/env bash
# Every node of an Orrery Ray cluster: system packages, the shared disk, a virtualenv with Orrery and Ray.
# deploy/cluster*.yaml run it from the checkout they sync to ~/orrery, with ~/.orrery/cluster.env sourced; idempotent.
#
#   ORRERY_SHARED  the disk every node shares (default /mnt/orrery): run directories (the learner writes
#                  checkpoints on its node, the driver reads them on the head) and the replay's append-only file
#   ORRERY_EFS     AWS: the EFS file system id mounted at ORRERY_SHARED; empty: it is mounted already (NFS on-premise)
#   ORRERY_VENV    default ~/orrery-venv; activated in ~/.bashrc so that `ray` and `orrery` are on PATH
#   TORCH          default torch==2.13.0 (the PyPI wheel for Linux carries CUDA, so GPU nodes need nothing else)
set -euo pipefail
die() { echo "node-setup.sh: error: $*" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=${ORRERY_SHARED:-/mnt/orrery}
venv=${ORRERY_VENV:-$HOME/orrery-venv}
export DEBIAN_FRONTEND=noninteractive

"$repo/scripts/system-deps.sh"
sudo apt-get install -y -qq python3-venv nfs-common >/dev/null
# Debian starts the packaged redis-server (port 6379: Ray's GCS on the head) and prometheus as services;
# the head runs its own (deploy/head/start-*.sh), other nodes need neither.
for service in redis-server prometheus; do sudo systemctl disable --now "$service" 2>/dev/null || true; done
if [ -n "${ORRERY_EFS:-}" ] && ! mountpoint -q "$shared"; then
  token=$(curl -fsS -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 60")
  region=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/placement/region)
  sudo mkdir -p "$shared"
  sudo mount -t nfs4 -o nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport \
    "$ORRERY_EFS.efs.$region.amazonaws.com:/" "$shared"
  sudo chown "$(id -u):$(id -g)" "$shared"
fi
mountpoint -q "$shared" || die "$shared is not a mounted shared disk; set ORRERY_EFS (AWS) or mount it on every node (NFS)"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "${TORCH:-torch==2.13.0}"
"$venv/bin/python" -m pip install -q -e "$repo"
grep -q "# orrery-venv" ~/.bashrc || echo "source $venv/bin/activate  # orrery-venv" >>~/.bashrc
