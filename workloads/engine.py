"""Experiment "engine": what one snapshot inference costs, per inference and per multiply-accumulate.

Two jobs per repetition:
- `host`: the user-space build of the engine, compiled with the kernel's code-generation
  constraints (no SIMD, no floating-point registers), so it times the arithmetic the kernel runs;
  timing happens inside C (the thread's CPU time around a loop), so neither Python's call
  overhead nor other processes holding the CPU are in the figure.
- `guest`: the core's BENCH command inside the guest kernel (under rcu_read_lock, as the fast
  path runs it), next to the same engine built in guest user space on the same blob: kernel and
  user space share CPU, accelerator and load, so their ratio is the figure to read (under TCG
  both are emulated). A snapshot over netlink's attribute limit is installed as a compiled
  module, the way LiteFlow installs it anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reports import plots
from testbed.modules import SnapshotModule
from workloads.contract import Context, Experiment, Field, Job, RunView, group, spread

GOAL_NS_PER_MAC = 1.0  # at most 1 ns per multiply-accumulate on these CPUs
MIN_ITERATIONS = 1000
GUEST_TIMEOUT_S = 600   # per network, under TCG (the session shrinks it for KVM)


class Engine(Experiment):
    title = "Engine: cost of one snapshot inference"
    schema = {
        "macs_per_repetition": Field(int, minimum=1),
        "guest_macs_per_repetition": Field(int, minimum=0),   # 0: no guest job
        "seed": Field(int),
        "networks": Field(list, item_schema={"name": Field(str), "units": Field(list), "activations": Field(list)}),
    }

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        jobs = [Job("host")]
        if config["guest_macs_per_repetition"]:
            jobs.append(Job("guest"))
        return jobs

    def prepare(self, ctx: Context) -> None:
        blobs = {net["name"]: network_blob(net, ctx.config["seed"]) for net in ctx.config["networks"]}
        ctx.state["blobs"] = blobs
        if ctx.config["guest_macs_per_repetition"]:
            session = ctx.session
            modules_dir = session.plan_dir(ctx.run, "modules")
            plan, snapshots = guest_plan(ctx.config["networks"], blobs, ctx.config["guest_macs_per_repetition"],
                                         modules_dir)
            session.build_modules(modules_dir, snapshots)
            ctx.state["guest_plan"] = plan
            ctx.state["modules_dir"] = modules_dir

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        if job.key == "host":
            return {"networks": {net["name"]: time_on_host(ctx.state["blobs"][net["name"]],
                                                            ctx.config["macs_per_repetition"], ctx.config["seed"])
                                 for net in ctx.config["networks"]}}
        session = ctx.session
        modules_dir: Path = ctx.state["modules_dir"]
        plan_dir = session.plan_dir(ctx.run, f"guest-{ctx.repetition}", sorted(modules_dir.iterdir()))
        result = session.run_driver(ctx.run, "engine", ctx.state["guest_plan"], plan_dir,
                                    timeout_s=GUEST_TIMEOUT_S * len(ctx.config["networks"]),
                                    step="in-kernel engine benchmark")
        return result.report

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for name, figures in raw["networks"].items():
            if job.key == "host":
                rows.append({"job": "host", "network": name, **figures})
            else:
                rows.append({"job": "guest", "network": name, **figures,
                             "kernel_over_userspace": figures["kernel_ns_per_query"]
                             / figures["guest_userspace_ns_per_inference"]})
        return rows

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        networks = {}
        for (name,), rows in group(records, "network").items():
            host = [r for r in rows if r["job"] == "host"]
            guest = [r for r in rows if r["job"] == "guest"]
            entry: dict[str, Any] = {"macs": host[0]["macs"] if host else None}
            if host:
                entry["host_ns_per_inference"] = spread([r["ns_per_inference"] for r in host])
                entry["host_ns_per_mac"] = spread([r["ns_per_inference"] / r["macs"] for r in host])
                entry["meets_goal"] = entry["host_ns_per_mac"]["median"] <= GOAL_NS_PER_MAC
            if guest:
                entry["kernel_ns_per_query"] = spread([r["kernel_ns_per_query"] for r in guest])
                entry["guest_userspace_ns_per_inference"] = spread([r["guest_userspace_ns_per_inference"]
                                                                    for r in guest])
                entry["kernel_over_userspace"] = spread([r["kernel_over_userspace"] for r in guest])
                entry["installed_by"] = guest[0].get("installed_by")
            networks[name] = entry
        return {"networks": networks, "goal_ns_per_mac": GOAL_NS_PER_MAC}

    def figures(self, view: RunView) -> list[Path]:
        networks = view.summary.get("networks", {})
        if not networks:
            return []
        names = list(networks)
        series = [("user space, host", "host_ns_per_inference"),
                  ("user space, guest", "guest_userspace_ns_per_inference"),
                  ("in kernel, guest (BENCH)", "kernel_ns_per_query")]
        bars = {label: [networks[n].get(key) for n in names] for label, key in series
                if any(networks[n].get(key) for n in names)}
        labels = [f"{n}\n{networks[n]['macs']:,} MACs" for n in names]
        fig, ax = plots.grouped_bars(labels, bars, ylabel="ns per inference (log; median, bars: min-max)", log=True)
        ax.set_title(plots.title("LiteFlow engine", view), fontsize=9)
        return [plots.save(fig, view, "engine_ns_per_inference.png")]

    def section(self, view: RunView) -> list[str]:
        lines = ["| network | MACs | host ns/inference | ns/MAC | guest kernel ns/query | guest user-space ns | "
                 "kernel/user |", "|---|---|---|---|---|---|---|"]
        for name, entry in view.summary.get("networks", {}).items():
            lines.append(f"| {name} | {entry['macs']:,} | {plots.cell(entry.get('host_ns_per_inference'), '.0f')} | "
                         f"{plots.cell(entry.get('host_ns_per_mac'), '.3f')} | "
                         f"{plots.cell(entry.get('kernel_ns_per_query'), '.0f')} | "
                         f"{plots.cell(entry.get('guest_userspace_ns_per_inference'), '.0f')} | "
                         f"{plots.cell(entry.get('kernel_over_userspace'), '.2f')} |")
        lines += ["", f"Medians over {view.metadata.get('repetitions')} repetitions, [min–max] in brackets. "
                      f"Goal: ≤ {GOAL_NS_PER_MAC} ns per multiply-accumulate on the host."]
        return lines


def network_blob(network: dict[str, Any], seed: int) -> bytes:
    """The hot-update blob of an experiment's network, quantized (seeded) by the toolchain."""
    from userspace.snapshot import build_snapshot, dense_model, write_blob

    model = dense_model(network["units"], network["activations"], seed=seed, name=network["name"])
    return write_blob(build_snapshot(model, seed=seed).spec)


