#!/usr/bin/env python3
"""Draws the overload scenarios' figures (docs/overload.md) from a results directory.

Usage: plot.py RESULTS_DIR OUT_DIR
Reads the CSV time series bench/overload/run.sh left in RESULTS_DIR (overload_load --series and
--windows) and writes OUT_DIR/overload-{crowd,flood,hot,2x}.png, skipping missing scenarios.
"""

import csv
import glob
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def col(rows, name):
    return [float(r[name]) for r in rows]


def shade_phases(ax, rows, label=True):
    """Shades every other phase; with `label`, names each at the top."""
    start, name, shade = 0.0, None, False
    spans = []
    for r in rows:
        t = float(r["t_s"])
        if r["phase"] != name:
            if name is not None:
                spans.append((start, t, name))
            start, name = t - 0.5, r["phase"]
    if name is not None:
        spans.append((start, float(rows[-1]["t_s"]), name))
    for a, b, n in spans:
        if shade:
            ax.axvspan(a, b, color="0.92", zorder=0)
        shade = not shade
        if label:
            ax.text((a + b) / 2, 1.0, n, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8)


def window_extremes(path):
    """Per window end (seconds since the run started): the fewest admitted among users whose
    demand exceeded the limit in it (they had a refusal), and the most admitted by any user."""
    low, high = {}, {}
    for r in read_csv(path):
        t, admitted = float(r["t_s"]), int(r["admitted"])
        high[t] = max(high.get(t, 0), admitted)
        if int(r["refused"]) > 0:
            low[t] = min(low.get(t, admitted), admitted)
    # The first and the last window are partly outside the run: leave them out.
    return [(t, low.get(t), high[t]) for t in sorted(high)[1:-1]]


