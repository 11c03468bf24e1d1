#!/usr/bin/env bash
# Side-by-side benchmark: native ext4, kernel overlayfs, fuse-overlayfs 1.x (C, Debian's),
# fuse-overlayfs 2.0 (its Rust rewrite, built from crates.io) and unionfs-rs over the same
# generated datasets, running the workloads of issue 4. Systems are interleaved in every
# repetition (in a rotating order) so machine drift hits all of them alike; the report gives
# medians and the median of the per-repetition ratios (unionfs-rs / kernel overlayfs,
# unionfs-rs / each fuse-overlayfs) as a markdown table, plus a PNG chart of those ratios.
#
# Needs root (kernel overlayfs mounts, whiteout device nodes, drop_caches).
#
# usage: scripts/bench.sh [--full] [--reps N] [--only W1,W2] [--systems S1,S2] [--warm]
#                         [--tmpfs | --fs xfs|btrfs] [--baseline BIN] [--keep-data] [--no-build]
#                         [--out DIR]
#   --full       the sizes of the issue's table (100k files, 1 GiB, 500 layers; ~30+ minutes);
#                the default is about 5x smaller and takes a few minutes
#   --reps N     repetitions (default 3, 5 with --full)
#   --only       workloads to run (ids below), --systems a subset of native,kovl,fovl,fovlrs,urs
#                (fovl: fuse-overlayfs 1.x from Debian; fovlrs: fuse-overlayfs 2.0, the Rust
#                rewrite, installed with cargo into /opt/fovl-rs when missing and left out of the
#                run, with a warning, when that fails)
#   --warm       never drop the page cache (by default it is dropped before the cold workloads,
#                as the issue's reference figures were taken)
#   --fs TYPE    datasets and uppers on a fresh loop-mounted xfs or btrfs (a sparse image in
#                /var/tmp): both can reflink, so copy-up should take constant time there
#   --tmpfs      datasets and uppers on tmpfs instead of the disk's filesystem: takes the disk
#                (and its noise) out, leaving the CPU cost of each system; for profiling
#   --baseline BIN  also run another unionfs-rs binary (say, a build of the previous commit)
#                as system "base", for before/after numbers of a change
#   --keep-data  keep the datasets in /tmp/bench-data for the next run (reused when present)
#   --no-build   use the existing target/release/unionfs-rs
#   --out DIR    results directory (default target/bench): raw.tsv, table.md, chart.png
# Environment: URS_BIN the unionfs-rs binary to measure (default: the release build),
# URS_OPTS extra unionfs-rs options, FOVL_OPTS extra fuse-overlayfs -o options (for both
# versions; FOVLRS_OPTS, when set, replaces them for 2.0), FOVL_BIN and FOVLRS_BIN the two
# fuse-overlayfs binaries (default /usr/bin/fuse-overlayfs, $FOVLRS_ROOT/bin/fuse-overlayfs with
# FOVLRS_ROOT=/opt/fovl-rs, where cargo installs 2.0.0 when it is missing),
# BENCH_ARGS arguments to prepend (so that `make bench BENCH_ARGS=--full` works), BENCH_DATA and
# BENCH_RUN the dataset and scratch directories (default /tmp/bench-data, /tmp/bench-run; give
# each concurrent run its own).
#
# Workload ids: find3 statall lsR lsf lsl untar rmrf copyup chmod seqread seqwrite statdeep
#               finddeep mountdeep (rss is measured during statall)

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_ROOT=${BENCH_DATA:-/tmp/bench-data}
RUN=${BENCH_RUN:-/tmp/bench-run}
OUT=$ROOT/target/bench
FULL=0 REPS='' ONLY='' SYSTEMS=native,kovl,fovl,fovlrs,urs WARM=0 KEEP=0 BUILD=1 TMPFS=0 LOOPFS='' BASE_BIN=

die() { echo "bench.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

# shellcheck disable=SC2086
set -- ${BENCH_ARGS:-} "$@"
while [ $# -gt 0 ]; do
    case $1 in
        --full) FULL=1 ;;
        --reps) REPS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --systems) SYSTEMS=$2; shift ;;
        --warm) WARM=1 ;;
        --tmpfs) TMPFS=1 ;;
        --fs) LOOPFS=$2; shift ;;
        --baseline) BASE_BIN=$(realpath "$2"); shift ;;
        --keep-data) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

