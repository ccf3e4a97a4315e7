"""Topology specs: validation errors name the key; layout, routes, paths and base RTT (guest.net.spec)."""

import copy

import pytest

from guest.net.spec import parse_topology

DUMBBELL = {"kind": "dumbbell", "senders": 2, "receivers": 2,
            "bottleneck": {"rate_mbit": 50, "delay_ms": 10, "queue_packets": 84, "loss_pct": 0},
            "access": {"rate_mbit": 1000, "delay_ms": 1}, "offloads": {"tso": False, "gso": False, "gro": False}}
LEAF_SPINE = {"kind": "leaf_spine", "leaves": 2, "spines": 2, "hosts_per_leaf": 2,
              "link": {"rate_mbit": 20, "delay_ms": 1}, "host_link": {"rate_mbit": 100},
              "link_overrides": [{"leaf": 1, "spine": 2, "rate_mbit": 4, "delay_ms": 3}]}


def _with(spec, path, value):
    spec = copy.deepcopy(spec)
    *parents, last = path
    target = spec
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return spec


@pytest.mark.parametrize("spec, key", [
    (_with(DUMBBELL, ["kind"], "ring"), "topology.kind"),
    (_with(DUMBBELL, ["sender"], 2), "topology.sender"),
    (_with(DUMBBELL, ["senders"], 0), "topology.senders"),
    (_with(DUMBBELL, ["senders"], True), "topology.senders"),
    (_with(DUMBBELL, ["senders"], KeyError), "topology.senders"),
    (_with(DUMBBELL, ["bottleneck", "rate_mbit"], 0), "topology.bottleneck.rate_mbit"),
    (_with(DUMBBELL, ["bottleneck", "rate_mbit"], "50mbit"), "topology.bottleneck.rate_mbit"),
    (_with(DUMBBELL, ["bottleneck", "rate_mbit"], KeyError), "topology.bottleneck.rate_mbit"),
    (_with(DUMBBELL, ["bottleneck", "queue_packets"], KeyError), "topology.bottleneck.queue_packets"),
    (_with(DUMBBELL, ["bottleneck", "queue_packets"], 8.5), "topology.bottleneck.queue_packets"),
    (_with(DUMBBELL, ["bottleneck", "delay_ms"], -1), "topology.bottleneck.delay_ms"),
    (_with(DUMBBELL, ["bottleneck", "loss_pct"], 100), "topology.bottleneck.loss_pct"),
    (_with(DUMBBELL, ["bottleneck", "jitter_ms"], 1), "topology.bottleneck.jitter_ms"),
    (_with(DUMBBELL, ["access", "rate"], 1000), "topology.access.rate"),
    (_with(DUMBBELL, ["offloads", "lro"], False), "topology.offloads.lro"),
    (_with(DUMBBELL, ["offloads", "tso"], "off"), "topology.offloads.tso"),
    (_with(LEAF_SPINE, ["leaves"], 1), "topology.leaves"),
    (_with(LEAF_SPINE, ["link"], KeyError), "topology.link"),
    (_with(LEAF_SPINE, ["link_overrides"], [{"leaf": 3, "spine": 1, "rate_mbit": 4}]), "topology.link_overrides[0].leaf"),
    (_with(LEAF_SPINE, ["link_overrides"], [{"leaf": 1, "spine": 1}]), "topology.link_overrides[0]"),
    (_with(LEAF_SPINE, ["link_overrides"], [{"leaf": 1, "spine": 1, "rate": 4}]), "topology.link_overrides[0].rate"),
])
def test_a_bad_spec_is_refused_naming_the_key(spec, key):
    with pytest.raises(ValueError) as error:
        parse_topology(spec)
    assert str(error.value).startswith(key)


def test_dumbbell_layout_and_defaults():
    bp = parse_topology({"kind": "dumbbell", "senders": 3, "bottleneck": {"rate_mbit": 50, "queue_packets": 84}})
    assert bp.hosts == ["s1", "s2", "s3", "d1"] and bp.routers == ["r1", "r2"]
    assert (bp.senders, bp.receivers, bp.bottlenecks) == (["s1", "s2", "s3"], ["d1"], ["bottleneck"])
    assert bp.offloads == {"tso": False, "gso": False, "gro": False}
    access = bp.link("s2-r1")
    assert (access.shape.rate_mbit, access.shape.delay_ms) == (1000.0, 0.0)
    # Host ends are never shaped; the router end carries both directions' delay.
    assert (access.a, access.a_delay_scale, access.b_delay_scale) == ("s2", 0, 2)
    assert bp.address("s2") == "10.1.2.1" and bp.address("d1") == "10.2.1.1"


def test_dumbbell_base_rtt_is_twice_bottleneck_plus_both_access_delays():
    bp = parse_topology(DUMBBELL)
    assert bp.paths("s1", "d2") == [["s1-r1", "bottleneck", "r2-d2"]]
    assert bp.base_rtt_ms("s1", "d2") == (24.0, 24.0)  # 2 × (10 + 1 + 1)


def test_dumbbell_routes_send_each_side_over_the_bottleneck():
    bp = parse_topology(DUMBBELL)
    assert [(r.dst, r.via) for r in bp.routes["r1"]] == [("10.2.0.0/16", (("10.0.0.2", "bottleneck"),))]
    assert [(r.dst, r.via) for r in bp.routes["s2"]] == [("default", (("10.1.2.254", "s2-r1"),))]


def test_leaf_spine_has_one_ecmp_path_per_spine_with_overrides_applied():
    bp = parse_topology(LEAF_SPINE)
    assert bp.senders == ["h1", "h2"] and bp.receivers == ["h3", "h4"]
    assert bp.paths("h1", "h3") == [["h1-leaf1", "leaf1-spine1", "leaf2-spine1", "h3-leaf2"],
                                    ["h1-leaf1", "leaf1-spine2", "leaf2-spine2", "h3-leaf2"]]
    assert bp.base_rtt_ms("h1", "h3") == (4.0, 8.0)  # via spine2: 2 × (3 + 1)
    assert bp.paths("h1", "h2") == [["h1-leaf1", "h2-leaf1"]]
    assert bp.link("leaf1-spine2").shape.rate_mbit == 4.0 and bp.link("leaf2-spine2").shape.rate_mbit == 20.0
    leaf1 = bp.routes["leaf1"]
    assert [r.dst for r in leaf1] == ["10.2.0.0/16"]
    assert leaf1[0].via == (("172.16.1.6", "leaf1-spine1"), ("172.16.1.10", "leaf1-spine2"))
    assert bp.sysctls == {"net.ipv4.fib_multipath_hash_policy": "1"}
    assert len(bp.bottlenecks) == 4


def test_unknown_link_name_is_a_key_error_listing_links():
    with pytest.raises(KeyError, match="bottleneck"):
        parse_topology(DUMBBELL).link("r1-r2")
