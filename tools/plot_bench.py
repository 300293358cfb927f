#!/usr/bin/python3
"""Plots `edgelm bench --json` results: decode speed vs model size, and (when the
bench measured quality with --quality-text/--base) KL divergence vs size.

    tools/plot_bench.py results.json plot.png

Needs Debian's python3-matplotlib (headless Agg backend).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(row):
    name = os.path.basename(row["model"].rstrip("/"))
    return f'{name} ({"+".join(row["dtypes"])})'


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        results = json.load(f)
    rows = results["rows"]
    if not rows:
        sys.exit("plot_bench: no rows in " + sys.argv[1])
    quality = all("mean_kld" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if quality else 1, figsize=(13 if quality else 7, 5))
    if not quality:
        axes = [axes]

    ax = axes[0]
    for threads in sorted({r["threads"] for r in rows}):
        sel = [r for r in rows if r["threads"] == threads]
        xs = [r["file_bytes"] / 2**20 for r in sel]
        ys = [r["decode_tokens_per_second"] for r in sel]
        ax.plot(xs, ys, "o", label=f"{threads} thread(s)")
        for r, x, y in zip(sel, xs, ys):
            ax.annotate(f'{label(r)}\n{r["roofline_fraction"]*100:.0f}% roofline', (x, y),
                        fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("model size (MiB)")
    ax.set_ylabel("decode tokens/s")
    ax.set_title(f'decode speed vs size ({results["isa"]}, KV {results["kv_type"]})')
    ax.grid(True, alpha=0.3)
    ax.legend()

    if quality:
        ax = axes[1]
        seen = set()
        for r in rows:
            if r["model"] in seen:
                continue
            seen.add(r["model"])
            x = r["file_bytes"] / 2**20
            ax.plot(x, max(r["mean_kld"], 1e-6), "s")
            ax.annotate(f'{label(r)}\ntop-1 {r["top1_agreement"]*100:.1f}%', (x, max(r["mean_kld"], 1e-6)),
                        fontsize=7, textcoords="offset points", xytext=(4, 4))
        ax.set_yscale("log")
        ax.set_xlabel("model size (MiB)")
        ax.set_ylabel("mean KL divergence vs base (log)")
        ax.set_title("quality vs size")
        ax.grid(True, alpha=0.3)

    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)
    print(f"plot_bench: wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
