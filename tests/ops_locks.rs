//! File locks through a real mount: flock, open-file-description locks and POSIX record locks
//! across processes, on upper and lower files. Locking never copies a file up.

mod common;

use std::fs::File;
use std::process::Command;

use common::*;

fn positions(st: &Stack) {
    st.upper().file("up", "u");
    st.lower(0).file("low", "l");
    st.lower(1).file("bottom", "b");
}

const NAMES: [&str; 3] = ["up", "low", "bottom"];

#[test]
fn flock_conflicts_between_open_files() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let mut res = Vec::new();
        for n in NAMES {
            let (a, c) = (
                File::open(m.path(n)).unwrap(),
                File::open(m.path(n)).unwrap(),
            );
            let nb = libc::LOCK_NB;
            res.push(errno(&sys::flock(&a, libc::LOCK_EX | nb)));
            res.push(errno(&sys::flock(&c, libc::LOCK_EX | nb)));
            res.push(errno(&sys::flock(&c, libc::LOCK_SH | nb)));
            sys::flock(&a, libc::LOCK_UN).unwrap();
            res.push(errno(&sys::flock(&c, libc::LOCK_SH | nb)));
            res.push(errno(&sys::flock(&a, libc::LOCK_SH | nb)));
            res.push(errno(&sys::flock(&a, libc::LOCK_EX | nb)));
        }
        let one = [
            0,
            libc::EWOULDBLOCK,
            libc::EWOULDBLOCK,
            0,
            0,
            libc::EWOULDBLOCK,
        ];
        assert_eq!(res, one.repeat(3));
        assert_eq!(st.upper().names(""), ["up"], "locking copied up");
        res
    });
}

#[test]
fn flock_seen_by_another_process() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let f = File::open(m.path("low")).unwrap();
        sys::flock(&f, libc::LOCK_EX).unwrap();
        // flock(1) -n exits 1 when the lock is taken.
        let held = Command::new("flock")
            .arg("-n")
            .arg(m.path("low"))
            .arg("true")
            .status();
        sys::flock(&f, libc::LOCK_UN).unwrap();
        let free = Command::new("flock")
            .arg("-n")
            .arg(m.path("low"))
            .arg("true")
            .status();
        let res = (held.unwrap().code(), free.unwrap().code());
        assert_eq!(res, (Some(1), Some(0)));
        res
    });
}

#[test]
fn ofd_locks_conflict_between_open_files() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let mut res = Vec::new();
        for n in NAMES {
            let rw = || {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(m.path(n))
            };
            let (a, c) = (rw().unwrap(), rw().unwrap());
            let wr = libc::F_WRLCK;
            res.push(errno(&sys::fcntl_lock(&a, libc::F_OFD_SETLK, wr, 0, 10)));
            res.push(errno(&sys::fcntl_lock(&c, libc::F_OFD_SETLK, wr, 5, 10)));
            res.push(errno(&sys::fcntl_lock(&c, libc::F_OFD_SETLK, wr, 10, 10)));
            let probe = sys::fcntl_lock(&c, libc::F_OFD_GETLK, wr, 0, 1).unwrap();
            res.push(probe.l_type as i32);
            sys::fcntl_lock(&a, libc::F_OFD_SETLK, libc::F_UNLCK, 0, 0).unwrap();
            res.push(errno(&sys::fcntl_lock(&c, libc::F_OFD_SETLK, wr, 0, 10)));
        }
        let one = [0, libc::EAGAIN, 0, libc::F_WRLCK, 0];
        assert_eq!(res, one.repeat(3));
        res
    });
}

/// In a forked child: probe `f` for a write lock with F_GETLK and exit with the lock type seen
/// (or 99 on error). Only async-signal-safe calls happen between fork and _exit.
fn child_probe(f: &File) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: the child only calls fcntl and _exit, both async-signal-safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: zeroed POD, valid fd; _exit never returns.
        unsafe {
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = libc::F_WRLCK as i16;
            fl.l_whence = libc::SEEK_SET as i16;
            fl.l_len = 100;
            let r = libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl);
            libc::_exit(if r < 0 { 99 } else { fl.l_type as i32 });
        }
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WEXITSTATUS(status)
}

#[test]
fn posix_record_locks_across_processes() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let mut res = Vec::new();
        for n in NAMES {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(m.path(n))
                .unwrap();
            sys::fcntl_lock(&f, libc::F_SETLK, libc::F_WRLCK, 0, 50).unwrap();
            // Our own lock never conflicts with us.
            let own = sys::fcntl_lock(&f, libc::F_GETLK, libc::F_WRLCK, 0, 50).unwrap();
            res.push(own.l_type as i32);
            res.push(child_probe(&f));
            sys::fcntl_lock(&f, libc::F_SETLK, libc::F_UNLCK, 0, 0).unwrap();
            res.push(child_probe(&f));
        }
        let (wr, un) = (libc::F_WRLCK, libc::F_UNLCK);
        assert_eq!(res, [un, wr, un].repeat(3));
        res
    });
}
