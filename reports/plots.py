"""Plotting and formatting helpers every experiment's figures and report section share.

Figures read a recorded run only (running never plots), and every plotted value is a median with
its spread over repetitions drawn as an error bar from the minimum to the maximum, so a reader
sees how noisy the machine was, not one lucky number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines this runs on
import matplotlib.pyplot as plt  # noqa: E402

from workloads.contract import RunView  # noqa: E402


def title(what: str, view: RunView) -> str:
    metadata = view.metadata
    text = f"{what}, run {metadata['run_id']} (n = {metadata.get('repetitions')})"
    if metadata.get("kernel_release"):
        text += f"\nguest: {metadata['kernel_release']} under {metadata.get('accelerator')}"
    return text


def grouped_bars(labels: Sequence[str], series: dict[str, Sequence[dict[str, Any] | None]], *, ylabel: str,
                 log: bool = False, figsize: tuple[float, float] = (7, 4), ax=None):
    """One group of bars per label, one bar per series: medians, with min-max error bars.
    Draws on `ax` when given (a panel of a larger figure), else on a new figure."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    width = 0.8 / max(len(series), 1)
    lowest = float("inf")
    for index, (name, spreads) in enumerate(series.items()):
        xs = [i + index * width for i in range(len(labels))]
        medians = [s["median"] if s and s.get("median") is not None else 0.0 for s in spreads]
        below = [m - s["min"] if s and s.get("median") is not None else 0.0 for m, s in zip(medians, spreads)]
        above = [s["max"] - m if s and s.get("median") is not None else 0.0 for m, s in zip(medians, spreads)]
        ax.bar(xs, medians, width, yerr=[below, above], capsize=3, label=name)
        lowest = min([lowest, *(s["min"] for s in spreads if s and s.get("min"))])
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))])
    ax.set_xticklabels(labels)
    if log and lowest != float("inf"):
        ax.set_yscale("log")
        ax.set_ylim(bottom=lowest / 10)  # a log axis cut just under a bar hides its height
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig, ax


def save(fig, view: RunView, name: str) -> Path:
    fig.tight_layout()
    out = view.figures_dir / name
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def cell(value: dict[str, Any] | None, fmt: str) -> str:
    """A spread as 'median [min–max]' for a report table (the median alone when there is no spread);
    '-' when not measured."""
    if not value or value.get("median") is None:
        return "-"
    if value["n"] == 1 or value["min"] == value["max"]:
        return format(value["median"], fmt)
    return f"{value['median']:{fmt}} [{value['min']:{fmt}}–{value['max']:{fmt}}]"
