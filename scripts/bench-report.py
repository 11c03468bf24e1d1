#!/usr/bin/env python3
"""Summarises a scripts/bench.sh run: medians per system and the median of the paired,
per-repetition ratios unionfs-rs / kernel overlayfs, unionfs-rs / fuse-overlayfs (1.x, C) and,
when it ran, unionfs-rs / fuse-overlayfs 2.0 (the Rust rewrite) and unionfs-rs / baseline.

Reads OUT/raw.tsv (workload, system, rep, seconds|MiB|fail), OUT/workloads.tsv (id, label,
unit), OUT/counts.tsv (output lines of the walks, compared with native as a sanity check) and
OUT/machine.txt; writes OUT/table.md (also printed) and OUT/chart.png when matplotlib is there.
Ratios are of times (or of memory for RSS): above 1 means unionfs-rs is slower (or bigger).
Usage: bench-report.py OUT
"""

import os
import statistics
import sys

# Systems shown only when the run had them (raw.tsv files from before fovlrs have neither).
OPTIONAL = {"fovlrs", "base"}

SYSTEMS = [
    ("native", "native"),
    ("kovl", "kernel overlayfs"),
    ("fovl", "fuse-overlayfs"),
    ("fovlrs", "fuse-overlayfs 2.0 (Rust)"),
    ("base", "unionfs-rs baseline"),
    ("urs", "unionfs-rs"),
]


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def load(out):
    workloads = [(w[0], w[1], w[2]) for w in read_tsv(os.path.join(out, "workloads.tsv"))]
    values, failed = {}, set()
    for wl, sys_, rep, v in read_tsv(os.path.join(out, "raw.tsv")):
        if v == "fail":
            failed.add((wl, sys_))
        else:
            values.setdefault((wl, sys_), {})[int(rep)] = float(v)
    counts = {}
    for wl, sys_, rep, n in read_tsv(os.path.join(out, "counts.tsv")):
        counts.setdefault((wl, sys_), set()).add(n)
    return workloads, values, failed, counts


def shown(unit, seconds):
    """A median in the workload's unit."""
    if unit.startswith("GB/s"):
        size = int(unit.split(":")[1])
        return f"{size / seconds / 1e9:.2f} GB/s"
    if unit == "ms":
        return f"{seconds * 1000:.2f} ms"
    if unit == "MiB":
        return f"{seconds:.0f} MiB"
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def paired_ratio(values, wl, ref):
    mine, theirs = values.get((wl, "urs"), {}), values.get((wl, ref), {})
    ratios = [mine[r] / theirs[r] for r in mine if r in theirs and theirs[r] > 0]
    return statistics.median(ratios) if ratios else None


def summarise(out):
    workloads, values, failed, counts = load(out)
    present = {s for (_, s) in list(values) + list(failed)}
    systems = [(s, name) for s, name in SYSTEMS if s in present or s not in OPTIONAL]
    refs = [("kovl", "unionfs-rs / kernel"), ("fovl", "unionfs-rs / fuse-overlayfs")]
    if "fovlrs" in present:
        refs.append(("fovlrs", "unionfs-rs / fuse-overlayfs 2.0"))
    if "base" in present:
        refs.append(("base", "unionfs-rs / baseline"))
    header = ["workload"] + [name for _, name in systems] + [label for _, label in refs]
    rows, chart, notes = [], [], []
    for wl, label, unit in workloads:
        if not any((wl, s) in values or (wl, s) in failed for s, _ in systems):
            continue
        native_counts = counts.get((wl, "native"))
        cells = [label]
        for s, name in systems:
            v = values.get((wl, s))
            if v:
                cell = shown(unit, statistics.median(v.values()))
                if native_counts and counts.get((wl, s)) and counts[(wl, s)] != native_counts:
                    cell += " (!)"
                    notes.append(f"{name} showed {sorted(counts[(wl, s)])} entries for '{label}', native {sorted(native_counts)}")
                if (wl, s) in failed:
                    cell += " (some runs failed)"
            else:
                cell = "fail" if (wl, s) in failed else "-"
            cells.append(cell)
        ratios = [paired_ratio(values, wl, ref) for ref, _ in refs]
        cells += ["-" if r is None else f"{r:.2f}" for r in ratios]
        rows.append(cells)
        chart.append((label, dict(zip((ref for ref, _ in refs), ratios))))
    lines = []
    machine = os.path.join(out, "machine.txt")
    if os.path.exists(machine):
        with open(machine) as f:
            lines += [f"    {line.rstrip()}" for line in f] + [""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines.append("Medians over the repetitions; ratios are medians of per-repetition ratios of times "
                 "(of memory for RSS); below 1 means unionfs-rs is faster (smaller).")
    for n in notes:
        lines.append(f"- (!) {n}")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table)
    print(table)
    draw(out, chart, [ref for ref, _ in refs])


# The chart's series (the baseline ratio stays in the table only).
SERIES = [
    ("kovl", "vs kernel overlayfs", "#4477aa"),
    ("fovl", "vs fuse-overlayfs", "#ee6677"),
    ("fovlrs", "vs fuse-overlayfs 2.0 (Rust)", "#228833"),
]


def draw(out, chart, refs):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no chart: matplotlib is not installed)", file=sys.stderr)
        return
    labels = [c[0] for c in chart]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(labels) + 1.5))
    ys = range(len(labels))
    series = [s for s in SERIES if s[0] in refs]
    height = 0.76 / len(series)
    for k, (ref, name, color) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * height
        xs = [c[1][ref] if c[1][ref] is not None else 0 for c in chart]
        ax.barh([y + offset for y in ys], xs, height=height * 0.95, label=f"unionfs-rs {name}", color=color)
        for y, x in zip(ys, xs):
            if x:
                ax.text(x * 1.03, y + offset, f"{x:.2f}", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(1.5, color="gray", linewidth=0.8, linestyle="--", label="target vs kernel (metadata): 1.5")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time ratio (log scale): < 1 means unionfs-rs is faster")
    ax.set_title("unionfs-rs relative to kernel overlayfs and fuse-overlayfs (median paired ratios)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = os.path.join(out, "chart.png")
    fig.savefig(path, dpi=110)
    print(f"chart: {path}", file=sys.stderr)


if __name__ == "__main__":
    summarise(sys.argv[1])
