"""Experiment "stress" (`invoke stress`): at least 10,000 snapshot swaps while lf_test queries on
every vCPU and privileged and unprivileged clients work the netlink family.

The smoke proves 100 swaps; a component in the datapath should prove orders of magnitude more.
The host prepares a few distinct models (blobs and the user-space engine's outputs on fixed
inputs) and compiles a handful of snapshot modules; the plan lists every swap: hot loads, each
with a fresh id, mixed with inserts of those modules in turn (each removed, racing the swap that
drops it from the standby slot, before it comes round again). The guest half is guest/stress.py,
its clients guest/stress_client.py. A check, not a measurement: the run passes or fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from testbed.modules import SnapshotModule
from workloads.contract import Context, Experiment, Field, Job, RunView
from workloads.smoke import _models, _unique_ids, swap_kinds

APP = "lf_test"
INPUT_SIZE, OUTPUT_SIZE = 30, 1
SECONDS_PER_SWAP_TCG = 0.25            # the guest's timeout: generous for the TCG guest


class Stress(Experiment):
    title = "Stress: thousands of snapshot swaps under load and concurrent clients"
    schema = {
        "swaps": Field(int, minimum=10),
        "module_share": Field(float, minimum=0.0),      # fraction of the swaps that insert a module
        "snapshot_modules": Field(int, minimum=4),      # compiled once, inserted in turn
        "distinct_models": Field(int, minimum=2),
        "fixed_inputs": Field(int, minimum=1),
        "slab_tolerance_kb": Field(int, minimum=0),
    }

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        return [Job("swaps")]

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        session = ctx.session
        plan_dir = session.plan_dir(ctx.run, f"stress-{ctx.repetition}")
        plan, modules = prepare_plan(ctx.config, plan_dir)
        session.build_modules(plan_dir, modules)
        return session.run_driver(ctx.run, "stress", plan, plan_dir,
                                  timeout_s=600 + SECONDS_PER_SWAP_TCG * ctx.config["swaps"],
                                  step="swap snapshots under stress in the guest").report

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        checks = raw["checks"]
        swaps, stress, stats = raw.get("swaps", {}), raw.get("stress", {}), raw.get("stats", {})
        return [{"job": job.key, "checks": len(checks), "failed_checks": [c for c in checks if not c["ok"]],
                 "swaps": swaps.get("total", 0), "module_swaps": swaps.get("module", 0),
                 "hot_swaps": swaps.get("hot", 0), "wrong_swaps": swaps.get("wrong"),
                 "stress_queries": stress.get("queries", 0), "stress_errors": stress.get("errors"),
                 "core_queries": stats.get("queries", 0), "core_errors": stats.get("errors"),
                 "clients": {role: {"requests": c.get("requests"), "counts": c.get("counts"),
                                    "unexpected": len(c.get("unexpected", []))}
                             for role, c in raw.get("clients", {}).items()},
                 "races": raw.get("races", {}), "memory": raw.get("memory", {}),
                 "swap_seconds": raw.get("timings_s", {}).get("swaps"),
                 "total_seconds": raw.get("timings_s", {}).get("total")}]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"passed": bool(records) and all(not r["failed_checks"] for r in records), "repetitions": records}

    def passed(self, summary: dict[str, Any]) -> bool | None:
        return summary["passed"]

    def section(self, view: RunView) -> list[str]:
        lines = []
        for r in view.summary.get("repetitions", []):
            memory = r["memory"]
            lines += [
                f"- swaps: {r['swaps']:,} ({r['module_swaps']:,} module inserts, {r['hot_swaps']:,} hot loads), "
                f"{r['wrong_swaps']} wrong, in {r['swap_seconds']} s",
                f"- queries: {r['stress_queries']:,} by lf_test on every vCPU ({r['stress_errors']} failed); "
                f"core: {r['core_queries']:,} ({r['core_errors']} failed)",
                *(f"- {role} client: {c['requests']:,} requests, {c['unexpected']} unexpected answers ({c['counts']})"
                  for role, c in r["clients"].items()),
                f"- standby rmmod raced with the swap that dropped it: {r['races'].get('standby_rmmod_races', 0)} "
                f"times ({r['races'].get('rmmod_lost_and_retried', 0)} lost and retried)",
                f"- unreclaimable slab {memory.get('slab_unreclaimable_before_kb')} kB before, "
                f"{memory.get('slab_unreclaimable_after_kb')} kB after"
                + (f" (judged by kmemleak instead: {memory['kmemleak_suspects']} unreferenced objects)"
                   if "kmemleak_suspects" in memory else "")
                + f"; modules {memory.get('modules_before')} before, {memory.get('modules_after')} after",
                f"- checks: {r['checks'] - len(r['failed_checks'])}/{r['checks']} passed",
                *(f"- FAILED {c['name']}: {c['detail'][:300]}" for c in r["failed_checks"][:15]),
            ]
        return lines


def swap_plan(count: int, module_share: float, module_count: int, model_count: int,
              ids: list[int]) -> tuple[list[dict], list[dict]]:
    """The snapshot modules and the swap list: `count` swaps, a share of them inserting the
    modules in turn, the rest hot loads with fresh ids. `ids` holds count + 1 + module_count
    distinct ids: ids[0] for the first snapshot, then one per swap, then one per module."""
    from userspace.snapshot import module_name

    module_swaps = round(count * module_share)
    kinds = swap_kinds(module_swaps, count - module_swaps) if module_swaps else ["hot"] * count
    modules = []
    for index in range(module_count):
        snapshot_id = ids[count + 1 + index]
        name = module_name(APP, snapshot_id)
        modules.append({"name": name, "module": f"{name}.ko", "snapshot_id": snapshot_id,
                        "model": index % model_count})
    swaps, turn = [], 0
    for index, kind in enumerate(kinds):
        if kind == "module":
            swaps.append({"kind": "module", **modules[turn % module_count]})
            turn += 1
        else:
            swaps.append({"kind": "hot", "snapshot_id": ids[index + 1], "model": (index + 1) % model_count})
    return modules, swaps


def prepare_plan(config: dict[str, Any], plan_dir: Path) -> tuple[dict[str, Any], list[SnapshotModule]]:
    """Blobs, expected outputs and the swap list into plan_dir; the plan and the modules to build."""
    from userspace.snapshot import Engine, write_blob

    specs = _models(config)
    inputs = np.random.default_rng(2022).integers(-128, 128, (config["fixed_inputs"], INPUT_SIZE), dtype=np.int8)
    np.save(plan_dir / "inputs.npy", inputs)
    blobs, expected = {}, {}
    for index, spec in enumerate(specs):
        blob = write_blob(spec)
        (plan_dir / f"model{index}.blob").write_bytes(blob)
        np.save(plan_dir / f"expected{index}.npy", Engine.from_blob(blob).infer(inputs))
        blobs[str(index)], expected[str(index)] = f"model{index}.blob", f"expected{index}.npy"

    ids = _unique_ids(config["swaps"] + 1 + config["snapshot_modules"])
    modules, swaps = swap_plan(config["swaps"], config["module_share"], config["snapshot_modules"], len(specs), ids)
    plan = {"core_module": "liteflow.ko", "test_module": "lf_test.ko", "input_size": INPUT_SIZE,
            "output_size": OUTPUT_SIZE, "fixed_inputs": "inputs.npy", "expected_outputs": expected,
            "blobs": blobs, "first_snapshot": {"kind": "hot", "snapshot_id": ids[0], "model": 0, "blob": "model0.blob"},
            "swaps": swaps, "slab_tolerance_kb": config["slab_tolerance_kb"]}
    builds = [SnapshotModule(specs[m["model"]], APP, m["snapshot_id"], f"stress model {m['model']}") for m in modules]
    return plan, builds


EXPERIMENT = Stress()
