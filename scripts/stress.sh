#!/usr/bin/env bash
# Stress unionfs-rs: N worker processes doing mixed operations on shared and private files for a
# bounded time, checking invariants as they go (scripts/stress.py says which), while the
# daemon's memory and open fds are sampled. Then the mount is taken down, mounted again by a
# new daemon, and the whole tree is checked against the workers' final models.
#
# Fails (exit 1) on any violated invariant, when the daemon dies, or when it goes over the
# bounds: peak open fds > FD_BOUND (default 256: the tree has under 100 directories, and the
# daemon's cache of directory fds must drop the thousands of directories the run removes) or
# peak RSS (VmHWM) > RSS_BOUND_MB (default 256), or more fds stay open once the workers are
# done than its base fds plus one per live directory and layer.
#
# Usage: scripts/stress.sh [--seconds N] [--workers N] [--seed S] [--quick] [--keep] [--ovl]
#   --seconds N  how long the workers run (default 180; 60 with --quick or CI=true)
#   --workers N  worker processes (default 8, at most 32)
#   --seed S     base seed (default: random, printed)
#   --keep       keep the scratch tree (also KEEP=1)
#   --ovl        run on kernel overlayfs instead (checks the checker: it must pass there)
# Environment: UNIONFS_BIN, FD_BOUND, RSS_BOUND_MB, RESULTS=FILE (append the summary),
# UNIONFS_ARGS (extra unionfs-rs arguments, e.g. "--threads 4"), STRESS_OPS (only these
# operations, a comma list of the names in the "ops" line, to narrow a failure down).
# (STRESS_STRICT=1 is accepted and changes nothing: no known limitation is tolerated any more.)
set -euo pipefail
. "$(dirname "$0")/conformance-lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

SECONDS_RUN=
WORKERS=8
SEED=
BACKEND=union
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) SECONDS_RUN=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --ovl) BACKEND=ovl ;;
    -h | --help) usage; exit 0 ;;
    *) conf_die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
if [ -z "$SECONDS_RUN" ]; then
    if conf_quick; then SECONDS_RUN=60; else SECONDS_RUN=180; fi
fi
[ -n "$SEED" ] || SEED=$RANDOM
case $SECONDS_RUN$WORKERS$SEED in *[!0-9]*) conf_die "--seconds, --workers and --seed take whole numbers" ;; esac
FD_BOUND=${FD_BOUND:-256}
RSS_BOUND_MB=${RSS_BOUND_MB:-256}

conf_require_root
command -v python3 >/dev/null || conf_die "python3 is needed for the stress driver"
DRIVER=$CONF_ROOT/scripts/stress.py
[ "$BACKEND" = ovl ] || conf_bin >/dev/null # built now, before the timed run
conf_workdir stress
WORK=$CONF_WORK
L=$WORK/l U=$WORK/u W=$WORK/w M=$WORK/m
mkdir -p "$L"
python3 "$DRIVER" setup "$L" --workers "$WORKERS"

extra=()
[ -n "${UNIONFS_ARGS:-}" ] && read -r -a extra <<<"$UNIONFS_ARGS"
mount_it() {
    if [ "$BACKEND" = ovl ]; then
        conf_mount_ovl "$L" "$U" "$W" "$M"
        CONF_DAEMON_PID=
    else
        conf_mount_union "$L" "$U" "$W" "$M" ${extra[@]+"${extra[@]}"}
    fi
}

mount_it
pid=${CONF_DAEMON_PID:-}
conf_log "$WORKERS workers for ${SECONDS_RUN}s on $BACKEND (seed $SEED${pid:+, daemon pid $pid})"
rc=0
timeout $((SECONDS_RUN + 600)) python3 "$DRIVER" run "$M" --workers "$WORKERS" \
    --seconds "$SECONDS_RUN" --seed "$SEED" ${pid:+--pid "$pid"} --model "$WORK/model.json" \
    --ops "${STRESS_OPS:-}" 2>&1 |
    tee "$WORK/run.log" || rc=$?

verdicts=()
if [ -n "$pid" ]; then
    if ! kill -0 "$pid" 2>/dev/null; then
        verdicts+=("the daemon died during the run (log: $M.daemon.log)")
        KEEP=1
    elif [ -f "$WORK/model.json.daemon.json" ]; then
        read -r peak_fds hwm base_fds end_fds end_allowed < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["peak_fds"], d["vm_hwm_kb"], d["baseline_fds"], d["fds_end"], d["fds_end_allowed"])' "$WORK/model.json.daemon.json")
        [ "$peak_fds" -le "$FD_BOUND" ] ||
            verdicts+=("peak open fds $peak_fds > FD_BOUND $FD_BOUND")
        [ "$hwm" -le $((RSS_BOUND_MB * 1024)) ] ||
            verdicts+=("peak RSS ${hwm} kB > RSS_BOUND_MB $RSS_BOUND_MB")
        [ "$end_fds" -le "$end_allowed" ] ||
            verdicts+=("open fds did not come back once the workers were done: $end_fds > $end_allowed (baseline $base_fds + 2 per live directory + 16)")
        STATS="daemon peak RSS (VmHWM) $((hwm / 1024)) MiB, peak open fds $peak_fds (baseline $base_fds, after the run $end_fds)"
    fi
fi
[ "$rc" -eq 0 ] || verdicts+=("invariant violations during the run (above)")

conf_unmount "$M"
# Remount with a fresh daemon: what is on disk must match the workers' models.
mount_it
python3 "$DRIVER" verify "$M" --model "$WORK/model.json" ||
    verdicts+=("the state after a remount differs from the models")
conf_unmount "$M"

ops=$(sed -n 's/^stress: [0-9]* workers, \([0-9]*\) s, \([0-9]*\) operations.*/\2 operations in \1 s/p' "$WORK/run.log")
known=$(grep -o '[a-z]*_on_replace=[0-9]*' "$WORK/run.log" | tr '\n' ' ' || true)
line="stress on $BACKEND: $WORKERS workers, seed $SEED, ${ops:-? operations}${STATS:+; $STATS}${known:+; known limitation hits: ${known% }}"
echo "$line"
[ -z "${RESULTS:-}" ] || echo "$line" >>"$RESULTS"
if [ "${#verdicts[@]}" -gt 0 ]; then
    KEEP=1
    for v in "${verdicts[@]}"; do conf_log "FAIL: $v"; done
    echo "stress: 0 passed, 1 failed"
    exit 1
fi
echo "stress: 1 passed, 0 failed"
