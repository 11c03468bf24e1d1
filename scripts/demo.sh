#!/usr/bin/env bash
# `make demo`: an image-like stack of three read-only layers merged by unionfs-rs.
#
#   base     a tiny root filesystem (etc/, bin/, usr/share/doc/)
#   pkg      a package layer: adds a library and a config, overrides etc/motd
#   cleanup  deletes usr/share/doc/base/NOTES with an OCI `.wh.` whiteout, as an image
#            layer built from `RUN rm ...` does
#
# It mounts them (cleanup on top) with an empty upper, writes to a base file, deletes
# another, prints the merged view and what landed in the upper (the copied-up file, the
# whiteout), shows the layers are untouched, and unmounts. Installs fuse3 if missing (as
# root) and builds the release binary.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"

ul_build_deps
ul_ensure_fuse
ul_log "building the release binary"
(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/unionfs-rs

DEMO=$(mktemp -d /tmp/unionfs-demo.XXXXXX)
MERGED=$DEMO/merged
cleanup() {
    if mountpoint -q "$MERGED" 2>/dev/null; then
        fusermount3 -u "$MERGED" 2>/dev/null || umount -l "$MERGED" 2>/dev/null || true
    fi
    rm -rf "$DEMO"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() {
    printf '$ %s\n' "$*"
    "$@"
}

# Lists a tree with each entry's type: whiteouts and opaque markers are visible this way.
listing() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
        if [ -c "$p" ]; then
            printf '  %-40s char device %s (a whiteout)\n' "${p#./}" "$(stat -c '%t/%T' "$p")"
        elif [ -d "$p" ]; then
            printf '  %-40s dir\n' "${p#./}/"
        elif [ -L "$p" ]; then
            printf '  %-40s -> %s\n' "${p#./}" "$(readlink "$p")"
        else
            printf '  %-40s %s\n' "${p#./}" "$(head -c 40 "$p" | tr '\n' ' ')"
        fi
    done)
}

make_layers() {
    local base=$DEMO/layers/base pkg=$DEMO/layers/pkg clean=$DEMO/layers/cleanup
    mkdir -p "$base"/{etc,bin,usr/share/doc/base} "$pkg"/{etc,usr/lib} "$clean"/usr/share/doc/base
    echo 'NAME="demo linux"' >"$base/etc/os-release"
    echo "welcome to the base image" >"$base/etc/motd"
    echo "demo-host" >"$base/etc/hostname"
    printf '#!/bin/sh\necho hello from the base layer\n' >"$base/bin/hello"
    chmod 755 "$base/bin/hello"
    echo "base release notes" >"$base/usr/share/doc/base/NOTES"
    echo "base license" >"$base/usr/share/doc/base/LICENSE"
    echo "libfoo 1.0" >"$pkg/usr/lib/libfoo.so.1"
    ln -s libfoo.so.1 "$pkg/usr/lib/libfoo.so"
    echo "foo=enabled" >"$pkg/etc/foo.conf"
    echo "welcome to the image with foo installed" >"$pkg/etc/motd"
    : >"$clean/usr/share/doc/base/.wh.NOTES"
    mkdir -p "$DEMO/upper" "$DEMO/work" "$MERGED"
}

step "three layers (top to bottom: cleanup, pkg, base)"
make_layers
for l in cleanup pkg base; do
    echo "layer $l:"
    listing "$DEMO/layers/$l"
done

step "mount: unionfs-rs cleanup:pkg:base UPPER MERGED (returns once the mount is live)"
L=$DEMO/layers
show "$BIN" "$L/cleanup:$L/pkg:$L/base" "$DEMO/upper" "$MERGED" --workdir "$DEMO/work"

step "merged view (NOTES is gone, motd comes from pkg)"
listing "$MERGED"
show cat "$MERGED/etc/motd"
show "$MERGED/bin/hello"

step "write to a base file and delete another"
show sh -c "echo 'VERSION=\"2\"' >> '$MERGED/etc/os-release'"
show rm "$MERGED/usr/share/doc/base/LICENSE"
show mkdir "$MERGED/srv"
show sh -c "echo 'data' > '$MERGED/srv/new-file'"

step "merged view after the changes"
listing "$MERGED"

step "what landed in the upper"
listing "$DEMO/upper"
echo "  etc/os-release is a full copy (copy-up); LICENSE became a whiteout;"
echo "  the lower layers were not modified:"
show cat "$L/base/etc/os-release"
show ls "$L/base/usr/share/doc/base"

step "unmount: fusermount3 -u MERGED"
show fusermount3 -u "$MERGED"
mountpoint -q "$MERGED" && ul_die "still mounted"
echo "unmounted; the daemon exits by itself."
