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
    if any("kernel_ns_per_query" in k for k in kernel):  # a skipped network plots as a gap
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
    fig.tight_layout()
    out = run_path / "figures" / "engine_ns_per_inference.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [out]


FIGURES: dict[str, Callable[[Path], list[Path]]] = {
    "engine": engine_figure,
}


def figures_for(run_path: Path) -> list[Path]:
    """Regenerate the figures of one run (nothing for experiments without a figure)."""
    metadata, _ = load_run(run_path)
    make = FIGURES.get(metadata["experiment"])
    return make(run_path) if make else []
