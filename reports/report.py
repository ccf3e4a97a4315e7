"""The reproduction report: our figures and ratios beside the paper's, each traceable to a run.

Built from results/ alone. For each experiment of the registry and each guest kernel it ran on,
the latest finished run is used: the run on the data file's kernel first, then one section per
other kernel (`invoke bench overhead --kernel linux-4.15` puts the paper's kernel next to 6.1).
Every section names the run it came from (run id, git sha, dirty flag, accelerator, profile), so
a reader can open that run's results.json, raw repetitions and logs. The headline table uses the
data file's kernel only.
"""

from __future__ import annotations

from pathlib import Path

from common.files import atomic_write_text
from testbed.store import FINISHED_OK, all_runs, load_run, results_root
from workloads import registry
from workloads.contract import RunView, experiment_path, read_toml

# LiteFlow (SIGCOMM 2022) abstract: versus the prior deployments. Each experiment that measures
# one of these says so through its headline_values.
PAPER_HEADLINES = [
    ("congestion control", "goodput", "+44.4%"),
    ("flow scheduling", "long-flow FCT", "-33.7%"),
    ("load balancing", "long-flow FCT", "-56.7%"),
]


def run_kernel(metadata: dict) -> str | None:
    """The guest kernel a run asked for (its config's `kernel`, else the guest's), None if unsaid."""
    return (metadata.get("config") or {}).get("kernel") or metadata.get("guest_kernel")


def latest_runs(root: Path) -> dict[tuple[str, str | None], Path]:
    """(experiment, kernel) -> the latest run (by finish time) that finished as complete or passed,
    a full-profile one if there is any: a quick profile (what CI runs) is a check of the path, not
    a measurement, and one run after a full one must not take its place in the report. A run that
    names no kernel counts as its data file's."""
    finished = [load_run(path)[0] | {"path": path} for path in all_runs(root)]
    latest: dict[tuple[str, str | None], Path] = {}
    for metadata in sorted((m for m in finished if m.get("status") in FINISHED_OK),
                           key=lambda m: (m.get("profile") == "full", m["finished"])):
        latest[(metadata["experiment"], run_kernel(metadata))] = metadata["path"]
    return latest


def data_file_kernel(name: str) -> str:
    """The kernel an experiment's data file names (what `invoke bench NAME` runs on)."""
    return read_toml(experiment_path(name)).get("kernel", "debian-6.1")


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
        default = data_file_kernel(name)
        by_kernel: dict[str, Path] = {}
        for (experiment_name, kernel), path in runs.items():
            if experiment_name == name:  # a run naming no kernel and one naming the default: the later
                key = kernel or default
                if key not in by_kernel or load_run(path)[0]["finished"] > load_run(by_kernel[key])[0]["finished"]:
                    by_kernel[key] = path
        if not by_kernel:
            continue
        experiment = registry.load(name)
        for kernel in sorted(by_kernel, key=lambda k: (k != default, k)):
            path = by_kernel[kernel]
            metadata, results = load_run(path)
            view = RunView(path, metadata, results)
            if kernel == default:
                for (function, metric), value in experiment.headline_values(view).items():
                    ours[(function, metric)] = f"{value} ({name}, run `{metadata['run_id']}`)"
            title = experiment.title or name
            sections += ["", f"## {title}" if kernel == default else f"## {title}, on {kernel}", "",
                         f"Source: {provenance(metadata)}.", ""]
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
