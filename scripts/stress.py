#!/usr/bin/env python3
"""Stress driver for unionfs-rs (run by scripts/stress.sh; stdlib only).

N worker processes do mixed operations on a mounted union for a bounded time and check
invariants as they go; the main process samples the daemon's memory and open fds.

Layout (made by `setup`, in the LOWER layer before mounting):
  priv/wK/       worker K's own tree: lower files f0..f7 (some with a user.orig xattr), a lower
                 subdirectory sd0 with files; only worker K touches it, so it keeps an exact
                 model (names, contents, modes, xattrs, hard links, st_ino) and compares every
                 read, stat and readdir with it. Its ops: create, overwrite (O_TRUNC), pwrite,
                 read, rename (also over an existing name and across directories), unlink
                 (whiteouts), re-create a deleted lower name, mkdir (also over a deleted lower
                 directory: it must come back empty), rmdir (ENOTEMPTY when the model says so),
                 chmod, setxattr, link, readdir, stat. Copy-ups of lower files happen on the
                 first write/chmod/setxattr/link/rename of each.
  shared/lJ      lower files all workers write into at once (worker K owns the 512-byte slot
                 K), racing for the copy-up; the bytes outside the slots must always read as in
                 the lower, and at the end every slot holds its worker's last record.
  shared/vJ      files replaced by rename from temporaries by all workers; a reader must never
                 get ENOENT and must always read one complete, self-checking version.
  shared/        readdir must never show a duplicate name or miss a file nobody deletes; each
                 worker also churns directories of its own in it (mkdir, create, rmdir).
  ro/            lower files nobody writes: their content never changes.

Subcommands:
  setup LOWER --workers N            make the layout above in LOWER
  run MERGED --workers N --seconds S --pid PID --model OUT.json
                                     the stress run; writes the final models for `verify`
  verify MERGED --model OUT.json     after a remount: the state on disk matches the models
Exit status 1 on any violated invariant, with the first violations printed.
"""

import argparse
import errno
import hashlib
import json
import multiprocessing as mp
import os
import random
import sys
import time

SLOT = 512
SHARED_LOWER = 4          # shared/l0..l3
SHARED_VERSIONED = 4      # shared/v0..v3
SHARED_SIZE = 64 * 1024
RO_FILES = 4
MAX_VIOLATIONS = 20


def lower_bytes(tag: str, size: int) -> bytes:
    """Deterministic content of a lower file, so every process can recompute it."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{tag}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def slot_record(wid: int, seq: int) -> bytes:
    body = f"w{wid} seq {seq} ".encode()
    body = body + b"." * (SLOT - 32 - len(body))
    return body + hashlib.sha256(body).hexdigest()[:32].encode()


def version_blob(wid: int, seq: int, rng: random.Random) -> bytes:
    payload = rng.randbytes(rng.randrange(0, 12000))
    head = f"VER|{wid}|{seq}|{len(payload)}|{hashlib.sha256(payload).hexdigest()}\n".encode()
    return head + payload


def version_ok(data: bytes) -> bool:
    head, sep, payload = data.partition(b"\n")
    if not sep:
        return False
    parts = head.split(b"|")
    if len(parts) != 5 or parts[0] != b"VER":
        return False
    return int(parts[3]) == len(payload) and hashlib.sha256(payload).hexdigest().encode() == parts[4]


def priv_lower_files(wid: int):
    """The lower content of worker wid's private tree: relative path -> bytes."""
    files = {}
    for i in range(8):
        files[f"f{i}"] = lower_bytes(f"priv{wid}/f{i}", 1000 + 1500 * i)
    for i in range(3):
        files[f"sd0/g{i}"] = lower_bytes(f"priv{wid}/sd0/g{i}", 700 * (i + 1))
    return files


# ---------------------------------------------------------------------------------------------
# setup


