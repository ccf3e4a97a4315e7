"""One figure function per experiment; each reads a run's results.json and writes into figures/.

Running and plotting are separate on purpose: a figure can be restyled or regenerated from any
past run without touching a VM, and every plotted number is the one recorded in that run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines this runs on
import matplotlib.pyplot as plt  # noqa: E402

from testbed.results import load_run  # noqa: E402


def engine_figure(run_path: Path) -> list[Path]:
    """ns per inference per network: user space on the host, and kernel vs user space in the guest."""
    metadata, results = load_run(run_path)
    names = [key.split("/", 1)[1] for key in results if key.startswith("userspace/")]
    if not names:
        return []
    host = [results[f"userspace/{n}"]["ns_per_inference"] for n in names]
    series = [("user space, host (median)", host)]
    kernel = [results.get(f"kernel/{n}", {}) for n in names]
    if any("kernel_ns_per_query" in k for k in kernel):  # a network without a kernel figure plots as a gap
        series.append(("user space, guest", [k.get("guest_userspace_ns_per_inference", 0) for k in kernel]))
        series.append(("in kernel, guest (BENCH)", [k.get("kernel_ns_per_query", 0) for k in kernel]))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(series)
    for index, (label, values) in enumerate(series):
        ax.bar([i + index * width for i in range(len(names))], values, width, label=label)
    macs = [results[f"userspace/{n}"]["macs"] for n in names]
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels([f"{n}\n{m:,} MACs" for n, m in zip(names, macs)])
    ax.set_yscale("log")
    ax.set_ylabel("ns per inference (log)")
    guest = metadata.get("guest", {})
    title = f"LiteFlow engine, run {metadata['run_id']}"
    if guest:
        title += f"\nguest: {guest.get('kernel_release')} under {guest.get('accelerator')}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return [_save(fig, run_path, "engine_ns_per_inference.png")]


def _save(fig, run_path: Path, name: str) -> Path:
    fig.tight_layout()
    out = run_path / "figures" / name
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def overhead_figure(run_path: Path) -> list[Path]:
    """Left: kernel query vs user-space round trip (log). Right: update latency by step, both ways."""
    metadata, results = load_run(run_path)
    if "round_trip" not in results:
        return []
    trip = results["round_trip"]
    panels = 2 if "update_latency" in results else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    left = axes[0][0]
    values = [trip["kernel_ns_per_query"], trip["user_round_trip_ns_per_query"]]
    left.bar(["LiteFlow\n(in kernel)", "user-space\nround trip"], values, color=["tab:green", "tab:red"])
    left.set_yscale("log")
    left.set_ylim(bottom=min(values) / 10)  # a log axis cut just under a bar hides its height
    left.set_ylabel("ns per query (log)")
    left.set_title(f"per-query cost: user space is {trip['ratio']:.0f}x the kernel", fontsize=9)
    if panels == 2:
        right = axes[0][1]
        updates = results["update_latency"]
        kinds = ["hot", "module"]
        steps = sorted({step for kind in kinds for step in updates[kind]["median_steps_ms"]})
        bottoms = [0.0, 0.0]
        for step in steps:
            heights = [updates[kind]["median_steps_ms"].get(step, 0.0) for kind in kinds]
            right.bar(["hot weight load", "generate + make\n+ insmod"], heights, bottom=bottoms, label=step)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        right.set_yscale("log")
        right.set_ylim(bottom=min(bottoms) / 10)
        right.set_ylabel("ms per update, median (log)")
        right.set_title("snapshot update latency by step", fontsize=9)
        right.legend(fontsize=8)
    fig.suptitle(f"LiteFlow overhead, run {metadata['run_id']} ({metadata.get('kernel_release')}, "
                 f"{metadata.get('accelerator')})", fontsize=9)
    return [_save(fig, run_path, "overhead.png")]


FIGURES: dict[str, Callable[[Path], list[Path]]] = {
    "engine": engine_figure,
    "overhead": overhead_figure,
}


def figures_for(run_path: Path) -> list[Path]:
    """Regenerate the figures of one run (nothing for experiments without a figure)."""
    metadata, _ = load_run(run_path)
    make = FIGURES.get(metadata["experiment"])
    return make(run_path) if make else []
