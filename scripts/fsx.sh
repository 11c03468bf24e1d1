#!/usr/bin/env bash
# fsx (the Rust port, crates.io `fsx`) on unionfs-rs: random reads, writes, mmap reads/writes,
# truncates and more on one file, every read checked against a model of the file.
#
# Three files, run side by side on one mount (so the daemon also serves them concurrently):
#   new      created through the mount, in no layer before
#   lower    starts in a lower, two directories deep (copy-up of the ancestors); fsx opens it
#            with O_TRUNC, so this is the truncating copy-up
#   block    starts in a lower as 256 KiB of data with a hole; before fsx a one-byte write
#            through the mount copies it up with its data, and the result is compared with the
#            lower file byte for byte; then fsx runs in block mode (the size never changes)
# Two profiles:
#   basic    fsx's defaults: read, write, mmap read, mmap write (with msync), truncate
#   full     also fsync, fdatasync, posix_fallocate, punch hole (FALLOC_FL_PUNCH_HOLE),
#            copy_file_range, sendfile, posix_fadvise, close/open and msync(MS_INVALIDATE)
#            (block mode: no truncate, posix_fallocate or close/open, which fsx refuses there)
# A miscompare, an unexpected error or a failed copy-up check fails the run (exit 1).
#
# Usage: scripts/fsx.sh [--quick] [--ops N] [--seed S] [--keep] [--with-ovl]
#   --quick      CI mode (also when CI=true): 10,000 operations per run instead of 100,000
#   --ops N      operations per run (each file x profile is one run)
#   --seed S     base seed (default: random, printed); run k uses S+k
#   --keep       keep the scratch tree (also KEEP=1; always kept after a failure)
#   --with-ovl   run the same runs, same seeds, on kernel overlayfs first, as a reference
# Environment: UNIONFS_BIN (default target/release/unionfs-rs), RESULTS=FILE (append the summary).
set -euo pipefail
. "$(dirname "$0")/conformance-lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

OPS=
SEED=
WITH_OVL=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --ops) OPS=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --keep) KEEP=1 ;;
    --with-ovl) WITH_OVL=1 ;;
    -h | --help) usage; exit 0 ;;
    *) conf_die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
if [ -z "$OPS" ]; then
    if conf_quick; then OPS=10000; else OPS=100000; fi
fi
[ -n "$SEED" ] || SEED=$((RANDOM << 15 | RANDOM))
case $OPS$SEED in *[!0-9]*) conf_die "--ops and --seed take numbers" ;; esac

conf_require_root
conf_cargo_tool fsx
conf_bin >/dev/null # built now, not in the middle of the first timed run
conf_workdir fsx
WORK=$CONF_WORK

FLEN=262144
cat >"$WORK/basic.toml" <<EOF
flen = $FLEN
EOF
cat >"$WORK/full.toml" <<EOF
flen = $FLEN
[weights]
close_open = 1
invalidate = 1
fsync = 1
fdatasync = 1
posix_fallocate = 1
punch_hole = 1
sendfile = 1
posix_fadvise = 1
copy_file_range = 1
EOF
cat >"$WORK/basic-block.toml" <<EOF
blockmode = true
[weights]
truncate = 0
EOF
cat >"$WORK/full-block.toml" <<EOF
blockmode = true
[weights]
truncate = 0
posix_fallocate = 0
invalidate = 1
fsync = 1
fdatasync = 1
punch_hole = 1
sendfile = 1
posix_fadvise = 1
copy_file_range = 1
EOF

# The lower layer: a plain file for the truncating copy-up, and one with data, a hole, data.
make_lower() {
    local l=$1
    mkdir -p "$l/a/b"
    head -c "$FLEN" /dev/urandom >"$l/a/b/fsx-lower"
    head -c 65536 /dev/urandom >"$l/a/b/fsx-block"
    truncate -s $((FLEN - 65536)) "$l/a/b/fsx-block"
    head -c 65536 /dev/urandom >>"$l/a/b/fsx-block"
}

