"""The guest session: everything between "an experiment wants the guest" and "its report is stored".

Every guest-side measurement follows the same sequence: provision the image (cached), build the
modules in the guest kernel's own Debian root (same headers, same gcc), boot or reuse the VM,
write a plan directory (JSON plus the modules, blobs and arrays it names), copy it in, clear
LiteFlow modules a crashed run left, run `python -m guest.driver NAME plan.json` from the
read-only share with the guest's venv, keep the driver's stderr and dmesg in the run's `logs/`,
clean the guest's work directory, and stop the VM if this session booted it. Every timeout is
given for TCG and scaled by the accelerator (vm.accel: KVM is about five times faster).

One session serves every experiment of an `invoke bench` that uses the same kernel, so the VM
boots once; the run metadata each experiment records (accelerator, guest kernel, image manifest,
the build root's gcc and headers) comes from `describe()`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.system import tool_version
from testbed.modules import SnapshotModule, build_with_snapshots
from testbed.store import REPO_ROOT, Run
from vm.buildroot import BuildRoot, ensure_build_root, root_summary
from vm.guest import GuestError
from vm.image import Image, provision
from vm.kernels import resolve_kernel
from vm.qemu import VmError, VmHandle, down, status, up

GUEST_SHARE = "/opt/liteflow"          # the read-only 9p share of this checkout
GUEST_PYTHON = "/opt/liteflow-venv/bin/python"
GUEST_WORK = "/root/lf_plans"
PLANS_DIR = REPO_ROOT / "build" / "plans"
PLAN_SUFFIXES = (".ko", ".npy", ".blob", ".json", ".symvers", ".keras", ".bin")
GUEST_ENV = "PYTHONDONTWRITEBYTECODE=1 TF_CPP_MIN_LOG_LEVEL=2"
UNLOAD_COMMAND = f"cd {GUEST_SHARE} && {GUEST_ENV} {GUEST_PYTHON} -m guest.tools unload"


class SessionError(RuntimeError):
    """A step of the session failed; `step` names it, and the message says if the VM died."""

    def __init__(self, step: str, message: str):
        super().__init__(f"step '{step}' failed: {message}")
        self.step = step


@dataclass
class DriverResult:
    report: dict
    stderr: str
    fetched: dict[str, str]


def pack_plan(plan_dir: Path, archive: Path) -> None:
    """Only what the guest needs (modules, arrays, blobs, JSON): build logs stay on the host."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(plan_dir.iterdir()):
            if path.suffix in PLAN_SUFFIXES:
                tar.add(path, arcname=path.name)


def vm_for(image: Image, accel: str = "auto", name: str | None = None) -> tuple[VmHandle, bool]:
    """Reuse the running VM if it runs this image and shares this checkout, else boot one; True
    when we booted it.

    A VM of another image or another checkout (or a dead one's leftovers) is stopped first:
    measurements never run on a guest, or guest code, other than the ones the run names.
    """
    current = status(name)
    if (current.state == "running" and current.handle and Path(current.handle.image_path) == image.path
            and current.handle.share == str(REPO_ROOT)):
        return current.handle, False
    if current.state in ("running", "dead"):
        down(current.handle)
    return up(image, accel=accel, name=name), True


