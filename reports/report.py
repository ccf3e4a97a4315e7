"""The reproduction report: our figures and ratios beside the paper's, each traceable to a run.

Built from results/ alone. For each experiment the latest finished run is used; every number in
the report names the run it came from (run id, git sha, dirty flag, accelerator), so a reader
can open that run's results.json and logs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from reports.figures import figures_for
from testbed.results import atomic_write_text, load_run, results_root

# LiteFlow (SIGCOMM 2022) abstract: versus the prior deployments.
PAPER_HEADLINES = [
    ("congestion control", "goodput", "+44.4%", "cc-interval / cc-concurrency"),
    ("flow scheduling", "long-flow FCT", "-33.7%", "fs-fct"),
    ("load balancing", "long-flow FCT", "-56.7%", "lb-fct"),
]


def latest_runs(root: Path) -> dict[str, Path]:
    """experiment -> its latest run (by finish time) that finished as complete or passed."""
    latest: dict[str, Path] = {}
    finished = [p for p in root.iterdir() if (p / "metadata.json").is_file()]
    for path in sorted(finished, key=lambda p: (p / "metadata.json").stat().st_mtime_ns):
        metadata = json.loads((path / "metadata.json").read_text())
        if metadata.get("status") in ("complete", "passed"):
            latest[metadata["experiment"]] = path
    return latest


def _provenance(metadata: dict) -> str:
    dirty = " (dirty tree)" if metadata.get("git_dirty") else ""
    accel = metadata.get("accelerator") or metadata.get("guest", {}).get("accelerator")
    where = f", guest under {accel}" if accel else ""
    sha = (metadata.get("git_sha") or "unknown")[:10]
    return f"run `{metadata['run_id']}`, git {sha}{dirty}{where}"


def _engine_section(metadata: dict, results: dict) -> list[str]:
    lines = ["| network | MACs | host user space ns/inference | ns/MAC | guest kernel ns/query | guest user space ns | kernel/user |",
             "|---|---|---|---|---|---|---|"]
    for key, host in results.items():
        if not key.startswith("userspace/"):
            continue
        name = key.split("/", 1)[1]
        kernel = results.get(f"kernel/{name}", {})
        cells = [f"{kernel[k]:.0f}" if k in kernel else "-" for k in ("kernel_ns_per_query", "guest_userspace_ns_per_inference")]
        ratio = f"{kernel['kernel_over_userspace']:.2f}" if "kernel_over_userspace" in kernel else "-"
        lines.append(f"| {name} | {host['macs']:,} | {host['ns_per_inference']:.0f} | {host['ns_per_mac']:.3f} | "
                     f"{cells[0]} | {cells[1]} | {ratio} |")
    return lines


def _overhead_section(metadata: dict, results: dict) -> list[str]:
    lines = []
    trip = results.get("round_trip")
    if trip:
        lines += [f"- kernel: {trip['kernel_ns_per_query']:.0f} ns/query; user-space deployment round trip: "
                  f"{trip['user_round_trip_ns_per_query']:.0f} ns/query; ratio **{trip['ratio']:.0f}x** "
                  f"({trip['upcall_iterations']} round trips, {trip['errors']} errors)"]
    updates = results.get("update_latency")
    if updates:
        for kind, label in (("hot", "hot weight load"), ("module", "generate + make + insmod")):
            figures = updates[kind]
            steps = ", ".join(f"{k} {v:.1f} ms" for k, v in figures["median_steps_ms"].items())
            spread = (f", min {figures['min_total_ms']:.1f} / p90 {figures['p90_total_ms']:.1f} ms"
                      if "p90_total_ms" in figures else "")
            lines.append(f"- update by {label}: median {figures['median_total_ms']:.1f} ms over "
                         f"{figures['repetitions']}{spread} (median steps: {steps})")
    service = results.get("service")
    if service and service.get("service_cpu"):
        cpu = service["service_cpu"]
        lines.append(f"- slow-path service while adapting: {cpu['cores']:.2f} cores ({cpu['cpu_s']} s CPU over "
                     f"{cpu['wall_s']} s); kernel recovered in {service.get('time_to_recover_s')} s through "
                     f"{service.get('updates')} update(s), {service.get('failed_queries')} failed queries")
    return lines


def _smoke_section(metadata: dict, results: dict) -> list[str]:
    return ["```", results.get("summary", "(no summary)"), "```"]


SECTIONS: dict[str, tuple[str, Callable[[dict, dict], list[str]]]] = {
    "engine": ("Engine: cost of one snapshot inference", _engine_section),
    "overhead": ("Overhead: per-query cost, update latency, slow-path CPU", _overhead_section),
    "smoke": ("Smoke: the core in a real kernel, snapshots swapped under load", _smoke_section),
}


def build_report(root: Path | None = None) -> Path:
    """Write results/REPORT.md (and regenerate each used run's figures); returns its path."""
    root = root or results_root()
    runs = latest_runs(root)
    lines = ["# LiteFlow Testbed: reproduction report", "",
             "Generated from `results/` only; every number names its run.", "",
             "## The paper's headline numbers", "",
             "| function | metric | LiteFlow vs prior deployments (paper) | our experiment | ours |",
             "|---|---|---|---|---|"]
    for function, metric, paper, experiment in PAPER_HEADLINES:
        lines.append(f"| {function} | {metric} | {paper} | {experiment} | not measured yet |")
    for experiment, (title, section) in SECTIONS.items():
        if experiment not in runs:
            continue
        metadata, results = load_run(runs[experiment])
        lines += ["", f"## {title}", "", f"Source: {_provenance(metadata)}.", ""]
        lines += section(metadata, results)
        for figure in figures_for(runs[experiment]):
            lines += ["", f"![{experiment}]({figure.relative_to(root)})"]
    out = root / "REPORT.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
