"""The slow path for real: a TCG guest, the real modules, the service following a target change.

Boots its own VM ("slowpath"), loads the core and lf_test with an initial snapshot trained on
target A, runs lf_test's stress threads and the slow-path service with the TensorFlow example
adapter, switches the target to B and asserts the done-when bound: the kernel's active snapshot's
error on target B (EVALUATE on held-out inputs) falls below the bound within 5 minutes, through
at least one update, with zero failed queries. Then the target goes back to A and the service is
killed with SIGKILL in the middle of an update: the kernel must go on serving the last good
snapshot, and the restarted service must make it follow A.
"""

import os

import pytest

from testbed.slowpath_run import SlowpathConfig, run_slowpath
from vm.qemu import down

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]


def test_kernel_snapshot_follows_a_target_change():
    config = SlowpathConfig(vm_name="slowpath", update="hot", recover_timeout_s=300.0, kill_mid_update=True)
    try:
        report = run_slowpath(config)
    finally:
        down("slowpath")  # by pid; a no-op when run_slowpath already stopped it
    assert "error" not in report, report.get("error")
    assert report["time_to_recover_s"] is not None and report["time_to_recover_s"] <= 300, report["timeline"][-5:]
    assert report["updates"] >= 1
    assert report["failed_queries"] == 0, (report["stress"], report["core"])
    assert report["initial_error"]["B"] > config.bound   # the change really was one
    assert not report["dmesg_trouble"]
    # a real SIGKILL of the service mid-update: the kernel keeps serving the last good snapshot
    kill = report["kill"]
    assert kill["mid_update"], f"the update finished {kill['seconds_into_update']} s in, before the kill"
    assert kill["serving_last_good"] and kill["active_after_kill"] == kill["update_began_active_id"], kill
    assert kill["queries_after_kill"] > 0 and kill["stress_errors"] == 0, kill
    assert kill["time_to_recover_after_restart_s"] is not None, report["kill_timeline"][-5:]
    assert report["ok"]
