#!/usr/bin/env bash
# pjdfstest (the Rust port, crates.io `pjdfstest`) against unionfs-rs, with kernel overlayfs and a
# plain directory as the reference, all in one run on this machine.
#
# Backends (each a fresh tree under /tmp/conf-pjdfstest.*):
#   plain        a directory on the host filesystem
#   ovl-upper    kernel overlayfs, in a directory that exists only in the upper
#   ovl-lower    kernel overlayfs, in a directory that exists only in a lower (its first change
#                copies it up; lookups there probe every layer)
#   union-upper  unionfs-rs, same placement as ovl-upper
#   union-lower  unionfs-rs, same placement as ovl-lower
# pjdfstest makes its own randomly named temporary directories under the directory it is given,
# so the objects it tests are new; what the placement changes is the merged directory above them.
# Files that start in a lower are exercised by scripts/fsx.sh and scripts/stress.sh.
#
# Prints a table (suite x backend: passed/failed/skipped) and the tests that fail on unionfs-rs
# but not on kernel overlayfs at the same placement. Exit status: 0 when there is no such test.
#
# Usage: scripts/pjdfstest.sh [--quick] [--keep] [--backends LIST] [PATTERN...]
#   --quick      bounded CI mode (also when CI=true): the whole suite still runs (it takes
#                seconds per backend) but the plain-directory reference is skipped
#   --keep       leave the scratch tree and the raw logs (also KEEP=1)
#   --backends   comma list, default plain,ovl-upper,ovl-lower,union-upper,union-lower
#   PATTERN      only tests whose name contains one of these (pjdfstest's own filter)
# Environment: UNIONFS_BIN (default target/release/unionfs-rs), RESULTS=FILE (append the
# markdown table to FILE as well).
set -euo pipefail
. "$(dirname "$0")/conformance-lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

BACKENDS=plain,ovl-upper,ovl-lower,union-upper,union-lower
PATTERNS=()
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --backends) BACKENDS=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; PATTERNS+=("$@"); break ;;
    -*) conf_die "unknown option $1 (see --help)" ;;
    *) PATTERNS+=("$1") ;;
    esac
    shift
done
if conf_quick && [ "$BACKENDS" = plain,ovl-upper,ovl-lower,union-upper,union-lower ]; then
    BACKENDS=ovl-upper,ovl-lower,union-upper,union-lower
fi

conf_require_root
conf_cargo_tool pjdfstest
conf_bin >/dev/null # built now, not in the middle of the first backend

# pjdfstest switches to two unprivileged users for its permission tests.
nobody_group=$(id -gn nobody 2>/dev/null) || conf_die "no user 'nobody' on this machine"
if ! id tests >/dev/null 2>&1; then
    conf_log "creating the dummy user 'tests' that pjdfstest needs"
    useradd -M -U -s /usr/sbin/nologin tests
fi

# Paths stay short: a socket's path must fit in sun_path (108 bytes) and pjdfstest nests two
# temporary directories under the directory it is given.
conf_workdir pjd
WORK=$CONF_WORK
cat >"$WORK/pjdfstest.toml" <<EOF
[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
rename_ctime = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [["nobody", "$nobody_group"], ["tests", "tests"]]
EOF

# A second filesystem for the EXDEV tests.
mkdir -p "$WORK/secondary"
mount -t tmpfs -o size=16m conf-secondary "$WORK/secondary"
CONF_MOUNTS+=("$WORK/secondary")

# Prepares BACKEND and sets RUN_DIR to the directory pjdfstest must run in. (Not run in a
# $(...) subshell: the mounts must be recorded in this shell for the cleanup trap.)
# Layout of backend B: $WORK/<short>/{l,u,w,m}; "dl" lives in the lower, "du" in the upper.
short() { echo "$1" | sed -E 's/^plain$/p/; s/^ovl-/o/; s/^union-/u/; s/upper$/u/; s/lower$/l/'; }
prepare() {
    local b=$1 d
    d=$WORK/$(short "$b")
    mkdir -p "$d/l/dl/sub" "$d/u/du"
    echo "lower data" >"$d/l/dl/sub/file"
    echo "lower data" >"$d/l/dl/file"
    chmod 755 "$d/l/dl" "$d/u/du"
    MERGED=$d/m
    case $b in
    plain) mkdir -p "$d/p"; RUN_DIR=$d/p; MERGED=; return ;;
    ovl-*) conf_mount_ovl "$d/l" "$d/u" "$d/w" "$d/m" ;;
    union-*) conf_mount_union "$d/l" "$d/u" "$d/w" "$d/m" ;;
    *) conf_die "unknown backend $b" ;;
    esac
    case $b in
    *-upper) RUN_DIR=$d/m/du ;;
    *-lower) RUN_DIR=$d/m/dl ;;
    *) conf_die "unknown backend $b" ;;
    esac
}

# Test names of the form `suite::...` and their outcome, one "name outcome" per line.
parse() {
    sed -nE 's/^([A-Za-z0-9_:]+) +(ok|FAILED|skipped|failed as expected|PASSED UNEXPECTEDLY)$/\1 \2/p' "$1" |
        sed -E 's/ failed as expected$/ xfail/; s/ PASSED UNEXPECTEDLY$/ FAILED/'
}

