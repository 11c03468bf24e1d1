#!/usr/bin/env python3
"""Generates the datasets of scripts/bench.sh (deterministic, root needed for whiteouts).

Each dataset DIR gets:
  DIR/layers/0 .. DIR/layers/N-1   the lowers, 0 topmost (named by number so that kernel
                                    overlayfs can take 500 of them as relative paths within the
                                    4 KiB mount-option limit)
  DIR/native                        the merged view as one plain tree (the "native" column)
  DIR/expect                        number of entries `find native` prints, for a sanity check
Usage: bench-gen.py DATASET OUTDIR key=value...
"""

import os
import random
import sys


def write(path, size, rnd):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        if size:
            f.write(rnd.randbytes(size))


def whiteout(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))


def layer(out, i):
    return os.path.join(out, "layers", str(i))


def count_entries(root):
    n = 1
    for _, dirs, files in os.walk(root):
        n += len(dirs) + len(files)
    return n


def gen_tree3(out, files):
    """3 layers sharing every directory (all merged); files spread over the layers; the top
    layer whites out one bottom-layer file in every tenth directory."""
    rnd = random.Random(1)
    per_dir = 10
    dirs = max(1, files // per_dir)
    top = max(1, dirs // 100)
    for d in range(dirs):
        rel = f"d{d % top:03d}/s{d // top:03d}"
        for i in range(3):
            os.makedirs(os.path.join(layer(out, i), rel), exist_ok=True)
        for j in range(per_dir):
            name = f"f{j}"
            i = j % 3
            write(os.path.join(layer(out, i), rel, name), 64, rnd)
            hidden = d % 10 == 0 and j == 2  # f2 lives in layer 2
            if hidden:
                whiteout(os.path.join(layer(out, 0), rel, name))
            else:
                write(os.path.join(out, "native", rel, name), 64, rnd)


def gen_bigdir(out, entries):
    """One directory whose entries alternate between two layers."""
    rnd = random.Random(2)
    for i in range(2):
        os.makedirs(os.path.join(layer(out, i), "big"), exist_ok=True)
    for e in range(entries):
        name = f"entry-{e:06d}"
        write(os.path.join(layer(out, e % 2), "big", name), 16, rnd)
        write(os.path.join(out, "native", "big", name), 16, rnd)


def gen_rmtree(out, files):
    """A tree that lives entirely in the (only) lower."""
    rnd = random.Random(3)
    per_dir = 100
    for f in range(files):
        rel = f"tree/d{f // per_dir:04d}/f{f % per_dir:03d}"
        write(os.path.join(layer(out, 0), rel), 128, rnd)
        write(os.path.join(out, "native", rel), 128, rnd)


def gen_untar(out, files):
    """A tarball of small files, and an empty-ish lower with the destination directory."""
    import tarfile

    rnd = random.Random(4)
    src = os.path.join(out, "src")
    for f in range(files):
        write(os.path.join(src, f"pkg/d{f // 100:04d}/f{f % 100:03d}"), rnd.randrange(0, 4096), rnd)
    os.makedirs(os.path.join(layer(out, 0), "dest"), exist_ok=True)
    os.makedirs(os.path.join(out, "native", "dest"), exist_ok=True)
    with tarfile.open(os.path.join(out, "small.tar"), "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(src, arcname="pkg")


def gen_many(out, layers):
    """A deep stack: every layer has shared/sub (merged through all of them) with 10 files of
    its own; only the bottom layer has shared/sub/bottom_only."""
    rnd = random.Random(5)
    for i in range(layers):
        for j in range(10):
            write(os.path.join(layer(out, i), f"shared/sub/l{i}_{j}"), 32, rnd)
            write(os.path.join(out, "native", f"shared/sub/l{i}_{j}"), 32, rnd)
    write(os.path.join(layer(out, layers - 1), "shared/sub/bottom_only"), 32, rnd)
    write(os.path.join(out, "native", "shared/sub/bottom_only"), 32, rnd)


def gen_big(out, mib):
    """One big incompressible file in the only lower (copy-up, chmod, sequential read)."""
    path = os.path.join(layer(out, 0), "big")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    # Native only ever reads it: a hard link, not a second copy.
    os.makedirs(os.path.join(out, "native"), exist_ok=True)
    os.link(path, os.path.join(out, "native", "big"))


GENERATORS = {
    "big": (gen_big, "mib"),
    "tree3": (gen_tree3, "files"),
    "bigdir": (gen_bigdir, "entries"),
    "rmtree": (gen_rmtree, "files"),
    "untar": (gen_untar, "files"),
    "many": (gen_many, "layers"),
}


def main():
    kind, out = sys.argv[1], sys.argv[2]
    params = dict(a.split("=", 1) for a in sys.argv[3:])
    gen, key = GENERATORS[kind]
    gen(out, int(params[key]))
    native = os.path.join(out, "native")
    with open(os.path.join(out, "expect"), "w") as f:
        f.write(f"{count_entries(native)}\n")


if __name__ == "__main__":
    main()
