# shellcheck shell=bash
# Shared by the Makefile, scripts/demo.sh and .ci/run: make a fresh Debian 12 ready to build,
# test and demo unionfs-rs. Source it; nothing runs on load.
#
#   ul_log MSG...        a line on stderr, prefixed with the calling script's name
#   ul_die MSG...        the same, then exit 1
#   ul_ensure_rust       puts ~/.cargo/bin on PATH; fails clearly when cargo is missing
#   ul_apt_install PKG.. installs the Debian packages that are not installed yet (root only;
#                        `apt-get update` at most once per run)
#   ul_ensure_fuse       fusermount3 and /dev/fuse present
#   ul_build_deps        what `cargo build` needs (a C linker)
#   ul_test_deps         what `cargo test` needs: the above plus mount tools, attr, useradd,
#                        kernel overlayfs
#
# Everything is idempotent and installs only what is missing, so a prepared machine (or a
# non-root user on one) goes straight on.

UL_NAME=$(basename "${0:-lib}" .sh)
UL_APT_UPDATED=${UL_APT_UPDATED:-0}

ul_log() { printf '%s: %s\n' "$UL_NAME" "$*" >&2; }
ul_die() {
    ul_log "error: $*"
    exit 1
}

ul_is_root() { [ "$(id -u)" -eq 0 ]; }

ul_ensure_rust() {
    case ":$PATH:" in
    *":$HOME/.cargo/bin:"*) ;;
    *) export PATH="$HOME/.cargo/bin:$PATH" ;;
    esac
    command -v cargo >/dev/null ||
        ul_die "cargo not found; install Rust with rustup (https://rustup.rs) and retry"
}

# Packages given are Debian names; the check uses dpkg so a package is never reinstalled.
ul_apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || ul_die "missing packages ${missing[*]} and no apt-get"
    ul_is_root || ul_die "missing packages ${missing[*]}; run as root or install them"
    if [ "$UL_APT_UPDATED" != 1 ]; then
        ul_log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        UL_APT_UPDATED=1
    fi
    ul_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}

ul_ensure_fuse() {
    command -v fusermount3 >/dev/null || ul_apt_install fuse3
    if [ ! -e /dev/fuse ]; then
        # Containers without udev: the node is missing although the module is there.
        ul_is_root || ul_die "/dev/fuse missing; ask root to load the fuse module"
        modprobe fuse 2>/dev/null || true
        [ -e /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229
    fi
}

ul_build_deps() {
    ul_ensure_rust
    command -v cc >/dev/null || ul_apt_install gcc libc6-dev
}

ul_test_deps() {
    ul_build_deps
    ul_ensure_fuse
    # mount/umount, setpriv and flock(1), useradd, getfattr for humans reading failures.
    ul_apt_install mount util-linux passwd attr
    # getfacl/setfacl, also for humans only (the ACL tests use the xattrs): never required.
    if ul_is_root; then ul_apt_install acl; fi
    if ul_is_root && ! grep -qw overlay /proc/filesystems; then
        modprobe overlay 2>/dev/null || ul_log "warning: no kernel overlayfs; reference tests will fail"
    fi
}
