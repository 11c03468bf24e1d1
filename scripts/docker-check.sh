#!/bin/bash
# Docker with unionfs-rs as its `fuse-overlayfs` storage driver.
#
#   scripts/docker-check.sh [--no-install] [--keep] [--log] [PROG]
#
# Docker's fuse-overlayfs graph driver runs whatever `fuse-overlayfs` is first in PATH. This
# script offers PROG (default target/release/unionfs-rs; /usr/bin/fuse-overlayfs for comparison;
# `native` runs the overlay2 driver on the kernel's overlayfs instead, the reference) under that name through a symlink directory put first in dockerd's PATH, starts a private
# dockerd by hand (own --data-root, --exec-root, pidfile and socket under /tmp/pod-docker.*, its
# own managed containerd, no bridge, no iptables; the machine's docker service, if any, is not
# touched), then: imports a busybox root filesystem, runs containers that write and delete,
# restarts a changed container, `docker diff`, `docker commit`, and a legacy-builder build
# (DOCKER_BUILDKIT=0) whose second RUN deletes files and directories. Docker mounts each
# container twice (the `-init` layer, then the container layer on top of it), so every run
# passes through both. At the end dockerd and containerd are stopped and no mount or process
# of ours remains. Prints `N passed, M failed`; exits 1 if any failed. --log puts a wrapper
# script under the name fuse-overlayfs instead of the symlink, logging every argv and stderr
# to logs/calls/.

set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/e2e-lib.sh
. "$here/e2e-lib.sh"

INSTALL=1 KEEP=0 LOG=0 PROG=
while [ $# -gt 0 ]; do
    case $1 in
    --no-install) INSTALL=0 ;;
    --keep) KEEP=1 ;;
    --log) LOG=1 ;;
    -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) PROG=$1 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
PROG=$(e2e_prog "$PROG") || exit 2
DRIVER=fuse-overlayfs
[ "$PROG" != native ] || DRIVER=overlay2
START=$(date +%s)

[ $INSTALL = 1 ] && { e2e_install docker.io busybox-static fuse3 || exit 2; }
e2e_fuse_dev || exit 2
DOCKERD=$(command -v dockerd) || { echo "no dockerd" >&2; exit 2; }
D=/usr/bin/docker # the client from docker.io, matching the daemon
[ -x $D ] || D=$(command -v docker)

W=/tmp/pod-docker.$(tr -dc 'a-z0-9' </dev/urandom | head -c 8)
mkdir -m 755 "$W" || exit 2
mkdir -p "$W/bin" "$W/logs"
# The install recipe from docs/CONTAINERS.md: the program under the name fuse-overlayfs.
if [ $DRIVER = overlay2 ]; then
    :
elif [ $LOG = 0 ]; then
    ln -s "$PROG" "$W/bin/fuse-overlayfs"
else
    mkdir -p "$W/logs/calls"
    cat >"$W/bin/fuse-overlayfs" <<EOF
#!/bin/bash
log=$W/logs/calls/\$(date +%s%N).\$\$
{ echo "uid=\$(id -u) cwd=\$PWD"; printf 'arg: %s\n' "\$@"; } >"\$log.argv"
"$PROG" "\$@" 2>&1 >/dev/null | tee "\$log.err" >&2
rc=\${PIPESTATUS[0]}
echo "rc=\$rc" >>"\$log.argv"
exit \$rc
EOF
    chmod 755 "$W/bin/fuse-overlayfs"
fi
echo '{}' >"$W/daemon.json" # not /etc/docker/daemon.json
export DOCKER_HOST=unix://$W/docker.sock
if [ $DRIVER = overlay2 ]; then
    echo "prog: native (overlay2 driver, kernel overlayfs)"
else
    echo "prog: $PROG ($("$PROG" --version 2>&1 | head -1)) as $W/bin/fuse-overlayfs"
fi
echo "dir:  $W"

PASSED=0 FAILED=0 FAILS=()
run_test() { # NAME: runs t_NAME in a subshell with set -e, output to logs/NAME.log
    local log=$W/logs/$1.log t0=$SECONDS rc
    (set -e; "t_$1") >"$log" 2>&1
    rc=$?
    if [ $rc = 0 ]; then
        PASSED=$((PASSED + 1))
        printf 'PASS %-20s %3ss\n' "$1" $((SECONDS - t0))
    else
        FAILED=$((FAILED + 1))
        FAILS+=("$1")
        printf 'FAIL %-20s %3ss (rc %s, log %s)\n' "$1" $((SECONDS - t0)) $rc "$log"
        tail -n 25 "$log" | sed 's/^/    | /'
    fi
}
dk() { timeout -k 10 180 "$D" "$@"; }

t_dockerd() { # started by hand; it must come up with the fuse-overlayfs driver
    PATH=$W/bin:$PATH setsid "$DOCKERD" --config-file "$W/daemon.json" \
        --data-root "$W/data" --exec-root "$W/exec" --pidfile "$W/docker.pid" \
        -H "$DOCKER_HOST" --storage-driver "$DRIVER" \
        --bridge none --iptables=false --ip6tables=false --ip-masq=false \
        >"$W/logs/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 120); do
        dk version >/dev/null 2>&1 && break
        kill -0 $! 2>/dev/null || { tail -20 "$W/logs/dockerd.log"; return 1; }
        sleep 0.5
    done
    dk info --format '{{.Driver}}' | tee /dev/stderr | grep -qx "$DRIVER"
}

