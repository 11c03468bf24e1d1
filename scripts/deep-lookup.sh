#!/usr/bin/env bash
# First lookup through deep stacks: a directory `d` in every layer, `d/bottom` only in the
# bottom one. For 10, 100, 500 and 1000 layers: mount time, and (fresh mount, warm page cache)
# the first stat of d/bottom and then of d/f0, timed in-process, 5 runs each; kernel overlayfs
# too where it can mount the stack (at most 500 lowers, relative paths). Needs root.
#
# usage: scripts/deep-lookup.sh [--bin BIN]   (stacks are made once under $DEEP_DATA,
#                                              default /var/tmp/deep)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/unionfs-rs
[ "${1:-}" = --bin ] && BIN=$2
DATA=${DEEP_DATA:-/var/tmp/deep}
[ "$(id -u)" = 0 ] || { echo "deep-lookup.sh: needs root" >&2; exit 1; }
mkdir -p "$DATA"
cd "$DATA"
for n in 10 100 500 1000; do
    s=s$n
    if [ ! -e "$s/.done" ]; then
        for ((i = 0; i < n; i++)); do mkdir -p "$s/l$i/d"; echo "$i" >"$s/l$i/d/f$i"; done
        echo bottom >"$s/l$((n - 1))/d/bottom"
        touch "$s/.done"
    fi
    lowers=$(for ((i = 0; i < n; i++)); do printf 'l%d:' "$i"; done)
    lowers=${lowers%:}
    for sys in unionfs-rs kernel; do
        [ $sys = kernel ] && [ "$n" -gt 500 ] && continue
        for _ in 1 2 3 4 5; do
            rm -rf "$s/u" "$s/w"
            mkdir -p "$s/u" "$s/w" "$s/m"
            t0=$(date +%s%N)
            if [ $sys = unionfs-rs ]; then
                (cd "$s" && "$BIN" -o "lowerdir=$lowers,upperdir=u,workdir=w" m)
            else
                (cd "$s" && mount -t overlay overlay -o "lowerdir=$lowers,upperdir=u,workdir=w" m)
            fi
            t1=$(date +%s%N)
            python3 - "$s/m" "$n" "$sys" "$(((t1 - t0) / 1000000))" <<'PY'
import os, sys, time
m, n, system, mount_ms = sys.argv[1:]
t = time.perf_counter(); os.stat(f"{m}/d/bottom"); bottom = time.perf_counter() - t
t = time.perf_counter(); os.stat(f"{m}/d/f0"); top = time.perf_counter() - t
print(f"layers={n} sys={system} mount_ms={mount_ms} stat_bottom_ms={bottom * 1e3:.2f} "
      f"stat_second_ms={top * 1e3:.3f}")
PY
            umount "$s/m"
        done
    done
done
