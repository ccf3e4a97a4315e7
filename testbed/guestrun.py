"""Running one of the project's guest-side drivers against a plan the host prepared.

The pattern every in-guest measurement follows: the host writes a plan directory (JSON plus the
modules, blobs and arrays it names), packs it, copies it into the guest, and runs
`python -m <driver> plan.json` from the read-only share of this checkout with the guest's venv.
The driver prints one JSON report as its last line of output; anything else it prints, and its
stderr, go to the run's logs.
"""

from __future__ import annotations

import json
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from vm.guest import Guest
from vm.image import Image
from vm.qemu import VmHandle, down, status, up

GUEST_SHARE = "/opt/liteflow"          # the read-only 9p share of this checkout
GUEST_PYTHON = "/opt/liteflow-venv/bin/python"
GUEST_WORK = "/root/lf_plans"
PLAN_SUFFIXES = (".ko", ".npy", ".blob", ".json", ".symvers", ".keras")
# Remove every LiteFlow module a crashed or failed run left in the guest (app first: its exit
# unpins the active snapshot), and fail if any is still there.
SCRUB = (
    "for m in lf_test $(awk '/^lf_snap_/ {print $1}' /proc/modules) liteflow; do "
    "grep -q \"^$m \" /proc/modules && rmmod $m; done; "
    "! grep -qE '^(liteflow|lf_test|lf_snap_)' /proc/modules"
)


class GuestDriverError(RuntimeError):
    """The driver gave no report (crashed, or printed no JSON); carries its stderr tail."""


@dataclass
class DriverResult:
    report: dict
    exit_code: int
    stderr: str


def pack_plan(plan_dir: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(plan_dir.iterdir()):
            if path.suffix in PLAN_SUFFIXES:
                tar.add(path, arcname=path.name)


def copy_plan(guest: Guest, plan_dir: Path, name: str, timeout_s: float, step: str) -> str:
    """Copy plan_dir into the guest; returns the guest directory holding it."""
    archive = plan_dir.parent / f"{name}.tar.gz"
    pack_plan(plan_dir, archive)
    work = f"{GUEST_WORK}/{name}"
    try:
        guest.run(f"rm -rf {work} && mkdir -p {work}", timeout=timeout_s, step=step)
        guest.put(archive, f"{work}/plan.tar.gz", step=step)
        guest.run(f"tar -xzf {work}/plan.tar.gz -C {work}", timeout=timeout_s, step=step)
    finally:
        archive.unlink(missing_ok=True)
    return work


def run_driver(guest: Guest, driver: str, work: str, timeout_s: float, step: str) -> DriverResult:
    """Run `python -m driver WORK/plan.json` in the guest; exit 1 means "checks failed", not a crash."""
    command = (f"cd {GUEST_SHARE} && PYTHONDONTWRITEBYTECODE=1 {GUEST_PYTHON} -m {driver} "
               f"{shlex.quote(work + '/plan.json')}")
    result = guest.run(command, timeout=timeout_s, step=step, check=False)
    lines = result.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise GuestDriverError(f"{driver} gave no report (exit {result.exited}): "
                               f"{result.stderr.strip()[-2000:]}") from exc
    return DriverResult(report, result.exited, result.stderr)


def vm_for(image: Image, accel: str = "auto", name: str = "default") -> tuple[VmHandle, bool]:
    """Reuse the running VM if it runs this image, else boot one; True when we booted it.

    A VM of another image (or a dead one's leftovers) is stopped first: measurements never run
    on a guest other than the one the run's metadata names.
    """
    current = status(name)
    if current.state == "running" and current.handle and Path(current.handle.image_path) == image.path:
        return current.handle, False
    if current.state in ("running", "dead"):
        down(current.handle)
    return up(image, accel=accel, name=name), True
