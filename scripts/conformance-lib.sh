# shellcheck shell=bash
# Shared helpers for scripts/pjdfstest.sh, scripts/fsx.sh and scripts/stress.sh.
#
# Source it from a script that runs with `set -euo pipefail`. It gives:
#   conf_log MSG...            a line on stderr, prefixed with the script's name
#   conf_die MSG...            the same, then exit 1
#   conf_require_root          exit unless we are root (mounting overlayfs and FUSE as root)
#   conf_quick                 true when CI=true or QUICK=1 (the bounded CI mode)
#   conf_bin                   prints the unionfs-rs binary ($UNIONFS_BIN, else
#                              target/release/unionfs-rs, built first when missing)
#   conf_cargo_tool NAME       installs a crates.io binary with `cargo install --locked` if
#                              it is not on PATH
#   conf_workdir PREFIX        sets CONF_WORK to a fresh /tmp/conf-PREFIX.XXXXXX dir, removed at
#                              exit (a variable, not output: it must not run in a subshell)
#   conf_mount_ovl L U W M     kernel overlayfs (L may be a colon list), unmounted at exit
#   conf_mount_union L U W M [ARGS...]
#                              unionfs-rs in the foreground in the background; sets
#                              CONF_DAEMON_PID; unmounted and the daemon reaped at exit
#   conf_unmount M             unmounts one mount now (and reaps its daemon)
#   conf_cleanup               everything above, undone; installed as the EXIT trap
#
# Every mount and daemon is recorded as it is made, so the EXIT/INT/TERM trap undoes exactly
# what this run made, even when the run dies half way. Daemons are ended by their pid only.

CONF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF_NAME=$(basename "$0" .sh)
CONF_MOUNTS=()   # mountpoints, in mount order
declare -A CONF_PIDS=()   # mountpoint -> daemon pid (unionfs-rs only)
CONF_DIRS=()     # scratch dirs to remove
CONF_DAEMON_PID=

conf_log() { printf '%s: %s\n' "$CONF_NAME" "$*" >&2; }
conf_die() {
    conf_log "error: $*"
    exit 1
}

conf_require_root() {
    [ "$(id -u)" -eq 0 ] || conf_die "must run as root (it mounts kernel overlayfs and FUSE)"
}

conf_quick() { [ "${CI:-}" = true ] || [ "${QUICK:-0}" = 1 ]; }

conf_bin() {
    local bin=${UNIONFS_BIN:-$CONF_ROOT/target/release/unionfs-rs}
    if [ ! -x "$bin" ]; then
        conf_log "building $bin (cargo build --release)"
        (cd "$CONF_ROOT" && cargo build --release >&2) || conf_die "cargo build --release failed"
    fi
    [ -x "$bin" ] || conf_die "no unionfs-rs binary at $bin"
    printf '%s\n' "$bin"
}

conf_cargo_tool() {
    local name=$1
    if ! command -v "$name" >/dev/null 2>&1; then
        command -v cargo >/dev/null 2>&1 || conf_die "$name is missing and there is no cargo to install it"
        conf_log "installing $name (cargo install --locked $name)"
        cargo install --locked "$name" >&2 || conf_die "cargo install $name failed"
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v "$name" >/dev/null 2>&1 || conf_die "$name not on PATH after install"
}

conf_workdir() {
    CONF_WORK=$(mktemp -d "/tmp/conf-$1.XXXXXX")
    chmod 755 "$CONF_WORK" # unprivileged test users must reach what is below
    CONF_DIRS+=("$CONF_WORK")
}

conf_wait_mounted() {
    local m=$1 pid=${2:-} i
    for i in $(seq 1 200); do
        if mountpoint -q "$m"; then return 0; fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            conf_die "unionfs-rs exited before $m was mounted"
        fi
        sleep 0.05
    done
    conf_die "timed out waiting for the mount at $m"
}

conf_mount_ovl() {
    local l=$1 u=$2 w=$3 m=$4
    mkdir -p "$u" "$w" "$m"
    mount -t overlay overlay -o "lowerdir=$l,upperdir=$u,workdir=$w" "$m" ||
        conf_die "kernel overlayfs mount at $m failed"
    CONF_MOUNTS+=("$m")
}

conf_mount_union() {
    local l=$1 u=$2 w=$3 m=$4
    shift 4
    local bin log
    bin=$(conf_bin)
    mkdir -p "$u" "$w" "$m"
    log="$(dirname "$m")/$(basename "$m").daemon.log"
    "$bin" -f "$@" "$l" "$u" "$m" --workdir "$w" >"$log" 2>&1 &
    CONF_DAEMON_PID=$!
    CONF_MOUNTS+=("$m")
    CONF_PIDS[$m]=$CONF_DAEMON_PID
    conf_wait_mounted "$m" "$CONF_DAEMON_PID"
}

conf_unmount() {
    local m=$1 pid i
    if mountpoint -q "$m" 2>/dev/null; then
        if [ -n "${CONF_PIDS[$m]:-}" ]; then
            fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        else
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        fi
    fi
    pid=${CONF_PIDS[$m]:-}
    if [ -n "$pid" ]; then
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            conf_log "daemon $pid for $m did not exit after unmount; killing it"
            kill -TERM "$pid" 2>/dev/null || true
            sleep 0.5
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        unset "CONF_PIDS[$m]"
    fi
}

conf_cleanup() {
    local i d
    set +e
    for ((i = ${#CONF_MOUNTS[@]} - 1; i >= 0; i--)); do
        conf_unmount "${CONF_MOUNTS[$i]}"
    done
    CONF_MOUNTS=()
    if [ "${KEEP:-0}" != 1 ]; then
        for d in "${CONF_DIRS[@]}"; do
            # Never follow into a mount that refused to go away.
            if findmnt -rn -o TARGET | grep -q "^$d"; then
                conf_log "leaving $d: something is still mounted under it"
            else
                rm -rf "$d"
            fi
        done
    else
        conf_log "KEEP=1: leaving ${CONF_DIRS[*]}"
    fi
}

trap conf_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Peak resident memory (kB) and the current open fd count of a pid; "-" when it is gone.
conf_hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo -; }
conf_fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