if [ "$FULL" = 1 ]; then
    SCALE=full TREE_FILES=100000 BIGDIR=50000 UNTAR=20000 RMTREE=20000 BIG_MIB=1024 LAYERS=500
    REPS=${REPS:-5}
else
    SCALE=small TREE_FILES=20000 BIGDIR=10000 UNTAR=5000 RMTREE=5000 BIG_MIB=256 LAYERS=100
    REPS=${REPS:-3}
fi
DATA=$DATA_ROOT/$SCALE

# ---------------------------------------------------------------------------------------------
# Preconditions: root, the peers, a release build.

[ "$(id -u)" = 0 ] || die "needs root: it mounts kernel overlayfs, creates whiteout device nodes \
and drops the page cache. Run: sudo $0 $*"
[ -e /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse)"
command -v fusermount3 >/dev/null || die "fusermount3 is missing (apt-get install fuse3)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || die "kernel overlayfs is not available (modprobe overlay)"

apt_install() {
    log "installing $* from Debian"
    apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@" >/dev/null \
        || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null \
             && apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@" >/dev/null; }
}
FOVL=${FOVL_BIN:-/usr/bin/fuse-overlayfs}
if [[ ,$SYSTEMS, == *,fovl,* ]] && [ ! -x "$FOVL" ]; then
    apt_install fuse-overlayfs || die "fuse-overlayfs is missing and could not be installed \
(apt-get install fuse-overlayfs), or leave it out: --systems native,kovl,fovlrs,urs"
fi

# fuse-overlayfs's latest release, 2.0, is a Rust rewrite published as a crate only: built once
# into a fixed root, pinned. A failure (no cargo, no network) drops it from this run.
FOVLRS_VERSION=2.0.0 FOVLRS_ROOT=${FOVLRS_ROOT:-/opt/fovl-rs}
FOVLRS=${FOVLRS_BIN:-$FOVLRS_ROOT/bin/fuse-overlayfs}
fovlrs_version() { "$FOVLRS" --version 2>/dev/null | sed -n '1s/.*version //p'; }
ensure_fovlrs() {
    local cargo installlog
    [ -x "$FOVLRS" ] && { [ -n "${FOVLRS_BIN:-}" ] || [ "$(fovlrs_version)" = "$FOVLRS_VERSION" ]; } && return 0
    [ -z "${FOVLRS_BIN:-}" ] || { log "FOVLRS_BIN=$FOVLRS_BIN is not an executable"; return 1; }
    cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
    [ -x "$cargo" ] || { log "cargo is missing (install Rust with rustup)"; return 1; }
    log "installing fuse-overlayfs $FOVLRS_VERSION (Rust) from crates.io into $FOVLRS_ROOT (a few minutes)"
    installlog=$(mktemp)
    if ! "$cargo" install fuse-overlayfs --version "$FOVLRS_VERSION" --root "$FOVLRS_ROOT" --locked \
        >"$installlog" 2>&1; then
        tail -n 5 "$installlog" >&2
        rm -f "$installlog"
        log "cargo install fuse-overlayfs --version $FOVLRS_VERSION --root $FOVLRS_ROOT --locked failed"
        return 1
    fi
    rm -f "$installlog"
    [ "$(fovlrs_version)" = "$FOVLRS_VERSION" ] || { log "$FOVLRS does not report version $FOVLRS_VERSION"; return 1; }
}
if [[ ,$SYSTEMS, == *,fovlrs,* ]] && ! ensure_fovlrs; then
    log "WARNING: fuse-overlayfs $FOVLRS_VERSION (Rust) is not available: running without it (system fovlrs)"
    SYSTEMS=$(echo ",$SYSTEMS," | sed 's/,fovlrs,/,/; s/^,//; s/,$//')
fi
command -v python3 >/dev/null || apt_install python3 || die "python3 is missing"

if [ "$BUILD" = 1 ] && [ -z "${URS_BIN:-}" ]; then
    log "building unionfs-rs (release)"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
URS=${URS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/unionfs-rs}
[ -x "$URS" ] || die "$URS is missing (drop --no-build)"

wanted() { [ -z "$ONLY" ] || [[ ,$ONLY, == *,$1,* ]]; }
if [ -n "$BASE_BIN" ]; then
    [ -x "$BASE_BIN" ] || die "--baseline $BASE_BIN is not an executable"
    SYSTEMS+=,base
