"""The build matrix for real: every module, every Debian kernel, inside its own cached root.

These tests build (or reuse) the Debian roots, so the first run on a fresh machine takes a few
minutes per kernel. They compile only; nothing is ever loaded on the machine running them.
"""

import os

import pytest

from vm.buildroot import BuildWarningsError, build_modules, ensure_build_root
from vm.kernels import all_kernels, resolve_kernel
from vm.matrix import EXAMPLE_SNAPSHOT_ID, build_matrix

pytestmark = [
    pytest.mark.kernelbuild,
    pytest.mark.tensorflow,
    pytest.mark.skipif(os.geteuid() != 0, reason="building inside the Debian roots needs chroot (root)"),
]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    return build_matrix("debian", tmp_path_factory.mktemp("modules"), strict=True)  # 4.15: tests/vm/test_kernel415.py


def test_every_debian_kernel_is_built(matrix):
    assert [report.kernel for report in matrix] == [spec.name for spec in all_kernels()]
    releases = {report.kernel: report.kernel_release for report in matrix}
    assert releases["debian-5.10"].startswith("5.10.")
    assert releases["debian-6.1"].startswith("6.1.")
    assert releases["debian-6.12"].startswith("6.12.")


@pytest.mark.parametrize("index", range(3))
def test_core_apps_and_snapshot_build_warning_free(matrix, index):
    report = matrix[index]
    names = [module.name for module in report.modules]
    assert names == ["liteflow", "lf_test", "lf_cc", f"lf_snap_lf_test_{EXAMPLE_SNAPSHOT_ID:016x}"]
    for module in report.modules:
        assert module.path.is_file() and module.path.parent == report.out_dir
        assert module.vermagic.split()[0] == report.kernel_release
        assert module.warnings == [], f"{module.name} on {report.kernel}: {module.warnings}"


def test_a_warning_fails_the_strict_build(tmp_path):
    """The matrix is only as strict as its warning detection: prove it trips on a real gcc warning."""
    root = ensure_build_root(resolve_kernel("debian-6.1"), progress=False)
    source = tmp_path / "noisy"
    source.mkdir()
    (source / "noisy.c").write_text(
        '#include <linux/module.h>\n'
        'static int __init noisy_init(void) { int unused; return 0; }\n'
        'module_init(noisy_init);\nMODULE_LICENSE("GPL");\n'
    )
    (source / "Kbuild").write_text("obj-m := noisy.o\n")
    with pytest.raises(BuildWarningsError, match="unused"):
        build_modules(root, source, out_dir=tmp_path / "out", strict=True)
