"""The user-space deployment of lf_cc for real: the asynchronous channel to the agent in a guest.

Runs the experiment cc-adapt (quick, the non-adapting user-space deployment alone) with the
agent paused for a second (SIGSTOP, then SIGCONT) and later SIGKILLed, while two flows run:

- the datapath never waits for the agent: the flows keep their rate while it is stopped, and
  every 100 ms a socket waits without an answer is counted (user_timeouts), as are answers that
  come late and posts never answered;
- once the agent is dead, the flows continue on the last rate an answer set (no fallback, no
  failed query), and every later post fails or times out, counted.
"""

import os
import statistics

import pytest

from workloads.runner import run_experiment

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]

PAUSE_AT_S, KILL_AT_S = 6.0, 20.0


def test_user_space_deployment_never_waits_and_counts_what_comes_late(tmp_path, monkeypatch, guest_pool):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path))
    run = run_experiment("cc-adapt", guest_pool, profile="quick", overrides={
        "schemes": ["user_frozen"], "repetitions": 1,
        "faults": [{"at_s": PAUSE_AT_S, "kind": "pause_agent"}, {"at_s": KILL_AT_S, "kind": "kill_agent"}]})
    raw = run.repetition("user_frozen", 0)
    assert raw["ok"], [c for c in raw["checks"] if not c["ok"]]
    pause, kill = raw["faults"]
    assert pause["ok"] and kill["ok"]
    stats = raw["scheme_results"]["lf_cc"]
    assert stats["user_posts"] > 0 and stats["user_applied"] > 0
    # each socket waited through the pause and after the kill: ~10 timeouts a second each
    assert stats["user_timeouts"] >= pause["user_timeouts_before"] + 2 * 8
    assert stats["user_posts"] > stats["user_answers"] or stats["user_late"] > 0   # some answers never came or came late
    assert stats["decisions"] == 0 and stats["fallback_error"] == 0    # the kernel never ran the network itself
    assert not raw["scheme_results"]["agent_alive"]
    series = raw["aggregate"]["series"]
    during_pause = [p["mbit"] for p in series if pause["applied_at_s"] <= p["t_s"] <= pause["applied_at_s"] + 1.5]
    after_kill = [p["mbit"] for p in series if p["t_s"] > kill["applied_at_s"] + 1]
    assert during_pause and min(during_pause) > 1.0, during_pause       # no stall while the agent is stopped
    assert after_kill and statistics.median(after_kill) > 1.0, after_kill