fi
IFS=, read -r -a SYS <<<"$SYSTEMS"
for s in "${SYS[@]}"; do
    case $s in native|kovl|fovl|fovlrs|urs|base) ;; *) die "unknown system $s (native,kovl,fovl,fovlrs,urs)" ;; esac
done

# ---------------------------------------------------------------------------------------------
# Cleanup: every mount under $RUN goes, whatever happened.

cleanup() {
    local m
    while read -r m; do
        umount "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(awk -v run="$RUN/" 'index($5, run) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    if mountpoint -q "$RUN"; then umount "$RUN" 2>/dev/null || umount -l "$RUN"; fi
    rm -rf "$RUN"
    if [ "$KEEP" = 0 ] || [ "$TMPFS" = 1 ]; then
        if mountpoint -q "$DATA_ROOT"; then umount "$DATA_ROOT" 2>/dev/null || umount -l "$DATA_ROOT"; fi
        rm -rf "$DATA_ROOT"
    fi
    if [ -n "$LOOPFS" ]; then
        if mountpoint -q "$LOOP_MNT"; then umount "$LOOP_MNT" 2>/dev/null || umount -l "$LOOP_MNT"; fi
        rm -rf "$LOOP_MNT" "$LOOP_IMG"
    fi
}
LOOP_IMG=/var/tmp/unionfs-bench-$LOOPFS.img LOOP_MNT=/tmp/bench-loopfs
case $LOOPFS in
    '' | xfs | btrfs) ;;
    *) die "--fs takes xfs or btrfs, not $LOOPFS" ;;
esac
[ -n "$LOOPFS" ] && [ "$TMPFS" = 1 ] && die "--fs and --tmpfs exclude each other"
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup
if [ -n "$LOOPFS" ]; then
    # Datasets and runs on one filesystem, as reflinks need: the lower files and the upper.
    command -v "mkfs.$LOOPFS" >/dev/null || die "mkfs.$LOOPFS missing (apt-get install ${LOOPFS}progs; btrfs: btrfs-progs)"
    truncate -s 16G "$LOOP_IMG"
    "mkfs.$LOOPFS" -q -f "$LOOP_IMG" >/dev/null || die "mkfs.$LOOPFS failed"
    mkdir -p "$LOOP_MNT"
    mount -o loop "$LOOP_IMG" "$LOOP_MNT" || die "cannot loop-mount the $LOOPFS image"
    DATA_ROOT=$LOOP_MNT/data RUN=$LOOP_MNT/run DATA=$LOOP_MNT/data/$SCALE KEEP=1
fi
mkdir -p "$RUN" "$OUT"
if [ "$TMPFS" = 1 ]; then
    mkdir -p "$DATA_ROOT"
    mount -t tmpfs -o size=75% bench-data "$DATA_ROOT"
    mount -t tmpfs -o size=75% bench-run "$RUN"
fi

# ---------------------------------------------------------------------------------------------
# Datasets, generated once (see scripts/bench-gen.py for their shape).

dataset() { # kind param=value
    local dir=$DATA/$1 stamp="$1 $2"
    if [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]; then
        log "generating dataset $1 ($2)"
        rm -rf "$dir"
        mkdir -p "$dir"
        python3 "$ROOT/scripts/bench-gen.py" "$1" "$dir" "$2" || die "generating $1 failed"
        echo "$stamp" >"$dir/.stamp"
    fi
}
dataset tree3 files=$TREE_FILES
dataset bigdir entries=$BIGDIR
dataset untar files=$UNTAR
dataset rmtree files=$RMTREE
dataset big mib=$BIG_MIB
dataset many layers=$LAYERS
sync

# ---------------------------------------------------------------------------------------------
# Mounting. Every union gets a fresh, empty upper and work directory.

MNT='' DAEMON_PID=''

nlayers() { local n=0; while [ -d "$DATA/$1/layers/$n" ]; do n=$((n + 1)); done; echo $n; }

lower_list() { # dataset, separator-joined absolute or relative (to layers/) paths
    local ds=$1 rel=$2 n i out=
    n=$(nlayers "$ds")
    for ((i = 0; i < n; i++)); do
        if [ "$rel" = 1 ]; then out+=${out:+:}$i; else out+=${out:+:}$DATA/$ds/layers/$i; fi
    done
    echo "$out"
}

