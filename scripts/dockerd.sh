#!/bin/sh
# Start / stop a private Docker engine for SliceRT-Farm (images, DockerOperator, compose).
#
#   scripts/dockerd.sh start [STATE_DIR]   start dockerd (no-op if ours is already up);
#                                           prints DOCKER_HOST=unix:///... on stdout
#   scripts/dockerd.sh stop  [STATE_DIR]   stop the dockerd this script started (by its pid)
#   scripts/dockerd.sh status [STATE_DIR]  exit 0 and print DOCKER_HOST when it answers
#   scripts/dockerd.sh env   [STATE_DIR]   print `export DOCKER_HOST=...` (for eval)
#
# STATE_DIR (default $SLICERT_DOCKER_STATE or <repo>/.slicert/docker) holds the data-root
# (images, layers, containers), the pidfile and the daemon log. The exec-root and the
# socket live under a short /tmp path derived from STATE_DIR (unix socket paths must stay
# under 108 characters). The daemon never touches the host firewall: --iptables=false,
# --ip-forward=false, --ip-masq=false. Containers reach the outside only with
# `--network host` (see docs/orchestration.md); `--network none` and user bridges work for
# container-to-container traffic.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cmd=${1:-start}
state=${2:-${SLICERT_DOCKER_STATE:-"$root/.slicert/docker"}}
mkdir -p "$state"
state=$(cd "$state" && pwd)

# Short, stable exec-root: /tmp/sdk-<8 hex of the state path>
key=$(printf '%s' "$state" | sha256sum | cut -c1-8)
exec_root="/tmp/sdk-$key"
sock="$exec_root/d.sock"
pidfile="$state/dockerd.pid"
log="$state/dockerd.log"
host="unix://$sock"

die() { echo "dockerd.sh: error: $*" >&2; exit 1; }

alive() {
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # the pid must still be *our* dockerd (pids get reused)
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--exec-root $exec_root" || return 1
}

answers() {
    DOCKER_HOST="$host" docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

case "$cmd" in
start)
    if alive && answers; then
        echo "DOCKER_HOST=$host"
        exit 0
    fi
    [ "$(id -u)" = 0 ] || die "dockerd needs root (or use an existing engine: export DOCKER_HOST)"
    command -v dockerd >/dev/null 2>&1 || die "dockerd not found (apt-get install docker.io)"
    mkdir -p "$state/data" "$exec_root"
    rm -f "$sock"
    # setsid: the daemon outlives this shell; its own process group, so `stop` is exact.
    setsid dockerd \
        --data-root "$state/data" \
        --exec-root "$exec_root" \
        --pidfile "$pidfile" \
        --host "$host" \
        --storage-driver overlay2 \
        --iptables=false --ip-forward=false --ip-masq=false \
        >"$log" 2>&1 < /dev/null &
    i=0
    while ! answers; do
        i=$((i + 1))
        [ $i -le 300 ] || { tail -n 20 "$log" >&2; die "dockerd did not answer within 30 s (log: $log)"; }
        sleep 0.1
    done
    echo "dockerd.sh: engine $(DOCKER_HOST="$host" docker version --format '{{.Server.Version}}') up in $((i / 10)).$((i % 10)) s (data: $state/data, log: $log)" >&2
    echo "DOCKER_HOST=$host"
    ;;
stop)
    if ! alive; then
        echo "dockerd.sh: no dockerd of ours running ($state)" >&2
        rm -f "$pidfile"
        exit 0
    fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 300 ]; then
            echo "dockerd.sh: dockerd $pid ignored SIGTERM for 30 s, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$pidfile" "$sock"
    echo "dockerd.sh: stopped dockerd $pid" >&2
    ;;
status)
    if alive && answers; then echo "DOCKER_HOST=$host"; exit 0; fi
    echo "dockerd.sh: not running ($state)" >&2
    exit 1
    ;;
env)
    echo "export DOCKER_HOST=$host"
    ;;
*)
    die "usage: $0 start|stop|status|env [STATE_DIR]"
    ;;
esac
