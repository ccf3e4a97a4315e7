"""The reproduction report: our figures and ratios beside the paper's, each traceable to a run.

Built from results/ alone. For each experiment of the registry the latest finished run is used;
every section names the run it came from (run id, git sha, dirty flag, accelerator, profile), so
a reader can open that run's results.json, raw repetitions and logs.
"""

from __future__ import annotations

from pathlib import Path

from common.files import atomic_write_text
from testbed.store import FINISHED_OK, all_runs, load_run, results_root
from workloads import registry
from workloads.contract import RunView

# LiteFlow (SIGCOMM 2022) abstract: versus the prior deployments. Each experiment that measures
# one of these says so through its headline_values.
PAPER_HEADLINES = [
    ("congestion control", "goodput", "+44.4%"),
    ("flow scheduling", "long-flow FCT", "-33.7%"),
    ("load balancing", "long-flow FCT", "-56.7%"),
]


def latest_runs(root: Path) -> dict[str, Path]:
    """experiment -> its latest run (by finish time) that finished as complete or passed."""
    finished = [load_run(path)[0] | {"path": path} for path in all_runs(root)]
    latest: dict[str, Path] = {}
    for metadata in sorted((m for m in finished if m.get("status") in FINISHED_OK), key=lambda m: m["finished"]):
        latest[metadata["experiment"]] = metadata["path"]
    return latest


def provenance(metadata: dict) -> str:
    dirty = " (dirty tree)" if metadata.get("git_dirty") else ""
    accel = metadata.get("accelerator")
    where = f", guest {metadata.get('kernel_release')} under {accel}" if accel else ""
    sha = (metadata.get("git_sha") or "unknown")[:10]
    return (f"run `{metadata['run_id']}` ({metadata.get('profile')} profile, {metadata.get('repetitions')} "
            f"repetitions), git {sha}{dirty}{where}")


def build_report(root: Path | None = None) -> Path:
    """Write results/REPORT.md (and regenerate each used run's figures); returns its path."""
    root = root or results_root()
    root.mkdir(parents=True, exist_ok=True)
    runs = latest_runs(root)
    sections: list[str] = []
    ours: dict[tuple[str, str], str] = {}
    for name in registry.names():
        if name not in runs:
            continue
        experiment = registry.load(name)
        metadata, results = load_run(runs[name])
        view = RunView(runs[name], metadata, results)
        for (function, metric), value in experiment.headline_values(view).items():
            ours[(function, metric)] = f"{value} ({name}, run `{metadata['run_id']}`)"
        sections += ["", f"## {experiment.title or name}", "", f"Source: {provenance(metadata)}.", ""]
        sections += experiment.section(view)
        for figure in experiment.figures(view):
            sections += ["", f"![{name}]({figure.relative_to(root)})"]
    lines = ["# LiteFlow Testbed: reproduction report", "",
             "Generated from `results/` only; every number names its run.", "",
             "## The paper's headline numbers", "",
             "| function | metric | LiteFlow vs prior deployments (paper) | ours |", "|---|---|---|---|"]
    for function, metric, paper in PAPER_HEADLINES:
        lines.append(f"| {function} | {metric} | {paper} | {ours.get((function, metric), 'not measured yet')} |")
    out = root / "REPORT.md"
    atomic_write_text(out, "\n".join(lines + sections) + "\n")
    return out