# mount_sys SYSTEM DATASET: sets MNT (and DAEMON_PID for FUSE daemons).
mount_sys() {
    local sys=$1 ds=$2 base=$RUN/$1
    DAEMON_PID=
    if [ "$sys" = native ]; then
        MNT=$DATA/$ds/native
        return 0
    fi
    rm -rf "$base"
    mkdir -p "$base/upper" "$base/work" "$base/mnt"
    MNT=$base/mnt
    case $sys in
        kovl)
            # Relative lowers keep 500 layers within the kernel's one-page option string.
            (cd "$DATA/$ds/layers" && mount -t overlay overlay \
                -o "lowerdir=$(lower_list "$ds" 1),upperdir=$base/upper,workdir=$base/work" "$MNT") ;;
        fovl) mount_fovl "$FOVL" "${FOVL_OPTS:-}" "$ds" "$base" ;;
        fovlrs) mount_fovl "$FOVLRS" "${FOVLRS_OPTS-${FOVL_OPTS:-}}" "$ds" "$base" ;;
        urs|base)
            local bin=$URS
            [ "$sys" = base ] && bin=$BASE_BIN
            # shellcheck disable=SC2086
            "$bin" "$(lower_list "$ds" 0)" "$base/upper" "$MNT" --workdir "$base/work" ${URS_OPTS:-} || return 1
            DAEMON_PID=$(pgrep -n -f -- " $MNT( |\$)" | head -1 || true) ;;
    esac
}

# mount_fovl BIN EXTRA_OPTS DATASET BASE: either fuse-overlayfs (1.x in C, 2.0 in Rust: same
# command line). Both return once the mount is live, leaving the daemon in the background.
mount_fovl() {
    local bin=$1 extra=$2 ds=$3 base=$4
    # (1.x warns about every mount flag it does not know, such as lazytime: noise)
    "$bin" -o "lowerdir=$(lower_list "$ds" 0),upperdir=$base/upper,workdir=$base/work${extra:+,$extra}" "$MNT" \
        2> >(grep -v '^unknown argument ignored' >&2) || return 1
    DAEMON_PID=$(pgrep -n -f -- "fuse-overlayfs .*$MNT\$" || true)
}

umount_sys() {
    local sys=$1 i
    [ "$sys" = native ] && return 0
    case $sys in
        kovl) umount "$MNT" || umount -l "$MNT" ;;
        *) fusermount3 -u "$MNT" || fusermount3 -u -z "$MNT" ;;
    esac
    # Let the daemon finish exiting so it does not overlap the next measurement. A zombie has
    # finished: a daemon that forked to the background is reaped by PID 1, which may take a
    # second or two (it does on the Firecracker VMs), so waiting for /proc/PID to go is too long.
    if [ -n "$DAEMON_PID" ]; then
        for ((i = 0; i < 100; i++)); do
            grep -qs '^State:[[:space:]]*[^Z[:space:]]' "/proc/$DAEMON_PID/status" || break
            sleep 0.05
        done
    fi
    rm -rf "${RUN:?}/$sys"
}

drop_caches() {
    sync
    [ "$WARM" = 1 ] || echo 3 >/proc/sys/vm/drop_caches
}

# ---------------------------------------------------------------------------------------------
# Measurements. Times come from $EPOCHREALTIME (microseconds, no fork); one row per
# (workload, system, repetition) in raw.tsv. A failed run is recorded as "fail".

RAW=$OUT/raw.tsv COUNTS=$OUT/counts.tsv
: >"$RAW"
: >"$COUNTS"
T0=
start() { T0=$EPOCHREALTIME; }
stop() { # workload system rep
    local t1=$EPOCHREALTIME el
    el=$((${t1/./} - ${T0/./}))
    printf '%s\t%s\t%s\t%d.%06d\n' "$1" "$2" "$3" $((el / 1000000)) $((el % 1000000)) >>"$RAW"
}
fail() { printf '%s\t%s\t%s\tfail\n' "$1" "$2" "$3" >>"$RAW"; log "  $1 on $2 failed"; }
count() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$COUNTS"; }