def cmd_setup(args):
    low = args.lower
    for wid in range(args.workers):
        base = os.path.join(low, "priv", f"w{wid}")
        os.makedirs(os.path.join(base, "sd0"), exist_ok=True)
        os.makedirs(os.path.join(base, "sd1"), exist_ok=True)  # an empty lower dir
        for rel, data in priv_lower_files(wid).items():
            path = os.path.join(base, rel)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o644)
            if rel in ("f1", "f3"):
                os.setxattr(path, "user.orig", f"orig-{wid}-{rel}".encode())
    shared = os.path.join(low, "shared")
    os.makedirs(shared, exist_ok=True)
    for j in range(SHARED_LOWER):
        with open(os.path.join(shared, f"l{j}"), "wb") as f:
            f.write(lower_bytes(f"shared/l{j}", SHARED_SIZE))
    for j in range(SHARED_VERSIONED):
        with open(os.path.join(shared, f"v{j}"), "wb") as f:
            f.write(version_blob(-1, j, random.Random(j)))
    os.makedirs(os.path.join(low, "ro"), exist_ok=True)
    for j in range(RO_FILES):
        with open(os.path.join(low, "ro", f"r{j}"), "wb") as f:
            f.write(lower_bytes(f"ro/r{j}", 3000 + 5000 * j))


# ---------------------------------------------------------------------------------------------
# the private model


class Obj:
    """A file object; several names may share it (hard links)."""

    def __init__(self, data: bytes, mode: int, xattrs: dict):
        self.data = data
        self.mode = mode
        self.xattrs = xattrs
        self.ino = None


