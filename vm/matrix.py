"""The kernel build matrix: LiteFlow's modules built for every kernel we claim to support.

API drift between kernels (generic netlink, congestion-control hooks, …) only shows when the
same sources meet each kernel's own headers and gcc, so `invoke build --kernel all` compiles the
core, the test app and a generated snapshot module inside each kernel's cached Debian root and
treats any compiler warning as a failure. `all` includes the paper's Linux 4.15, compiled from
source first when it is not cached (~11 minutes on 2 cores); `debian` is the Debian kernels only.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vm.buildroot import BuiltModule, build_modules, ensure_build_root
from vm.kernels import KernelSpec, all_kernels, matrix_kernels, resolve_kernel

REPO = Path(__file__).resolve().parent.parent
KERNEL_SRC = REPO / "kernel"
MODULE_DIRS = ("core", "test", "cc")
SNAPSHOT_DIR = "snapshots"
EXAMPLE_APP = "lf_test"
EXAMPLE_SNAPSHOT_ID = 0x5EED


@dataclass
class KernelBuildReport:
    kernel: str
    kernel_release: str
    gcc_version: str
    modules: list[BuiltModule]
    out_dir: Path

    def summary(self) -> str:
        lines = [f"{self.kernel}: kernel {self.kernel_release}, {self.gcc_version} -> {self.out_dir}"]
        for module in self.modules:
            flag = f"  {len(module.warnings)} warning(s)" if module.warnings else ""
            lines.append(f"  {module.name + '.ko':40s} vermagic {module.vermagic}{flag}")
        return "\n".join(lines)


def selected_kernels(name: str) -> list[KernelSpec]:
    """`all`: every kernel (4.15 from source, then Debian's); `debian`: the three Debian kernels;
    anything else goes through resolve_kernel."""
    if name == "all":
        return matrix_kernels()
    if name == "debian":
        return all_kernels()
    return [resolve_kernel(name)]


def example_snapshot_spec():
    """The snapshot every matrix build compiles: the Aurora-sized example, quantized (seeded)."""
    from userspace.snapshot import build_snapshot
    from userspace.snapshot.verify import example_keras_model

    return build_snapshot(example_keras_model(seed=0)).spec


def stage_sources(staging: Path, snapshot_spec) -> list[str]:
    """Copy kernel/ into `staging` and add the generated snapshot module; returns the folders to build."""
    from userspace.snapshot import generate_module

    shutil.copytree(KERNEL_SRC, staging, ignore=shutil.ignore_patterns("*.o", "*.ko", "*.cmd", "*.mod*"))
    snapshot_dir = generate_module(
        snapshot_spec,
        staging / SNAPSHOT_DIR,
        app=EXAMPLE_APP,
        snapshot_id=EXAMPLE_SNAPSHOT_ID,
        include_dir="$(src)/../../include",  # Kbuild expands $(src) wherever the tree is copied
        source="the Aurora-sized example model (invoke snapshot.example)",
    )
    return [*MODULE_DIRS, str(snapshot_dir.relative_to(staging))]


def build_matrix(kernel: str, out_dir: Path, strict: bool = True) -> list[KernelBuildReport]:
    """Build core, lf_test and the example snapshot for `kernel` (or `all`) into out_dir/<kernel>/."""
    specs = selected_kernels(kernel)
    snapshot_spec = example_snapshot_spec()
    reports = []
    with tempfile.TemporaryDirectory(prefix="liteflow-kernel-") as tmp:
        staging = Path(tmp) / "kernel"
        folders = stage_sources(staging, snapshot_spec)
        for spec in specs:
            root = ensure_build_root(spec)
            target = out_dir / spec.slug
            if target.exists():
                shutil.rmtree(target)  # never mix modules of two builds
            modules = build_modules(root, staging, folders, out_dir=target, strict=strict)
            reports.append(KernelBuildReport(spec.name, root.kernel_release, root.gcc_version, modules, target))
    return reports