# A walk on a fresh mount: timed command whose output lines are counted (a sanity check that
# every system shows the same tree).
walk() { # wl sys rep dataset subdir command...
    local wl=$1 sys=$2 rep=$3 ds=$4 sub=$5 n
    shift 5
    mount_sys "$sys" "$ds" || { fail "$wl" "$sys" "$rep"; return; }
    drop_caches
    start
    if n=$(cd "$MNT/$sub" && "$@" | wc -l); then
        stop "$wl" "$sys" "$rep"
        count "$wl" "$sys" "$rep" "$n"
    else
        fail "$wl" "$sys" "$rep"
    fi
    if [ "$wl" = statall ] && [ -n "$DAEMON_PID" ]; then
        printf 'rss\t%s\t%s\t%s\n' "$sys" "$rep" \
            "$(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$DAEMON_PID/status")" >>"$RAW"
    fi
    umount_sys "$sys"
}

run_find3() { walk find3 "$1" "$2" tree3 . find . -type f; }
run_statall() { walk statall "$1" "$2" tree3 . find . -printf '%s %m\n'; }
run_lsR() { walk lsR "$1" "$2" tree3 . ls -lR; }
run_lsf() { walk lsf "$1" "$2" bigdir big ls -f; }
run_lsl() { walk lsl "$1" "$2" bigdir big ls -l; }
run_finddeep() { WARM=1 walk finddeep "$1" "$2" many . find .; }

run_untar() {
    local sys=$1 rep=$2 dest
    mount_sys "$sys" untar || { fail untar "$sys" "$rep"; return; }
    dest=$MNT/dest
    if [ "$sys" = native ]; then dest=$RUN/native-untar; rm -rf "$dest"; mkdir -p "$dest"; fi
    sync
    start
    if tar -xf "$DATA/untar/small.tar" -C "$dest"; then stop untar "$sys" "$rep"; else fail untar "$sys" "$rep"; fi
    count untar "$sys" "$rep" "$(find "$dest" | wc -l)"
    [ "$sys" = native ] && rm -rf "$dest"
    umount_sys "$sys"
}

run_rmrf() {
    local sys=$1 rep=$2 tree
    mount_sys "$sys" rmtree || { fail rmrf "$sys" "$rep"; return; }
    tree=$MNT/tree
    if [ "$sys" = native ]; then # real deletes of a copy
        tree=$RUN/native-tree; rm -rf "$tree"; cp -a "$DATA/rmtree/native/tree" "$tree"
    fi
    drop_caches
    start
    if rm -rf "$tree" && [ ! -e "$tree" ]; then stop rmrf "$sys" "$rep"; else fail rmrf "$sys" "$rep"; fi
    umount_sys "$sys"
}

run_copyup() {
    local sys=$1 rep=$2 want
    [ "$sys" = native ] && return 0
    mount_sys "$sys" big || { fail copyup "$sys" "$rep"; return; }
    want=$(($(stat -c %s "$MNT/big") + 1))
    drop_caches
    start
    if printf x >>"$MNT/big" && [ "$(stat -c %s "$MNT/big")" = "$want" ]; then
        stop copyup "$sys" "$rep"
    else
        fail copyup "$sys" "$rep"
    fi
    umount_sys "$sys"
}

run_chmod() {
    local sys=$1 rep=$2
    [ "$sys" = native ] && return 0
    mount_sys "$sys" big || { fail chmod "$sys" "$rep"; return; }
    drop_caches
    start
    if chmod 600 "$MNT/big"; then stop chmod "$sys" "$rep"; else fail chmod "$sys" "$rep"; fi
    umount_sys "$sys"
}

# Sequential read of the big file, warm (second read), then a buffered write of as much.
run_seq() {
    local sys=$1 rep=$2 out
    mount_sys "$sys" big || { fail seqread "$sys" "$rep"; fail seqwrite "$sys" "$rep"; return; }
    cat "$MNT/big" >/dev/null
    start
    if dd if="$MNT/big" of=/dev/null bs=1M status=none; then stop seqread "$sys" "$rep"; else fail seqread "$sys" "$rep"; fi
    out=$MNT/out
    [ "$sys" = native ] && out=$RUN/native-out
    sync
    start
    if dd if=/dev/zero of="$out" bs=1M count="$BIG_MIB" status=none; then
        stop seqwrite "$sys" "$rep"
    else
        fail seqwrite "$sys" "$rep"
    fi
    rm -f "$out"
    umount_sys "$sys"
}

