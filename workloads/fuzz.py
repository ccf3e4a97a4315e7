"""Experiment "fuzz" (`invoke bench fuzz`): malformed generic netlink messages against the core,
as root and as an unprivileged user, while lf_test queries a live snapshot on every vCPU.

The messages come from userspace/nlfuzz.py (seeded: a run's data file and seed name every byte
sent); the guest half is guest/fuzz.py. It is a check, not a measurement: the run passes when
every message the netlink core passed on was answered with 0 or an errno, no admin-only command
was accepted from the unprivileged user, lf_test's queries never failed, the snapshot still
computes what the user-space engine computes, dmesg stays clean and everything unloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workloads.contract import Context, Experiment, Field, Job, RunView

APP = "lf_test"
INPUT_SIZE, OUTPUT_SIZE = 30, 1
FIXED_INPUTS = 64
SECONDS_PER_MESSAGE_TCG = 0.05      # a campaign's timeout: generous for the TCG guest
ROLES = ("root", "unprivileged")


class Fuzz(Experiment):
    title = "Netlink fuzzer: malformed requests as root and unprivileged"
    schema = {"messages": Field(int, minimum=1), "seed": Field(int, minimum=0)}

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        return [Job("campaigns")]

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        session = ctx.session
        plan_dir = session.plan_dir(ctx.run, f"fuzz-{ctx.repetition}")
        plan = prepare_plan(ctx.config, plan_dir)
        session.build_modules(plan_dir)
        timeout = 2 * plan["timeout_s"] + 600
        return session.run_driver(ctx.run, "fuzz", plan, plan_dir, timeout_s=timeout,
                                  step="fuzz the netlink family in the guest").report

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        checks = raw["checks"]
        record: dict[str, Any] = {"job": job.key, "checks": len(checks),
                                  "failed_checks": [c for c in checks if not c["ok"]],
                                  "stress_queries": raw.get("stress", {}).get("queries", 0),
                                  "stress_errors": raw.get("stress", {}).get("errors")}
        for role in ROLES:
            tally = raw.get("campaigns", {}).get(role, {})
            for key in ("sent", "dropped_by_netlink", "accepted", "refused_total", "unanswered",
                        "privileged_accepted", "seconds"):
                record[f"{role}_{key}"] = tally.get(key)
            record[f"{role}_refused"] = tally.get("refused", {})
        return [record]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"passed": bool(records) and all(not r["failed_checks"] for r in records), "repetitions": records}

    def passed(self, summary: dict[str, Any]) -> bool | None:
        return summary["passed"]

    def section(self, view: RunView) -> list[str]:
        lines = ["| as | sent | dropped by netlink (bad length) | accepted | refused | unanswered | "
                 "admin-only accepted | seconds |", "|---|---|---|---|---|---|---|---|"]
        for record in view.summary.get("repetitions", []):
            for role in ROLES:
                lines.append(f"| {role} | {record[f'{role}_sent']} | {record[f'{role}_dropped_by_netlink']} | "
                             f"{record[f'{role}_accepted']} | {record[f'{role}_refused_total']} | "
                             f"{record[f'{role}_unanswered']} | {record[f'{role}_privileged_accepted']} | "
                             f"{record[f'{role}_seconds']} |")
            for role in ROLES:
                errnos = ", ".join(f"{name} {count}" for name, count in
                                   sorted(record[f"{role}_refused"].items(), key=lambda kv: -kv[1]))
                lines.append(f"- refusals as {role}: {errnos or 'none'}")
            lines.append(f"- lf_test's queries meanwhile: {record['stress_queries']:,}, "
                         f"{record['stress_errors']} errors; checks: "
                         f"{record['checks'] - len(record['failed_checks'])}/{record['checks']} passed")
            lines += [f"- FAILED {c['name']}: {c['detail'][:300]}" for c in record["failed_checks"]]
        return lines


def prepare_plan(config: dict[str, Any], plan_dir: Path) -> dict[str, Any]:
    """A snapshot for lf_test (blob, fixed inputs and the engine's outputs on them) and the plan."""
    from userspace.snapshot import Engine, build_snapshot, dense_model, new_snapshot_id, write_blob

    spec = build_snapshot(dense_model([INPUT_SIZE, 32, 16, OUTPUT_SIZE], ["tanh", "tanh", "linear"], seed=7,
                                      name="fuzz"), seed=7).spec
    blob = write_blob(spec)
    (plan_dir / "model.blob").write_bytes(blob)
    inputs = np.random.default_rng(config["seed"]).integers(-128, 128, (FIXED_INPUTS, INPUT_SIZE), dtype=np.int8)
    np.save(plan_dir / "inputs.npy", inputs)
    np.save(plan_dir / "expected.npy", Engine.from_blob(blob).infer(inputs))
    return {"core_module": "liteflow.ko", "test_module": "lf_test.ko", "input_size": INPUT_SIZE,
            "output_size": OUTPUT_SIZE, "blob": "model.blob", "snapshot_id": new_snapshot_id(),
            "inputs": "inputs.npy", "expected": "expected.npy", "messages": config["messages"],
            "seed": config["seed"], "timeout_s": round(config["messages"] * SECONDS_PER_MESSAGE_TCG + 120)}


EXPERIMENT = Fuzz()