def time_on_host(blob: bytes, macs_per_repetition: int, seed: int) -> dict[str, Any]:
    """Load the blob into the C engine (parsed exactly as the kernel parses it) and time it once."""
    from userspace.snapshot import Engine as CEngine

    engine = CEngine.from_blob(blob)
    iterations = max(MIN_ITERATIONS, macs_per_repetition // max(engine.macs, 1))
    sample = np.random.default_rng(seed).integers(-128, 128, size=engine.input_size, dtype=np.int8)
    engine.bench(sample, iterations=max(100, iterations // 10))  # warm caches and the branch predictor
    return {"macs": engine.macs, "iterations": iterations, "ns_per_inference": engine.bench(sample, iterations)}


def guest_plan(networks: list[dict[str, Any]], blobs: dict[str, bytes], macs_per_repetition: int,
               plan_dir: Path) -> tuple[dict, list[SnapshotModule]]:
    """The guest's plan (blobs written into plan_dir), and the snapshots too big for a hot load, to
    ship as compiled modules."""
    from userspace.snapshot import Engine as CEngine
    from userspace.snapshot import module_name, new_snapshot_id, read_blob
    from userspace.uapi import load_uapi

    blob_limit = load_uapi().limits["BINARY_MAX"]
    entries, modules = [], []
    for network in networks:
        name = network["name"]
        (plan_dir / f"{name}.blob").write_bytes(blobs[name])
        iterations = max(100, macs_per_repetition // CEngine.from_blob(blobs[name]).macs)
        snapshot_id = new_snapshot_id()
        entry = {"name": name, "blob": f"{name}.blob", "snapshot_id": snapshot_id,
                 "input_size": network["units"][0], "output_size": network["units"][-1],
                 "kernel_iterations": iterations, "userspace_iterations": iterations}
        if len(blobs[name]) > blob_limit:
            modules.append(SnapshotModule(read_blob(blobs[name]), "lf_test", snapshot_id,
                                          f"the engine experiment's network {name!r}"))
            entry["module"] = f"{module_name('lf_test', snapshot_id)}.ko"
        entries.append(entry)
    return {"networks": entries}, modules


EXPERIMENT = Engine()