# Mount time of the deep stack, then (first thing on that fresh mount) one stat of a file that
# only the bottom layer has.
run_deep() {
    local sys=$1 rep=$2
    if [ "$sys" != native ]; then
        start
        if mount_sys "$sys" many; then stop mountdeep "$sys" "$rep"; else fail mountdeep "$sys" "$rep"; fail statdeep "$sys" "$rep"; return; fi
    else
        mount_sys native many
    fi
    start
    if [ -e "$MNT/shared/sub/bottom_only" ]; then stop statdeep "$sys" "$rep"; else fail statdeep "$sys" "$rep"; fi
    umount_sys "$sys"
}

# ---------------------------------------------------------------------------------------------
# The run.

{
    echo "date: $(date -u +%FT%TZ)"
    echo "command: scripts/bench.sh $*"
    echo "scale: $SCALE (tree $TREE_FILES files, bigdir $BIGDIR, untar $UNTAR, rm -rf $RMTREE, big $BIG_MIB MiB, $LAYERS layers), $REPS reps, page cache $([ "$WARM" = 1 ] && echo 'never dropped' || echo 'dropped before cold workloads')"
    echo "cpu: $(nproc) x $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "memory: $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "filesystem: $(findmnt -n -o FSTYPE,OPTIONS --target "$RUN")"
    [[ ,$SYSTEMS, != *,fovl,* ]] || echo "fuse-overlayfs: $("$FOVL" --version 2>&1 | grep -m1 '^fuse-overlayfs' || echo missing)"
    [[ ,$SYSTEMS, != *,fovlrs,* ]] || echo "fuse-overlayfs 2.0 (Rust): $("$FOVLRS" --version 2>&1 | grep -m1 '^fuse-overlayfs' || echo missing) ($FOVLRS)"
    echo "unionfs-rs: ${URS_BIN:-$(cd "$ROOT" && git describe --always --dirty 2>/dev/null)} ${URS_OPTS:-}"
    [ -z "$BASE_BIN" ] || echo "baseline: $BASE_BIN"
} >"$OUT/machine.txt"

cat >"$OUT/workloads.tsv" <<EOF
find3	find -type f, $TREE_FILES files in 3 layers, fresh mount	s
statall	stat every entry ($TREE_FILES files + dirs), fresh mount	s
lsR	ls -lR, fresh mount	s
lsf	ls -f of a $BIGDIR-entry dir split over 2 layers, fresh mount	s
lsl	ls -l of the same dir, fresh mount	s
untar	untar $UNTAR small files into the union	s
rmrf	rm -rf of a $RMTREE-file tree that lives in a lower	s
copyup	copy-up: append 1 byte to a $BIG_MIB MiB lower file	s
chmod	chmod of a $BIG_MIB MiB lower file	s
seqread	sequential read $BIG_MIB MiB, warm	GB/s:$((BIG_MIB << 20))
seqwrite	sequential write $BIG_MIB MiB, buffered	GB/s:$((BIG_MIB << 20))
statdeep	stat a bottom-layer file in a $LAYERS-layer stack, fresh mount	ms
finddeep	find over a $LAYERS-layer stack, fresh mount	s
mountdeep	mount a $LAYERS-layer stack	s
rss	daemon peak RSS after stat of every entry ($TREE_FILES files)	MiB
EOF

GROUPS_=(find3 statall lsR lsf lsl untar rmrf copyup chmod seq deep finddeep)
for ((rep = 1; rep <= REPS; rep++)); do
    log "repetition $rep/$REPS"
    for g in "${GROUPS_[@]}"; do
        case $g in
            seq) wanted seqread || wanted seqwrite || continue ;;
            deep) wanted statdeep || wanted mountdeep || continue ;;
            *) wanted "$g" || continue ;;
        esac
        log "  $g"
        # Rotate the order of the systems every repetition.
        for ((k = 0; k < ${#SYS[@]}; k++)); do
            s=${SYS[$(((k + rep) % ${#SYS[@]}))]}
            "run_$g" "$s" "$rep"
        done
    done
done

# The chart wants matplotlib: any python3 that has it, else Debian's, else pip's.
PY=
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import matplotlib' 2>/dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
    if apt_install python3-matplotlib && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
        PY=/usr/bin/python3
    elif python3 -m pip install -q --user matplotlib >/dev/null 2>&1; then
        PY=python3
    else
        log "matplotlib is not available: no chart (apt-get install python3-matplotlib)"
        PY=python3
    fi
fi
"$PY" "$ROOT/scripts/bench-report.py" "$OUT"
