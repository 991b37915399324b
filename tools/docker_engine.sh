#!/usr/bin/env bash
# make docker-engine | docker-engine-stop: make sure a Docker engine answers, or say in one
# line why none can, and stop only the daemon this script started.
#
#   tools/docker_engine.sh start   engine answers already -> nothing to do; else, as root,
#                                  install Debian's docker.io if dockerd is missing and start
#                                  `dockerd --iptables=false --bridge=none` in the background
#                                  (no bridge, no NAT: containers use the host network)
#   tools/docker_engine.sh stop    stop the dockerd whose pid is in the pid file, if any
#
# Files (RUN_DIR, default .run/): dockerd.pid, dockerd.log, and docker-engine.problem, which
# holds the one-line reason when no engine could be had (the docker tests skip with it).
# Always exits 0 when it only could not get an engine: the rest of CI runs without one.
set -uo pipefail

RUN_DIR=${RUN_DIR:-.run}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
PID_FILE=$RUN_DIR/dockerd.pid
LOG_FILE=$RUN_DIR/dockerd.log
PROBLEM_FILE=$RUN_DIR/docker-engine.problem
WAIT_S=${DOCKER_ENGINE_WAIT_S:-60}
# The engine this script manages listens on the default socket; a DOCKER_HOST set elsewhere
# (tests point it at a dead socket) must not make us start a second daemon for nothing.
SOCKET=${DOCKER_ENGINE_SOCKET:-/var/run/docker.sock}

answers() {
    # The SDK and the CLI both read DOCKER_HOST; ask the socket we manage directly.
    DOCKER_HOST=unix://$SOCKET timeout 10 docker version --format '{{.Server.Version}}' \
        >/dev/null 2>&1
}

give_up() {
    echo "docker engine: $*" | tee "$PROBLEM_FILE"
    exit 0
}

ours_running() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [[ -n $pid ]] && grep -qs dockerd "/proc/$pid/cmdline"
}

start() {
    local started=
    rm -f "$PROBLEM_FILE"
    if command -v docker >/dev/null && answers; then
        echo "docker engine: answers on $SOCKET ($(DOCKER_HOST=unix://$SOCKET docker version --format '{{.Server.Version}}'))"
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        give_up "none answers on $SOCKET and starting one needs root (docker tests will skip)"
    fi
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        echo "docker engine: installing Debian's docker.io"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; } \
            >"$RUN_DIR/docker-install.log" 2>&1; then
            give_up "apt-get install docker.io failed (see $RUN_DIR/docker-install.log; docker tests will skip)"
        fi
    fi
    if ours_running; then
        echo "docker engine: dockerd (pid $(cat "$PID_FILE")) runs but does not answer yet"
    else
        echo "docker engine: starting dockerd --iptables=false --bridge=none (log $LOG_FILE)"
        # setsid: the daemon outlives this make and its terminal; stdin closed for CI.
        setsid dockerd --iptables=false --bridge=none --host="unix://$SOCKET" \
            --pidfile="$PID_FILE" >>"$LOG_FILE" 2>&1 </dev/null &
        started=$!
    fi
    local deadline=$((SECONDS + WAIT_S))
    until answers; do
        if ((SECONDS > deadline)); then
            give_up "dockerd did not answer within ${WAIT_S} s (last log lines: $(tail -n 3 "$LOG_FILE" | tr '\n' ' '))"
        fi
        if [[ -n ${started:-} ]] && ! kill -0 "$started" 2>/dev/null; then
            give_up "dockerd exited at start (last log lines: $(tail -n 3 "$LOG_FILE" | tr '\n' ' '))"
        fi
        sleep 0.5
    done
    echo "docker engine: dockerd (pid $(cat "$PID_FILE" 2>/dev/null)) answers on $SOCKET"
}

stop() {
    if ! ours_running; then
        echo "docker engine: no dockerd started by this project (no live $PID_FILE); nothing stopped"
        rm -f "$PID_FILE"
        return 0
    fi
    local pid
    pid=$(cat "$PID_FILE")
    kill -TERM "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            kill -KILL "$pid" 2>/dev/null
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
    echo "docker engine: stopped dockerd (pid $pid)"
}

case ${1:-} in
start) start ;;
stop) stop ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
