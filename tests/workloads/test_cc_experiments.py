"""The congestion-control experiments' host side on fake guest reports: plans, phases, records,
summaries and figures (the guest side is exercised for real by tests/integration/test_cc.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workloads import cc_adapt, cc_plan, registry
from workloads.contract import ExperimentError, Job, RunView, experiment_path, load_config


def _raw(goodput_series, rtts, *, scheme="liteflow", ok=True, updates=(), started=1000.0):
    flows = [{"id": i, "started_at_s": 0.0, "duration_s": len(goodput_series), "intervals": [{"start_s": t, "end_s": t + 1.0, "rtt_ms": r}
                                                        for t, r in enumerate(rtts)]} for i in range(2)]
    return {"ok": ok, "checks": [{"name": "every flow completed", "ok": ok, "detail": ""}],
            "flows": flows, "aggregate": {"goodput_mbit": sum(goodput_series) / len(goodput_series),
                                          "jain_fairness": 0.99, "retransmits": 3,
                                          "series": [{"t_s": t + 0.5, "mbit": m} for t, m in enumerate(goodput_series)]},
            "cpu": {"busy": 0.4}, "scheme": {"name": scheme}, "traffic_started_unix": started,
            "probe_rtt": [[t + 0.05, r] for t, r in enumerate(rtts)],
            "scheme_results": {} if scheme in ("cubic", "bbr") else {
                "lf_cc": {"intervals": 100, "decisions": 90, "fallback_no_snapshot": 10, "fallback_error": 0},
                "updates": [{"t_unix": started + u, "new_id": 7} for u in updates], "core": {"active_id": 7}}}


def test_both_profiles_load_and_every_scheme_is_known():
    for name in ("cc-concurrency", "cc-adapt", "cc-interval"):
        experiment = registry.load(name)
        for profile in ("full", "quick"):
            config = load_config(experiment_path(name), experiment.schema, profile)
            assert set(config["schemes"]) <= set(cc_plan.SCHEMES)
            assert config["repetitions"] >= (3 if profile == "full" else 1)


def test_full_cc_concurrency_covers_one_to_sixty_four_flows_with_three_repetitions():
    experiment = registry.load("cc-concurrency")
    config = load_config(experiment_path("cc-concurrency"), experiment.schema, "full")
    assert config["flow_counts"] == [1, 4, 16, 64] and config["repetitions"] >= 3
    assert config["schemes"] == ["liteflow", "user", "full", "frozen", "cubic", "bbr"]


def test_a_typo_in_a_scheme_is_refused():
    experiment = registry.load("cc-concurrency")
    with pytest.raises(ExperimentError, match="scheme|choices|cubc"):
        load_config(experiment_path("cc-concurrency"), experiment.schema, "quick", {"schemes": ["cubc"]})


def test_the_starting_network_is_data_and_checked():
    adapt = registry.load("cc-adapt")
    assert cc_plan.network_name(load_config(experiment_path("cc-adapt"), adapt.schema, "full")) == "cc-narrow"
    concurrency = registry.load("cc-concurrency")
    assert cc_plan.network_name(load_config(experiment_path("cc-concurrency"), concurrency.schema, "full")) == "cc"
    with pytest.raises(ExperimentError, match="cc-narow"):
        load_config(experiment_path("cc-adapt"), adapt.schema, "quick", {"network": "cc-narow"})
    assert cc_plan.model_path("cc-narrow").is_file()
    assert cc_plan.model_path("cc-narrow") != cc_plan.model_path()


def test_lf_cc_parameters_reach_every_lf_cc_scheme_and_a_typo_is_refused():
    from types import SimpleNamespace

    adapt = registry.load("cc-adapt")
    config = load_config(experiment_path("cc-adapt"), adapt.schema, "quick")
    assert config["lf_cc"] == {"stale_min": True}
    ctx = SimpleNamespace(config=config, state={"scheme_files": {"blob": "cc.blob"}})
    for scheme in ("liteflow", "frozen", "user", "full"):
        assert cc_plan.scheme_options(ctx, scheme)["lf_cc"] == {"stale_min": True}
    assert cc_plan.scheme_options(ctx, "cubic") == {}
    concurrency = registry.load("cc-concurrency")
    plain = load_config(experiment_path("cc-concurrency"), concurrency.schema, "quick")
    assert "lf_cc" not in cc_plan.scheme_options(SimpleNamespace(config=plain, state=ctx.state), "frozen")
    with pytest.raises(ExperimentError, match="stale_mni"):
        load_config(experiment_path("cc-adapt"), adapt.schema, "quick", {"lf_cc": {"stale_mni": True}})


def test_flows_beyond_the_sender_cap_share_the_senders_in_turn():
    from types import SimpleNamespace

    from guest.iperf import expand_flows
    from guest.net.spec import parse_topology

    concurrency = registry.load("cc-concurrency")
    config = load_config(experiment_path("cc-concurrency"), concurrency.schema, "full")
    ctx = SimpleNamespace(config=config, state={"scheme_files": {}})
    for flows, senders in ((1, 1), (16, 16), (64, cc_plan.MAX_SENDERS)):
        plan = cc_plan.cc_plan(ctx, "cubic", flows)
        assert plan["topology"]["senders"] == senders and plan["flow_count"] == flows
    plan = cc_plan.cc_plan(ctx, "cubic", 64)
    blueprint = parse_topology(plan["topology"])
    sources = [flow.src for flow in expand_flows(plan, blueprint, "cubic")]
    assert len(sources) == 64 and len(set(sources)) == cc_plan.MAX_SENDERS
    assert all(sources.count(host) == 64 // cc_plan.MAX_SENDERS for host in blueprint.senders)


def test_a_round_interval_reaches_both_adapting_deployments_and_a_bad_one_is_refused():
    from types import SimpleNamespace

    from userspace.slowpath.serve import parse_args

    concurrency = registry.load("cc-concurrency")
    config = load_config(experiment_path("cc-concurrency"), concurrency.schema, "full")
    assert "round_interval_s" not in config["slowpath"]     # rounds follow the samples (docs/cc.md)
    paced = load_config(experiment_path("cc-concurrency"), concurrency.schema, "full",
                        {"slowpath": {**config["slowpath"], "round_interval_s": 5.0}})
    ctx = SimpleNamespace(config=paced, state={"scheme_files": {"blob": "cc.blob"}})
    for scheme in ("liteflow", "user"):
        assert cc_plan.scheme_options(ctx, scheme)["round_interval_s"] == 5.0
    assert "round_interval_s" not in cc_plan.scheme_options(ctx, "frozen")
    assert parse_args(["--app", "cc", "--adapter", "m:C", "--round-interval", "5"]).round_interval == 5.0
    with pytest.raises(ExperimentError, match="round_interval_s"):
        load_config(experiment_path("cc-concurrency"), concurrency.schema, "quick",
                    {"slowpath": {**config["slowpath"], "round_interval_s": -1.0}})


def test_phases_follow_the_changes():
    config = {"link": {"rate_mbit": 40.0, "rtt_ms": 20.0}, "duration_s": 100,
              "changes": [{"name": "rtt-up", "at_s": 70.0, "rtt_ms": 60.0},
                          {"name": "down", "at_s": 30.0, "rate_mbit": 10.0}]}
    assert cc_adapt.phases(config) == [
        {"name": "start", "from_s": 0.0, "to_s": 30.0, "rate_mbit": 40.0, "rtt_ms": 20.0, "ack_slot_ms": 0.0},
        {"name": "down", "from_s": 30.0, "to_s": 70.0, "rate_mbit": 10.0, "rtt_ms": 20.0, "ack_slot_ms": 0.0},
        {"name": "rtt-up", "from_s": 70.0, "to_s": 100.0, "rate_mbit": 10.0, "rtt_ms": 60.0, "ack_slot_ms": 0.0}]
    assert cc_adapt.link_changes(config) == [{"at_s": 70.0, "link": "bottleneck", "delay_ms": 30.0},
                                             {"at_s": 30.0, "link": "bottleneck", "rate_mbit": 10.0}]


def test_ack_slots_are_the_bottlenecks_reverse_slots():
    config = {"link": {"rate_mbit": 40.0, "rtt_ms": 20.0}, "duration_s": 60,
              "changes": [{"name": "bursty-acks", "at_s": 20.0, "ack_slot_ms": 30.0},
                          {"name": "calm", "at_s": 40.0, "ack_slot_ms": 0.0}]}
    assert [p["ack_slot_ms"] for p in cc_adapt.phases(config)] == [0.0, 30.0, 0.0]
    assert cc_adapt.link_changes(config) == [
        {"at_s": 20.0, "link": "bottleneck", "reverse_slot_ms": 30.0},
        {"at_s": 40.0, "link": "bottleneck", "reverse_slot_ms": 0.0}]


def test_cc_adapt_records_phase_means_and_update_times():
    phases = [{"name": "start", "from_s": 0.0, "to_s": 10.0, "rate_mbit": 40.0, "rtt_ms": 20.0},
              {"name": "down", "from_s": 10.0, "to_s": 20.0, "rate_mbit": 10.0, "rtt_ms": 20.0}]
    goodput = [36.0] * 10 + [9.0] * 10
    rtts = [22.0] * 10 + [30.0] * 10
    (record,) = cc_adapt.EXPERIMENT.records(Job("liteflow", {"scheme": "liteflow", "phases": phases}),
                                            _raw(goodput, rtts, updates=(12.5, 15.0)))
    assert record["start_link_fraction"] == pytest.approx(0.9)       # seconds 2..9 (2 s settle)
    assert record["down_link_fraction"] == pytest.approx(0.9)
    assert record["down_rtt_ms"] == pytest.approx(30.0)
    assert record["update_times_s"] == [12.5, 15.0]
    assert record["fallbacks"] == 10 and record["updates"] == 2


def test_p95_rtt_is_the_delay_probes_after_the_start_up():
    raw = _raw([10.0] * 20, [float(v) for v in range(1, 21)], scheme="cubic")
    record = cc_plan.common_record("1-flows/cubic", raw, {"rate_mbit": 20.0})
    # probe samples at t = 0.05 .. 19.05 s with RTT 1 .. 20 ms; the first 2 s (1, 2 ms) are left out
    assert record["p95_rtt_ms"] == pytest.approx(19.15)
    assert record["p95_srtt_ms"] == pytest.approx(19.05)    # iperf3's srtt, every flow and interval
    assert record["link_fraction"] == pytest.approx(0.5)
    assert record["updates"] is None          # only the adapting schemes have a slow path
    assert record["service_cpu_s"] is None and record["service_throttled_s"] is None
    raw["scheme_results"] = {"service_cpu": {"cpus": 0.25, "usage_s": 5.1, "throttled_s": 21.4,
                                             "periods": 221, "throttled_periods": 201}}
    limited = cc_plan.common_record("1-flows/liteflow", raw, {"rate_mbit": 20.0})
    assert limited["service_cpu_s"] == 5.1 and limited["service_throttled_s"] == 21.4


def test_goodput_is_measured_while_every_flow_runs():
    """Flows that start seconds apart (64 iperf3 clients in a TCG guest) must not be summed over
    their own windows: only the seconds when all of them run count."""
    raw = _raw([40.0] * 20, [20.0] * 20, scheme="cubic")
    raw["flows"][1]["started_at_s"] = 5.0                 # the second flow ran 5-25 s
    raw["aggregate"]["series"] = [{"t_s": t + 0.5, "mbit": 20.0 if t < 5 else 40.0} for t in range(25)]
    raw["aggregate"]["goodput_mbit"] = 80.0               # the two flows' own averages, summed
    record = cc_plan.common_record("2-flows/cubic", raw, {"rate_mbit": 40.0})
    assert record["goodput_mbit"] == pytest.approx(40.0) and record["link_fraction"] == pytest.approx(1.0)
    assert record["summed_flow_goodput_mbit"] == 80.0


def test_summaries_and_figures_from_fake_runs(tmp_path: Path):
    experiment = registry.load("cc-concurrency")
    config = load_config(experiment_path("cc-concurrency"), experiment.schema, "full")
    records = []
    for flows in config["flow_counts"]:
        for scheme in config["schemes"]:
            job = experiment.jobs(config)[0].__class__(f"{flows}-flows/{scheme}",
                                                       {"flows": flows, "scheme": scheme, "link": config["link"]})
            for rep in range(2):
                mbit = 38.0 if scheme == "liteflow" else 19.0 * (rep + 1)
                records += [{**r, "repetition": rep}
                            for r in experiment.records(job, _raw([mbit] * 8, [22.0] * 8, scheme=scheme))]
    summary = experiment.summarize(config, records)
    assert summary["failed_runs"] == 0
    assert summary["single_flow"]["liteflow"]["link_fraction"] == pytest.approx(0.95)
    # LiteFlow over each prior deployment, ratio per repetition: 38/19 and 38/38
    assert summary["versus"]["user"]["min"] == pytest.approx(1.0)
    assert summary["versus"]["user"]["max"] == pytest.approx(2.0)
    view = RunView(tmp_path, {"repetitions": 2, "run_id": "r", "accelerator": "tcg"},
                   {"records": records, "summary": summary})
    (figure,) = experiment.figures(view)
    assert figure.is_file() and figure.stat().st_size > 0
    assert any("liteflow" in line for line in experiment.section(view))


def test_recovery_is_the_first_window_at_the_new_rate():
    phase = {"name": "rtt-up", "from_s": 10.0, "to_s": 30.0, "rate_mbit": 40.0, "rtt_ms": 60.0}
    # a lone good second at 15 s is not recovery; paced goodput alternating 31/42 from 19 s on is
    starve = [0.0] * 5 + [42.0] + [0.0] * 3 + [31.0, 42.0, 31.0, 42.0] + [31.0, 42.0] * 3 + [42.0]
    series = [{"t_s": 10.5 + i, "mbit": v} for i, v in enumerate(starve)]
    assert cc_adapt.recovery_s(series, phase) == pytest.approx(9.0)
    assert cc_adapt.recovery_s([{"t_s": 10.5 + i, "mbit": 20.0} for i in range(20)], phase) is None
    held = [{"t_s": 10.5 + i, "mbit": 40.0} for i in range(20)]
    assert cc_adapt.recovery_s(held, phase) == 0.0
    # the seconds before the change do not count toward it
    before = [{"t_s": 7.5 + i, "mbit": 40.0} for i in range(3)] + [{"t_s": 10.5, "mbit": 0.0}] + held[1:]
    assert cc_adapt.recovery_s(before, phase) == pytest.approx(1.0)


def test_a_run_that_never_recovers_counts_as_the_whole_phase():
    phases = [{"name": "start", "from_s": 0.0, "to_s": 10.0, "rate_mbit": 40.0, "rtt_ms": 20.0},
              {"name": "rtt-up", "from_s": 10.0, "to_s": 20.0, "rate_mbit": 40.0, "rtt_ms": 60.0}]
    (record,) = cc_adapt.EXPERIMENT.records(Job("frozen", {"scheme": "frozen", "phases": phases}),
                                            _raw([36.0] * 10 + [1.0] * 10, [22.0] * 20, scheme="frozen"))
    assert record["start_recovered"] and record["start_recovery_s"] == 0.0
    assert not record["rtt-up_recovered"] and record["rtt-up_recovery_s"] == 10.0


def test_goodput_comes_from_the_bottleneck_counters_when_the_run_sampled_them():
    """The bottleneck's bytes less headers over the window when every flow ran, on the flows'
    clock, not what the senders wrote: the newest flows' first writes (here 90 Mbit/s from 5 s)
    must not count."""
    raw = _raw([40.0] * 20, [20.0] * 20, scheme="cubic")
    raw["flows"][1]["started_at_s"] = 5.0                 # every flow runs from 6 to 19 s
    raw["aggregate"]["series"] = [{"t_s": t + 0.5, "mbit": 90.0 if t >= 5 else 40.0} for t in range(25)]
    packet = 1448 + cc_plan.HEADER_BYTES
    per_half_second = 1700                                # packets: 1700 * 1448 * 8 * 2 = 39.4 Mbit/s
    forward = [[t / 2, t * per_half_second * packet, t * per_half_second] for t in range(50)]
    reverse = [[t / 2, t * 100 * 66, t * 100] for t in range(50)]     # the ACKs
    raw["link_series"] = {"bottleneck": {"r1>r2": forward, "r2>r1": reverse}}
    record = cc_plan.common_record("2-flows/cubic", raw, {"rate_mbit": 40.0})
    assert record["goodput_source"] == "bottleneck"
    assert record["goodput_mbit"] == pytest.approx(per_half_second * 1448 * 8 * 2 / 1e6)
    raw["link_series"]["bottleneck"]["r1>r2"] = forward[:13]        # no reading after 6 s
    starved = cc_plan.common_record("2-flows/cubic", raw, {"rate_mbit": 40.0})
    assert starved["goodput_source"] == "bottleneck" and starved["goodput_mbit"] is None
    assert not starved["ok"] and "not read twice" in starved["failed_checks"][0]
    del raw["link_series"]                                          # a run from before the sampler
    older = cc_plan.common_record("2-flows/cubic", raw, {"rate_mbit": 40.0})
    assert older["goodput_source"] == "sender intervals" and older["goodput_mbit"] == pytest.approx(90.0)


def test_a_bottleneck_reading_above_the_links_rate_fails_the_job():
    """Counters read seconds after their stamp (a saturated guest) once made a 40-Mbit/s link
    carry 217 Mbit/s; such a job is a failed run, not a number."""
    raw = _raw([40.0] * 20, [20.0] * 20, scheme="cubic")
    packet = 1448 + cc_plan.HEADER_BYTES
    forward = [[t / 2, t * 20_000 * packet, t * 20_000] for t in range(50)]       # 463 Mbit/s
    raw["link_series"] = {"bottleneck": {"r1>r2": forward, "r2>r1": [[t / 2, 0, 0] for t in range(50)]}}
    record = cc_plan.common_record("2-flows/cubic", raw, {"rate_mbit": 40.0})
    assert record["goodput_source"] == "bottleneck" and record["goodput_mbit"] > 400
    assert not record["ok"] and "above its 40-Mbit/s rate" in record["failed_checks"][-1]
