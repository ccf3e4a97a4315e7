"""kernel-full for real: lf_cc's network trained in the kernel, on the ACK path, in a guest.

Runs the experiment cc-adapt (quick, kernel-full alone): the flows' decisions are labelled by the
teacher into the kernel's replay, minibatches are trained in softirq at most full_budget samples
per ACK, and the network is requantized into app cc_full's snapshot, which the flows then query.
"""

import os

import pytest

from workloads.runner import run_experiment, sessions

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]


def test_kernel_full_trains_in_the_kernel_and_serves_what_it_trained(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path))
    with sessions() as pool:
        run = run_experiment("cc-adapt", pool, profile="quick", overrides={"schemes": ["full"], "repetitions": 1})
    raw = run.repetition("full", 0)
    assert raw["ok"], [c for c in raw["checks"] if not c["ok"]]
    stats = raw["scheme_results"]["lf_cc"]
    assert stats["full_samples"] > 0 and stats["full_trained"] > 0, stats
    assert stats["full_published"] > 0 and stats["full_publish_errors"] == 0, stats
    assert stats["decisions"] > 0 and stats["fallback_error"] == 0, stats
    core = raw["scheme_results"]["core"]
    assert core["swaps"] > stats["full_published"] - 1 and core["errors"] == 0, core   # its snapshots went live
    assert core["active_id"] != raw["scheme"]["initial_snapshot_id"]
