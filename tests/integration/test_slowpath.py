"""The slow path for real: a TCG guest, the real modules, the service following a target change.

Runs the experiment "slowpath" (quick profile, with the SIGKILL fault on): lf_test's stress
threads and the slow-path service with the TensorFlow example adapter run in the guest; the
target switches from A to B and the kernel's active snapshot's error on B (EVALUATE on held-out
inputs) must fall below the bound within 5 minutes, through at least one update, with zero
failed queries. Then the target goes back to A and the service is killed with SIGKILL in the
middle of an update: the kernel must go on serving the last good snapshot, and the restarted
service must make it follow A.
"""

import os

import pytest

from workloads.runner import run_experiment

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]


def test_kernel_snapshot_follows_a_target_change(tmp_path, monkeypatch, guest_pool):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path))
    run = run_experiment("slowpath", guest_pool, profile="quick", overrides={"kill_mid_update": True})
    report = run.repetition("follow-target-hot", 0)
    assert "error" not in report, report.get("error")
    assert report["time_to_recover_s"] is not None and report["time_to_recover_s"] <= 300, report["timeline"][-5:]
    assert report["updates"] >= 1
    assert report["failed_queries"] == 0, (report["stress"], report["core"])
    assert report["initial_error"]["B"] > 0.1   # the change really was one
    assert not report["dmesg_trouble"]
    # a real SIGKILL of the service mid-update: the kernel keeps serving the last good snapshot
    kill = report["kill"]
    assert kill["mid_update"], f"the update finished {kill['seconds_into_update']} s in, before the kill"
    assert kill["serving_last_good"] and kill["active_after_kill"] == kill["update_began_active_id"], kill
    assert kill["queries_after_kill"] > 0 and kill["stress_errors"] == 0, kill
    assert kill["time_to_recover_after_restart_s"] is not None, report["kill_timeline"][-5:]
    assert report["ok"] and run.metadata["status"] == "passed"
    assert (run.path / "logs" / "follow-target-hot-0.service.jsonl").stat().st_size > 0  # the service's log
