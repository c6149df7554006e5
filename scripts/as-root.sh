# Sourced by the scripts that install packages or mount disks (scripts/system-deps.sh, deploy/node-setup.sh,
# deploy/head/setup.sh): the one place that decides how to become root.
#
#   . "$repo/scripts/as-root.sh"
#   as_root apt-get update -qq          # root: runs it; else sudo -n when sudo needs no password
#   have_root || echo "..."             # whether as_root can work, to say what to run instead
#
# sudo always gets -n: a password prompt would hang `ray up`, which runs setup over SSH without a
# terminal. Without root or passwordless sudo, as_root prints one line naming the command and fails.
# sudo resets the environment, so DEBIAN_FRONTEND=noninteractive is passed on explicitly.

have_root() {
  [ "$EUID" -eq 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }
}

as_root() {
  if [ "$EUID" -eq 0 ]; then
    "$@"
  elif have_root; then
    sudo -n env DEBIAN_FRONTEND="${DEBIAN_FRONTEND:-noninteractive}" "$@"
  else
    echo "${0##*/}: error: needs root for '$*': run it as root or with passwordless sudo, or run that" \
      "command yourself first (sudo $*)" >&2
    return 1
  fi
}