IFS=, read -r -a backend_list <<<"$BACKENDS"
pattern_args=()
[ ${#PATTERNS[@]} -gt 0 ] && pattern_args=("${PATTERNS[@]}")

# Runs pjdfstest on a fresh BACKEND into $WORK/LOG.log and LOG.results; extra args filter.
run_one() {
    local b=$1 log=$2 t0
    shift 2
    prepare "$b"
    t0=$(date +%s)
    # pjdfstest exits non-zero when a test fails; the outcome is read from its output.
    (cd "$RUN_DIR" && NO_COLOR=1 timeout 900 pjdfstest -c "$WORK/pjdfstest.toml" -p "$RUN_DIR" \
        -s "$WORK/secondary" "$@") >"$WORK/$log.log" 2>&1 || true
    parse "$WORK/$log.log" >"$WORK/$log.results"
    grep -q '^Summary' "$WORK/$log.log" ||
        conf_log "warning: pjdfstest on $b did not finish (see $WORK/$log.log)"
    LAST_SUMMARY="$(grep '^Summary' "$WORK/$log.log" || echo 'no summary') [$(($(date +%s) - t0)) s]"
    if [ -n "$MERGED" ]; then
        conf_unmount "$MERGED"
        # A fresh tree for the next run of this backend (never through a live mount).
        mountpoint -q "$MERGED" || rm -rf "$(dirname "$MERGED")"
    fi
}

start_all=$(date +%s)
for b in "${backend_list[@]}"; do
    conf_log "running pjdfstest on $b"
    run_one "$b" "$b" ${pattern_args[@]+"${pattern_args[@]}"}
    conf_log "$b: $LAST_SUMMARY"
done

failed_names() { awk '$2 == "FAILED" {print $1}' "$1" | sort; }

# A test that fails on unionfs-rs and not on kernel overlayfs is run twice more, alone, on a
# fresh mount: failing every time makes it a regression, passing once makes it flaky (timing
# dependent; reported, not fatal).
for place in upper lower; do
    ours=$WORK/union-$place.results ref=$WORK/ovl-$place.results
    : >"$WORK/union-$place.regressions"
    : >"$WORK/union-$place.flaky"
    [ -f "$ours" ] && [ -f "$ref" ] || continue
    for t in $(comm -23 <(failed_names "$ours") <(failed_names "$ref")); do
        verdict=regressions
        for _ in 1 2; do
            run_one "union-$place" "rerun" -e "pjdfstest::tests::$t"
            if grep -q "^$t ok$" "$WORK/rerun.results"; then
                verdict=flaky
                break
            fi
        done
        echo "$t" >>"$WORK/union-$place.$verdict"
        conf_log "union-$place: $t is $([ $verdict = flaky ] && echo 'flaky (passed on a rerun)' || echo 'a regression (failed 3 of 3 runs)')"
    done
done

# The table: one row per suite, one column per backend, "passed/failed/skipped".
table() {
    local b
    printf '| suite |'
    for b in "${backend_list[@]}"; do printf ' %s |' "$b"; done
    printf '\n|---|'
    for b in "${backend_list[@]}"; do printf -- '---|'; done
    printf '\n'
    for b in "${backend_list[@]}"; do
        sed "s/^/$b /" "$WORK/$b.results"
    done | awk -v order="${backend_list[*]}" '
        {
            b = $1; split($2, parts, "::"); suite = parts[1]; r = $3
            suites[suite] = 1
            if (r == "ok" || r == "xfail") pass[suite, b]++
            else if (r == "FAILED") fail[suite, b]++
            else skip[suite, b]++
            if (r == "ok" || r == "xfail") tp[b]++
            else if (r == "FAILED") tf[b]++
            else ts[b]++
        }
        END {
            n = split(order, bs, " ")
            for (s in suites) {
                line = "0 | " s " |"
                for (j = 1; j <= n; j++)
                    line = line sprintf(" %d/%d/%d |", pass[s, bs[j]], fail[s, bs[j]], skip[s, bs[j]])
                print line
            }
            line = "1 | **total** |"
            for (j = 1; j <= n; j++)
                line = line sprintf(" **%d/%d/%d** |", tp[bs[j]], tf[bs[j]], ts[bs[j]])
            print line
        }' | sort | cut -c3-
}

report() {
    echo "pjdfstest $(pjdfstest --version 2>/dev/null | awk '{print $2}'), $(uname -sr), passed/failed/skipped per suite:"
    echo
    table
    echo
    local place shared
    for place in upper lower; do
        [ -f "$WORK/union-$place.results" ] || continue
        if [ ! -f "$WORK/ovl-$place.results" ]; then
            echo "union-$place: no ovl-$place reference in this run."
            continue
        fi
        shared=$(comm -12 <(failed_names "$WORK/union-$place.results") \
            <(failed_names "$WORK/ovl-$place.results") | wc -l)
        if [ -s "$WORK/union-$place.regressions" ]; then
            echo "Fail on union-$place but not on ovl-$place (3 of 3 runs):"
            sed 's/^/  - /' "$WORK/union-$place.regressions"
        else
            echo "union-$place: no failure that ovl-$place does not also have ($shared shared)."
        fi
        if [ -s "$WORK/union-$place.flaky" ]; then
            echo "Flaky on union-$place (failed once, then passed alone on a fresh mount):"
            sed 's/^/  - /' "$WORK/union-$place.flaky"
        fi
    done
}

regressions=$(cat "$WORK"/union-*.regressions 2>/dev/null | wc -l)
report >"$WORK/report.md"
cat "$WORK/report.md"
if [ -n "${RESULTS:-}" ]; then
    cat "$WORK/report.md" >>"$RESULTS"
fi
conf_log "done in $(($(date +%s) - start_all)) s"
if [ "$regressions" -gt 0 ]; then
    conf_log "FAIL: $regressions test(s) fail on unionfs-rs but not on kernel overlayfs (logs: KEEP=1 keeps $WORK)"
    exit 1
fi
conf_log "PASS: unionfs-rs has no failure that kernel overlayfs does not also have"
