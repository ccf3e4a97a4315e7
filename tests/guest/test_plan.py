"""Driver plan validation and flow expansion (guest.iperf), link-change parsing, scheme registry."""

import copy

import pytest

from guest.iperf import expand_flows, parse_ping, prepare
from guest.net.linkchange import parse_link_changes
from guest.net.schemes import Scheme, get_scheme, known_schemes
from guest.net.spec import parse_topology

PLAN = {"topology": {"kind": "dumbbell", "senders": 3, "receivers": 2,
                     "bottleneck": {"rate_mbit": 50, "delay_ms": 10, "queue_packets": 84}},
        "scheme": "cubic", "flow_count": 5, "duration_s": 10}


def _plan(**changes):
    plan = copy.deepcopy(PLAN)
    for key, value in changes.items():
        if value is None:
            del plan[key]
        else:
            plan[key] = value
    return plan


def test_flow_count_spreads_over_senders_round_robin_to_the_first_receiver():
    flows = prepare(_plan()).flows
    assert [(f.src, f.dst) for f in flows] == [("s1", "d1"), ("s2", "d1"), ("s3", "d1"), ("s1", "d1"), ("s2", "d1")]
    assert [f.port for f in flows] == [5201, 5202, 5203, 5204, 5205]
    assert {(f.cc, f.duration_s, f.start_s) for f in flows} == {("cubic", 10, 0.0)}


def test_flow_dst_round_robin_spreads_over_receivers():
    flows = prepare(_plan(flow_dst="round_robin", scheme="bbr")).flows
    assert [f.dst for f in flows] == ["d1", "d2", "d1", "d2", "d1"]
    assert flows[0].cc == "bbr"


def test_explicit_flows_keep_their_hosts_and_times():
    flows = prepare(_plan(flow_count=None, duration_s=None, flows=[
        {"src": "s2", "dst": "d2", "duration_s": 5}, {"src": "s1", "dst": "d1", "start_s": 2.5, "duration_s": 7}])).flows
    assert [(f.id, f.src, f.dst, f.start_s, f.duration_s) for f in flows] == [(0, "s2", "d2", 0.0, 5),
                                                                             (1, "s1", "d1", 2.5, 7)]


@pytest.mark.parametrize("plan, key", [
    (_plan(flows=[{"src": "s1", "dst": "d1", "duration_s": 5}]), "flows"),
    (_plan(flow_count=None), "flows"),
    (_plan(flow_count=0), "flow_count"),
    (_plan(duration_s=None), "duration_s"),
    (_plan(duration_s=2.5), "duration_s"),
    (_plan(flow_dst="random"), "flow_dst"),
    (_plan(flow_count=None, duration_s=None, flows=[{"src": "s9", "dst": "d1", "duration_s": 5}]), "flows[0].src"),
    (_plan(flow_count=None, duration_s=None, flows=[{"src": "s1", "dst": "s1", "duration_s": 5}]), "flows[0].dst"),
    (_plan(flow_count=None, duration_s=None, flows=[{"src": "s1", "dst": "d1", "duration_s": 5, "cc": "x"}]),
     "flows[0].cc"),
    (_plan(flow_count=None, duration_s=None, flows=[{"src": "s1", "dst": "d1"}]), "flows[0].duration_s"),
    (_plan(interval_s=0), "interval_s"),
    (_plan(schema="cubic"), "schema"),
    (_plan(scheme=None), "scheme"),
    (_plan(link_changes=[{"at_s": 5, "link": "r1-r2", "rate_mbit": 10}]), "link_changes[0].link"),
    (_plan(link_changes=[{"at_s": -1, "link": "bottleneck", "rate_mbit": 10}]), "link_changes[0].at_s"),
    (_plan(link_changes=[{"at_s": 5, "link": "bottleneck", "rate_mbit": -10}]), "link_changes[0].rate_mbit"),
    (_plan(link_changes=[{"at_s": 5, "link": "bottleneck"}]), "link_changes[0]"),
    (_plan(link_changes=[{"at_s": 5, "link": "bottleneck", "bw": 3}]), "link_changes[0].bw"),
    (_plan(link_changes=[{"at_s": 5, "link": "bottleneck", "reverse_slot_ms": "30"}]),
     "link_changes[0].reverse_slot_ms"),
])
def test_a_bad_plan_is_refused_naming_the_key(plan, key):
    with pytest.raises(ValueError) as error:
        prepare(plan)
    assert str(error.value).startswith(key)


def test_link_changes_are_sorted_by_time():
    bp = parse_topology(PLAN["topology"])
    changes = parse_link_changes([{"at_s": 9, "link": "bottleneck", "delay_ms": 50},
                                  {"at_s": 3, "link": "s1-r1", "rate_mbit": 10, "queue_packets": 20}], bp)
    assert [(c.at_s, c.link, c.changes) for c in changes] == [
        (3.0, "s1-r1", {"rate_mbit": 10.0, "queue_packets": 20}), (9.0, "bottleneck", {"delay_ms": 50.0})]


def test_expand_flows_needs_a_flow_source():
    with pytest.raises(ValueError, match="flows"):
        expand_flows({}, parse_topology(PLAN["topology"]), "cubic")


def test_registry_knows_cubic_and_bbr_and_lists_them_for_an_unknown_name():
    assert {"cubic", "bbr"} <= set(known_schemes())
    assert "_kernelcc" not in known_schemes()
    scheme = get_scheme("bbr")
    assert isinstance(scheme, Scheme) and scheme.congestion_control == "bbr"
    assert get_scheme("cubic").describe() == {"name": "cubic", "congestion_control": "cubic"}
    for bad in ("reno", "_kernelcc", "../cubic", 3):
        with pytest.raises(ValueError, match=r"unknown scheme .*known: bbr, cubic"):
            get_scheme(bad)


def test_ping_summary_parsing():
    out = ("5 packets transmitted, 5 received, 0% packet loss, time 812ms\n"
           "rtt min/avg/max/mdev = 20.331/20.612/21.002/0.223 ms\n")
    assert parse_ping(out) == {"min": 20.331, "avg": 20.612, "max": 21.002, "mdev": 0.223}
    assert parse_ping("5 packets transmitted, 0 received, 100% packet loss\n") is None
