"""Experiment "overhead": what LiteFlow's split costs and saves, in the guest.

Two jobs per repetition, on the same Aurora-sized snapshot (PCC-RL's 30 -> 32 -> 16 -> 1, tanh)
and the same integer engine:
- `round-trip`: the kernel's ns/query (LF_CMD_BENCH, the active snapshot run in a loop the way
  the fast path runs it) against the user-space deployment's round trip per query
  (LF_CMD_UPCALL_BENCH: QUERY unicast to the C agent in userspace/agent, inference there,
  ANSWER back, the kernel thread woken), one query at a time from process context;
- `updates`: snapshot update latency both ways, each step timed by the slow path's own
  updaters: a hot weight load over netlink vs generate C + make + insmod in the guest.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from reports import plots
from workloads.contract import Context, Experiment, Field, Job, RunView, spread

UNITS = (30, 32, 16, 1)
ACTIVATIONS = ("tanh", "tanh", "linear")
UPDATE_MODELS = 3        # distinct snapshots the update-latency job cycles through
TIMEOUT_MS = 1000        # per upcall
BASE_TIMEOUT_S = 600     # under TCG (the session shrinks it for KVM), plus the work's own budget


class Overhead(Experiment):
    title = "Overhead: per-query cost and snapshot update latency"
    schema = {
        "kernel_iterations": Field(int, minimum=1),
        "upcall_iterations": Field(int, minimum=1),
        "upcall_warmup": Field(int, minimum=0),
        "module_updates": Field(int, minimum=1),
        "hot_updates": Field(int, minimum=1),
    }

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        return [Job("round-trip"), Job("updates")]

    def prepare(self, ctx: Context) -> None:
        from userspace.snapshot import new_snapshot_id

        session = ctx.session
        modules = session.plan_dir(ctx.run, "modules")
        session.build_modules(modules)
        for seed in range(UPDATE_MODELS):
            (modules / f"model{seed}.blob").write_bytes(aurora_blob(seed))
        ctx.state["modules"] = modules
        ctx.state["snapshot_id"] = new_snapshot_id()

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        config, session = ctx.config, ctx.session
        files = sorted(ctx.state["modules"].iterdir())
        plan_dir = session.plan_dir(ctx.run, f"{job.key}-{ctx.repetition}", files)
        if job.key == "round-trip":
            plan = {"core_module": "liteflow.ko", "test_module": "lf_test.ko", "input_size": UNITS[0],
                    "output_size": UNITS[-1], "blob": "model0.blob", "snapshot_id": ctx.state["snapshot_id"],
                    "kernel_iterations": config["kernel_iterations"],
                    "upcall_iterations": config["upcall_iterations"],
                    "warmup_iterations": config["upcall_warmup"], "timeout_ms": TIMEOUT_MS}
            budget = BASE_TIMEOUT_S + (config["upcall_iterations"] + config["upcall_warmup"]) * TIMEOUT_MS / 1000
            return session.run_driver(ctx.run, "overhead", plan, plan_dir, timeout_s=budget,
                                      step="kernel vs user-space round trip").report
        plan = {"blobs": [f"model{seed}.blob" for seed in range(UPDATE_MODELS)],
                "module_updates": config["module_updates"], "hot_updates": config["hot_updates"]}
        budget = BASE_TIMEOUT_S + 120 * config["module_updates"] + config["hot_updates"]
        return session.run_driver(ctx.run, "update_latency", plan, plan_dir, timeout_s=budget,
                                  step="time snapshot updates").report

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        if job.key == "round-trip":
            return [round_trip_record(raw)]
        return [{"job": "updates", "kind": kind, "total_ms": 1000 * update["total_s"],
                 **{f"{step}_ms": 1000 * seconds for step, seconds in update["steps_s"].items()}}
                for kind in ("hot", "module") for update in raw[kind]]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        trips = [r for r in records if r["job"] == "round-trip"]
        summary: dict[str, Any] = {
            "kernel_ns_per_query": spread([r["kernel_ns_per_query"] for r in trips]),
            "user_round_trip_ns_per_query": spread([r["user_round_trip_ns_per_query"] for r in trips]),
            "ratio": spread([r["ratio"] for r in trips]),
            "upcall_errors": sum(r["errors"] or 0 for r in trips),
            "upcall_timeouts": sum(r["timeouts"] or 0 for r in trips),
            "checks_failed": [c for r in trips for c in r["failed_checks"]],
        }
        for kind in ("hot", "module"):
            updates = [r for r in records if r["job"] == "updates" and r["kind"] == kind]
            steps = sorted({k[:-3] for r in updates for k in r if k.endswith("_ms") and k != "total_ms"})
            totals = sorted(r["total_ms"] for r in updates)
            summary[kind] = {
                "total_ms": spread(totals),
                "p90_total_ms": totals[min(len(totals) - 1, int(0.9 * len(totals)))] if totals else None,
                "median_steps_ms": {s: statistics.median(r.get(f"{s}_ms", 0.0) for r in updates) for s in steps},
            }
        module_steps = summary["module"]["median_steps_ms"]
        summary["module"]["dominant_step"] = max(module_steps, key=module_steps.get) if module_steps else None
        return summary

    def passed(self, summary: dict[str, Any]) -> bool | None:
        return None if not summary["checks_failed"] else False

    def figures(self, view: RunView) -> list[Path]:
        summary = view.summary
        if not summary.get("ratio", {}).get("n"):
            return []
        fig, axes = plots.plt.subplots(1, 2, figsize=(10, 4))
        left, right = axes
        values = [summary["kernel_ns_per_query"], summary["user_round_trip_ns_per_query"]]
        medians = [v["median"] for v in values]
        left.bar(["LiteFlow\n(in kernel)", "user-space\nround trip"], medians, color=["tab:green", "tab:red"],
                 yerr=[[m - v["min"] for m, v in zip(medians, values)], [v["max"] - m for m, v in zip(medians, values)]],
                 capsize=4)
        left.set_yscale("log")
        left.set_ylim(bottom=min(medians) / 10)
        left.set_ylabel("ns per query (log; median, bars: min-max)")
        left.set_title(f"per-query cost: user space is {summary['ratio']['median']:.0f}x the kernel", fontsize=9)
        kinds = ["hot", "module"]
        steps = sorted({step for kind in kinds for step in summary[kind]["median_steps_ms"]})
        bottoms = [0.0, 0.0]
        for step in steps:
            heights = [summary[kind]["median_steps_ms"].get(step, 0.0) for kind in kinds]
            right.bar(["hot weight load", "generate + make\n+ insmod"], heights, bottom=bottoms, label=step)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        right.set_yscale("log")
        right.set_ylim(bottom=min(b for b in bottoms if b > 0) / 10)
        right.set_ylabel("ms per update, median (log)")
        right.set_title("snapshot update latency by step", fontsize=9)
        right.legend(fontsize=8)
        fig.suptitle(plots.title("LiteFlow overhead", view), fontsize=9)
        return [plots.save(fig, view, "overhead.png")]

    def section(self, view: RunView) -> list[str]:
        s = view.summary
        lines = [f"- kernel: {plots.cell(s['kernel_ns_per_query'], '.0f')} ns/query; user-space deployment round "
                 f"trip: {plots.cell(s['user_round_trip_ns_per_query'], '.0f')} ns/query; ratio "
                 f"**{plots.cell(s['ratio'], '.0f')}x** ({s['upcall_errors']} errors, {s['upcall_timeouts']} "
                 f"timeouts)"]
        for kind, label in (("hot", "hot weight load"), ("module", "generate + make + insmod")):
            figures = s[kind]
            steps = ", ".join(f"{k} {v:.1f} ms" for k, v in figures["median_steps_ms"].items())
            lines.append(f"- update by {label}: {plots.cell(figures['total_ms'], '.1f')} ms over "
                         f"{figures['total_ms']['n']} updates, p90 {figures['p90_total_ms']:.1f} ms "
                         f"(median steps: {steps})")
        return lines


def aurora_blob(seed: int = 0) -> bytes:
    """The Aurora-sized model, quantized by the toolchain, as a hot-update blob (needs TensorFlow)."""
    from userspace.snapshot import build_snapshot, dense_model, write_blob

    model = dense_model(list(UNITS), list(ACTIVATIONS), seed=seed, name="aurora")
    return write_blob(build_snapshot(model, seed=seed).spec)


def round_trip_record(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers one round-trip repetition contributes, from the guest's report."""
    kernel = report.get("kernel") or {}
    upcall = report.get("upcall") or {}
    kernel_ns, upcall_ns = kernel.get("ns_per_query"), upcall.get("ns_per_query")
    return {
        "job": "round-trip",
        "kernel_ns_per_query": kernel_ns,
        "user_round_trip_ns_per_query": upcall_ns,
        "ratio": upcall_ns / kernel_ns if kernel_ns and upcall_ns is not None else None,
        "errors": upcall.get("errors"),
        "timeouts": upcall.get("timeouts"),
        "stale_answers": upcall.get("stale_answers"),
        "macs_per_query": kernel.get("macs"),
        "agent_build_s": report.get("timings_s", {}).get("agent_build"),
        "failed_checks": [c["name"] for c in report.get("checks", []) if not c["ok"]],
    }


EXPERIMENT = Overhead()