class Worker:
    def __init__(self, wid, merged, deadline, seed, violations, counts):
        self.wid = wid
        self.m = merged
        self.base = os.path.join(merged, "priv", f"w{wid}")
        self.shared = os.path.join(merged, "shared")
        self.deadline = deadline
        self.rng = random.Random(seed)
        self.violations = violations
        self.counts = counts
        self.files = {}            # rel path -> Obj
        self.dirs = {"sd0", "sd1"}  # rel paths of subdirectories (one level)
        self.deleted_lower = []    # lower names now deleted, to re-create
        self.next = 0
        self.seq = 0
        self.slot_last = {}        # shared lower file index -> last record written
        self.nviol = 0
        lower = priv_lower_files(wid)
        self.lower_names = set(lower)
        for rel, data in lower.items():
            x = {"user.orig": f"orig-{wid}-{rel}".encode()} if rel in ("f1", "f3") else {}
            self.files[rel] = Obj(data, 0o644, x)

    # -- helpers

    def fail(self, what):
        self.nviol += 1
        self.violations.put(f"worker {self.wid}: {what}")
        if self.nviol >= 5:
            raise SystemExit(1)

    def p(self, rel):
        return os.path.join(self.base, rel)

    def fresh(self, prefix):
        self.next += 1
        return f"{prefix}{self.wid}_{self.next}"

    def children(self, d):
        """Names directly inside subdirectory d ("" for the private root), per the model."""
        out = set()
        for rel in self.files:
            head, _, tail = rel.rpartition("/")
            if head == d:
                out.add(tail)
        if d == "":
            out |= self.dirs
        return out

    def pick_file(self):
        return self.rng.choice(sorted(self.files)) if self.files else None

    def pick_dir(self):
        return self.rng.choice(["", ""] + sorted(self.dirs))

    def check_ino(self, rel, st):
        obj = self.files[rel]
        if obj.ino is None:
            obj.ino = st.st_ino
        elif obj.ino != st.st_ino:
            self.fail(f"st_ino of {rel} changed from {obj.ino} to {st.st_ino}")
            obj.ino = st.st_ino

    def call(self, what, fn, *a, expect=()):
        """Runs fn; an OSError whose errno is not in `expect` is a violation. Returns
        (result, errno)."""
        try:
            return fn(*a), 0
        except OSError as e:
            if e.errno not in expect:
                self.fail(f"{what}: unexpected {errno.errorcode.get(e.errno, e.errno)} ({e})")
            return None, e.errno

    # -- private operations

    def op_create(self):
        d = self.pick_dir()
        if self.deleted_lower and self.rng.random() < 0.5:
            rel = self.deleted_lower.pop(self.rng.randrange(len(self.deleted_lower)))
            if rel.rpartition("/")[0] not in self.dirs and "/" in rel:
                return
        else:
            rel = (d + "/" if d else "") + self.fresh("n")
        data = self.rng.randbytes(self.rng.randrange(0, 16000))

        def create():
            fd = os.open(self.p(rel), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        _, err = self.call(f"create {rel}", create)
        if not err:
            self.files[rel] = Obj(data, 0o644, {})

    def op_overwrite(self):
        rel = self.pick_file()
        if rel is None:
            return
        data = self.rng.randbytes(self.rng.randrange(0, 16000))

        def overwrite():
            fd = os.open(self.p(rel), os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        _, err = self.call(f"overwrite {rel}", overwrite)
        if not err:
            self.files[rel].data = data

    def op_pwrite(self):
        rel = self.pick_file()
        if rel is None:
            return
        obj = self.files[rel]
        off = self.rng.randrange(0, len(obj.data) + 2000)
        chunk = self.rng.randbytes(self.rng.randrange(1, 5000))

        def pwrite():
            fd = os.open(self.p(rel), os.O_WRONLY)
            try:
                os.pwrite(fd, chunk, off)
            finally:
                os.close(fd)

        _, err = self.call(f"pwrite {rel}", pwrite)
        if not err:
            d = bytearray(obj.data)
            if off > len(d):
                d += b"\0" * (off - len(d))
            d[off:off + len(chunk)] = chunk
            obj.data = bytes(d)

    def verify_file(self, rel):
        obj = self.files[rel]

        def read():
            with open(self.p(rel), "rb") as f:
                st = os.fstat(f.fileno())
                return f.read(), st

        res, err = self.call(f"read {rel}", read)
        if err:
            return
        data, st = res
        if data != obj.data:
            first = next((i for i, (a, b) in enumerate(zip(data, obj.data)) if a != b),
                         min(len(data), len(obj.data)))
            self.fail(f"content of {rel}: {len(data)} bytes read, model has {len(obj.data)}; "
                      f"first difference at byte {first}")
        if st.st_size != len(obj.data):
            self.fail(f"st_size of {rel} is {st.st_size}, model {len(obj.data)}")
        if st.st_mode & 0o7777 != obj.mode:
            self.fail(f"mode of {rel} is {oct(st.st_mode & 0o7777)}, model {oct(obj.mode)}")
        self.check_ino(rel, st)

    def op_read(self):
        rel = self.pick_file()
        if rel is not None:
            self.verify_file(rel)

    def op_rename(self):
        src = self.pick_file()
        if src is None:
            return
        if self.rng.random() < 0.3 and len(self.files) > 1:
            dst = self.pick_file()          # over an existing file (maybe a lower one)
        else:
            d = self.pick_dir()
            dst = (d + "/" if d else "") + self.fresh("r")
        if dst == src:
            return
        _, err = self.call(f"rename {src} -> {dst}", os.rename, self.p(src), self.p(dst))
        if err:
            return
        obj = self.files.pop(src)
        if self.files.get(dst) is obj:
            # rename(2) between two links of one file does nothing.
            self.files[src] = obj
            return
        self.files[dst] = obj

    def op_unlink(self):
        rel = self.pick_file()
        if rel is None:
            return
        _, err = self.call(f"unlink {rel}", os.unlink, self.p(rel))
        if not err:
            self.files.pop(rel)
            if rel in self.lower_names:
                self.deleted_lower.append(rel)
            st, err2 = self.call(f"lstat after unlink {rel}", os.lstat, self.p(rel),
                                 expect=(errno.ENOENT,))
            if err2 != errno.ENOENT:
                self.fail(f"{rel} still exists after unlink")

    def op_mkdir(self):
        if len(self.dirs) >= 6:
            return
        if "sd0" not in self.dirs and self.rng.random() < 0.5:
            rel = "sd0"   # over a deleted lower directory: must come back opaque and empty
        else:
            rel = self.fresh("d")
        _, err = self.call(f"mkdir {rel}", os.mkdir, self.p(rel), 0o755)
        if err:
            return
        self.dirs.add(rel)
        self.deleted_lower = [r for r in self.deleted_lower if not r.startswith(rel + "/")]
        names, err = self.call(f"listdir new {rel}", os.listdir, self.p(rel))
        if not err and names:
            self.fail(f"new directory {rel} is not empty: {sorted(names)[:5]}")

    def op_rmdir(self):
        if not self.dirs:
            return
        rel = self.rng.choice(sorted(self.dirs))
        empty = not self.children(rel)
        if not empty and self.rng.random() < 0.7:
            # Empty it first, through unlinks (whiteouts for its lower files).
            for name in sorted(self.children(rel)):
                r = f"{rel}/{name}"
                _, err = self.call(f"unlink {r}", os.unlink, self.p(r))
                if err:
                    return
                self.files.pop(r)
            empty = True
        _, err = self.call(f"rmdir {rel}", os.rmdir, self.p(rel),
                           expect=() if empty else (errno.ENOTEMPTY, errno.EEXIST))
        if empty and not err:
            self.dirs.discard(rel)
            self.deleted_lower = [r for r in self.deleted_lower if not r.startswith(rel + "/")]
        elif not empty and not err:
            self.fail(f"rmdir {rel} succeeded on a non-empty directory")

    def op_chmod(self):
        rel = self.pick_file()
        if rel is None:
            return
        mode = self.rng.choice([0o600, 0o640, 0o644, 0o444, 0o755, 0o700])
        _, err = self.call(f"chmod {rel}", os.chmod, self.p(rel), mode)
        if err:
            return
        self.files[rel].mode = mode
        st, err = self.call(f"stat {rel}", os.stat, self.p(rel))
        if not err and st.st_mode & 0o7777 != mode:
            self.fail(f"chmod {rel} {oct(mode)}: stat says {oct(st.st_mode & 0o7777)}")

    def op_setxattr(self):
        rel = self.pick_file()
        if rel is None:
            return
        obj = self.files[rel]
        val = self.rng.randbytes(self.rng.randrange(1, 200))
        _, err = self.call(f"setxattr {rel}", os.setxattr, self.p(rel), "user.stress", val)
        if err:
            return
        obj.xattrs["user.stress"] = val
        self.verify_xattrs(rel)

    def verify_xattrs(self, rel):
        obj = self.files[rel]
        names, err = self.call(f"listxattr {rel}", os.listxattr, self.p(rel))
        if err:
            return
        got = {n for n in names if n.startswith("user.")}
        if got != set(obj.xattrs):
            self.fail(f"xattrs of {rel}: {sorted(got)}, model {sorted(obj.xattrs)}")
            return
        for n, v in obj.xattrs.items():
            cur, err = self.call(f"getxattr {rel} {n}", os.getxattr, self.p(rel), n)
            if not err and cur != v:
                self.fail(f"xattr {n} of {rel} differs from the model")

    def op_link(self):
        src = self.pick_file()
        if src is None:
            return
        d = self.pick_dir()
        dst = (d + "/" if d else "") + self.fresh("h")
        _, err = self.call(f"link {src} -> {dst}", os.link, self.p(src), self.p(dst))
        if err:
            return
        self.files[dst] = self.files[src]
        a, e1 = self.call(f"stat {src}", os.stat, self.p(src))
        b, e2 = self.call(f"stat {dst}", os.stat, self.p(dst))
        if not e1 and not e2 and a.st_ino != b.st_ino:
            self.fail(f"hard links {src} and {dst} have different st_ino")

    def verify_dir(self, d):
        names, err = self.call(f"listdir {d or '.'}", os.listdir, self.p(d) if d else self.base)
        if err:
            return
        if len(names) != len(set(names)):
            self.fail(f"readdir of {d or '.'} has duplicates")
        want = self.children(d)
        if set(names) != want:
            extra = sorted(set(names) - want)[:5]
            missing = sorted(want - set(names))[:5]
            self.fail(f"readdir of {d or '.'}: extra {extra}, missing {missing}")

    def op_readdir(self):
        self.verify_dir(self.pick_dir())

    def op_verify_xattrs(self):
        rel = self.pick_file()
        if rel is not None:
            self.verify_xattrs(rel)

    # -- shared operations

    def op_slot_write(self):
        j = self.rng.randrange(SHARED_LOWER)
        self.seq += 1
        rec = slot_record(self.wid, self.seq)

        def write():
            fd = os.open(os.path.join(self.shared, f"l{j}"), os.O_WRONLY)
            try:
                if os.pwrite(fd, rec, self.wid * SLOT) != SLOT:
                    raise OSError(errno.EIO, "short write")
            finally:
                os.close(fd)

        _, err = self.call(f"slot write shared/l{j}", write)
        if not err:
            self.slot_last[j] = rec

    def op_slot_read(self):
        j = self.rng.randrange(SHARED_LOWER)
        want = lower_bytes(f"shared/l{j}", SHARED_SIZE)
        data, err = self.call(f"read shared/l{j}", lambda: open(
            os.path.join(self.shared, f"l{j}"), "rb").read())
        if err:
            return
        if len(data) != SHARED_SIZE:
            self.fail(f"shared/l{j} is {len(data)} bytes, not {SHARED_SIZE}")
            return
        n = self.workers_total * SLOT
        if data[n:] != want[n:]:
            self.fail(f"shared/l{j}: bytes outside the slots differ from the lower file")
        mine = data[self.wid * SLOT:(self.wid + 1) * SLOT]
        expect = self.slot_last.get(j, want[self.wid * SLOT:(self.wid + 1) * SLOT])
        if mine != expect:
            self.fail(f"shared/l{j}: my slot {self.wid} lost my last write")

    def op_version_replace(self):
        j = self.rng.randrange(SHARED_VERSIONED)
        self.seq += 1
        tmp = os.path.join(self.shared, f".tmp-w{self.wid}-{self.seq}")
        blob = version_blob(self.wid, self.seq, self.rng)

        def replace():
            with open(tmp, "wb") as f:
                f.write(blob)
            os.rename(tmp, os.path.join(self.shared, f"v{j}"))

        self.call(f"replace shared/v{j}", replace)

    def op_version_read(self):
        j = self.rng.randrange(SHARED_VERSIONED)
        # An open racing a rename over the name opens the old version (the daemon pins a
        # replaced object until the kernel forgets it, as long as the upper has 256 MiB free):
        # ENOENT, ESTALE, EIO and a torn or partial version are all violations.
        data, err = self.call(f"read shared/v{j}", lambda: open(
            os.path.join(self.shared, f"v{j}"), "rb").read())
        if not err and not version_ok(data):
            self.fail(f"shared/v{j}: a torn or partial version ({len(data)} bytes)")

    def op_shared_readdir(self):
        names, err = self.call("listdir shared", os.listdir, self.shared)
        if err:
            return
        if len(names) != len(set(names)):
            dup = sorted({n for n in names if names.count(n) > 1})[:5]
            self.fail(f"readdir of shared has duplicates: {dup}")
        must = {f"l{j}" for j in range(SHARED_LOWER)} | {f"v{j}" for j in range(SHARED_VERSIONED)}
        if not must <= set(names):
            self.fail(f"readdir of shared misses {sorted(must - set(names))}")
        if any(n.startswith(".wh.") for n in names):
            self.fail("readdir of shared shows a whiteout")

    def op_shared_dir_churn(self):
        d = os.path.join(self.shared, self.fresh("dir"))
        f = os.path.join(d, "x")
        _, err = self.call(f"mkdir {d}", os.mkdir, d)
        if err:
            return
        data = self.rng.randbytes(100)
        _, err = self.call(f"create {f}", lambda: open(f, "xb").write(data))
        if not err:
            got, err = self.call(f"read {f}", lambda: open(f, "rb").read())
            if not err and got != data:
                self.fail(f"{f}: content differs right after writing it")
            names, err = self.call(f"listdir {d}", os.listdir, d)
            if not err and names != ["x"]:
                self.fail(f"readdir of {d}: {names}, want ['x']")
            self.call(f"unlink {f}", os.unlink, f)
        self.call(f"rmdir {d}", os.rmdir, d)

    def op_ro_read(self):
        j = self.rng.randrange(RO_FILES)
        path = os.path.join(self.m, "ro", f"r{j}")
        data, err = self.call(f"read ro/r{j}", lambda: open(path, "rb").read())
        if not err and data != lower_bytes(f"ro/r{j}", 3000 + 5000 * j):
            self.fail(f"ro/r{j} (nobody writes it) changed")

    # -- the loop

    def run(self, workers_total, only=()):
        self.workers_total = workers_total
        self.only = set(only)
        ops = [
            (self.op_create, 8), (self.op_overwrite, 5), (self.op_pwrite, 8), (self.op_read, 12),
            (self.op_rename, 6), (self.op_unlink, 5), (self.op_mkdir, 2), (self.op_rmdir, 2),
            (self.op_chmod, 4), (self.op_setxattr, 4), (self.op_verify_xattrs, 2),
            (self.op_link, 3), (self.op_readdir, 6),
            (self.op_slot_write, 6), (self.op_slot_read, 4), (self.op_version_replace, 4),
            (self.op_version_read, 6), (self.op_shared_readdir, 3), (self.op_shared_dir_churn, 3),
            (self.op_ro_read, 3),
        ]
        if self.only:
            ops = [(f, w) for f, w in ops if f.__name__[3:] in self.only]
        fns = [f for f, _ in ops]
        weights = [w for _, w in ops]
        n = 0
        while time.monotonic() < self.deadline:
            fn = self.rng.choices(fns, weights)[0]
            fn()
            n += 1
            self.counts[fn.__name__] = self.counts.get(fn.__name__, 0) + 1
            if len(self.files) > 300:
                # Keep the tree small: drop a few names.
                for _ in range(50):
                    self.op_unlink()
        # Final check of the whole private tree.
        for rel in sorted(self.files):
            self.verify_file(rel)
            self.verify_xattrs(rel)
        self.verify_dir("")
        for d in sorted(self.dirs):
            self.verify_dir(d)
        return n

    def model(self):
        ids = {}
        files = {}
        for rel, obj in sorted(self.files.items()):
            ids.setdefault(id(obj), len(ids))
            files[rel] = {
                "sha": hashlib.sha256(obj.data).hexdigest(), "size": len(obj.data),
                "mode": obj.mode, "link_group": ids[id(obj)],
                "xattrs": {k: v.hex() for k, v in obj.xattrs.items()},
            }
        return {"files": files, "dirs": sorted(self.dirs),
                "slots": {str(j): rec.decode() for j, rec in self.slot_last.items()}}


def worker_main(wid, merged, deadline, seed, workers_total, only, violations, results):
    counts = {}
    w = Worker(wid, merged, deadline, seed, violations, counts)
    try:
        n = w.run(workers_total, only)
    except SystemExit:
        n = -1
    except Exception as e:  # a bug in this script, or an error we did not expect
        violations.put(f"worker {wid}: crashed: {type(e).__name__}: {e}")
        n = -1
    results.put((wid, n, counts, w.model()))


# ---------------------------------------------------------------------------------------------
# sampling the daemon


def sample(pid):
    hwm = rss = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    return hwm, rss, fds


def check_slots(merged, workers, models, violations):
    """Quiesced: every slot holds its worker's last record, the rest is the lower's bytes."""
    for j in range(SHARED_LOWER):
        want = bytearray(lower_bytes(f"shared/l{j}", SHARED_SIZE))
        for wid in range(workers):
            rec = models.get(wid, {}).get("slots", {}).get(str(j))
            if rec is not None:
                want[wid * SLOT:(wid + 1) * SLOT] = rec.encode()
        with open(os.path.join(merged, "shared", f"l{j}"), "rb") as f:
            got = f.read()
        if got != bytes(want):
            bad = [w for w in range(workers)
                   if got[w * SLOT:(w + 1) * SLOT] != want[w * SLOT:(w + 1) * SLOT]]
            violations.append(f"shared/l{j}: final content wrong (slots of workers {bad}"
                              f"{', and outside the slots' if got[workers * SLOT:] != want[workers * SLOT:] else ''})")
    for j in range(SHARED_VERSIONED):
        with open(os.path.join(merged, "shared", f"v{j}"), "rb") as f:
            if not version_ok(f.read()):
                violations.append(f"shared/v{j}: final version torn")


def cmd_run(args):
    ctx = mp.get_context("fork")
    violations = ctx.Queue()
    results = ctx.Queue()
    deadline = time.monotonic() + args.seconds
    seed = args.seed
    procs = [ctx.Process(target=worker_main,
                         args=(w, args.merged, deadline, seed * 1000 + w, args.workers,
                               [o for o in args.ops.split(",") if o], violations, results))
             for w in range(args.workers)]
    base = sample(args.pid) if args.pid else None
    for p in procs:
        p.start()
    peak_fds = 0
    peak_rss = 0
    samples = []
    t0 = time.monotonic()
    collected = {}
    while any(p.is_alive() for p in procs) or len(collected) < args.workers:
        while not results.empty():
            wid, n, counts, model = results.get()
            collected[wid] = (n, counts, model)
        if args.pid:
            s = sample(args.pid)
            if s is None:
                print("stress: the daemon is gone!", file=sys.stderr)
                break
            peak_rss = max(peak_rss, s[1] or 0)
            peak_fds = max(peak_fds, s[2])
            samples.append((time.monotonic() - t0, s[2], s[1]))
        if time.monotonic() > deadline + 300:
            print("stress: workers did not finish 300 s after the deadline", file=sys.stderr)
            break
        if not any(p.is_alive() for p in procs) and results.empty():
            break
        time.sleep(0.2)
    while not results.empty():
        wid, n, counts, model = results.get()
        collected[wid] = (n, counts, model)
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    viol = []
    while not violations.empty():
        viol.append(violations.get())
    for w in range(args.workers):
        if w not in collected:
            viol.append(f"worker {w}: no result")
    models = {w: c[2] for w, c in collected.items()}
    try:
        check_slots(args.merged, args.workers, models, viol)
    except OSError as e:
        viol.append(f"final check of shared files: {e}")
    total = sum(max(c[0], 0) for c in collected.values())
    counts = {}
    for c in collected.values():
        for k, v in c[1].items():
            counts[k] = counts.get(k, 0) + v
    with open(args.model, "w") as f:
        json.dump({"workers": args.workers, "models": {str(k): v for k, v in models.items()}}, f)

    elapsed = time.monotonic() - t0
    print(f"stress: {args.workers} workers, {elapsed:.0f} s, {total} operations "
          f"({total / max(elapsed, 1):.0f}/s)")
    print("stress: ops " + ", ".join(f"{k[3:]}={v}" for k, v in sorted(counts.items())))
    if args.pid:
        # The daemon keeps O_PATH fds of live directories (a bounded cache), one per directory
        # and layer; beyond those and its base fds nothing may stay open once the workers are
        # done. Releases arrive asynchronously: give them a moment.
        dirs_alive = sum(len(ds) for _, ds, _ in os.walk(args.merged)) + 1
        allowed = (base[2] if base else 0) + 2 * dirs_alive + 16
        end = sample(args.pid)
        settle = time.monotonic() + 10
        while end and end[2] > allowed and time.monotonic() < settle:
            time.sleep(0.2)
            end = sample(args.pid)
        if end and end[2] > allowed:
            try:
                targets = sorted(os.readlink(f"/proc/{args.pid}/fd/{fd}")
                                 for fd in os.listdir(f"/proc/{args.pid}/fd"))
                print("stress: daemon fds after the run: " + "; ".join(targets[:60]),
                      file=sys.stderr)
            except OSError:
                pass
        # Fd growth: the busiest quarter at the start vs at the end of the run.
        q = max(len(samples) // 4, 1)
        early = max((s[1] for s in samples[:q]), default=0)
        late = max((s[1] for s in samples[-q:]), default=0)
        summary = {
            "baseline_fds": base[2] if base else None,
            "peak_fds": peak_fds,
            "fds_first_quarter_max": early,
            "fds_last_quarter_max": late,
            "peak_rss_kb_sampled": peak_rss,
            "vm_hwm_kb": end[0] if end else None,
            "rss_end_kb": end[1] if end else None,
            "fds_end": end[2] if end else None,
            "dirs_alive": dirs_alive,
            "fds_end_allowed": allowed,
        }
        print("stress: daemon " + ", ".join(f"{k}={v}" for k, v in summary.items()))
        with open(args.model + ".daemon.json", "w") as f:
            json.dump(summary, f)
    if viol:
        print(f"stress: {len(viol)} invariant violation(s); the first ones:", file=sys.stderr)
        for v in viol[:MAX_VIOLATIONS]:
            print("  " + v, file=sys.stderr)
        return 1
    return 0


def cmd_verify(args):
    """After a remount: the private trees and shared files are exactly as the models say."""
    with open(args.model) as f:
        saved = json.load(f)
    viol = []
    for wid_s, model in saved["models"].items():
        base = os.path.join(args.merged, "priv", f"w{wid_s}")
        inos = {}
        for rel, want in model["files"].items():
            path = os.path.join(base, rel)
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
                st = os.stat(path)
                xs = {n: os.getxattr(path, n).hex() for n in os.listxattr(path)
                      if n.startswith("user.")}
            except OSError as e:
                viol.append(f"w{wid_s}/{rel}: {e}")
                continue
            if hashlib.sha256(data).hexdigest() != want["sha"]:
                viol.append(f"w{wid_s}/{rel}: content differs after remount")
            if st.st_mode & 0o7777 != want["mode"]:
                viol.append(f"w{wid_s}/{rel}: mode {oct(st.st_mode & 0o7777)} != {oct(want['mode'])}")
            if xs != want["xattrs"]:
                viol.append(f"w{wid_s}/{rel}: xattrs {sorted(xs)} != {sorted(want['xattrs'])}")
            inos.setdefault(want["link_group"], set()).add(st.st_ino)
        for group, s in inos.items():
            if len(s) != 1:
                viol.append(f"w{wid_s}: hard-link group {group} has several st_ino after remount")
        expect_root = {r.partition("/")[0] for r in model["files"]} | set(model["dirs"])
        try:
            names = set(os.listdir(base))
        except OSError as e:
            viol.append(f"w{wid_s}: {e}")
            continue
        if names != expect_root:
            viol.append(f"w{wid_s}: readdir after remount: extra {sorted(names - expect_root)[:5]}, "
                        f"missing {sorted(expect_root - names)[:5]}")
        for d in model["dirs"]:
            want = {r.partition("/")[2] for r in model["files"] if r.partition("/")[0] == d
                    and "/" in r}
            got = set(os.listdir(os.path.join(base, d)))
            if got != want:
                viol.append(f"w{wid_s}/{d}: readdir after remount: extra {sorted(got - want)[:5]}, "
                            f"missing {sorted(want - got)[:5]}")
    models = {int(k): v for k, v in saved["models"].items()}
    try:
        check_slots(args.merged, saved["workers"], models, viol)
    except OSError as e:
        viol.append(f"shared files after remount: {e}")
    shared = os.listdir(os.path.join(args.merged, "shared"))
    if len(shared) != len(set(shared)):
        viol.append("readdir of shared has duplicates after remount")
    nfiles = sum(len(m["files"]) for m in saved["models"].values())
    if viol:
        print(f"stress: verify after remount: {len(viol)} violation(s):", file=sys.stderr)
        for v in viol[:MAX_VIOLATIONS]:
            print("  " + v, file=sys.stderr)
        return 1
    print(f"stress: verify after remount: {nfiles} private files, {len(saved['models'])} trees "
          f"and the shared files match the models")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("lower")
    s.add_argument("--workers", type=int, default=8)
    r = sub.add_parser("run")
    r.add_argument("merged")
    r.add_argument("--workers", type=int, default=8)
    r.add_argument("--seconds", type=float, default=180)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--pid", type=int, default=0)
    r.add_argument("--model", required=True)
    r.add_argument("--ops", default="",
                   help="only these operations (comma list of names as in the ops line)")
    v = sub.add_parser("verify")
    v.add_argument("merged")
    v.add_argument("--model", required=True)
    args = ap.parse_args()
    if args.cmd in ("setup", "run") and not 1 <= args.workers <= SHARED_SIZE // SLOT // 4:
        ap.error("--workers must be between 1 and 32")
    return {"setup": cmd_setup, "run": cmd_run, "verify": cmd_verify}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
