"""The slow path's loop in the simulator (userspace/cc/online.py)."""

from __future__ import annotations

import numpy as np
import pytest

from userspace.cc import online, sim
from userspace.cc.adapter import CCAdapter
from userspace.cc.train import network_dir

pytest.importorskip("tensorflow")

RTT_STEP = dict(name="rtt step", mbps=40, rtt_ms=20, flows=2, rtt_ms_after=60)


def test_phase_metrics_read_utilisation_and_queue_from_the_trace():
    trace = {"t_s": np.arange(0, 4, 0.5), "capacity_Bps": np.full(8, 1000.0),
             "acked_bytes": np.array([500.0] * 4 + [250.0] * 4), "queue_bytes": np.array([0.0] * 4 + [100.0] * 4)}
    first, second = online.phase_metrics(trace, [0.0, 2.0, 4.0])
    assert first == {"from_s": 0.0, "to_s": 2.0, "utilisation": 1.0, "queue_delay_ms": 0.0}
    assert second["utilisation"] == 0.5 and second["queue_delay_ms"] == 100.0


def test_the_loop_labels_each_flows_previous_decision_on_the_services_schedule():
    adapter = CCAdapter(str(network_dir("cc-narrow") / "cc.keras"))
    loop = online.OnlineLoop(adapter, round_s=2.0, min_round_samples=16)
    scen = sim.make_scenarios([dict(name="1 flow", mbps=20, rtt_ms=20)], rtts=400)   # 8 s
    sim.run(scen, loop, record=False)
    assert len(loop.updates_s) == 3 and all(b - a >= 2.0 for a, b in zip(loop.updates_s, loop.updates_s[1:]))
    assert adapter.samples >= 16 * 3 and adapter.skipped == 0
    assert loop.prev.keys() == {(0, 0)}


def test_a_loop_that_starts_late_stays_frozen_until_then():
    adapter = CCAdapter(str(network_dir("cc-narrow") / "cc.keras"))
    loop = online.OnlineLoop(adapter, round_s=2.0, min_round_samples=16, start_s=5.0)
    scen = sim.make_scenarios([dict(name="1 flow", mbps=20, rtt_ms=20)], rtts=400)   # 8 s
    sim.run(scen, loop, record=False)
    assert len(loop.updates_s) == 1 and loop.updates_s[0] >= 7.0
    assert adapter.samples < 8.0 / 0.01 / 4        # only what came after 5 s, every 4th decision


def test_the_bursty_ack_paths_win_is_learnt_before_it():
    """cc-adapt's last change in the simulator: RTT noise the narrow network never saw makes it
    brake, the copy the slow path adapted all along keeps the link (helped by its drift toward a
    larger queue), and a copy adapting only from the change on wins back part of it, because the
    teacher reads the queue from each MI's least RTT sample, which the noise hardly moves
    (docs/cc.md, "A bursty ACK path")."""
    start = str(network_dir("cc-narrow") / "cc.keras")
    spec = online.CHANGES[-1]
    along = online.compare(spec, lambda: CCAdapter(start), seconds=60.0, change_s=30.0)
    late = online.compare(spec, lambda: CCAdapter(start), seconds=60.0, change_s=30.0, start_s=30.0)
    assert along["frozen"][-1]["utilisation"] < 0.5 < 0.9 < along["adapting"][-1]["utilisation"]
    assert along["adapting"][0]["queue_delay_ms"] > 1.5 * along["frozen"][0]["queue_delay_ms"]   # the drift
    assert 1.5 * along["frozen"][-1]["utilisation"] < late["adapting"][-1]["utilisation"] \
        < along["adapting"][-1]["utilisation"]


def test_adapting_recovers_the_narrow_network_after_an_rtt_step():
    """cc-narrow never saw a base RTT three times its minimum and starves after the step; the
    online teacher's samples bring the adapting copy part of the way back to the link within the
    30 s after it (0.43 of it, against 0.01 frozen; 0.9 and more when the teacher read the mean
    RTT, which the least sample traded for robustness to noise: docs/cc.md)."""
    start = str(network_dir("cc-narrow") / "cc.keras")
    out = online.compare(RTT_STEP, lambda: CCAdapter(start), seconds=60.0, change_s=30.0)
    frozen, adapting = out["frozen"][-1], out["adapting"][-1]
    assert out["frozen"][0]["utilisation"] > 0.95            # it fits the link it was trained on
    assert frozen["utilisation"] < 0.1 < 0.3 < adapting["utilisation"]
    assert len(out["updates_s"]) >= 5


def test_teacher_agreement_splits_the_decisions_by_what_the_teacher_cannot_know():
    weights = CCAdapter(str(network_dir("cc-narrow") / "cc.keras")).model.get_weights()
    out = online.teacher_agreement(weights, episodes=24)
    regimes = out["regimes"]
    minimum = [k for k in regimes if k.startswith("minimum") and not k.endswith("fair")]
    assert sum(regimes[k]["share"] for k in minimum) == pytest.approx(1.0, abs=0.002)
    assert regimes["within 20 % of the fair share"]["share"] + regimes["off the fair share by more"]["share"] \
        == pytest.approx(1.0, abs=0.002)
    # docs/cc.md's finding: with a stale minimum (after the path got longer) the teacher drains
    # where the oracle climbs
    stale = regimes["minimum below the base (the path got longer)"]
    assert stale["mean_online"] < 0 < stale["mean_oracle"] and stale["correlation"] < 0


def test_telling_the_teacher_the_fair_share_closes_most_of_the_gap():
    """docs/cc.md's finding, kept honest: of the two estimates the online teacher makes, the share
    is the one that costs it the oracle."""
    weights = CCAdapter(str(network_dir("cc-narrow") / "cc.keras")).model.get_weights()
    out = online.teacher_ablation(weights, episodes=24)
    assert set(out) == {"online", "base_known", "share_known", "both_known", "oracle_one_mi_later"}
    assert out["share_known"] > 0.8 > 0.4 > max(out["online"], out["base_known"])
    assert out["share_known"] <= out["oracle_one_mi_later"]


def test_fine_tuning_at_the_services_rate_drifts_even_with_the_oracle_as_teacher():
    """docs/cc.md's finding: on a link that never changes, cc-narrow adapted at lr 1e-4 builds a
    standing queue whoever labels its samples; the frozen network holds about 1 ms."""
    start = str(network_dir("cc-narrow") / "cc.keras")
    out = online.drift(start, CCAdapter, seconds=30.0, learning_rates=(1e-4,))
    frozen, oracle = out["frozen"], out["oracle teacher, lr 0.0001"]
    assert max(frozen) < 2.0
    assert oracle[-1] > 3 * frozen[-1] and oracle[-1] > oracle[0]


def test_with_stale_min_the_rtt_step_no_longer_starves_the_frozen_network():
    """docs/cc.md's finding: cc-adapt's RTT step starved kernel-frozen for as long as lf_cc's
    10-s minimum held the old base; with stale_min it is back at the link within the 10 s."""
    start = str(network_dir("cc-narrow") / "cc.keras")
    out = online.rtt_step_study(lambda: CCAdapter(start), change_times_s=(30.0,), after_s=12.0)
    (settle_plain, _), = out["minimum as in lf_cc"]["frozen"]
    (settle_rule, _), = out["stale-minimum rule"]["frozen"]
    assert settle_plain[0] < 0.5 < 0.9 < settle_rule[0]
