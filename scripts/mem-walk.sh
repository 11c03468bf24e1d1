#!/usr/bin/env bash
# Daemon memory after walking many files: VmHWM of a fresh unionfs-rs mount after a stat of
# every entry, and its node count (`unionfs-rs stats`). Needs root (drop_caches).
#
# usage: scripts/mem-walk.sh [--bin BIN]              1M files: walks of 100k, 500k and 1M
#        scripts/mem-walk.sh [--bin BIN] --tree DIR   one walk of DIR/layers/{0,1,2} (the tree3
#                                                     dataset of bench.sh, say)
# The 1M-file stack (3 layers x 1000 merged directories x 334 empty files) is made once under
# $MEM_DATA (default /var/tmp/mem-1m); scratch space is $MEM_RUN (default /var/tmp/mem-run).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/unionfs-rs TREE='' DATA=${MEM_DATA:-/var/tmp/mem-1m} RUN=${MEM_RUN:-/var/tmp/mem-run}
while [ $# -gt 0 ]; do
    case $1 in
        --bin) BIN=$2; shift ;;
        --tree) TREE=$2; shift ;;
        *) echo "mem-walk.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "mem-walk.sh: needs root (drop_caches)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "mem-walk.sh: no binary at $BIN (cargo build --release)" >&2; exit 1; }

make_million() {
    [ -e "$DATA/.done" ] && return
    echo "making 1M files under $DATA (once)" >&2
    python3 - "$DATA" <<'PY'
import os, sys
root = sys.argv[1]
for layer in range(3):
    for d in range(1000):
        p = f"{root}/layers/{layer}/d{d:04}"
        os.makedirs(p, exist_ok=True)
        for f in range(334):
            open(f"{p}/l{layer}f{f}", "w").close()
PY
    touch "$DATA/.done"
}

# walk LAYERS_ROOT DIRS...: mounts, stats every entry under the given merged dirs, reports.
walk() {
    local layers=$1 pid hwm nodes count
    shift
    fusermount3 -u -z "$RUN/m" 2>/dev/null || true
    rm -rf "$RUN"
    mkdir -p "$RUN/u" "$RUN/w" "$RUN/m"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    "$BIN" "$layers/0:$layers/1:$layers/2" "$RUN/u" "$RUN/m" --workdir "$RUN/w"
    pid=$(pgrep -n -f -- "unionfs-rs-daemon .*$RUN/m")
    count=$(cd "$RUN/m" && find "$@" -printf '%s\n' | wc -l)
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    nodes=$("$BIN" stats "$RUN/m" | awk '$1 == "nodes:" {print $2}')
    echo "entries=$count VmHWM=${hwm}kB nodes=$nodes"
    fusermount3 -u "$RUN/m"
}

if [ -n "$TREE" ]; then
    walk "$TREE/layers" .
else
    make_million
    for n in 100 500 1000; do
        mapfile -t dirs < <(for ((i = 0; i < n; i++)); do printf 'd%04d\n' "$i"; done)
        walk "$DATA/layers" "${dirs[@]}"
    done
fi
