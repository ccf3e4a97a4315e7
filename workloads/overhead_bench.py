"""Overhead: LiteFlow's in-kernel inference vs the user-space deployment's round trip per query.

The paper's baseline deploys the NN in user space: every decision ships the features to an agent
over netlink and waits for the answer. `measure_round_trip(handle)` measures both sides on a
running VM with the same Aurora-sized snapshot (30-32-16-1, tanh) and the same integer engine:

- kernel ns/query: LF_CMD_BENCH, the active snapshot run in a loop the way the fast path runs it;
- round trip ns/query: LF_CMD_UPCALL_BENCH, QUERY unicast to the C agent (userspace/agent),
  inference there, ANSWER back, the kernel thread woken; from process context, one at a time.

The host prepares the plan (blob from the toolchain, modules built in the guest kernel's own
root, as testbed/smoke.py does), the guest half (testbed.overhead_guest) runs it and reports
JSON, and this module returns the numbers as a dict. Recording them is the caller's business.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from common.system import tool_version
from testbed.guestrun import GUEST_WORK, GuestDriverError, copy_plan, run_driver
from testbed.modules import build_with_snapshots
from vm.buildroot import BuildRoot, ensure_build_root
from vm.guest import GuestError
from vm.kernels import resolve_kernel
from vm.qemu import VmHandle
from workloads.experiment import Field, experiment_path, load_experiment

UNITS = (30, 32, 16, 1)                # Aurora (PCC-RL): 30 -> 32 -> 16 -> 1
ACTIVATIONS = ("tanh", "tanh", "linear")
BLOB = "snapshot.blob"


class OverheadError(RuntimeError):
    """The measurement could not run to the end; `step` names where it stopped."""

    def __init__(self, step: str, message: str):
        super().__init__(f"overhead step '{step}' failed: {message}")
        self.step = step


@dataclass(frozen=True)
class OverheadConfig:
    kernel_iterations: int = 200_000
    upcall_iterations: int = 5_000
    warmup_iterations: int = 100
    timeout_ms: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.kernel_iterations, self.upcall_iterations, self.warmup_iterations, self.timeout_ms) < 1:
            raise ValueError(f"iterations and timeout must be >= 1: {self}")


# ---------------------------------------------------------------------------- plan (host side)


def aurora_blob(seed: int = 0) -> bytes:
    """The Aurora-sized model, quantized by the toolchain, as a hot-update blob (needs TensorFlow)."""
    from userspace.snapshot import build_snapshot, write_blob
    from workloads.models import dense_model

    model = dense_model(list(UNITS), list(ACTIVATIONS), seed=seed, name="aurora")
    return write_blob(build_snapshot(model, seed=seed).spec)


def build_plan_modules(root: BuildRoot, plan_dir: Path) -> None:
    """liteflow.ko and lf_test.ko for root's kernel, into plan_dir (strict: warnings fail)."""
    build_with_snapshots(root, plan_dir, [])


def prepare_plan(config: OverheadConfig, root: BuildRoot, plan_dir: Path, *, guest_work: str,
                 blob: Callable[[int], bytes] = aurora_blob,
                 build: Callable[[BuildRoot, Path], None] = build_plan_modules) -> Path:
    """Blob, modules and plan.json for one measurement, in plan_dir; returns the plan's path."""
    from userspace.snapshot import new_snapshot_id

    plan_dir.mkdir(parents=True, exist_ok=True)
    (plan_dir / BLOB).write_bytes(blob(config.seed))
    build(root, plan_dir)
    for module in ("liteflow.ko", "lf_test.ko"):
        if not (plan_dir / module).is_file():
            raise OverheadError("build modules", f"{module} missing from {plan_dir}")
    plan = {
        "core_module": "liteflow.ko",
        "test_module": "lf_test.ko",
        "input_size": UNITS[0],
        "output_size": UNITS[-1],
        "blob": BLOB,
        "snapshot_id": new_snapshot_id(),
        "kernel_iterations": config.kernel_iterations,
        "upcall_iterations": config.upcall_iterations,
        "warmup_iterations": config.warmup_iterations,
        "timeout_ms": config.timeout_ms,
        "agent_build_dir": f"{guest_work}/agent",
    }
    path = plan_dir / "plan.json"
    path.write_text(json.dumps(plan, indent=1))
    return path


