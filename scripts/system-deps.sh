#!/usr/bin/env bash
# Debian packages Orrery needs: redis-server (replay), EGL + Mesa (headless MuJoCo rendering),
# prometheus (scrapes the runs' metrics), chromium (the report test renders report.html headless).
# Installs only what is missing; needs root or passwordless sudo for that.
set -euo pipefail
packages=(redis-server libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libgles2 libglvnd0 prometheus chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
  echo "error: missing Debian packages ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
