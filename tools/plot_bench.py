#!/usr/bin/python3
"""Plots `edgelm bench --json` results: decode speed vs model size beside the
memory-bandwidth roofline of each row, one panel per model (all quantized files
of one checkpoint together, so the speed-up per byte saved shows as a slope),
and, when the bench measured quality (--quality-text/--base), KL divergence vs
size.

    tools/plot_bench.py results.json plot.png

Needs Debian's python3-matplotlib (headless Agg backend).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]


def short_type(row):
    """The file's main type, e.g. "q4_0" for q4_0+q8_0 (the first listed is the most common)."""
    return row["dtypes"][0].lower() if row["dtypes"] else "?"


def family(row):
    """Rows of one checkpoint: the bench's model name, else the file name without its type."""
    name = row.get("name") or os.path.basename(row["model"].rstrip("/"))
    return name.replace("random ", "")


def speed_panel(ax, rows, thread_counts):
    for i, threads in enumerate(thread_counts):
        sel = sorted((r for r in rows if r["threads"] == threads), key=lambda r: r["file_bytes"])
        if not sel:
            continue
        color = COLORS[i % len(COLORS)]
        xs = [r["file_bytes"] / 2**20 for r in sel]
        ys = [r["decode_tokens_per_second"] for r in sel]
        roof = [r["decode_tokens_per_second"] / max(r["roofline_fraction"], 1e-9) for r in sel]
        ax.plot(xs, ys, "o-", color=color, label=f"{threads} thread(s)")
        ax.plot(xs, roof, "_", color=color, markersize=14, markeredgewidth=2, alpha=0.6,
                label=f"roofline, {threads} thread(s)")
        same_size = {}  # files of equal size (q4_0 / q4_k mixes): stack their labels
        for r, x, y in zip(sel, xs, ys):
            k = same_size.setdefault(round(x), 0)
            same_size[round(x)] += 1
            ax.annotate(f'{short_type(r)} {r["roofline_fraction"]*100:.0f}%', (x, y), fontsize=7,
                        textcoords="offset points", xytext=(5, (-10 if i % 2 else 4) - 9 * k),
                        color=color)
    ax.set_xlabel("file size (MiB)")
    ax.set_ylabel("decode tokens/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        results = json.load(f)
    rows = results["rows"]
    if not rows:
        sys.exit("plot_bench: no rows in " + sys.argv[1])
    families = sorted({family(r) for r in rows}, key=lambda n: min(
        r["file_bytes"] for r in rows if family(r) == n))
    thread_counts = sorted({r["threads"] for r in rows})
    quality = all("mean_kld" in r for r in rows)
    panels = len(families) + (1 if quality else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.6), squeeze=False)
    axes = axes[0]
    for ax, name in zip(axes, families):
        speed_panel(ax, [r for r in rows if family(r) == name], thread_counts)
        ax.set_title(name)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f'decode speed vs size, and the roofline (dashes) '
                 f'({results["isa"]}, KV {results["kv_type"]}, labels: main type and % of roofline)',
                 fontsize=10)

    if quality:
        ax = axes[-1]
        seen = set()
        for r in rows:
            if r["model"] in seen:
                continue
            seen.add(r["model"])
            x = r["file_bytes"] / 2**20
            y = max(r["mean_kld"], 1e-6)
            ax.plot(x, y, "s", color="tab:gray")
            name = f"{family(r)} {short_type(r)}" if len(families) > 1 else short_type(r)
            ax.annotate(f'{name}\ntop-1 {r["top1_agreement"]*100:.1f}%', (x, y),
                        fontsize=7, textcoords="offset points", xytext=(4, 4))
        ax.set_yscale("log")
        ax.set_xlabel("file size (MiB)")
        ax.set_ylabel("mean KL divergence vs base (log)")
        ax.set_title("quality vs size")
        ax.grid(True, alpha=0.3)

    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)
    print(f"plot_bench: wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
