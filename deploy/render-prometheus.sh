#!/usr/bin/env bash
# Renders deploy/prometheus.yml (a template) for the user running this, into OUT:
#
#   deploy/render-prometheus.sh ~/.orrery/prometheus.yml && prometheus --config.file="$HOME/.orrery/prometheus.yml"
#
# Prometheus expands neither ~ nor environment variables in file_sd paths, so the placeholders become
# absolute paths here, decided the way the programs that write those files decide them:
#   @ORRERY_HOME@   $ORRERY_HOME if set and not empty, else ~/.orrery (cluster/exporter.py, orrery_home)
#   @RAY_TEMP_DIR@  $RAY_TMPDIR/ray if RAY_TMPDIR is set, else $TMPDIR/ray if TMPDIR is set, else /tmp/ray
#                   (Ray's own rule, ray._common.utils.get_default_ray_temp_dir)
# OUT is replaced atomically (a link at OUT is replaced, not followed). Exit code 2 and one line on bad input.
set -euo pipefail
die() { echo "render-prometheus.sh: error: $*" >&2; exit 2; }
[ $# -eq 1 ] && [ -n "$1" ] || die "usage: deploy/render-prometheus.sh OUT (where to write the rendered config)"
out=$1
[ ! -d "$out" ] || die "$out is a directory; give the file to write, e.g. $out/prometheus.yml"
home=${ORRERY_HOME:-$HOME/.orrery}
ray_temp=${RAY_TMPDIR-${TMPDIR-/tmp}}/ray
for value in "ORRERY_HOME=$home" "RAY_TMPDIR (Ray's temp dir)=$ray_temp"; do
  name=${value%%=*} path=${value#*=}
  case "$path" in /*) ;; *) die "$name must be an absolute path for Prometheus, got '$path'";; esac
  # a quote or backslash would end the YAML string; * ? [ would turn the path into another glob
  case "$path" in *[\"\\*?[]*|*$'\n'*)
    die "$name '$path' holds a character a Prometheus file_sd path cannot (\" \\ * ? [ or a newline)";; esac
done

template=$(cd "$(dirname "$0")" && pwd)/prometheus.yml
text=$(<"$template")
text=${text//@ORRERY_HOME@/"$home"}  # quoted: bash 5.2 would otherwise read & in the path as the match
text=${text//@RAY_TEMP_DIR@/"$ray_temp"}

mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$(dirname "$out")/.prometheus.yml.XXXXXX")
trap 'rm -f "$tmp"' EXIT
printf '%s\n' "$text" >"$tmp"
chmod 644 "$tmp"
mv -fT "$tmp" "$out"
trap - EXIT