def latency_axis(ax, rows):
    t = col(rows, "t_s")
    ax.plot(t, col(rows, "p50_ms"), label="p50")
    ax.plot(t, col(rows, "p99_ms"), label="p99")
    ax.set_yscale("log")
    ax.set_ylabel("latency per 0.5 s (ms)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)


def rate_axis(ax, rows):
    t = col(rows, "t_s")
    ax.plot(t, [v / 1e3 for v in col(rows, "offered_rps")], label="offered", linestyle="--")
    ax.plot(t, [v / 1e3 for v in col(rows, "rps")], label="answered")
    ax.set_ylabel("checks/s (thousands)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)


def tracked_axis(ax, windows_csv, limit=10):
    if not os.path.exists(windows_csv):
        return
    ext = window_extremes(windows_csv)
    if not ext:
        return
    lows = [(e[0], e[1]) for e in ext if e[1] is not None]
    ax.plot([x for x, _ in lows], [y for _, y in lows], marker=".", linestyle="",
            label="fewest admitted (users with a refusal)")
    ax.plot([e[0] for e in ext], [e[2] for e in ext], marker="x", linestyle="",
            label="most admitted (any user)")
    ax.axhline(limit, color="red", linewidth=0.8, label=f"limit {limit}")
    ax.set_ylim(0, limit * 2)
    ax.set_ylabel("tracked: admitted per 1 s window")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)


def plot_crowd(res, out):
    path = os.path.join(res, "crowd.csv")
    if not os.path.exists(path):
        return
    rows = read_csv(path)
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    rate_axis(axes[0], rows)
    axes[0].set_title("Flash crowd: normal, 100x normal, normal", pad=14)
    latency_axis(axes[1], rows)
    tracked_axis(axes[2], os.path.join(res, "crowd-windows.csv"))
    for i, ax in enumerate(axes):
        shade_phases(ax, rows, label=i == 0)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overload-crowd.png"), dpi=90)


def plot_flood(res, out):
    path = os.path.join(res, "flood.csv")
    if not os.path.exists(path):
        return
    rows = read_csv(path)
    t = col(rows, "t_s")
    mib = 1024 * 1024
    cap = 268435456
    cap_path = os.path.join(res, "flood-cap.txt")
    if os.path.exists(cap_path):
        with open(cap_path) as f:
            cap = int(f.read().strip())
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    axes[0].plot(t, [v / 1e3 for v in col(rows, "rps")], label="answered (new keys + tracked)")
    axes[0].set_ylabel("checks/s (thousands)")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[0].grid(True, alpha=0.3)
    axes[0].set_title(f"Key flood: new keys against --max-memory {cap // mib} MiB", pad=14)
    axes[1].plot(t, [v * 1024 / mib for v in col(rows, "rss_kb")], label="RSS (VmRSS)")
    axes[1].plot(t, [v / mib for v in col(rows, "store_bytes")], label="store tables")
    summary = os.path.join(res, "flood.txt")
    if os.path.exists(summary):
        with open(summary) as f:
            for line in f:
                if line.startswith("total "):
                    hwm = dict(kv.split("=", 1) for kv in line.split()[1:]).get("hwm_kb")
                    if hwm:
                        peak = float(hwm) / 1024
                        axes[1].axhline(peak, color="C0", linestyle=":", linewidth=0.8,
                                        label=f"VmHWM (peak RSS) {peak:.1f} MiB")
    axes[1].axhline(cap / mib, color="red", linewidth=0.8, label=f"--max-memory {cap // mib} MiB")
    axes[1].set_ylabel("MiB")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[1].grid(True, alpha=0.3)
    axes[2].plot(t, [v / 1e6 for v in col(rows, "store_keys")], label="live keys")
    axes[2].plot(t, [v / 1e6 for v in col(rows, "evicted")], label="evicted (total)")
    axes[2].set_ylabel("millions")
    axes[2].legend(loc="upper left", fontsize=8)
    axes[2].grid(True, alpha=0.3)
    tracked_axis(axes[3], os.path.join(res, "flood-windows.csv"))
    for i, ax in enumerate(axes):
        shade_phases(ax, rows, label=i == 0)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overload-flood.png"), dpi=90)


def summary_line(path):
    with open(path) as f:
        for line in f:
            if line.startswith("phase="):
                return dict(kv.split("=", 1) for kv in line.split())
    return None


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def plot_hot(res, out):
    modes = ["spread", "hot", "hot-limited"]
    labels = ["100k keys", "90% on one key\n(allowed)", "90% on one key\n(over its limit)"]
    peak, p99_open = [], []
    for m in modes:
        closed = [summary_line(p) for p in glob.glob(os.path.join(res, f"hot-{m}-closed-*.txt"))]
        opened = [summary_line(p) for p in glob.glob(os.path.join(res, f"hot-{m}-open-*.txt"))]
        closed = [c for c in closed if c]
        opened = [o for o in opened if o]
        if not closed or not opened:
            return
        peak.append(median([float(c["rps"]) for c in closed]) / 1e3)
        p99_open.append(median([float(o["p99_ms"]) for o in opened]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar(labels, peak, color=["C0", "C1", "C2"])
    axes[0].set_ylabel("closed-loop peak, checks/s (thousands)")
    axes[0].set_title("Peak rate (median)")
    for i, v in enumerate(peak):
        axes[0].text(i, v, f"{v:.0f}k\n{v / peak[0]:.2f}x", ha="center", va="bottom", fontsize=8)
    axes[0].set_ylim(0, max(peak) * 1.25)
    axes[1].bar(labels, p99_open, color=["C0", "C1", "C2"])
    axes[1].set_ylabel("p99 (ms)")
    axes[1].set_title("p99, open loop at half the spread peak (median)")
    for i, v in enumerate(p99_open):
        axes[1].text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    axes[1].set_ylim(0, max(p99_open) * 1.25)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("Hot key against spread keys")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overload-hot.png"), dpi=90)


def plot_2x(res, out):
    path = os.path.join(res, "overload.csv")
    if not os.path.exists(path):
        return
    rows = read_csv(path)
    t = col(rows, "t_s")
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    rate_axis(axes[0], rows)
    if "overflow" in rows[0] and sum(col(rows, "overflow")) > 0:
        axes[0].plot(t, [a / 0.5 / 1e3 for a in col(rows, "overflow")],
                     label="failed at once by the callers", color="C3")
    else:
        axes[0].plot(t, [a / 0.5 / 1e3 for a in col(rows, "abandoned")],
                     label="abandoned after 20 ms", color="C3")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[0].set_title("Open loop at 2x capacity (server on one core)", pad=14)
    latency_axis(axes[1], rows)
    axes[1].axhline(5, color="red", linewidth=0.8)
    axes[2].plot(t, col(rows, "server_cpu"), label="server CPU (cores)")
    if "driver_cpu" in rows[0]:
        axes[2].plot(t, col(rows, "driver_cpu"), label="load driver (cores)")
    axes[2].plot(t, col(rows, "other_cpu"), label="rest of the machine (cores)")
    axes[2].set_ylim(0, 2.1)
    axes[2].set_ylabel("cores")
    axes[2].legend(loc="upper left", fontsize=8)
    axes[2].grid(True, alpha=0.3)
    for i, ax in enumerate(axes):
        shade_phases(ax, rows, label=i == 0)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overload-2x.png"), dpi=90)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    res, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    plot_crowd(res, out)
    plot_flood(res, out)
    plot_hot(res, out)
    plot_2x(res, out)
    print(f"plots in {out}")


if __name__ == "__main__":
    main()
