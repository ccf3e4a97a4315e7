"""Putting LiteFlow's modules into the running guest and taking them out again.

Modules are always built on the host inside the guest kernel's own Debian root (same headers,
same gcc), then copied into the guest and loaded there in dependency order: the core first, the
apps that register with it next, snapshot modules last (they need an app id). Unloading goes the
other way round, the app first, so its exit releases the active snapshot it pinned.
"""

from __future__ import annotations

import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vm.buildroot import BuildRoot, build_modules, ensure_build_root
from vm.kernels import resolve_kernel
from vm.qemu import VmHandle

KERNEL_SOURCE = Path(__file__).resolve().parent.parent / "kernel"

GUEST_MODULE_DIR = "/root/lf_modules"
GUEST_CORE_SYMVERS = f"{GUEST_MODULE_DIR}/core.Module.symvers"  # snapshot modules built in the guest link to it
LOAD_ORDER = ("liteflow", "lf_test", "lf_cc")  # then snapshot modules (lf_snap_*)
LITEFLOW_MODULE = re.compile(r"^(liteflow|lf_test|lf_cc|lf_snap_\w+)$")


class ModuleError(RuntimeError):
    """A module could not be built, copied, loaded or unloaded; the message names it."""


@dataclass(frozen=True)
class LoadedModule:
    name: str
    size: int
    used_by: str


@dataclass(frozen=True)
class SnapshotModule:
    """A snapshot to ship as a compiled module: its spec, the app it registers with, its id."""

    spec: Any            # userspace.snapshot.SnapshotSpec
    app: str
    snapshot_id: int
    source: str          # where the NN came from, for the generated file's opening comment


def build_with_snapshots(root: BuildRoot, out_dir: Path, snapshots: list[SnapshotModule]) -> None:
    """Core, lf_test and every snapshot module given, compiled in the guest kernel's root in one
    pass per folder (a make per snapshot would cost minutes under a chroot); .ko files land in
    out_dir, named by codegen.module_name."""
    from userspace.snapshot import generate_module, module_name

    with tempfile.TemporaryDirectory(prefix="liteflow-modules-") as tmp:
        staging = Path(tmp) / "kernel"
        shutil.copytree(KERNEL_SOURCE, staging, ignore=shutil.ignore_patterns("*.o", "*.ko", "*.cmd", "*.mod*"))
        folders = ["core", "test", "cc"]
        if snapshots:
            folder = staging / "snapshots"
            folder.mkdir()
            generated = Path(tmp) / "generated"
            names = []
            for snap in snapshots:
                name = module_name(snap.app, snap.snapshot_id)
                made = generate_module(snap.spec, generated, app=snap.app, snapshot_id=snap.snapshot_id,
                                       include_dir="unused", source=snap.source)
                shutil.copy(made / f"{name}.c", folder)
                names.append(name)
            (folder / "Kbuild").write_text("".join(f"obj-m += {name}.o\n" for name in names)
                                           + "ccflags-y += -I$(src)/../include\n")
            folders.append("snapshots")
        build_modules(root, staging, folders, out_dir=out_dir, strict=True)


def _order(names: list[str]) -> list[str]:
    def rank(name: str) -> tuple[int, str]:
        return (LOAD_ORDER.index(name) if name in LOAD_ORDER else len(LOAD_ORDER), name)

    return sorted(names, key=rank)


def build_for(handle: VmHandle, out_dir: Path) -> dict[str, Path]:
    """Build the core and lf_test for the guest's kernel (no snapshot, so no TensorFlow); refuses if
    the build root's release differs from the guest's."""
    root = ensure_build_root(resolve_kernel(handle.image.kernel_name))
    if root.kernel_release != handle.kernel_release:
        raise ModuleError(f"build root has {root.kernel_release}, but the guest runs {handle.kernel_release}")
    out_dir.mkdir(parents=True, exist_ok=True)
    build_with_snapshots(root, out_dir, [])
    return {path.stem: path for path in sorted(out_dir.glob("*.ko"))}


def load(handle: VmHandle, built: dict[str, Path], names: list[str]) -> list[LoadedModule]:
    """Copy `names` into the guest and insmod them in dependency order; returns what is loaded."""
    unknown = [n for n in names if n not in built]
    if unknown:
        raise ModuleError(f"no built module named {', '.join(unknown)}; built: {', '.join(sorted(built))}")
    with handle.guest() as guest:
        guest.run(f"mkdir -p {GUEST_MODULE_DIR}", timeout=30, step="prepare the module dir")
        loaded = {m.name for m in loaded_modules(handle)}
        for name in _order(names):
            if name in loaded:
                continue
            remote = f"{GUEST_MODULE_DIR}/{name}.ko"
            guest.put(built[name], remote, step=f"copy {name}.ko")
            params = ""
            if name.startswith("lf_snap_"):
                app = guest.run("cat /sys/kernel/debug/liteflow_test/app_id", timeout=30,
                                step=f"find the app id for {name}").stdout.strip()
                params = f" app_id={shlex.quote(app)}"
            result = guest.run(f"insmod {remote}{params}", timeout=120, step=f"insmod {name}", check=False)
            if result.exited != 0:
                raise ModuleError(f"insmod {name} failed: {result.stderr.strip()}")
            symvers = built[name].parent / "core.Module.symvers"
            if name == "liteflow" and symvers.is_file():
                guest.put(symvers, GUEST_CORE_SYMVERS, step="copy the core's Module.symvers")
    return loaded_modules(handle)


def unload(handle: VmHandle) -> list[str]:
    """rmmod every LiteFlow module (the guest's own unload: apps, snapshots, core); returns the names removed."""
    from testbed.session import UNLOAD_COMMAND

    with handle.guest() as guest:
        result = guest.run(UNLOAD_COMMAND, timeout=120 * handle.timeout_factor, step="unload", check=False)
    if result.exited != 0:
        raise ModuleError(f"unload failed: {result.stderr.strip()}")
    return result.stdout.split()


def loaded_modules(handle: VmHandle) -> list[LoadedModule]:
    """LiteFlow's modules currently in the guest kernel (from /proc/modules)."""
    with handle.guest() as guest:
        text = guest.run("cat /proc/modules", timeout=30, step="list modules").stdout
    return parse_proc_modules(text)


def parse_proc_modules(text: str) -> list[LoadedModule]:
    modules = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and LITEFLOW_MODULE.match(fields[0]):
            modules.append(LoadedModule(fields[0], int(fields[1]), fields[3].strip(",") if fields[3] != "-" else ""))
    return modules
