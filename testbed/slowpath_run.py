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
import shlex
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from testbed.results import REPO_ROOT
from vm.buildroot import build_modules, ensure_build_root
from vm.image import provision
from vm.kernels import resolve_kernel
from vm.qemu import VmHandle, down, status, up

GUEST_SHARE = "/opt/liteflow"
GUEST_PYTHON = "/opt/liteflow-venv/bin/python"
GUEST_WORK = "/root/lf_slowpath"
SCRUB = (
    "for m in lf_test $(awk '/^lf_snap_/ {print $1}' /proc/modules) liteflow; do "
    "grep -q \"^$m \" /proc/modules && rmmod $m; done; "
    "! grep -qE '^(liteflow|lf_test|lf_snap_)' /proc/modules"
)


@dataclass
class SlowpathConfig:
    kernel: str = "debian-6.1"
    accel: str = "auto"
    vm_name: str = "slowpath"
    update: str = "hot"
    bound: float = 0.1              # mean |kernel - target B| on held-out inputs (output range +-0.8)
    threshold: float = 0.05         # the service's fidelity-loss threshold
    window: int = 3
    band_floor: float = 0.01
    sample_every: int = 256
    warmup_rounds: int = 2
    held_out_count: int = 1024
    recover_timeout_s: float = 300.0
    startup_timeout_s: float = 900.0
    stop_timeout_s: float = 120.0
    keep_vm: bool = False
    adapter: dict = field(default_factory=lambda: {"buffer": 2048, "epochs": 3, "batch_size": 256,
                                                   "learning_rate": 0.01})


def prepare_plan(config: SlowpathConfig, plan_dir: Path) -> Path:
    """Modules, the initial NN (target A) and its snapshot, held-out inputs, plan.json."""
    from userspace.slowpath.examples.target_tracking import INPUT_ENCODING, INPUT_SIZE, train_initial
    from userspace.slowpath.service import calibration_data, validate_candidate, Candidate, StepTimer
    from userspace.snapshot import build_snapshot, write_blob

    root = ensure_build_root(resolve_kernel(config.kernel))
    build_modules(root, REPO_ROOT / "kernel", ["core", "test"], out_dir=plan_dir, strict=True)
    model = train_initial("A")
    model.save(plan_dir / "initial.keras")
    rng = np.random.default_rng(1)
    calib = rng.integers(-128, 128, (512, INPUT_SIZE)).astype(np.int8)
    snap = build_snapshot(model, data=calibration_data(calib, INPUT_ENCODING, INPUT_SIZE))
    blob = write_blob(snap.spec)
    initial_id = secrets.randbits(62) | 1
    # the same checks the service applies to its candidates
    validate_candidate(Candidate(initial_id, snap.spec, blob, snap.tflite), INPUT_ENCODING, INPUT_SIZE, 1,
                       calib, StepTimer())
    (plan_dir / "initial.blob").write_bytes(blob)
    held_out = np.random.default_rng(2).integers(-128, 128, (config.held_out_count, INPUT_SIZE)).astype(np.int8)
    np.save(plan_dir / "held_out.npy", held_out)
    plan = {"initial_blob": "initial.blob", "initial_model": "initial.keras", "initial_id": initial_id,
            "held_out": "held_out.npy", **{k: v for k, v in asdict(config).items()
                                           if k not in ("kernel", "accel", "vm_name", "keep_vm")}}
    _pylib(plan_dir / "pylib")
    path = plan_dir / "plan.json"
    path.write_text(json.dumps(plan, indent=1))
    return path


def _pylib(dest: Path) -> None:
    """Pure-Python packages the toolchain needs that the guest venv lacks (jinja2 for codegen)."""
    import shutil

    import jinja2
    import markupsafe

    for package in (jinja2, markupsafe):
        src = Path(package.__file__).parent
        shutil.copytree(src, dest / src.name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))


def _pack(plan_dir: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(plan_dir.iterdir()):
            if path.suffix in (".ko", ".npy", ".blob", ".json", ".keras", ".symvers") or path.name == "pylib":
                tar.add(path, arcname=path.name)


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
        current = status(config.vm_name)
        if current.state == "running" and Path(current.handle.image_path) == image.path:
            handle = current.handle
        else:
            if current.state in ("running", "dead"):
                down(current.handle)
            handle, booted = up(image, accel=config.accel, name=config.vm_name), True
        scale = handle.timeout_factor
        work = f"{GUEST_WORK}/{run_id}"
        with handle.guest() as guest:
            archive = plan_dir.parent / f"{run_id}.tar.gz"
            _pack(plan_dir, archive)
            guest.run(f"mkdir -p {work}", timeout=30 * scale, step="mkdir")
            guest.put(archive, f"{work}/plan.tar.gz", step="copy the plan")
            archive.unlink()
            guest.run(f"tar -xzf {work}/plan.tar.gz -C {work}", timeout=60 * scale, step="unpack the plan")
            guest.run(SCRUB, timeout=120 * scale, step="clear LiteFlow modules left by an earlier run")
            command = (f"cd {GUEST_SHARE} && PYTHONPATH={work}/pylib PYTHONDONTWRITEBYTECODE=1 {GUEST_PYTHON} -m testbed.slowpath_guest "
                       f"{shlex.quote(work + '/plan.json')}")
            result = guest.run(command, timeout=3600 * scale, step="run the slow path in the guest", check=False)
            (plan_dir / "guest.stderr").write_text(result.stderr)
            try:
                report = json.loads(result.stdout.strip().splitlines()[-1])
            except (json.JSONDecodeError, IndexError):
                report = {"ok": False, "error": f"no report from the guest (exit {result.exited}): "
                                                f"{result.stderr.strip()[-2000:]}"}
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
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    report = run_slowpath(SlowpathConfig(kernel=args.kernel, accel=args.accel, update=args.update,
                                         bound=args.bound, keep_vm=args.keep_vm))
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    summary = {k: report.get(k) for k in ("ok", "error", "accelerator", "update", "time_to_recover_s", "updates",
                                          "failed_queries", "initial_error", "final_error", "bound",
                                          "service_startup_s", "rejected", "plan_dir")}
    print(json.dumps(summary, indent=1))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
