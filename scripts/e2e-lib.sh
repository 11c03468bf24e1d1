# shellcheck shell=bash
# shellcheck disable=SC2034 # E2E_* constants are used by the scripts that source this file
# Helpers shared by scripts/podman-e2e.sh and scripts/docker-check.sh: package installation, the
# busybox root filesystem the test images are built from, a hand-made OCI layout whose layers
# carry AUFS/OCI whiteouts, and small assertions.
#
# No registry is reachable on the machines these run on, so every image starts from a tar of a
# busybox-static root filesystem (`podman import` / `docker import`), and images with several
# layers are made by committing or building on top of it, or by writing an OCI layout by hand.

# Installs the Debian packages given unless all of them are already installed.
e2e_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null
}

# The mount program under test, printed: PROG made absolute, `native` (no mount program), or,
# when PROG is empty, the release build of this repository (built first when missing).
e2e_prog() { # PROG
    local prog=$1
    if [ -z "$prog" ]; then
        local root
        root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
        prog=$root/target/release/unionfs-rs
        [ -x "$prog" ] || (cd "$root" && cargo build --release >&2) || return 2
    fi
    if [ "$prog" != native ]; then
        prog=$(readlink -f "$prog")
        [ -x "$prog" ] || { echo "not executable: $prog" >&2; return 2; }
    fi
    printf '%s\n' "$prog"
}

# FUSE needs /dev/fuse usable by unprivileged users; without udev it is created 0600.
e2e_fuse_dev() {
    [ -c /dev/fuse ] || { echo "no /dev/fuse" >&2; return 1; }
    if [ "$(stat -c %a /dev/fuse)" != 666 ]; then
        echo "note: chmod 0666 /dev/fuse (no udev rule on this machine)"
        chmod 0666 /dev/fuse
    fi
}

