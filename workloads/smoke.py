"""Experiment "smoke" (`invoke smoke`): LiteFlow's core in a real guest kernel, under load, while
snapshots swap.

The host prepares everything that needs the toolchain (quantized models, the user-space engine's
expected outputs, snapshot modules built in the guest kernel's own root, hot-update blobs) into a
plan; the guest half (guest/smoke.py) executes it against the real modules and reports every
check. It loads the core and lf_test, starts lf_test's stress threads (queries on every vCPU) and
swaps snapshots both ways LiteFlow can (new snapshot modules, hot weight loads), checking after
each swap that the kernel computes exactly what the user-space engine computes. It is a check,
not a measurement: the run is "passed" or "failed". `inject` (tests only) proves a check can fail.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from testbed.modules import SnapshotModule
from workloads.contract import Context, Experiment, Field, Job, RunView

APP = "lf_test"
INPUT_SIZE = 30                        # Aurora-sized: 30 features, one decision
OUTPUT_SIZE = 1
INJECTIONS = ("wrong-output", "leak-module")
GUEST_TIMEOUT_S = 1800                 # under TCG


def swap_kinds(module_swaps: int, hot_swaps: int) -> list[str]:
    """Module inserts spread evenly among hot loads, so both kinds follow both kinds."""
    total = module_swaps + hot_swaps
    kinds, placed = [], 0
    for index in range(total):
        due = (index + 1) * module_swaps // total
        kinds.append("module" if due > placed else "hot")
        placed = due
    return kinds


class Smoke(Experiment):
    title = "Smoke: the core in a real kernel, snapshots swapped under load"
    schema = {
        "module_swaps": Field(int, minimum=1),
        "hot_swaps": Field(int, minimum=1),
        "distinct_models": Field(int, minimum=2),
        "fixed_inputs": Field(int, minimum=1),
        "min_queries": Field(int, minimum=1),
        "stress_queries_per_cpu": Field(int, minimum=1),   # stopped explicitly once the swaps are done
        "stress_min_wait_s": Field(int, minimum=1),
        "inject": Field(str, required=False, choices=INJECTIONS),
    }

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        return [Job("swaps")]

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        session = ctx.session
        plan_dir = session.plan_dir(ctx.run, f"smoke-{ctx.repetition}")
        plan = prepare_plan(ctx.config, plan_dir, session.build_modules)
        return session.run_driver(ctx.run, "smoke", plan, plan_dir, timeout_s=GUEST_TIMEOUT_S,
                                  step="run the smoke in the guest").report

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        checks = raw["checks"]
        kinds = [s["kind"] for s in raw["swaps"]]
        module_s = [s["seconds"] for s in raw["swaps"] if s["kind"] == "module"]
        hot_s = [s["seconds"] for s in raw["swaps"] if s["kind"] == "hot"]
        return [{"job": job.key, "checks": len(checks), "failed_checks": [c for c in checks if not c["ok"]],
                 "swaps": len(kinds), "module_swaps": kinds.count("module"), "hot_swaps": kinds.count("hot"),
                 "median_insmod_ms": 1000 * float(np.median(module_s)) if module_s else None,
                 "median_hot_load_ms": 1000 * float(np.median(hot_s)) if hot_s else None,
                 "stress_queries": raw.get("stress", {}).get("queries", 0),
                 "stress_errors": raw.get("stress", {}).get("errors"),
                 "core_queries": raw.get("stats", {}).get("queries", 0),
                 "core_errors": raw.get("stats", {}).get("errors"), "core_swaps": raw.get("stats", {}).get("swaps")}]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"passed": all(not r["failed_checks"] for r in records), "repetitions": records,
                "text": "\n\n".join(summary_text(r) for r in records)}

    def passed(self, summary: dict[str, Any]) -> bool | None:
        return summary["passed"]

    def section(self, view: RunView) -> list[str]:
        return ["```", view.summary.get("text", "(no summary)"), "```"]


def summary_text(record: dict[str, Any]) -> str:
    """The one-screen summary printed after a smoke."""
    lines = [
        f"  swaps: {record['swaps']} ({record['module_swaps']} module inserts, {record['hot_swaps']} hot loads)",
        f"  swap latency (guest, median): insmod {_ms(record['median_insmod_ms'])} ms, "
        f"hot load {_ms(record['median_hot_load_ms'])} ms",
        f"  stress: {record['stress_queries']:,} queries on all vCPUs, {record['stress_errors']} errors; "
        f"core stats: {record['core_queries']:,} queries, {record['core_errors']} errors, {record['core_swaps']} swaps",
        f"  checks: {record['checks'] - len(record['failed_checks'])}/{record['checks']} passed",
    ]
    lines += [f"  FAILED {c['name']}: {c['detail']}" for c in record["failed_checks"][:15]]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"

# ---------------------------------------------------------------------------- plan (host side)


def _models(config: dict[str, Any]) -> list[Any]:
    from userspace.snapshot import build_snapshot, dense_model

    return [
        build_snapshot(dense_model([INPUT_SIZE, 32, 16, OUTPUT_SIZE], ["tanh", "tanh", "linear"], seed=seed,
                                   name=f"smoke{seed}"), seed=seed).spec
        for seed in range(config["distinct_models"])
    ]


def prepare_plan(config: dict[str, Any], plan_dir: Path,
                 build: Callable[[Path, list[SnapshotModule]], None]) -> dict[str, Any]:
    """Models, expected outputs, blobs and modules (by `build`) for one smoke, into plan_dir; the plan."""
    from userspace.snapshot import Engine, module_name, write_blob

    specs = _models(config)
    rng = np.random.default_rng(2022)
    inputs = rng.integers(-128, 128, size=(config["fixed_inputs"], INPUT_SIZE), dtype=np.int8)
    np.save(plan_dir / "inputs.npy", inputs)
    expected = {}
    for index, spec in enumerate(specs):
        blob = write_blob(spec)
        (plan_dir / f"model{index}.blob").write_bytes(blob)
        outputs = Engine.from_blob(blob).infer(inputs)
        if config.get("inject") == "wrong-output" and index == 1:
            outputs = outputs.copy()
            outputs[0, 0] = np.int8(int(outputs[0, 0]) ^ 1)  # one wrong bit the kernel must expose
        np.save(plan_dir / f"expected{index}.npy", outputs)
        expected[str(index)] = f"expected{index}.npy"

    bad_blobs = _bad_blobs(plan_dir, (plan_dir / "model0.blob").read_bytes())
    kinds = swap_kinds(config["module_swaps"], config["hot_swaps"])
    ids = _unique_ids(len(kinds) + 1)
    swaps = []
    for index, kind in enumerate(kinds):
        model = (index + 1) % len(specs)  # consecutive snapshots always differ
        swap: dict[str, Any] = {"kind": kind, "snapshot_id": ids[index + 1], "model": model}
        if kind == "module":
            swap["name"] = module_name(APP, ids[index + 1])
            swap["module"] = f"{swap['name']}.ko"
        else:
            swap["blob"] = f"model{model}.blob"
        swaps.append(swap)
    if config.get("inject") == "leak-module":
        first_module_follower = next(i for i in range(1, len(swaps)) if swaps[i - 1]["kind"] == "module")
        swaps[first_module_follower]["leak_previous"] = True
    first = {"kind": "module", "snapshot_id": ids[0], "model": 0, "name": module_name(APP, ids[0])}
    first["module"] = f"{first['name']}.ko"

    modules = [first] + [s for s in swaps if s["kind"] == "module"]
    build(plan_dir, [SnapshotModule(specs[m["model"]], APP, m["snapshot_id"], f"smoke model {m['model']}")
                     for m in modules])
    plan = {
        "core_module": "liteflow.ko",
        "test_module": "lf_test.ko",
        "input_size": INPUT_SIZE,
        "output_size": OUTPUT_SIZE,
        "fixed_inputs": "inputs.npy",
        "expected_outputs": expected,
        "first_snapshot": first,
        "swaps": swaps,
        "bad_blobs": bad_blobs,
        "refuse_rmmod_at": next(i for i, s in enumerate(swaps) if s["kind"] == "module"),
        "min_queries": config["min_queries"],
        "stress_queries_per_cpu": config["stress_queries_per_cpu"],
        "stress_min_wait_s": config["stress_min_wait_s"],
    }
    return plan


def _bad_blobs(plan_dir: Path, good: bytes) -> list[dict]:
    """Blobs the kernel must refuse with a specific errno, leaving the active snapshot serving."""
    from userspace.snapshot import write_blob
    from userspace.snapshot.random_model import random_spec

    corrupted = bytearray(good)
    corrupted[-1] ^= 0xFF  # payload byte: the crc no longer matches
    cases = {
        "corrupted": (bytes(corrupted), "EBADMSG"),
        "truncated": (good[: len(good) // 2], "EINVAL"),
        "wrong-size": (write_blob(random_spec(7, sizes=[INPUT_SIZE - 1, 8, OUTPUT_SIZE])), "EINVAL"),
    }
    entries = []
    for name, (blob, errno_name) in cases.items():
        (plan_dir / f"bad-{name}.blob").write_bytes(blob)
        entries.append({"name": name, "blob": f"bad-{name}.blob", "errno": errno_name})
    return entries


def _unique_ids(count: int) -> list[int]:
    """Distinct snapshot ids for one run."""
    from userspace.snapshot import new_snapshot_id

    ids: set[int] = set()
    while len(ids) < count:
        ids.add(new_snapshot_id())
    return sorted(ids)


EXPERIMENT = Smoke()
