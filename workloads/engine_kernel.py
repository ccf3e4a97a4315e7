"""The engine experiment's in-kernel half: the core's BENCH command in the guest.

The modules are built in the guest kernel's own root, the VM is reused when it runs the right
image (else booted, and stopped again afterwards), and the guest driver also times the user-space
build of the engine on the same blob in the same guest, so kernel and user space are compared on
one CPU, one accelerator, one load: the ratio is the figure to read, not the absolute times
(under TCG both are emulated).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from common.system import tool_version
from testbed.guestrun import copy_plan, run_driver, vm_for
from testbed.modules import SnapshotModule, build_with_snapshots
from testbed.results import REPO_ROOT, Run
from vm.buildroot import ensure_build_root
from vm.image import provision
from vm.kernels import resolve_kernel
from vm.qemu import down

MIN_ITERATIONS = 100
GUEST_TIMEOUT_S = 1800


def _plan(networks: list[dict[str, Any]], blobs: dict[str, bytes], macs_per_repetition: int,
          plan_dir: Path) -> tuple[dict, list[SnapshotModule]]:
    """The guest's plan, and the snapshots too big for a hot load, to ship as compiled modules
    (the way LiteFlow installs them anyway)."""
    from userspace.snapshot import Engine, module_name, new_snapshot_id, read_blob
    from userspace.uapi import load_uapi

    blob_limit = load_uapi().limits["BINARY_MAX"]
    entries, modules = [], []
    for network in networks:
        name = network["name"]
        (plan_dir / f"{name}.blob").write_bytes(blobs[name])
        macs = Engine.from_blob(blobs[name]).macs
        iterations = max(MIN_ITERATIONS, macs_per_repetition // macs)
        snapshot_id = new_snapshot_id()
        entry = {
            "name": name, "blob": f"{name}.blob", "snapshot_id": snapshot_id,
            "input_size": network["units"][0], "output_size": network["units"][-1],
            "kernel_iterations": iterations, "userspace_iterations": iterations,
        }
        if len(blobs[name]) > blob_limit:
            modules.append(SnapshotModule(read_blob(blobs[name]), "lf_test", snapshot_id,
                                          f"the engine experiment's network {name!r}"))
            entry["module"] = f"{module_name('lf_test', snapshot_id)}.ko"
        entries.append(entry)
    return {"networks": entries}, modules


def time_in_guest(run: Run, networks: list[dict[str, Any]], blobs: dict[str, bytes],
                  kernel_config: dict[str, Any]) -> None:
    """Record kernel/<network> results (kernel ns/query, guest user-space ns, their ratio) into run."""
    import json

    image = provision(kernel_config["kernel"])
    root = ensure_build_root(resolve_kernel(kernel_config["kernel"]))
    with tempfile.TemporaryDirectory(prefix="liteflow-engine-", dir=REPO_ROOT / "build") as tmp:
        plan_dir = Path(tmp)
        plan, modules = _plan(networks, blobs, kernel_config["macs_per_repetition"], plan_dir)
        build_with_snapshots(root, plan_dir, modules)
        (plan_dir / "plan.json").write_text(json.dumps(plan))
        handle, booted = vm_for(image)
        try:
            run.update_metadata(
                guest={"kernel_release": handle.kernel_release, "accelerator": handle.accel,
                       "image_manifest_sha256": image.manifest_sha256,
                       "qemu": tool_version(["qemu-system-x86_64", "--version"])},
            )
            scale = handle.timeout_factor
            with handle.guest() as guest:
                step = "copy the engine plan into the guest"
                work = copy_plan(guest, plan_dir, run.run_id, timeout_s=120 * scale, step=step)
                driven = run_driver(guest, "testbed.engine_guest", work, timeout_s=GUEST_TIMEOUT_S * scale,
                                    step="in-kernel engine benchmark")
                (run.logs / "engine_guest.stderr").write_text(driven.stderr)
                guest.run(f"rm -rf {work}", timeout=60 * scale, step="clean up", check=False)
        finally:
            if booted:
                down(handle)
    for name, figures in driven.report["networks"].items():
        figures["kernel_over_userspace"] = figures["kernel_ns_per_query"] / figures["guest_userspace_ns_per_inference"]
        figures["accelerator"] = handle.accel
        run.record(f"kernel/{name}", figures)
        print(f"  {name:10s} in-kernel {figures['kernel_ns_per_query']:10.1f} ns/query, user-space build in the "
              f"same guest {figures['guest_userspace_ns_per_inference']:10.1f} ns/inference "
              f"(kernel/user {figures['kernel_over_userspace']:.2f}, {handle.accel})")