t_import() {
    dk import --change 'CMD ["/bin/sh"]' "$W/base.tar" e2e-base
    e2e_eq "base image /data" "$(dk run --rm --network none e2e-base /e2e/state /data)" "$E2E_BASE_DATA"
}

t_run_delete() {
    e2e_eq "run with deletes" \
        "$(dk run --rm --network none e2e-base sh -c 'echo new > /newfile && rm /data/a && rm -r /data/sub && /e2e/state /data /newfile')" \
        '/data d 755
/data/app f 644 line1|
/data/m f 644 chmod me|
/data/r1 f 644 rename me|
/newfile f 644 new|'
    e2e_eq "image untouched" "$(dk run --rm --network none e2e-base /e2e/state /data)" "$E2E_BASE_DATA"
}

KEEP_CHANGES='[ -e /newfile ] || { echo new > /newfile && rm /data/a && rm -r /data/sub && mkdir /data/sub && echo fresh > /data/sub/c2 && echo line2 >> /data/app && mv /data/r1 /data/r2 && chmod 600 /data/m; }; /e2e/state /data /newfile'
KEEP_STATE='/data d 755
/data/app f 644 line1|line2|
/data/m f 600 chmod me|
/data/r2 f 644 rename me|
/data/sub d 755
/data/sub/c2 f 644 fresh|
/newfile f 644 new|'

t_restart() { # the same upper mounted again
    e2e_eq "first run" "$(dk run --name e2e-keep --network none e2e-base sh -c "$KEEP_CHANGES")" "$KEEP_STATE"
    e2e_eq "start again" "$(dk start -a e2e-keep)" "$KEEP_STATE"
}

t_diff() {
    local out
    out=$(dk diff e2e-keep | sort)
    echo "$out"
    e2e_has diff "$out" "A /newfile"
    e2e_has diff "$out" "D /data/a"
    e2e_has diff "$out" "D /data/r1"
    e2e_has diff "$out" "A /data/r2"
    e2e_has diff "$out" "C /data/app"
    e2e_lacks diff "$out" '\.wh\.'
}

t_commit() {
    dk commit e2e-keep e2e-commit
    e2e_eq "committed image" "$(dk run --rm --network none e2e-commit /e2e/state /data /newfile)" "$KEEP_STATE"
    dk rm e2e-keep
}

t_build() { # legacy builder: each RUN is a container committed as a layer
    mkdir -p "$W/ctx"
    cat >"$W/ctx/Dockerfile" <<'EOF'
FROM e2e-base
RUN mkdir -p /b/keep /b/gone/deep && echo k > /b/keep/k && echo g > /b/gone/deep/g && echo 1 > /b/f1 && echo 2 > /b/f2
RUN rm -r /b/gone /dir1 && rm /b/f1 /data/a && rm -r /data/sub && mkdir /data/sub && echo n > /data/sub/n
EOF
    DOCKER_BUILDKIT=0 dk build --network none -t e2e-built "$W/ctx"
    e2e_eq "built image" "$(dk run --rm --network none e2e-built /e2e/state /b /dir1 /data)" '/b d 755
/b/f2 f 644 2|
/b/keep d 755
/b/keep/k f 644 k|
/data d 755
/data/app f 644 line1|
/data/m f 644 chmod me|
/data/r1 f 644 rename me|
/data/sub d 755
/data/sub/n f 644 n|'
}

union_mounts() { # fuse/overlay mount points under $W
    awk -v w="$W/" '{ fs = ""; for (i = 7; i <= NF; i++) if ($i == "-") { fs = $(i + 1); break }
        if (index($5, w) == 1 && (fs ~ /^fuse/ || fs == "overlay")) print $5, fs }' /proc/self/mountinfo
}
our_procs() { # dockerd, containerd, shims, mount daemons: anything naming $W
    local p c
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = $$ ] || [ "${p#/proc/}" = "$BASHPID" ] && continue
        c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
        case $c in *"$W/"*) echo "${p#/proc/} $c" ;; esac
    done
}

t_stop() { # remove everything, stop dockerd (it stops its containerd); nothing may remain
    dk ps -aq | xargs -r "$D" rm -f
    dk system prune -af >/dev/null
    e2e_eq "mounts with no container" "$(union_mounts)" ""
    stop_dockerd
    e2e_eq "mounts left" "$(union_mounts)" ""
    e2e_eq "processes left" "$(our_procs)" ""
}

stop_dockerd() {
    local pid
    pid=$(cat "$W/docker.pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    # the managed containerd exits with dockerd; give the mount daemons a moment after unmount
    for _ in $(seq 20); do
        [ -z "$(our_procs)" ] && break
        sleep 0.5
    done
}

e2e_make_rootfs "$W/rootfs"
e2e_tar "$W/rootfs" "$W/base.tar"

run_test dockerd
if [ $FAILED = 0 ]; then
    for t in import run_delete restart diff commit build; do
        run_test "$t"
    done
fi
run_test stop

if [ $KEEP = 0 ]; then
    stop_dockerd
    union_mounts | cut -d' ' -f1 | sort -r | xargs -r -n1 umount -l
    p=$(our_procs)
    [ -n "$p" ] && { echo "still running (not killed):"; echo "$p"; }
    (cd "${W:?}" && rm -rf data exec rootfs ctx base.tar bin)
fi
echo "logs: $W/logs   time: $(($(date +%s) - START))s   failed: ${FAILS[*]:-none}"
echo "$PASSED passed, $FAILED failed"
[ $FAILED = 0 ]
