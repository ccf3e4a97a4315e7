"""Integration: the user-space baseline's round trip vs in-kernel inference, in a real guest kernel.

Boots its own VM (name "overhead", so it never touches another run's "default" VM), builds the
core and lf_test in the guest kernel's root, builds the C agent in the guest, runs LF_CMD_BENCH
and LF_CMD_UPCALL_BENCH with modest iterations, times a few snapshot updates both ways (hot load,
generate + make + insmod) and shuts the VM down. Slow (~4–6 min under TCG).
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


@pytest.fixture(scope="module")
def overhead_vm():
    from vm import qemu
    from vm.image import provision

    handle = qemu.up(provision("debian-6.1", quiet=True), name="overhead")
    try:
        yield handle
    finally:
        qemu.down(handle)   # by pid, whatever the tests did


def test_round_trip_costs_more_than_kernel_inference_and_never_fails(overhead_vm, tmp_path):
    from workloads.overhead_bench import OverheadConfig, measure_round_trip

    result = measure_round_trip(
        overhead_vm,
        OverheadConfig(kernel_iterations=20_000, upcall_iterations=500, warmup_iterations=20),
        log_dir=tmp_path / "logs",
    )
    failed = [check for check in result["checks"] if not check["ok"]]
    assert not failed, failed
    assert result["errors"] == 0 and result["timeouts"] == 0
    assert result["kernel_ns_per_query"] > 0
    assert result["ratio"] > 1, result
    print(f"\nkernel {result['kernel_ns_per_query']} ns/query, user-space round trip "
          f"{result['user_round_trip_ns_per_query']} ns/query, ratio {result['ratio']:.1f} "
          f"({result['accelerator']}, {result['kernel_release']})")


def test_snapshot_updates_both_ways_switch_and_split_their_time(overhead_vm, tmp_path):
    from workloads.overhead_bench import measure_update_latency

    updates = measure_update_latency(overhead_vm, module_updates=1, hot_updates=10, log_dir=tmp_path)
    # the guest checked the active id after every update; the hot ones are split by the
    # kernel's own clock into its share and the client's
    hot, module = updates["hot"], updates["module"]
    assert hot["repetitions"] == 10 and module["repetitions"] == 1
    assert set(hot["median_steps_ms"]) == {"load_kernel", "load_client"}
    assert 0 < hot["median_steps_ms"]["load_kernel"] < hot["median_total_ms"]
    assert {"generate", "build", "load"} <= set(module["median_steps_ms"])
    assert hot["median_total_ms"] < module["median_total_ms"]
