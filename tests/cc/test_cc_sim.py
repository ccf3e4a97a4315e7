"""lf_cc's arithmetic in numpy, the simulator and the teachers (no TensorFlow, no VM)."""

from __future__ import annotations

import numpy as np

from userspace.cc import features as F
from userspace.cc import sim, teacher
from userspace.cc.context import CONTEXT_DTYPE, CONTEXT_SIZE, pack_contexts, parse_contexts


def make_mi(duration, counts, sums, sent, delivered, lost=0):
    mi = np.zeros((), F.MI_DTYPE)
    mi["duration_us"], mi["rtt_count"], mi["rtt_sum_us"] = duration, counts, sums
    mi["segs_sent"], mi["segs_delivered"], mi["segs_lost"] = sent, delivered, lost
    return mi


def test_rounding_is_half_away_from_zero_and_saturates():
    assert [int(F.div_round(n, 2)) for n in (3, -3, 1, -1, 2)] == [2, -2, 1, -1, 1]
    assert int(F.div_round(5, 10)) == 1 and int(F.div_round(-5, 10)) == -1
    assert int(F.clamp_s8(300)) == 127 and int(F.clamp_s8(-300)) == -128
    assert int(F.q_send_ratio(100, 10)) == 127          # 128 * 9 saturates
    assert int(F.q_send_ratio(0, 10)) == -128
    assert int(F.q_send_ratio(10, 0)) == 0              # nothing delivered: ratio 1


def test_features_of_a_constructed_mi_match_hand_computation():
    # 10 ms MI; first half mean 10 ms (3 samples), second half 12 ms (3 samples).
    mi = make_mi(10_000, [3, 3], [30_000, 36_000], sent=10, delivered=8)
    assert int(F.mean_rtt_us(mi)) == 11_000
    assert int(F.q_latency_inflation(mi)) == 32         # 160 * 2000 / 10000
    li, lr, sr = F.mi_features(mi, 10_000)
    assert (int(li), int(lr), int(sr)) == (32, 13, 32)  # 128 * 1000/10000 = 12.8 -> 13; 128 * 2/8
    assert int(F.q_latency_inflation(make_mi(10_000, [0, 3], [0, 36_000], 1, 1))) == 0
    assert int(F.q_latency_ratio(0, 10_000)) == 0


def test_history_action_mi_and_cwnd_rules():
    h = np.arange(30, dtype=np.int8)
    out = F.push_history(h, -1, -2, -3)
    assert list(out[:27]) == list(range(3, 30)) and list(out[27:]) == [-1, -2, -3]
    assert int(F.apply_action(1_000_000, 0)) == 1_000_000
    assert int(F.apply_action(1_000_000, 127)) == 1_000_000 * 1407 // 1280
    assert int(F.apply_action(1_000_000, -128)) == 1_000_000 * 1280 // 1408
    assert int(F.mi_target_us(20_000, 125_000, 1448)) == 57_920   # 5 segments at 1 Mbit/s
    assert int(F.mi_target_us(20_000, 10**9, 1448)) == 10_000     # srtt / 2
    assert int(F.mi_target_us(0, 0, 1448)) == F.MI_MAX_US
    assert int(F.mi_target_us(100, 10**12, 1448)) == F.MI_MIN_US
    assert int(F.cwnd_cap(1_250_000, 20_000, 1448)) == 17 * 2 + 4
    assert int(F.cwnd_cap(1_250_000, 20_000, 0)) == 4
    assert int(F.cwnd_cap(10**12, 10**6, 1448)) == 0xFFFF


def test_context_layout_round_trips():
    ctx = np.zeros(3, CONTEXT_DTYPE)
    ctx["pacing_rate_Bps"] = [1, 2**32 - 1, 7]
    ctx["mss_bytes"] = 1448
    raw = pack_contexts(ctx)
    assert raw.shape == (3, CONTEXT_SIZE) and raw.dtype == np.uint8
    assert raw[0, 4] == 1 and raw[0, 36:40].tolist() == [0xA8, 0x05, 0, 0]  # little endian
    back = parse_contexts(raw)
    assert back["pacing_rate_Bps"].tolist() == [1, 2**32 - 1, 7]


ONE_LINK = [dict(name="link", mbps=20, rtt_ms=20, jitter_ms=0.0)]   # noiseless: the physics alone


def test_fixed_rate_above_capacity_fills_the_queue():
    scen = sim.make_scenarios(ONE_LINK, rtts=60)
    ro = sim.run(scen, sim.fixed_rate_policy(0), initial_rate_Bps=1.2 * 20e6 / 8)
    assert ro.metrics["utilisation"][0] > 0.99
    assert ro.metrics["queue_delay_ms"][0] > 15        # 1 BDP of queue = 20 ms
    assert ro.metrics["loss_rate"][0] > 0.05           # the excess is dropped
    assert np.mean(ro.obs[-50:, -2]) > 100             # latency ratio about 2 (q = 128)