def summarize(report: dict, config: OverheadConfig) -> dict:
    """The numbers the experiment records, from the guest's report."""
    kernel = report.get("kernel") or {}
    upcall = report.get("upcall") or {}
    kernel_ns = kernel.get("ns_per_query")
    upcall_ns = upcall.get("ns_per_query")
    ratio = upcall_ns / kernel_ns if kernel_ns and upcall_ns is not None else None
    return {
        "kernel_ns_per_query": kernel_ns,
        "user_round_trip_ns_per_query": upcall_ns,
        "ratio": ratio,
        "kernel_iterations": kernel.get("iterations", config.kernel_iterations),
        "upcall_iterations": upcall.get("iterations", config.upcall_iterations),
        "errors": upcall.get("errors"),
        "timeouts": upcall.get("timeouts"),
        "stale_answers": upcall.get("stale_answers"),
        "macs_per_query": kernel.get("macs"),
        "checks": report.get("checks", []),
        "passed": all(check["ok"] for check in report.get("checks", [])),
        "agent_build_s": report.get("timings_s", {}).get("agent_build"),
        "config": asdict(config),
    }


# ---------------------------------------------------------------------------- run


def measure_round_trip(handle: VmHandle, config: OverheadConfig = OverheadConfig(), *,
                       plan_dir: Path | None = None, log_dir: Path | None = None) -> dict:
    """Kernel ns/query vs user-space round-trip ns/query on the running VM `handle`.

    Returns summarize()'s dict (plus "kernel_release" and "accelerator"). Raises OverheadError
    naming the step when the guest cannot run it; a run whose checks failed still returns, with
    "passed": False and the failed checks. `log_dir` receives the guest's stderr and dmesg.
    """
    step = "build modules and plan"
    root = ensure_build_root(resolve_kernel(handle.image.kernel_name))
    if root.kernel_release != handle.kernel_release:
        raise OverheadError(step, f"build root has kernel {root.kernel_release}, the VM runs "
                                  f"{handle.kernel_release}; run invoke clean-cache and provision again")
    run_id = f"overhead-{secrets.token_hex(4)}"
    work = f"{GUEST_WORK}/{run_id}"
    scale = handle.timeout_factor
    with tempfile.TemporaryDirectory(prefix="liteflow-overhead-plan-") as tmp:
        plan_dir = Path(plan_dir or Path(tmp) / "plan")
        prepare_plan(config, root, plan_dir, guest_work=work)
        try:
            with handle.guest() as guest:
                step = "copy the plan into the guest"
                copy_plan(guest, plan_dir, run_id, timeout_s=120 * scale, step=step)
                step = "run the overhead measurement in the guest"
                budget = 600 + (config.upcall_iterations + config.warmup_iterations) * config.timeout_ms / 1000
                driven = run_driver(guest, "testbed.overhead_guest", work, timeout_s=budget * scale, step=step)
                guest.run(f"rm -rf {work}", timeout=60 * scale, step="clean the guest's work dir", check=False)
        except (GuestError, GuestDriverError) as exc:
            raise OverheadError(step, str(exc)) from exc
    report = driven.report
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "overhead_guest.stderr").write_text(driven.stderr)
        (log_dir / "overhead_dmesg.txt").write_text("\n".join(report.get("dmesg_new", [])) + "\n")
    summary = summarize(report, config)
    summary.update(kernel_release=handle.kernel_release, accelerator=handle.accel)
    return summary


# ---------------------------------------------------------------------------- the experiment

SCHEMA = {
    "description": Field(str),
    "kernel": Field(str),
    "kernel_iterations": Field(int),
    "upcall_iterations": Field(int),
    "upcall_warmup": Field(int),
    "module_updates": Field(int),
    "hot_updates": Field(int),
    "service": Field(bool),
}
UPDATE_MODELS = 3  # distinct snapshots the update-latency run cycles through