class GuestSession:
    """Provisioning, build root, modules, VM and driver runs for one guest kernel."""

    def __init__(self, kernel: str = "debian-6.1", *, accel: str = "auto", vm_name: str | None = None,
                 keep_vm: bool = False):
        self.kernel = kernel
        self.accel = accel
        self.vm_name = vm_name
        self.keep_vm = keep_vm
        self._image: Image | None = None
        self._root: BuildRoot | None = None
        self._handle: VmHandle | None = None
        self._booted = False

    # -- what the session owns, created on first use ----------------------------------------

    @property
    def image(self) -> Image:
        if self._image is None:
            self._image = provision(self.kernel)
        return self._image

    @property
    def root(self) -> BuildRoot:
        if self._root is None:
            root = ensure_build_root(resolve_kernel(self.kernel))
            if root.kernel_release != self.image.kernel_release:
                raise SessionError("build root", f"build root has kernel {root.kernel_release}, the image has "
                                                 f"{self.image.kernel_release}; run invoke clean-cache and provision again")
            self._root = root
        return self._root

    @property
    def handle(self) -> VmHandle:
        """The running VM, booted (or reused) on first use; rebooted if it died since."""
        if self._handle is not None and not self._handle.alive():
            down(self._handle)
            self._handle = None
        if self._handle is None:
            try:
                self._handle, booted = vm_for(self.image, self.accel, self.vm_name)
            except VmError as exc:
                raise SessionError("boot", str(exc)) from exc
            self._booted = self._booted or booted
        return self._handle

    def scaled(self, seconds: float) -> float:
        """A timeout given for TCG, scaled for the accelerator the VM really runs on."""
        return seconds * self.handle.timeout_factor

    def describe(self) -> dict[str, Any]:
        """The run-metadata fields this session is responsible for (see testbed.store.METADATA_KEYS)."""
        handle, image, root = self.handle, self.image, self.root
        return {
            "qemu": tool_version(["qemu-system-x86_64", "--version"]),
            "accelerator": handle.accel,
            "guest_kernel": self.kernel,
            "kernel_release": handle.kernel_release,
            "image_manifest_sha256": image.manifest_sha256,
            "boot_seconds": handle.boot_seconds,
            "boot_attempts": handle.boot_attempts,
            "build_root": root_summary(root),
        }

    # -- plans and modules ---------------------------------------------------------------------

    def plan_dir(self, run: Run, name: str, files: Sequence[Path] = ()) -> Path:
        """A fresh host directory for one plan, build/plans/<run-id>/<name>/, holding copies of
        `files` (modules built once per run, blobs)."""
        path = PLANS_DIR / run.run_id / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        for file in files:
            shutil.copy(file, path / file.name)
        return path

    def build_modules(self, plan_dir: Path, snapshots: Sequence[SnapshotModule] = ()) -> None:
        """The core, the apps and the given snapshot modules for this guest's kernel, into plan_dir."""
        build_with_snapshots(self.root, plan_dir, list(snapshots))

    # -- running a driver ------------------------------------------------------------------

    def run_driver(self, run: Run, driver: str, plan: dict, plan_dir: Path, *, timeout_s: float,
                   step: str, fetch: tuple[str, ...] = (), log_name: str | None = None) -> DriverResult:
        """Copy plan_dir (with plan.json) in, clear leftovers, run guest.NAME, keep its logs, clean up.

        `timeout_s` is for TCG (scaled here). `fetch` names files the driver leaves in its work
        directory to bring back (their text lands in DriverResult.fetched and in the run's logs).
        A guest that dies mid-run raises SessionError naming the step and saying the VM died.
        """
        log_name = log_name or plan_dir.name
        (plan_dir / "plan.json").write_text(json.dumps(plan, indent=1))
        work = f"{GUEST_WORK}/{run.run_id}-{plan_dir.name}"
        handle = self.handle
        current = "copy the plan into the guest"
        try:
            with handle.guest() as guest:
                archive = plan_dir.parent / f"{plan_dir.name}.tar.gz"
                pack_plan(plan_dir, archive)
                try:
                    guest.run(f"rm -rf {work} && mkdir -p {work}", timeout=self.scaled(60), step=current)
                    guest.put(archive, f"{work}/plan.tar.gz", step=current)
                    guest.run(f"tar -xzf {work}/plan.tar.gz -C {work}", timeout=self.scaled(60), step=current)
                finally:
                    archive.unlink(missing_ok=True)
                current = "clear LiteFlow modules left by an earlier run"
                guest.run(UNLOAD_COMMAND, timeout=self.scaled(120), step=current)
                current = step
                command = (f"cd {GUEST_SHARE} && {GUEST_ENV} {GUEST_PYTHON} -m guest.driver {driver} "
                           f"{shlex.quote(work + '/plan.json')}")
                result = guest.run(command, timeout=self.scaled(timeout_s), step=current, check=False)
                (run.logs / f"{log_name}.stderr").write_text(result.stderr)
                fetched = {}
                for name in fetch:
                    got = guest.run(f"cat {work}/{name}", timeout=self.scaled(60), step=f"fetch {name}", check=False)
                    fetched[name] = got.stdout
                    (run.logs / f"{log_name}.{name}").write_text(got.stdout)
                report = _last_json_line(result.stdout)
                if report is None:
                    raise SessionError(current, self._with_vm_state(
                        f"guest.{driver} gave no report (exit {result.exited}): {result.stderr.strip()[-2000:]}"))
                if report.get("dmesg_new"):
                    (run.logs / f"{log_name}.dmesg.txt").write_text("\n".join(report["dmesg_new"]) + "\n")
                if report.get("ok") is False or not all(c.get("ok", True) for c in report.get("checks", [])):
                    guest.run(UNLOAD_COMMAND, timeout=self.scaled(120), step="clear modules after failed checks",
                              check=False)
                guest.run(f"rm -rf {work}", timeout=self.scaled(60), step="clean the guest's work dir", check=False)
        except GuestError as exc:
            raise SessionError(current, self._with_vm_state(str(exc))) from exc
        shutil.rmtree(plan_dir)  # its report and logs are in the run; a failed one stays for a look
        return DriverResult(report, result.stderr, fetched)

    def _with_vm_state(self, detail: str) -> str:
        """Say so when the guest is gone: a dead VM explains a silent or broken connection."""
        if self._handle is not None and not self._handle.alive():
            return f"the VM (qemu pid {self._handle.pid}) died: {detail}"
        return detail

    def close(self) -> None:
        """Stop the VM if this session booted it (or it died); a reused VM stays up."""
        if self._handle is not None and ((self._booted and not self.keep_vm) or not self._handle.alive()):
            down(self._handle)
        self._handle = None

    def __enter__(self) -> GuestSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _last_json_line(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