def test_fixed_rate_below_capacity_builds_no_queue():
    scen = sim.make_scenarios(ONE_LINK, rtts=60)
    ro = sim.run(scen, sim.fixed_rate_policy(0), initial_rate_Bps=0.5 * 20e6 / 8)
    assert abs(ro.metrics["utilisation"][0] - 0.5) < 0.01
    assert ro.metrics["queue_delay_ms"][0] == 0
    assert abs(ro.metrics["latency_ratio"][0] - 1) < 1e-6
    assert np.all(ro.obs[-50:, -2] == 0)


def test_recorded_features_are_features_py_of_the_recorded_mi():
    scen = sim.sample_scenarios(np.random.default_rng(3), 4, rtts=40)
    ro = sim.run(scen, teacher.oracle_policy)
    li = F.q_latency_inflation(ro.mi)
    lr = F.q_latency_ratio(F.mean_rtt_us(ro.mi), ro.context["min_mean_rtt_us"])
    sr = F.q_send_ratio(ro.mi["segs_sent"], ro.mi["segs_delivered"])
    assert np.array_equal(ro.obs[:, -3:], np.stack([li, lr, sr], 1))


def test_simulator_is_deterministic():
    a = sim.run(sim.sample_scenarios(np.random.default_rng(9), 3, rtts=30), teacher.oracle_policy)
    b = sim.run(sim.sample_scenarios(np.random.default_rng(9), 3, rtts=30), teacher.oracle_policy)
    assert np.array_equal(a.obs, b.obs) and np.array_equal(a.actions, b.actions)


def truth(rate, queue_bytes, capacity=2.5e6, flows=1, rtt=0.02, queue_cap=1e6):
    n = len(np.atleast_1d(rate))
    full = lambda v: np.full(n, float(v))  # noqa: E731
    return {"rate_Bps": np.asarray(rate, float), "capacity_Bps": full(capacity), "flows": full(flows),
            "fair_Bps": full(capacity / flows), "base_rtt_s": full(rtt), "queue_bytes": full(queue_bytes),
            "queue_cap_bytes": full(queue_cap)}


def test_oracle_direction():
    assert teacher.oracle_label(truth([2.5e6], queue_bytes=25_000))[0] < 0   # a 0.5 RTT queue
    assert teacher.oracle_label(truth([1.0e6], queue_bytes=0))[0] == 1.0      # underutilised
    assert teacher.oracle_label(truth([3.0e6], queue_bytes=0, flows=2))[0] < 0  # over its share
    # at the equilibrium (fair share, queue at its target) the label is zero
    eq = truth([2.5e6], queue_bytes=teacher.QUEUE_TARGET * 2.5e6 * 0.02)
    assert abs(teacher.oracle_label(eq)[0]) < 1e-9


def test_online_teacher_direction():
    ctx = np.zeros(2, CONTEXT_DTYPE)
    ctx["pacing_rate_Bps"] = ctx["send_rate_Bps"] = 2_000_000
    ctx["segs_sent"], ctx["mss_bytes"], ctx["min_mean_rtt_us"] = 100, 1448, 20_000
    # 0: queue building (RTT inflated 50 %, delivery below sending); 1: underutilised
    ctx["delivery_rate_Bps"] = [1_500_000, 2_000_000]
    ctx["segs_delivered"] = [75, 100]
    ctx["mean_rtt_us"] = ctx["mi_min_rtt_us"] = [30_000, 20_000]
    y = teacher.online_label(ctx)
    assert y[0] < 0 and y[1] > 0


def test_online_teacher_reads_the_queue_from_the_least_sample():
    """RTT noise inflates an MI's mean but not its least sample: a flow on an empty queue whose
    ACKs come late and bunched is below capacity (probe up), one whose every sample, the least
    included, is late sits on a queue (slow down)."""
    ctx = np.zeros(2, CONTEXT_DTYPE)
    ctx["pacing_rate_Bps"] = ctx["send_rate_Bps"] = ctx["delivery_rate_Bps"] = 2_000_000
    ctx["segs_sent"] = ctx["segs_delivered"] = 100
    ctx["mss_bytes"], ctx["min_mean_rtt_us"], ctx["mean_rtt_us"] = 1448, 60_000, 75_000
    ctx["mi_min_rtt_us"] = [60_160, 75_000]
    assert teacher.rtt_inflation(ctx)[0] < teacher.SATURATED_INFLATION < teacher.rtt_inflation(ctx)[1]
    y = teacher.online_label(ctx)
    assert abs(y[0] - 1.0) < 1e-9 and y[1] < 0     # a full probe step up; down
    ctx["mi_min_rtt_us"] = 50_000   # below the reference (a noisy minimum): no queue, not a negative one
    assert (teacher.rtt_inflation(ctx) == 0).all()


