#!/usr/bin/env bash
# Differential test against kernel overlayfs (tests/difftest.rs) with many cases.
#
# Each case builds random layer trees, runs one random operation sequence on kernel overlayfs
# and on unionfs-rs, and compares results, errnos and merged views (see the test's header).
# A failure prints the case's seed, the shrunk layer trees and operations; replay it with
#   DIFFTEST_SEED=<seed> DIFFTEST_CASES=1 cargo test --test difftest
#
# Usage: scripts/difftest.sh [--cases N] [--seed S] [--max-ops N] [--whiteout F] [--release]
#   --cases N    number of cases (default 2000; CI=true: 200)
#   --seed S     base seed (default: random, printed); case k runs from seed S+k
#   --max-ops N  longest operation sequence (default 12)
#   --whiteout F unionfs-rs's --whiteout format: auto (default), chardev or oci
#   --release    build and test the release daemon
# Root only. Runs copies of the built binaries, so rebuilding meanwhile does not disturb it.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

CASES=2000
[ "${CI:-}" = true ] && CASES=200
SEED=$(( $(date +%s%N) % 1000000000 ))
MAX_OPS=12
WHITEOUT=auto
PROFILE=()
while [ $# -gt 0 ]; do
    case $1 in
    --cases) CASES=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --max-ops) MAX_OPS=$2; shift ;;
    --whiteout) WHITEOUT=$2; shift ;;
    --release) PROFILE=(--release) ;;
    -h|--help) usage; exit 0 ;;
    *) echo "difftest.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$(id -u)" != 0 ]; then
    echo "difftest.sh: needs root (kernel overlayfs mounts, whiteout devices)" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
cargo build -q "${PROFILE[@]}" --bin unionfs-rs
test_bin=$(cargo test -q "${PROFILE[@]}" --no-run --test difftest --message-format=json 2>/dev/null |
    grep '"name":"difftest"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -n "$test_bin" ] || { echo "difftest.sh: could not build tests/difftest.rs" >&2; exit 1; }
dir=$([ ${#PROFILE[@]} -gt 0 ] && echo release || echo debug)
work=$(mktemp -d /tmp/ht-difftest-run.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "target/$dir/unionfs-rs" "$work/unionfs-rs"
cp "$test_bin" "$work/difftest"

echo "difftest: $CASES cases, seed $SEED, up to $MAX_OPS operations each, whiteout=$WHITEOUT"
start=$(date +%s)
set +e
UNIONFS_BIN="$work/unionfs-rs" DIFFTEST_CASES=$CASES DIFFTEST_SEED=$SEED \
    DIFFTEST_MAX_OPS=$MAX_OPS DIFFTEST_WHITEOUT=$WHITEOUT RUST_BACKTRACE=0 \
    "$work/difftest" --test-threads 1 --nocapture 2>&1 | cat
status=${PIPESTATUS[0]}
set -e
echo "difftest: finished in $(( $(date +%s) - start )) s"
if [ "$status" = 0 ]; then
    echo "difftest: $CASES passed, 0 failed"
else
    echo "difftest: FAILED (see above for the seed and the shrunk case)"
fi
exit "$status"
