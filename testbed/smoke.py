"""`invoke smoke`: LiteFlow's core proven in a real guest kernel, under load, while snapshots swap.

The host prepares everything that needs the toolchain (quantized models, the user-space engine's
expected outputs, snapshot modules built in the guest kernel's own root, hot-update blobs) into a
plan; the guest half (testbed.smoke_guest) executes it against the real modules and reports every
check as JSON; the host writes the run's results. Each step has a name, so when the guest dies or
stops answering the error says where, and the VM is stopped by its pid.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.system import tool_version
from testbed.guestrun import SCRUB, GuestDriverError, copy_plan, run_driver, vm_for
from testbed.modules import SnapshotModule, build_with_snapshots
from testbed.results import REPO_ROOT, Run, new_run
from vm.buildroot import BuildRoot, ensure_build_root
from vm.guest import GuestError
from vm.image import provision
from vm.kernels import resolve_kernel
from vm.qemu import VmError, VmHandle, down

APP = "lf_test"
INPUT_SIZE = 30                        # Aurora-sized: 30 features, one decision
OUTPUT_SIZE = 1
INJECTIONS = ("wrong-output", "leak-module")


class SmokeError(RuntimeError):
    """The smoke could not run to the end; `step` names where it stopped."""

    def __init__(self, step: str, message: str):
        super().__init__(f"smoke step '{step}' failed: {message}")
        self.step = step


class SmokeFailed(RuntimeError):
    """The smoke ran, and at least one check failed."""


@dataclass(frozen=True)
class SmokeConfig:
    kernel: str = "debian-6.1"
    accel: str = "auto"
    module_swaps: int = 40
    hot_swaps: int = 60
    distinct_models: int = 4
    fixed_inputs: int = 64
    min_queries: int = 100_000
    stress_queries_per_cpu: int = 1_000_000_000   # stopped explicitly once the swaps are done
    stress_min_wait_s: int = 300
    keep_vm: bool = False
    inject: str | None = None                      # tests only: prove a check can fail

    def swap_kinds(self) -> list[str]:
        """Module inserts spread evenly among hot loads, so both kinds follow both kinds."""
        total = self.module_swaps + self.hot_swaps
        kinds, placed = [], 0
        for index in range(total):
            due = (index + 1) * self.module_swaps // total
            kinds.append("module" if due > placed else "hot")
            placed = due
        return kinds


@dataclass
class SmokeOutcome:
    run: Run
    passed: bool
    checks: list[dict]
    summary: str


# ---------------------------------------------------------------------------- plan (host side)


def _models(config: SmokeConfig) -> list[Any]:
    from userspace.snapshot import build_snapshot
    from workloads.models import dense_model

    return [
        build_snapshot(dense_model([INPUT_SIZE, 32, 16, OUTPUT_SIZE], ["tanh", "tanh", "linear"], seed=seed,
                                   name=f"smoke{seed}"), seed=seed).spec
        for seed in range(config.distinct_models)
    ]


def prepare_plan(config: SmokeConfig, root: BuildRoot, plan_dir: Path) -> Path:
    """Models, expected outputs, blobs and modules for one smoke, written into plan_dir."""
    from userspace.snapshot import Engine, module_name, write_blob

    specs = _models(config)
    rng = np.random.default_rng(2022)
    inputs = rng.integers(-128, 128, size=(config.fixed_inputs, INPUT_SIZE), dtype=np.int8)
    np.save(plan_dir / "inputs.npy", inputs)
    expected = {}
    for index, spec in enumerate(specs):
        blob = write_blob(spec)
        (plan_dir / f"model{index}.blob").write_bytes(blob)
        outputs = Engine.from_blob(blob).infer(inputs)
        if config.inject == "wrong-output" and index == 1:
            outputs = outputs.copy()
            outputs[0, 0] = np.int8(int(outputs[0, 0]) ^ 1)  # one wrong bit the kernel must expose
        np.save(plan_dir / f"expected{index}.npy", outputs)
        expected[str(index)] = f"expected{index}.npy"

    bad_blobs = _bad_blobs(plan_dir, (plan_dir / "model0.blob").read_bytes())
    kinds = config.swap_kinds()
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
    if config.inject == "leak-module":
        first_module_follower = next(i for i in range(1, len(swaps)) if swaps[i - 1]["kind"] == "module")
        swaps[first_module_follower]["leak_previous"] = True
    first = {"kind": "module", "snapshot_id": ids[0], "model": 0, "name": module_name(APP, ids[0])}
    first["module"] = f"{first['name']}.ko"

    modules = [first] + [s for s in swaps if s["kind"] == "module"]
    build_with_snapshots(root, plan_dir, [SnapshotModule(specs[m["model"]], APP, m["snapshot_id"],
                                                         f"smoke model {m['model']}") for m in modules])
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
        "min_queries": config.min_queries,
        "stress_queries_per_cpu": config.stress_queries_per_cpu,
        "stress_min_wait_s": config.stress_min_wait_s,
    }
    path = plan_dir / "plan.json"
    path.write_text(json.dumps(plan, indent=1))
    return path


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


# ---------------------------------------------------------------------------- run


def run_smoke(config: SmokeConfig = SmokeConfig()) -> SmokeOutcome:
    """Provision (cached), build, boot or reuse the VM, run the guest half, record, check."""
    if config.inject not in (None, *INJECTIONS):
        raise ValueError(f"unknown injection {config.inject!r}; known: {', '.join(INJECTIONS)}")
    step = "provision"
    run = new_run("smoke", kernel=config.kernel, config=asdict(config))
    handle: VmHandle | None = None
    booted = False
    try:
        image = provision(config.kernel)
        step = "build modules and plan"
        root = ensure_build_root(resolve_kernel(config.kernel))
        if root.kernel_release != image.kernel_release:
            raise SmokeError(step, f"build root has kernel {root.kernel_release}, image has {image.kernel_release}; "
                                   f"run invoke clean-cache and provision again")
        plan_dir = REPO_ROOT / "build" / "smoke" / run.run_id
        plan_dir.mkdir(parents=True)
        prepare_plan(config, root, plan_dir)
        step = "boot"
        handle, booted = vm_for(image, config.accel)
        run.update_metadata(
            qemu=tool_version(["qemu-system-x86_64", "--version"]),
            accelerator=handle.accel,
            kernel_release=handle.kernel_release,
            image_manifest_sha256=image.manifest_sha256,
            boot_seconds=handle.boot_seconds,
        )
        scale = handle.timeout_factor
        with handle.guest() as guest:
            step = "copy the plan into the guest"
            work = copy_plan(guest, plan_dir, run.run_id, timeout_s=120 * scale, step=step)
            step = "clear LiteFlow modules left by an earlier run"
            guest.run(SCRUB, timeout=120 * scale, step=step)
            step = "run the smoke in the guest"
            try:
                driven = run_driver(guest, "testbed.smoke_guest", work, timeout_s=1800 * scale, step=step)
            except GuestDriverError as exc:
                raise SmokeError(step, _with_vm_state(handle, str(exc))) from exc
            (run.logs / "guest_agent.stderr").write_text(driven.stderr)
            report = driven.report
            (run.logs / "dmesg.txt").write_text("\n".join(report.pop("dmesg_new")) + "\n")
            run.record("report", report)
            passed = all(check["ok"] for check in report["checks"])
            if not passed:
                step = "clear LiteFlow modules after a failed smoke"
                guest.run(SCRUB, timeout=120 * scale, step=step, check=False)
            guest.run(f"rm -rf {work}", timeout=60 * scale, step="clean the guest's work dir", check=False)
        summary = summarize(report, handle)
        run.record("summary", summary)
        run.finish("passed" if passed else "failed")
        return SmokeOutcome(run, passed, report["checks"], summary)
    except (GuestError, VmError) as exc:
        run.finish("error")
        raise SmokeError(step, _with_vm_state(handle, str(exc))) from exc
    except BaseException:
        run.finish("error")
        raise
    finally:
        if handle is not None and (booted and not config.keep_vm or not handle.alive()):
            down(handle)  # by pid; also clears the state of a VM that died


def _with_vm_state(handle: VmHandle | None, detail: str) -> str:
    """Say so when the guest is gone: a dead VM explains a silent or broken connection."""
    if handle is not None and not handle.alive():
        return f"the VM (qemu pid {handle.pid}) died: {detail}"
    return detail


def summarize(report: dict, handle: VmHandle) -> str:
    """The one-screen summary printed after a smoke."""
    checks = report["checks"]
    failed = [c for c in checks if not c["ok"]]
    kinds = [s["kind"] for s in report["swaps"]]
    module_s = [s["seconds"] for s in report["swaps"] if s["kind"] == "module"]
    hot_s = [s["seconds"] for s in report["swaps"] if s["kind"] == "hot"]
    stats = report.get("stats", {})
    stress = report.get("stress", {})
    lines = [
        f"LiteFlow smoke on {handle.kernel_release} ({handle.accel}, {handle.cpus} vCPUs)",
        f"  swaps: {len(kinds)} ({kinds.count('module')} module inserts, {kinds.count('hot')} hot loads)",
        f"  swap latency (guest, median): insmod {_median_ms(module_s)} ms, hot load {_median_ms(hot_s)} ms",
        f"  stress: {stress.get('queries', 0):,} queries on all vCPUs, {stress.get('errors', '?')} errors; "
        f"core stats: {stats.get('queries', 0):,} queries, {stats.get('errors', '?')} errors, "
        f"{stats.get('swaps', '?')} swaps",
        f"  checks: {len(checks) - len(failed)}/{len(checks)} passed",
    ]
    lines += [f"  FAILED {c['name']}: {c['detail']}" for c in failed[:15]]
    return "\n".join(lines)


def _median_ms(values: list[float]) -> str:
    return f"{1000 * float(np.median(values)):.1f}" if values else "-"