def measure_update_latency(handle: VmHandle, module_updates: int, hot_updates: int, log_dir: Path) -> dict:
    """Hot load vs generate + make + insmod, each step timed by the slow path's own updaters.

    Hot loads cost milliseconds, so many are timed and the distribution is reported: under TCG
    on a shared host single timings swing several-fold."""
    root = ensure_build_root(resolve_kernel(handle.image.kernel_name))
    scale = handle.timeout_factor
    name = f"update-latency-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="liteflow-update-") as tmp:
        plan_dir = Path(tmp)
        build_plan_modules(root, plan_dir)
        blobs = []
        for seed in range(UPDATE_MODELS):
            (plan_dir / f"model{seed}.blob").write_bytes(aurora_blob(seed))
            blobs.append(f"model{seed}.blob")
        (plan_dir / "plan.json").write_text(json.dumps({"blobs": blobs, "module_updates": module_updates,
                                                        "hot_updates": hot_updates}))
        with handle.guest() as guest:
            step = "copy the update-latency plan into the guest"
            work = copy_plan(guest, plan_dir, name, timeout_s=120 * scale, step=step)
            driven = run_driver(guest, "testbed.update_latency_guest", work, timeout_s=1800 * scale,
                                step="time snapshot updates in the guest")
            guest.run(f"rm -rf {work}", timeout=60 * scale, step="clean the guest's work dir", check=False)
    (log_dir / "update_latency_guest.stderr").write_text(driven.stderr)
    return summarize_updates(driven.report)


def summarize_updates(report: dict) -> dict:
    """Median total and median per step for each way, plus the raw repetitions."""
    import statistics

    summary: dict = {"raw": report}
    for kind in ("hot", "module"):
        runs = report[kind]
        steps = sorted({step for r in runs for step in r["steps_s"]})
        totals_ms = sorted(1000 * r["total_s"] for r in runs)
        summary[kind] = {
            "repetitions": len(runs),
            "median_total_ms": round(statistics.median(totals_ms), 3),
            "min_total_ms": round(totals_ms[0], 3),
            "p90_total_ms": round(totals_ms[min(len(totals_ms) - 1, int(0.9 * len(totals_ms)))], 3),
            "median_steps_ms": {s: round(1000 * statistics.median(r["steps_s"].get(s, 0.0) for r in runs), 3)
                                for s in steps},
        }
    module_steps = summary["module"]["median_steps_ms"]
    summary["module"]["dominant_step"] = max(module_steps, key=module_steps.get) if module_steps else None
    return summary


def run(experiment_file: Path | None = None):
    """The overhead experiment: round trip, update latency, slow-path CPU; recorded as each finishes."""
    from testbed.guestrun import vm_for
    from testbed.results import new_run
    from vm.image import provision
    from vm.qemu import down

    path = experiment_file or experiment_path("overhead")
    config = load_experiment(path, SCHEMA)
    image = provision(config["kernel"])
    run = new_run("overhead", experiment_file=path, kernel=config["kernel"])
    handle, booted = vm_for(image)
    try:
        run.update_metadata(accelerator=handle.accel, kernel_release=handle.kernel_release,
                            image_manifest_sha256=image.manifest_sha256,
                            qemu=tool_version(["qemu-system-x86_64", "--version"]))
        round_trip = measure_round_trip(handle, OverheadConfig(
            kernel_iterations=config["kernel_iterations"], upcall_iterations=config["upcall_iterations"],
            warmup_iterations=config["upcall_warmup"]), log_dir=run.logs)
        run.record("round_trip", round_trip)
        print(f"  kernel {round_trip['kernel_ns_per_query']:.0f} ns/query, user-space round trip "
              f"{round_trip['user_round_trip_ns_per_query']:.0f} ns/query: ratio {round_trip['ratio']:.0f}x")
        updates = measure_update_latency(handle, config["module_updates"], config["hot_updates"], run.logs)
        run.record("update_latency", updates)
        print(f"  update: hot load {updates['hot']['median_total_ms']:.1f} ms, compiled module "
              f"{updates['module']['median_total_ms']:.0f} ms (dominated by {updates['module']['dominant_step']})")
    except BaseException:
        run.finish("failed")
        raise
    finally:
        if booted:
            down(handle)
    try:
        if config["service"]:
            from testbed.slowpath_run import SlowpathConfig, run_slowpath

            report = run_slowpath(SlowpathConfig(kernel=config["kernel"]))
            run.record("service", {k: report.get(k) for k in (
                "ok", "error", "service_cpu", "time_to_recover_s", "updates", "failed_queries",
                "update_steps_s", "service_startup_s", "rejected", "accelerator")})
            cpu = report.get("service_cpu") or {}
            print(f"  slow-path service while adapting: {cpu.get('cores', float('nan')):.2f} cores, "
                  f"recovered in {report.get('time_to_recover_s')} s")
    except BaseException:
        run.finish("failed")
        raise
    run.finish()
    return run