def test_rtt_noise_shows_in_the_samples_not_in_the_queue():
    """Measurement noise makes RTT samples late (never early) and leaves the link alone."""
    noisy = [dict(name="link", mbps=20, rtt_ms=20, jitter_ms=2.0)]
    ro = sim.run(sim.make_scenarios(noisy, rtts=60), sim.fixed_rate_policy(0), initial_rate_Bps=0.5 * 20e6 / 8)
    assert ro.metrics["queue_delay_ms"][0] == 0
    assert ro.metrics["latency_ratio"][0] > 1.02
    assert np.any(ro.obs[-50:, -3] != 0)            # the noise reaches the latency inflation feature


def test_rtt_noise_can_start_at_the_change():
    """cc-adapt's ACK-jitter step: the MIs' mean RTTs scatter only after it, and a scenario that
    does not say jitter_ms_after is the very run it was before the option existed."""
    spec = dict(name="link", mbps=20, rtt_ms=20, jitter_ms=0.0, step_at=0.5)
    fixed = sim.fixed_rate_policy(0)
    calm = sim.run(sim.make_scenarios([spec], rtts=200), fixed, initial_rate_Bps=0.5 * 20e6 / 8)
    jumpy = sim.run(sim.make_scenarios([dict(spec, jitter_ms_after=6.0)], rtts=200), fixed,
                    initial_rate_Bps=0.5 * 20e6 / 8)
    mean_rtt = lambda ro: ro.context["mean_rtt_us"][5:].astype(float)  # noqa: E731 - past the first RTT
    half = len(jumpy.context) // 2
    assert np.std(mean_rtt(calm)) < 1.0 and np.std(mean_rtt(jumpy)[:half - 10]) < 1.0
    assert np.std(mean_rtt(jumpy)[half:]) > 500.0
    again = sim.run(sim.make_scenarios([dict(spec, jitter_ms=2.0)], rtts=60), fixed, initial_rate_Bps=1e6)
    assert sim.make_scenarios([dict(spec, jitter_ms=2.0)], rtts=60).jitter_after_s[0] == 0.002
    np.testing.assert_array_equal(again.obs, sim.run(sim.make_scenarios([dict(spec, jitter_ms=2.0,
                                                                              jitter_ms_after=2.0)], rtts=60),
                                                     fixed, initial_rate_Bps=1e6).obs)


def test_narrow_links_stay_in_their_ranges_and_never_change():
    links = {"mbps": (30.0, 50.0), "rtt_ms": (15.0, 25.0), "queue_bdp": (0.8, 1.2)}
    wide = sim.sample_scenarios(np.random.default_rng(5), 64, rtts=30)
    narrow = sim.sample_scenarios(np.random.default_rng(5), 64, rtts=30, links=links)
    mbps = narrow.bandwidth_Bps * 8 / 1e6
    assert mbps.min() >= 30 and mbps.max() <= 50 and wide.bandwidth_Bps.max() * 8 / 1e6 > 50
    assert (narrow.base_rtt_s >= 0.015).all() and (narrow.base_rtt_s <= 0.025).all()
    bdp = narrow.bandwidth_Bps * narrow.base_rtt_s / sim.MSS
    assert (narrow.queue_pkts >= np.floor(0.8 * bdp)).all() and (narrow.queue_pkts <= np.ceil(1.2 * bdp) + 1).all()
    assert (narrow.change_tick == sim.NEVER).all() and (wide.change_tick != sim.NEVER).any()
    assert np.array_equal(narrow.bandwidth_after_Bps, narrow.bandwidth_Bps)
    for name in ("loss", "flows", "start_tick", "jitter_s"):   # the rest drawn as for the wide range
        assert np.array_equal(getattr(wide, name), getattr(narrow, name)), name


def test_lf_ccs_stale_min_rule_is_silent_on_a_steady_link_and_ends_the_rtt_steps_starvation():
    """sim.run(stale_min=True) is lf_cc with stale_min set: on a steady link it never fires (the
    run is the same as without it), after the path got three times longer the narrow network is
    back at the link within the half episode where the windowed minimum alone starves it."""
    from userspace.cc.adapter import CCAdapter
    from userspace.cc.train import network_dir, network_policy

    policy = network_policy(CCAdapter(str(network_dir("cc-narrow") / "cc.keras")).model.get_weights())
    steady = sim.make_scenarios([dict(name="steady", mbps=40, rtt_ms=20, flows=2)], rtts=1500)
    plain = sim.run(steady, policy, record=False).metrics
    ruled = sim.run(steady, policy, record=False, stale_min=True).metrics
    assert plain["utilisation"][0] == ruled["utilisation"][0]
    assert plain["queue_delay_ms"][0] == ruled["queue_delay_ms"][0]

    step = sim.make_scenarios([dict(name="step", mbps=40, rtt_ms=20, flows=2, step_at=0.5,
                                    rtt_ms_after=60)], rtts=1500)
    without = sim.run(step, policy, record=False, measure_from=0.5).metrics["utilisation"][0]
    with_rule = sim.run(step, policy, record=False, measure_from=0.5, stale_min=True).metrics["utilisation"][0]
    assert with_rule > 0.9 > 0.8 > without
