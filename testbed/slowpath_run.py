"""Host half of the slow-path experiment: the kernel's snapshot follows a target that changes.

    python -m testbed.slowpath_run [--update hot|module] [--bound 0.1] [--keep-vm] [--json OUT]

The host builds liteflow.ko and lf_test.ko in the guest kernel's build root, trains the initial
NN on target A with TensorFlow and makes its snapshot (blob), then boots (or reuses) its own VM
("slowpath"), copies the plan in and runs testbed.slowpath_guest, which drives the real service
and reports: time until the kernel's error on target B falls below the bound, updates, failed
queries. `run_slowpath(config) -> dict` is the function entry point.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from testbed.guestrun import GUEST_WORK, SCRUB, GuestDriverError, copy_plan, run_driver, vm_for
from testbed.results import REPO_ROOT
from vm.buildroot import build_modules, ensure_build_root
from vm.image import provision
from vm.kernels import resolve_kernel
from vm.qemu import VmHandle, down


@dataclass
class SlowpathConfig:
    kernel: str = "debian-6.1"
    accel: str = "auto"
    vm_name: str = "slowpath"
    update: str = "hot"
    bound: float = 0.1              # mean |kernel - target B| on held-out inputs (output range +-0.8)
    threshold: float = 0.05         # the service's fidelity-loss threshold
    window: int = 2                 # rounds in the band before an update (each round ~30 s under TCG)
    band_floor: float = 0.01
    sample_every: int = 256
    warmup_rounds: int = 2
    held_out_count: int = 1024
    recover_timeout_s: float = 300.0
    startup_timeout_s: float = 900.0
    stop_timeout_s: float = 120.0
    keep_vm: bool = False
    kill_mid_update: bool = False   # then SIGKILL the service during an update and restart it
    kill_delay_s: float = 2.0       # after "update-begin": inside quantize, which takes ~20 s under TCG
    adapter: dict = field(default_factory=lambda: {"buffer": 2048, "epochs": 3, "batch_size": 256,
                                                   "learning_rate": 0.01})


def prepare_plan(config: SlowpathConfig, plan_dir: Path) -> Path:
    """Modules, the initial NN (target A) and its snapshot, held-out inputs, plan.json."""
    from userspace.slowpath.examples.target_tracking import INPUT_ENCODING, INPUT_SIZE, train_initial
    from userspace.slowpath.service import calibration_data, validate_candidate, Candidate, StepTimer
    from userspace.snapshot import build_snapshot, new_snapshot_id, write_blob

    root = ensure_build_root(resolve_kernel(config.kernel))
    build_modules(root, REPO_ROOT / "kernel", ["core", "test"], out_dir=plan_dir, strict=True)
    model = train_initial("A")
    model.save(plan_dir / "initial.keras")
    rng = np.random.default_rng(1)
    calib = rng.integers(-128, 128, (512, INPUT_SIZE)).astype(np.int8)
    snap = build_snapshot(model, data=calibration_data(calib, INPUT_ENCODING, INPUT_SIZE))
    blob = write_blob(snap.spec)
    initial_id = new_snapshot_id()
    # the same checks the service applies to its candidates
    validate_candidate(Candidate(initial_id, snap.spec, blob, snap.tflite), INPUT_ENCODING, INPUT_SIZE, 1,
                       calib, StepTimer())
    (plan_dir / "initial.blob").write_bytes(blob)
    held_out = np.random.default_rng(2).integers(-128, 128, (config.held_out_count, INPUT_SIZE)).astype(np.int8)
    np.save(plan_dir / "held_out.npy", held_out)
    plan = {"initial_blob": "initial.blob", "initial_model": "initial.keras", "initial_id": initial_id,
            "held_out": "held_out.npy", **{k: v for k, v in asdict(config).items()
                                           if k not in ("kernel", "accel", "vm_name", "keep_vm")}}
    path = plan_dir / "plan.json"
    path.write_text(json.dumps(plan, indent=1))
    return path


def run_slowpath(config: SlowpathConfig = SlowpathConfig()) -> dict:
    """Prepare, boot or reuse the VM named config.vm_name, run the guest half, return its report."""
    image = provision(config.kernel)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    plan_dir = REPO_ROOT / "build" / "slowpath" / run_id
    plan_dir.mkdir(parents=True)
    t0 = time.monotonic()
    prepare_plan(config, plan_dir)
    prepare_s = round(time.monotonic() - t0, 1)
    handle: VmHandle | None = None
    booted = False
    try:
        handle, booted = vm_for(image, config.accel, name=config.vm_name)
        scale = handle.timeout_factor
        work = f"{GUEST_WORK}/{run_id}"
        with handle.guest() as guest:
            copy_plan(guest, plan_dir, run_id, timeout_s=120 * scale, step="copy the plan")
            guest.run(SCRUB, timeout=120 * scale, step="clear LiteFlow modules left by an earlier run")
            try:
                driven = run_driver(guest, "testbed.slowpath_guest", work, timeout_s=3600 * scale,
                                    step="run the slow path in the guest")
                report = driven.report
                (plan_dir / "guest.stderr").write_text(driven.stderr)
            except GuestDriverError as exc:
                report = {"ok": False, "error": str(exc)}
            got = guest.run(f"cat {work}/service.jsonl", timeout=60 * scale, step="fetch the log", check=False)
            (plan_dir / "service.jsonl").write_text(got.stdout)
            guest.run(f"rm -rf {work}", timeout=60 * scale, step="clean up", check=False)
        report.update(accelerator=handle.accel, kernel_release=handle.kernel_release, prepare_s=prepare_s,
                      plan_dir=str(plan_dir), bound=config.bound, update=config.update)
        (plan_dir / "report.json").write_text(json.dumps(report, indent=1))
        return report
    finally:
        if handle is not None and (booted and not config.keep_vm or not handle.alive()):
            down(handle)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.slowpath_run")
    p.add_argument("--update", choices=("hot", "module"), default="hot")
    p.add_argument("--bound", type=float, default=SlowpathConfig.bound)
    p.add_argument("--kernel", default=SlowpathConfig.kernel)
    p.add_argument("--accel", default="auto")
    p.add_argument("--keep-vm", action="store_true")
    p.add_argument("--kill-mid-update", action="store_true",
                   help="then SIGKILL the service during an update, check the kernel, restart it")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    report = run_slowpath(SlowpathConfig(kernel=args.kernel, accel=args.accel, update=args.update,
                                         bound=args.bound, keep_vm=args.keep_vm,
                                         kill_mid_update=args.kill_mid_update))
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    summary = {k: report.get(k) for k in ("ok", "error", "accelerator", "update", "time_to_recover_s", "updates",
                                          "failed_queries", "initial_error", "final_error", "bound",
                                          "service_startup_s", "rejected", "kill", "plan_dir")}
    print(json.dumps(summary, indent=1))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
