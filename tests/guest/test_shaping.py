"""tc command generation (guest.net.shaping): delay before the rate limiter, queue exactly as given."""

import pytest

from guest.net.shaping import BURST_MS, NETEM_LIMIT, Shape, change_commands, check_jitter, parse_shape, setup_commands

SHAPE = Shape(rate_mbit=50, delay_ms=10, queue_packets=84, loss_pct=0.5)


def test_setup_is_netem_then_htb_then_a_pfifo_of_the_queue_size():
    commands = [" ".join(argv) for argv in setup_commands("r1-eth2", SHAPE)]
    assert commands == [
        f"tc qdisc replace dev r1-eth2 root handle 1: netem delay 10ms loss 0.5% limit {NETEM_LIMIT}",
        "tc qdisc add dev r1-eth2 parent 1:1 handle 2: htb default 1",
        "tc class add dev r1-eth2 parent 2: classid 2:1 htb rate 50mbit ceil 50mbit burst 125000b cburst 125000b "
        "quantum 15140",
        "tc qdisc add dev r1-eth2 parent 2:1 handle 3: pfifo limit 84",
    ]


def test_netem_never_limits_below_what_a_fast_long_link_holds_in_flight():
    # 1 Gbit/s for 2 × 500 ms of frames: what an access link with a long delay keeps inside netem
    assert NETEM_LIMIT > 1e9 * 1.0 / 8 / 1500


def test_delay_scale_doubles_the_delay_only():
    netem = setup_commands("r2-eth1", SHAPE, delay_scale=2)[0]
    assert netem[netem.index("delay") + 1] == "20ms" and netem[netem.index("loss") + 1] == "0.5%"


def test_change_touches_only_what_changed():
    rate_only = change_commands("r1-eth2", SHAPE, Shape(10, 10, 84, 0.5))
    assert [" ".join(argv) for argv in rate_only] == [
        "tc class change dev r1-eth2 parent 2: classid 2:1 htb rate 10mbit ceil 10mbit burst 25000b cburst 25000b "
        "quantum 15140"]
    delay_and_queue = change_commands("r1-eth2", SHAPE, Shape(50, 25, 42, 0.5), delay_scale=2)
    assert [argv[2] for argv in delay_and_queue] == ["change", "change"]
    assert "50ms" in delay_and_queue[0] and delay_and_queue[1][-2:] == ["limit", "42"]
    assert change_commands("r1-eth2", SHAPE, SHAPE) == []


def test_bucket_holds_burst_ms_of_the_rate_but_never_less_than_two_frames():
    def burst(rate):
        htb = setup_commands("x", Shape(rate))[2]
        return htb[htb.index("burst") + 1]
    assert burst(50) == f"{int(50e6 / 8 * BURST_MS / 1e3)}b"
    assert burst(0.1) == "3028b"


def test_bdp_in_full_frames():
    assert round(Shape(50).bdp_packets(20), 1) == 83.3


def test_reverse_jitter_shapes_only_the_reverse_direction():
    jittery = Shape(rate_mbit=40, delay_ms=10, queue_packets=67, reverse_jitter_ms=6)
    forward, reverse = setup_commands("r1-eth2", jittery)[0], setup_commands("r2-eth1", jittery, reverse=True)[0]
    assert forward[forward.index("delay"):forward.index("loss")] == ["delay", "10ms"]
    assert reverse[reverse.index("delay"):reverse.index("loss")] == ["delay", "10ms", "6ms"]
    calm = Shape(rate_mbit=40, delay_ms=10, queue_packets=67)
    assert change_commands("r1-eth2", calm, jittery) == []
    (on,) = change_commands("r2-eth1", calm, jittery, reverse=True)
    (off,) = change_commands("r2-eth1", jittery, calm, reverse=True)
    assert "6ms" in on and off[off.index("delay"):off.index("loss")] == ["delay", "10ms"]


def test_jitter_beyond_the_delay_is_refused():
    with pytest.raises(ValueError, match=r"topology.bottleneck.reverse_jitter_ms: 11 ms is more than"):
        parse_shape("topology.bottleneck", {"rate_mbit": 40, "delay_ms": 10, "queue_packets": 67,
                                            "reverse_jitter_ms": 11})
    with pytest.raises(ValueError, match="reverse_jitter_ms"):
        parse_shape("topology.bottleneck", {"rate_mbit": 40, "queue_packets": 67, "reverse_jitter_ms": -1})
    assert check_jitter("x", Shape(40, 10, 67, reverse_jitter_ms=10)).reverse_jitter_ms == 10
