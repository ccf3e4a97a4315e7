"""Integration: the user-space baseline's round trip vs in-kernel inference, in a real guest kernel.

Boots its own VM (name "overhead", so it never touches another run's "default" VM), builds the
core and lf_test in the guest kernel's root, builds the C agent in the guest, runs LF_CMD_BENCH
and LF_CMD_UPCALL_BENCH with modest iterations and shuts the VM down. Slow (~3–5 min under TCG).
Needs root (qemu, chroot builds) and TensorFlow (the snapshot toolchain). Nothing is loaded on
the machine running the test: only in the guest.
"""

import os

import pytest

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.kernelbuild,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (qemu, chroot builds, image cache)"),
]


def test_round_trip_costs_more_than_kernel_inference_and_never_fails(tmp_path):
    from vm import qemu
    from vm.image import provision
    from workloads.overhead_bench import OverheadConfig, measure_round_trip

    handle = qemu.up(provision("debian-6.1", quiet=True), name="overhead")
    try:
        result = measure_round_trip(
            handle,
            OverheadConfig(kernel_iterations=20_000, upcall_iterations=500, warmup_iterations=20),
            log_dir=tmp_path / "logs",
        )
    finally:
        qemu.down(handle)
    failed = [check for check in result["checks"] if not check["ok"]]
    assert not failed, failed
    assert result["errors"] == 0 and result["timeouts"] == 0
    assert result["kernel_ns_per_query"] > 0
    assert result["ratio"] > 1, result
    print(f"\nkernel {result['kernel_ns_per_query']} ns/query, user-space round trip "
          f"{result['user_round_trip_ns_per_query']} ns/query, ratio {result['ratio']:.1f} "
          f"({result['accelerator']}, {result['kernel_release']})")