# e2e_make_rootfs DIR: a busybox-static root filesystem with known content under /data, /dir1,
# /dir2 and the state printer /e2e/state. Ownership is recorded as 0:0 by the tar commands.
e2e_make_rootfs() {
    local r=$1 a
    rm -rf "$r"
    mkdir -p "$r"/{bin,etc,root,home,e2e,data/sub/deep,dir1,dir2,proc,sys,dev,run}
    install -m 1777 -d "$r/tmp"
    cp /bin/busybox "$r/bin/busybox"
    for a in $("$r/bin/busybox" --list); do
        [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
    echo 'root:x:0:' >"$r/etc/group"
    echo base >"$r/etc/motd"
    echo hello >"$r/data/a"
    echo line1 >"$r/data/app"
    echo 'chmod me' >"$r/data/m"
    echo 'rename me' >"$r/data/r1"
    echo b >"$r/data/sub/b"
    echo c >"$r/data/sub/deep/c"
    echo x >"$r/dir1/x"
    echo y >"$r/dir2/y"
    # One line per path: "PATH d MODE", "PATH l TARGET" or "PATH f MODE CONTENT" (newlines as |).
    cat >"$r/e2e/state" <<'EOF'
#!/bin/sh
for p in $(find "$@" 2>/dev/null | sort); do
    if [ -L "$p" ]; then echo "$p l $(readlink "$p")"
    elif [ -d "$p" ]; then echo "$p d $(stat -c %a "$p")"
    else echo "$p f $(stat -c %a "$p") $(tr '\n' '|' <"$p")"; fi
done
EOF
    chmod 755 "$r/e2e/state"
    chmod -R go-w "$r/data" "$r/dir1" "$r/dir2"
}

# The state of /data in the base image, as printed by `/e2e/state /data`.
E2E_BASE_DATA='/data d 755
/data/a f 644 hello|
/data/app f 644 line1|
/data/m f 644 chmod me|
/data/r1 f 644 rename me|
/data/sub d 755
/data/sub/b f 644 b|
/data/sub/deep d 755
/data/sub/deep/c f 644 c|'

# e2e_tar DIR OUT [MEMBERS...]: a layer tar owned by 0:0 (members default to everything, "./...").
e2e_tar() {
    local dir=$1 out=$2
    shift 2
    [ $# -gt 0 ] || set -- .
    tar -C "$dir" --numeric-owner --owner=0 --group=0 -cf "$out" "$@"
}

# e2e_oci_blob LAYOUT FILE: stores FILE as a blob, prints "DIGEST SIZE".
e2e_oci_blob() {
    local d s
    d=$(sha256sum "$2" | cut -d' ' -f1)
    s=$(stat -c %s "$2")
    cp "$2" "$1/blobs/sha256/$d"
    echo "$d $s"
}

# e2e_make_oci_wh LAYOUT BASE_TAR WORK: an OCI image layout (tag "wh") of three uncompressed
# layers: BASE_TAR; then a layer of OCI whiteouts (`data/.wh.a`, `data/.wh.r1` of mode 0000,
# `data/.wh.sub` for a directory, `dir1/.wh..wh..opq` with a new file beside it, an empty opaque
# `dir2`); then a layer recreating /data/a. Built with tar, sha256sum and printf only.
e2e_make_oci_wh() {
    local lay=$1 base=$2 work=$3 l1 l2 l3 cfg man
    rm -rf "$lay" "$work"
    mkdir -p "$lay/blobs/sha256" "$work/l2/data" "$work/l2/dir1" "$work/l2/dir2" "$work/l3/data"
    : >"$work/l2/data/.wh.a"
    : >"$work/l2/data/.wh.r1"
    chmod 000 "$work/l2/data/.wh.r1"
    : >"$work/l2/data/.wh.sub"
    : >"$work/l2/dir1/.wh..wh..opq"
    echo new >"$work/l2/dir1/new"
    : >"$work/l2/dir2/.wh..wh..opq"
    echo again >"$work/l3/data/a"
    chmod 755 "$work"/l2/* "$work"/l3/*
    chmod 644 "$work/l2/dir1/new" "$work/l3/data/a"
    e2e_tar "$work/l2" "$work/l2.tar" data dir1 dir2
    e2e_tar "$work/l3" "$work/l3.tar" data
    read -r l1 l1s < <(e2e_oci_blob "$lay" "$base")
    read -r l2 l2s < <(e2e_oci_blob "$lay" "$work/l2.tar")
    read -r l3 l3s < <(e2e_oci_blob "$lay" "$work/l3.tar")
    printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s","sha256:%s"]}}' \
        "$l1" "$l2" "$l3" >"$work/config.json"
    read -r cfg cfgs < <(e2e_oci_blob "$lay" "$work/config.json")
    local lt=application/vnd.oci.image.layer.v1.tar
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"%s","digest":"sha256:%s","size":%s},{"mediaType":"%s","digest":"sha256:%s","size":%s},{"mediaType":"%s","digest":"sha256:%s","size":%s}]}' \
        "$cfg" "$cfgs" "$lt" "$l1" "$l1s" "$lt" "$l2" "$l2s" "$lt" "$l3" "$l3s" >"$work/manifest.json"
    read -r man mans < <(e2e_oci_blob "$lay" "$work/manifest.json")
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"wh"}}]}' \
        "$man" "$mans" >"$lay/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$lay/oci-layout"
    chmod -R a+rX "$lay"
}

# What `/e2e/state /data /dir1 /dir2` prints in the image made by e2e_make_oci_wh.
E2E_WH_STATE='/data d 755
/data/a f 644 again|
/data/app f 644 line1|
/data/m f 644 chmod me|
/dir1 d 755
/dir1/new f 644 new|
/dir2 d 755'

# Assertions: print what differs on stderr and return 1.
e2e_eq() { # DESC GOT WANT
    [ "$2" = "$3" ] && return 0
    printf 'CHECK FAILED: %s\n--- want:\n%s\n--- got:\n%s\n---\n' "$1" "$3" "$2" >&2
    return 1
}
e2e_has() { # DESC HAYSTACK LINE: HAYSTACK has LINE as a whole line
    grep -qxF -- "$3" <<<"$2" && return 0
    printf 'CHECK FAILED: %s: no line "%s" in:\n%s\n---\n' "$1" "$3" "$2" >&2
    return 1
}
e2e_lacks() { # DESC HAYSTACK REGEX
    grep -qE -- "$3" <<<"$2" || return 0
    printf 'CHECK FAILED: %s: /%s/ matches in:\n%s\n---\n' "$1" "$3" "$2" >&2
    return 1
}
