# Sourced by deploy/head/start-monitoring.sh and deploy/head/stop.sh: the head's long-running processes,
# tracked by pid files.
#
#   alive PIDFILE PROGRAM          prints the pid and succeeds while PROGRAM runs under it
#   stop_process PIDFILE PROGRAM   SIGTERM, then waits up to 30 s for it to exit; removes the pid file
#
# A pid counts only while its process's program name (argv[0], without its directory) starts with PROGRAM:
# a pid file that outlived its process (a crash, a reboot) may name an unrelated process by now, which must
# never be signalled. A zombie has an empty command line, so it counts as gone.

alive() {
  local pid argv0
  pid=$(cat "$1" 2>/dev/null) || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  argv0=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | sed -n 1p) || return 1
  case "${argv0##*/}" in "$2"*) echo "$pid" ;; *) return 1 ;; esac
}

stop_process() {
  local pid
  pid=$(alive "$1" "$2") || { rm -f "$1"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do
    alive "$1" "$2" >/dev/null || { rm -f "$1"; return 0; }
    sleep 0.1
  done
  echo "${0##*/}: error: $2 (pid $pid) is still running 30 s after SIGTERM; see its log, then kill -KILL $pid" >&2
  return 1
}