# Copy-up with data: one byte written through the mount at 100000 (inside the hole); the copy
# must equal the lower file with that byte changed. Holes kept is reported, not required.
check_data_copy_up() {
    local l=$1 u=$2 m=$3 rel=a/b/fsx-block
    cp --sparse=always "$l/$rel" "$WORK/expected"
    printf 'X' | dd of="$WORK/expected" bs=1 seek=100000 conv=notrunc status=none
    printf 'X' | dd of="$m/$rel" bs=1 seek=100000 conv=notrunc status=none
    if ! cmp -s "$WORK/expected" "$m/$rel"; then
        conf_log "FAIL: data copy-up of $rel: the merged file differs from the lower + 1 byte"
        cmp "$WORK/expected" "$m/$rel" | head -n 3 >&2 || true
        return 1
    fi
    if ! cmp -s "$WORK/expected" "$u/$rel"; then
        conf_log "FAIL: data copy-up of $rel: the upper copy differs from the lower + 1 byte"
        return 1
    fi
    local blocks_l blocks_u
    blocks_l=$(stat -c %b "$l/$rel")
    blocks_u=$(stat -c %b "$u/$rel")
    conf_log "data copy-up of $rel ok (allocated blocks: lower $blocks_l, upper $blocks_u$([ "$blocks_u" -le $((blocks_l + 8)) ] && echo ', hole kept' || echo ', hole filled'))"
}

passed=0
failed=0
total_ops=0
SUMMARY=()

# One backend: mount, check copy-up, run fsx on the three files in parallel per profile.
run_backend() {
    local backend=$1 d=$WORK/$1 k=0 profile name cfg file pids=() names=() i rc
    make_lower "$d/l"
    if [ "$backend" = ovl ]; then
        conf_mount_ovl "$d/l" "$d/u" "$d/w" "$d/m"
    else
        conf_mount_union "$d/l" "$d/u" "$d/w" "$d/m"
    fi
    if check_data_copy_up "$d/l" "$d/u" "$d/m"; then
        passed=$((passed + 1))
        SUMMARY+=("$backend copy-up-check ok")
    else
        failed=$((failed + 1))
        SUMMARY+=("$backend copy-up-check FAILED")
    fi
    for profile in basic full; do
        pids=()
        names=()
        for name in new lower block; do
            k=$((k + 1))
            cfg=$WORK/$profile.toml
            case $name in
            new) file=$d/m/fsx-new-$profile ;;
            lower) file=$d/m/a/b/fsx-lower ;;
            block)
                file=$d/m/a/b/fsx-block
                cfg=$WORK/$profile-block.toml
                ;;
            esac
            mkdir -p "$d/artifacts-$profile-$name"
            fsx -N "$OPS" -S $((SEED + k)) -f "$cfg" -P "$d/artifacts-$profile-$name" "$file" \
                >"$d/fsx-$profile-$name.log" 2>&1 &
            pids+=($!)
            names+=("$profile-$name seed $((SEED + k))")
        done
        for i in "${!pids[@]}"; do
            rc=0
            wait "${pids[$i]}" || rc=$?
            if [ "$rc" -eq 0 ] && grep -q 'All operations completed A-OK' "$d/fsx-${names[$i]%% *}.log"; then
                passed=$((passed + 1))
                [ "$backend" = union ] && total_ops=$((total_ops + OPS))
                SUMMARY+=("$backend ${names[$i]}: $OPS ops ok")
            else
                failed=$((failed + 1))
                SUMMARY+=("$backend ${names[$i]}: FAILED (exit $rc, log $d/fsx-${names[$i]%% *}.log)")
                conf_log "FAIL: $backend ${names[$i]}; last lines of its log:"
                tail -n 25 "$d/fsx-${names[$i]%% *}.log" >&2
            fi
        done
        conf_log "$backend: $profile profile done"
    done
    conf_unmount "$d/m"
}

start=$(date +%s)
conf_log "fsx $(fsx --version | awk '{print $2}'), $OPS operations per run, base seed $SEED"
if [ "$WITH_OVL" = 1 ]; then
    run_backend ovl
fi
run_backend union
elapsed=$(($(date +%s) - start))

{
    echo "fsx $(fsx --version | awk '{print $2}'), base seed $SEED, $OPS ops per run, ${elapsed}s:"
    printf '  %s\n' "${SUMMARY[@]}"
} | tee -a "${RESULTS:-/dev/null}"
if [ "$failed" -gt 0 ]; then
    KEEP=1
    echo "fsx: $passed passed, $failed failed"
    conf_log "FAIL: see the logs in $WORK (kept); rerun one with: fsx -N $OPS -S SEED -f CONFIG FILE"
    exit 1
fi
echo "fsx: $passed passed, $failed failed ($total_ops operations on unionfs-rs$([ "$WITH_OVL" = 1 ] && echo ' and as many on kernel overlayfs'), no miscompare)"
