"""tc command generation (guest.net.shaping): delay before the rate limiter, queue exactly as given."""

import pytest

from guest.net.shaping import BURST_MS, NETEM_LIMIT, Shape, change_commands, parse_shape, setup_commands

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


def test_reverse_slots_shape_only_the_reverse_direction_and_a_change_can_turn_them_off():
    slotted = Shape(rate_mbit=40, delay_ms=30, queue_packets=67, reverse_slot_ms=30)
    forward, reverse = setup_commands("r1-eth2", slotted)[0], setup_commands("r2-eth1", slotted, reverse=True)[0]
    assert "slot" not in forward
    assert reverse[-3:] == ["slot", "0ms", "30ms"]
    assert "slot" not in setup_commands("r2-eth1", SHAPE, reverse=True)[0]   # what a kernel without slots sees
    plain = Shape(rate_mbit=40, delay_ms=30, queue_packets=67)
    assert change_commands("r1-eth2", plain, slotted) == []
    (on,) = change_commands("r2-eth1", plain, slotted, reverse=True)
    (off,) = change_commands("r2-eth1", slotted, plain, reverse=True)
    assert on[-3:] == ["slot", "0ms", "30ms"] and off[-3:] == ["slot", "0ms", "0ms"]
    (longer,) = change_commands("r2-eth1", slotted, Shape(40, 45, 67, reverse_slot_ms=30), reverse=True)
    assert "45ms" in longer and longer[-3:] == ["slot", "0ms", "30ms"]   # a delay change keeps the slots


def test_a_bad_slot_gap_is_refused():
    with pytest.raises(ValueError, match="topology.bottleneck.reverse_slot_ms"):
        parse_shape("topology.bottleneck", {"rate_mbit": 40, "queue_packets": 67, "reverse_slot_ms": -1})
