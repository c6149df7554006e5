#!/usr/bin/env bash
# The replay Redis of a Ray cluster, on its head node: every run of every sweep keeps its episodes
# here, each under its own namespace (orrery:<run>:). deploy/cluster*.yaml run it after `ray start --head`.
#
#   ORRERY_REDIS_PASSWORD=... deploy/head/start-replay.sh
#
# Environment (deploy/cluster.env.example):
#   ORRERY_REDIS_PASSWORD  required; clients log in with it. It goes to redis-server on stdin, so it is on
#                          no command line, and into ORRERY_HEAD_ENV (mode 0600) for cluster/submit.py.
#   ORRERY_REPLAY_HOST     the address to listen on (default: this node's private address, `hostname -I`)
#   ORRERY_REPLAY_PORT     default 6390; never 6379, which is Ray's (GCS)
#   ORRERY_SHARED          the cluster's shared disk (default /mnt/orrery): runs in $ORRERY_SHARED/runs,
#                          the append-only file in $ORRERY_SHARED/redis (ORRERY_REPLAY_DIR overrides)
#   ORRERY_HEAD_ENV        where ORRERY_REPLAY_URL and ORRERY_RUNS are written (default ~/.orrery/head.env)
# Idempotent: a server that already answers on the port with this password is left running.
# Exit code 2 and one line on bad input.
set -euo pipefail
die() { echo "start-replay.sh: error: $*" >&2; exit 2; }

password=${ORRERY_REDIS_PASSWORD:-}
[ -n "$password" ] || die "ORRERY_REDIS_PASSWORD is not set (put it in ~/.orrery/cluster.env, see deploy/cluster.env.example)"
case "$password" in change-me*) die "ORRERY_REDIS_PASSWORD is still the example's; generate one: openssl rand -hex 24";; esac
[ ${#password} -ge 16 ] || die "ORRERY_REDIS_PASSWORD is shorter than 16 characters; generate one: openssl rand -hex 24"
case "$password" in *[!A-Za-z0-9_.~-]*) die "ORRERY_REDIS_PASSWORD may hold only letters, digits and _.~- (it goes into a redis:// URL)";; esac
host=${ORRERY_REPLAY_HOST:-$(hostname -I | awk '{print $1}')}
port=${ORRERY_REPLAY_PORT:-6390}
case "$port" in ''|*[!0-9]*) die "ORRERY_REPLAY_PORT must be a number, got '$port'";; esac
[ "$port" != 6379 ] || die "port 6379 is Ray's (GCS); choose another ORRERY_REPLAY_PORT"
shared=${ORRERY_SHARED:-/mnt/orrery}
dir=${ORRERY_REPLAY_DIR:-$shared/redis}
head_env=${ORRERY_HEAD_ENV:-$HOME/.orrery/head.env}
command -v redis-server >/dev/null || die "redis-server not found; run scripts/system-deps.sh"

export REDISCLI_AUTH="$password"  # redis-cli reads the password from here, not from its command line
answer() { redis-cli -h "$host" -p "$port" --no-auth-warning ping 2>&1 | tr '\n' ' ' | sed 's/ *$//' || true; }
mkdir -p "$dir" && chmod 700 "$dir"
reply=$(answer)
if [ "$reply" = PONG ]; then
  echo "replay Redis already running at $host:$port"
elif ! echo "$reply" | grep -q "Connection refused"; then
  die "something else answers on $host:$port ($reply); stop it or choose another ORRERY_REPLAY_PORT"
else
  binds=$host; [ "$host" = 127.0.0.1 ] || binds="$host 127.0.0.1"
  printf '%s\n' "bind $binds" "port $port" "protected-mode yes" "requirepass \"$password\"" "dir \"$dir\"" \
    "appendonly yes" "appendfsync everysec" 'save ""' "maxmemory-policy noeviction" "daemonize yes" \
    "pidfile \"$dir/redis.pid\"" "logfile \"$dir/redis.log\"" | redis-server -
  for _ in $(seq 150); do [ "$(answer)" = PONG ] && break; sleep 0.2; done
  [ "$(answer)" = PONG ] || die "redis-server did not answer at $host:$port; see $dir/redis.log"
  echo "replay Redis at $host:$port (pid $(cat "$dir/redis.pid")), append-only file in $dir"
fi
mkdir -p "$(dirname "$head_env")" "$shared/runs"
(umask 077 && printf 'ORRERY_REPLAY_URL=redis://:%s@%s:%s/0\nORRERY_RUNS=%s\n' "$password" "$host" "$port" \
  "$shared/runs" > "$head_env")
chmod 600 "$head_env"
echo "wrote $head_env (ORRERY_REPLAY_URL, ORRERY_RUNS) for cluster/submit.py"
