"""Experiment "slowpath": the kernel's snapshot follows a target that changes, and what that costs.

The host builds the core and lf_test for the guest kernel, trains the initial NN on target A with
TensorFlow and makes its snapshot; in the guest (guest/slowpath.py) lf_test's stress threads
query on every vCPU while LiteFlow's real slow-path service (userspace/slowpath) samples the
kernel, adapts the NN with the TensorFlow target-tracking adapter, and swaps validated
snapshots in. The target switches to B; the experiment measures how long until the kernel's
error on B (EVALUATE on held-out inputs, the kernel's own arithmetic) is under the bound, how
many updates that took, how many queries failed (must be 0), and the service's CPU while
adapting. Optionally the service is SIGKILLed in the middle of an update, and the kernel must
keep serving the last good snapshot. The service's log is kept in the run's logs/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workloads.contract import Context, Experiment, Field, Job, RunView, spread

ADAPTER_SCHEMA = {"buffer": Field(int, minimum=1), "epochs": Field(int, minimum=1),
                  "batch_size": Field(int, minimum=1), "learning_rate": Field(float)}


class Slowpath(Experiment):
    title = "Slow path: the kernel follows a changed target"
    schema = {
        "update": Field(str, choices=("hot", "module")),
        "bound": Field(float),               # mean |kernel - target B| on held-out inputs (outputs in +-0.8)
        "threshold": Field(float),           # the service's fidelity-loss threshold
        "window": Field(int, minimum=1),     # rounds in the band before an update (~30 s each under TCG)
        "band_floor": Field(float),
        "sample_every": Field(int, minimum=1),
        "warmup_rounds": Field(int, minimum=0),
        "held_out_count": Field(int, minimum=1),
        "recover_timeout_s": Field(float),
        "startup_timeout_s": Field(float),
        "stop_timeout_s": Field(float),
        "kill_mid_update": Field(bool),      # then SIGKILL the service during an update and restart it
        "kill_delay_s": Field(float),        # after "update-begin": inside quantize (7-9 s under TCG)
        "adapter": Field(dict, table_schema=ADAPTER_SCHEMA),
    }

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        return [Job(f"follow-target-{config['update']}")]

    def prepare(self, ctx: Context) -> None:
        session = ctx.session
        prepared = session.plan_dir(ctx.run, "prepared")
        session.build_modules(prepared)
        ctx.state["initial"] = initial_snapshot(prepared, ctx.config["held_out_count"])
        ctx.state["prepared"] = prepared

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        config, session = ctx.config, ctx.session
        plan_dir = session.plan_dir(ctx.run, f"{job.key}-{ctx.repetition}", sorted(ctx.state["prepared"].iterdir()))
        plan = {**ctx.state["initial"], **{k: v for k, v in config.items()
                                           if k not in ("description", "repetitions", "kernel")}}
        budget = config["startup_timeout_s"] * 2 + config["recover_timeout_s"] * 3 + config["stop_timeout_s"]
        result = session.run_driver(ctx.run, "slowpath", plan, plan_dir, timeout_s=budget + 600,
                                    step="run the slow path in the guest", fetch=("service.jsonl",))
        return result.report

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        cpu = raw.get("service_cpu") or {}
        kill = raw.get("kill") or {}
        return [{"job": job.key, "ok": bool(raw.get("ok")), "error": raw.get("error"),
                 "time_to_recover_s": raw.get("time_to_recover_s"), "updates": raw.get("updates"),
                 "failed_queries": raw.get("failed_queries"), "service_cores": cpu.get("cores"),
                 "service_cpu_s": cpu.get("cpu_s"), "service_wall_s": cpu.get("wall_s"),
                 "service_startup_s": raw.get("service_startup_s"),
                 "initial_error_B": (raw.get("initial_error") or {}).get("B"),
                 "final_error_B": (raw.get("final_error") or {}).get("B"),
                 "kill_mid_update": kill.get("mid_update"), "kill_serving_last_good": kill.get("serving_last_good"),
                 "dmesg_trouble": len(raw.get("dmesg_trouble") or [])}]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "ok": all(r["ok"] for r in records),
            "errors": [r["error"] for r in records if r["error"]],
            "time_to_recover_s": spread([r["time_to_recover_s"] for r in records]),
            "updates": spread([r["updates"] for r in records]),
            "failed_queries": sum(r["failed_queries"] or 0 for r in records),
            "service_cores": spread([r["service_cores"] for r in records]),
            "bound": config["bound"],
            "update": config["update"],
        }

    def passed(self, summary: dict[str, Any]) -> bool | None:
        return summary["ok"]

    def section(self, view: RunView) -> list[str]:
        from reports.plots import cell

        s = view.summary
        return [f"- after the target changed, the kernel's error was under {s['bound']} in "
                f"{cell(s['time_to_recover_s'], '.0f')} s through {cell(s['updates'], '.0f')} {s['update']} "
                f"update(s); {s['failed_queries']} failed queries",
                f"- slow-path service while adapting: {cell(s['service_cores'], '.2f')} cores"]


def initial_snapshot(plan_dir: Path, held_out_count: int) -> dict[str, Any]:
    """Train the initial NN on target A, make and validate its snapshot, write held-out inputs.

    The validation is the one the service applies to its own candidates, so the experiment starts
    from a snapshot the service would have accepted."""
    from userspace.slowpath.examples.target_tracking import INPUT_ENCODING, INPUT_SIZE, train_initial
    from userspace.slowpath.service import Candidate, StepTimer, calibration_data, validate_candidate
    from userspace.snapshot import build_snapshot, new_snapshot_id, write_blob

    model = train_initial("A")
    model.save(plan_dir / "initial.keras")
    calib = np.random.default_rng(1).integers(-128, 128, (512, INPUT_SIZE)).astype(np.int8)
    snap = build_snapshot(model, data=calibration_data(calib, INPUT_ENCODING, INPUT_SIZE))
    blob = write_blob(snap.spec)
    initial_id = new_snapshot_id()
    validate_candidate(Candidate(initial_id, snap.spec, blob, snap.tflite), INPUT_ENCODING, INPUT_SIZE, 1,
                       calib, StepTimer())
    (plan_dir / "initial.blob").write_bytes(blob)
    held_out = np.random.default_rng(2).integers(-128, 128, (held_out_count, INPUT_SIZE)).astype(np.int8)
    np.save(plan_dir / "held_out.npy", held_out)
    return {"initial_blob": "initial.blob", "initial_model": "initial.keras", "initial_id": initial_id,
            "held_out": "held_out.npy"}


EXPERIMENT = Slowpath()
