"""lf_cc's arithmetic (kernel/cc/lf_cc_model.h), run as the module runs it, against hand-computed
monitor intervals: the three features and their int8 encoding, the action-to-rate rule, the MI
length, the cwnd cap and the fallback. The header is compiled into a user-space library with the
kernel's C dialect (gnu89) and called through ctypes, so the code under test is the module's."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

CC_DIR = Path(__file__).resolve().parents[2] / "kernel" / "cc"


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> ctypes.CDLL:
    out = tmp_path_factory.mktemp("lf_cc") / "liblf_cc_model.so"
    subprocess.run(["gcc", "-O2", "-fPIC", "-shared", "-std=gnu89", "-Wall", "-Wextra", "-Werror",
                    "-Wdeclaration-after-statement", f"-I{CC_DIR}", "-o", str(out), str(CC_DIR / "lf_cc_user.c")],
                   check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(out))
    u32, u64, s8 = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int8
    signatures = {
        "lf_cc_user_latency_inflation": (s8, [u32, u32, u64, u32, u64]),
        "lf_cc_user_mean_rtt_us": (u32, [u32, u64, u32, u64]),
        "lf_cc_user_latency_ratio": (s8, [u32, u32]),
        "lf_cc_user_send_ratio": (s8, [u32, u32]),
        "lf_cc_user_push_history": (None, [ctypes.POINTER(s8), s8, s8, s8]),
        "lf_cc_user_apply_action": (u64, [u64, s8]),
        "lf_cc_user_mi_target_us": (u32, [u32, u64, u32]),
        "lf_cc_user_target_units": (u32, [u32]),
        "lf_cc_user_rtt_units": (u32, [u32]),
        "lf_cc_user_cwnd_cap": (u32, [u64, u32, u32]),
        "lf_cc_user_fallback_rate": (u64, [u64, u32, u32, u32]),
        "lf_cc_user_context_size": (ctypes.c_uint, []),
        "lf_cc_user_min_rtt_update": (None, [ctypes.POINTER(u32), ctypes.POINTER(u32), u32, u32]),
        "lf_cc_user_stale_min_update": (ctypes.c_int, [ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_int16),
                                                        ctypes.POINTER(u32), ctypes.POINTER(u32), u32, u32,
                                                        u32, u32, u32, u32]),
    }
    for name, (restype, argtypes) in signatures.items():
        getattr(lib, name).restype = restype
        getattr(lib, name).argtypes = argtypes
    return lib


@pytest.mark.parametrize("duration_us, halves, expected", [
    (10_000, ((2, 40_000), (2, 42_000)), 16),      # +1 ms over 10 ms: inflation 0.1, x = 1.0, q = 16
    (10_000, ((2, 42_000), (2, 40_000)), -16),     # the RTT fell
    (320, ((1, 20_000), (1, 20_001)), 1),          # 160 * 1 / 320 = 0.5: halves round away from zero
    (320, ((1, 20_001), (1, 20_000)), -1),
    (10_000, ((1, 20_000), (1, 30_000)), 127),     # inflation 1.0 is over the encoding's range: clamped
    (10_000, ((0, 0), (3, 60_000)), 0),            # no sample in the first half: no trend to measure
    (0, ((1, 20_000), (1, 21_000)), 0),
])
def test_latency_inflation(lib, duration_us, halves, expected):
    (c0, s0), (c1, s1) = halves
    assert lib.lf_cc_user_latency_inflation(duration_us, c0, s0, c1, s1) == expected


def test_mean_rtt(lib):
    assert lib.lf_cc_user_mean_rtt_us(2, 40_000, 2, 44_000) == 21_000
    assert lib.lf_cc_user_mean_rtt_us(0, 0, 0, 0) == 0


@pytest.mark.parametrize("mean, minimum, expected", [
    (25_000, 20_000, 32),      # ratio 1.25: x = 8 * 0.25 = 2, q = 32
    (20_000, 20_000, 0),       # no queue
    (60_000, 20_000, 127),     # ratio 3 saturates
    (20_001, 20_000, 0),       # 128 / 20000 rounds to 0
    (0, 20_000, 0),
])
def test_latency_ratio(lib, mean, minimum, expected):
    assert lib.lf_cc_user_latency_ratio(mean, minimum) == expected


@pytest.mark.parametrize("sent, delivered, expected", [
    (110, 100, 13),            # 128 * 10 / 100 = 12.8
    (90, 100, -13),
    (100, 100, 0),
    (5, 0, 0),                 # nothing delivered: ratio 1, as Aurora
    (0, 100, -128),            # ratio 0: x = -8
    (300, 100, 127),
])
def test_send_ratio(lib, sent, delivered, expected):
    assert lib.lf_cc_user_send_ratio(sent, delivered) == expected


def test_history_keeps_the_latest_ten_intervals_oldest_first(lib):
    history = (ctypes.c_int8 * 30)(*range(30))
    lib.lf_cc_user_push_history(history, 100, 101, 102)
    assert list(history) == [*range(3, 30), 100, 101, 102]


@pytest.mark.parametrize("q, expected", [
    (0, 1_280_000),
    (127, 1_407_000),          # a = 4 * 127/128: x(1 + 0.025 a) = x 1407/1280
    (-128, 1_163_636),         # a = -4: /(1 + 0.1) = x 1280/1408, rounded down
    (64, 1_344_000),
    (-64, 1_219_047),
])
def test_action_moves_the_rate_by_aurora_rule(lib, q, expected):
    assert lib.lf_cc_user_apply_action(1_280_000, q) == expected


def test_action_rule_is_symmetric_in_log_rate(lib):
    up = lib.lf_cc_user_apply_action(10**9, 100)
    assert lib.lf_cc_user_apply_action(up, -100) == pytest.approx(10**9, rel=1e-6)


@pytest.mark.parametrize("srtt_us, rate, expected", [
    (20_000, 5_000_000, 10_000),       # half the RTT: 5 segments take only 1448 us
    (20_000, 12_500, 579_200),         # 0.1 Mbit/s: five segments take longer than half an RTT
    (20_000, 1_000, 1_000_000),        # capped at one second
    (100, 10**9, 1_000),               # floored at one millisecond
])
def test_monitor_interval(lib, srtt_us, rate, expected):
    assert lib.lf_cc_user_mi_target_us(srtt_us, rate, 1448) == expected


def test_cwnd_cap_is_two_rate_bdps(lib):
    # 5 MB/s * 20 ms / 1448 B = 69 segments; 2 x 69 + 4
    assert lib.lf_cc_user_cwnd_cap(5_000_000, 20_000, 1448) == 142
    assert lib.lf_cc_user_cwnd_cap(0, 20_000, 1448) == 4
    assert lib.lf_cc_user_cwnd_cap(10**12, 10**6, 1448) == 0xFFFF


@pytest.mark.parametrize("lost, mean, minimum, expected", [
    (1, 20_000, 20_000, 700_000),      # a loss: x 7/10
    (0, 26_000, 20_000, 700_000),      # a queue (ratio 1.3 > 5/4): x 7/10
    (0, 25_000, 20_000, 1_050_000),    # ratio exactly 5/4 is not a queue: x 21/20
    (0, 0, 0, 1_050_000),              # nothing known yet: probe up
])
def test_fallback(lib, lost, mean, minimum, expected):
    assert lib.lf_cc_user_fallback_rate(1_000_000, lost, mean, minimum) == expected


def _min_rtt(lib, minimum, stamp, mean, now):
    m, st = ctypes.c_uint32(minimum), ctypes.c_uint32(stamp)
    lib.lf_cc_user_min_rtt_update(ctypes.byref(m), ctypes.byref(st), mean, now)
    return m.value, st.value


@pytest.mark.parametrize("minimum, stamp, mean, now, expected", [
    (0, 0, 21_000, 5, (21_000, 5)),              # the first MI sets it
    (20_000, 100, 25_000, 5_000, (20_000, 100)),  # a larger mean within the window: kept
    (20_000, 100, 19_000, 5_000, (19_000, 5_000)),  # a new minimum
    (20_000, 100, 60_000, 10_101, (60_000, 10_101)),  # older than 10 s: the path's RTT grew
    (20_000, 100, 60_000, 10_100, (20_000, 100)),  # exactly 10 s: still kept
    (20_000, 100, 0, 20_000, (20_000, 100)),      # an MI without samples changes nothing
    (20_000, 0xFFFF_FF00, 25_000, 50, (20_000, 0xFFFF_FF00)),  # the ms clock wrapped: 306 ms old
])
def test_latency_ratio_base_is_a_windowed_minimum(lib, minimum, stamp, mean, now, expected):
    assert _min_rtt(lib, minimum, stamp, mean, now) == expected
    from userspace.cc import features as F

    got = F.min_rtt_update(minimum, stamp, mean, now)
    assert (int(got[0]), int(got[1])) == expected


class StaleRule:
    """One socket's lf_cc_stale_min_update, in C and in features.py side by side."""

    def __init__(self, lib, minimum: int = 20_000):
        self.lib, self.now = lib, 0
        self.c = [ctypes.c_uint8(0), ctypes.c_int16(0), ctypes.c_uint32(minimum), ctypes.c_uint32(0)]
        self.py = [0, 0, minimum, 0]

    def mi(self, mean: int, sent: int, delivered: int, lost: int = 0, duration_us: int = 10_000) -> int:
        """Feed one MI; returns the minimum afterwards (asserting C and Python agree)."""
        import numpy as np

        from userspace.cc import features as F

        self.now += duration_us // 1000
        fired = self.lib.lf_cc_user_stale_min_update(*(ctypes.byref(v) for v in self.c), mean, duration_us,
                                                     sent, delivered, lost, self.now)
        mi = np.zeros((), F.MI_DTYPE)
        mi["duration_us"], mi["segs_sent"], mi["segs_delivered"], mi["segs_lost"] = duration_us, sent, delivered, lost
        *state, py_fired = F.stale_min_update(*self.py, mean, mi, self.now)
        self.py = [int(v) for v in state]
        assert self.py == [v.value for v in self.c] and bool(py_fired) == bool(fired)
        return self.py[2]


def test_a_longer_path_replaces_the_minimum_once_the_flow_drained_its_share(lib):
    rule = StaleRule(lib)
    # 20 -> 60 ms; each 10-ms MI the flow gets back 100 segments and sends 90: its own share of a
    # queue would be 40 ms x 100 segments / 10 ms = 400 segments, drained after 40 MIs
    seen = [rule.mi(60_000, sent=90, delivered=100) for _ in range(40)]
    assert seen[:39] == [20_000] * 39 and seen[39] == 60_000 and rule.py[:2] == [0, 0]
    assert rule.mi(61_000, sent=100, delivered=100) == 60_000     # the new base: not inflated


def test_even_a_drain_at_once_needs_ten_inflated_mis(lib):
    rule = StaleRule(lib)
    seen = [rule.mi(60_000, sent=0, delivered=100, duration_us=100_000) for _ in range(10)]
    assert seen == [20_000] * 9 + [60_000]


def test_a_queue_still_growing_keeps_the_minimum(lib):
    rule = StaleRule(lib)
    assert {rule.mi(60_000 + 1_000 * i, sent=120, delivered=100) for i in range(40)} == {20_000}


def test_one_uninflated_mi_restarts_the_count(lib):
    rule = StaleRule(lib)
    for _ in range(9):
        rule.mi(60_000, sent=0, delivered=100, duration_us=100_000)
    assert rule.mi(29_999, sent=0, delivered=100) == 20_000 and rule.py[:2] == [0, 0]
    assert rule.mi(60_000, sent=0, delivered=100) == 20_000 and rule.py[:2] == [1, 100]


def test_the_drained_sum_saturates(lib):
    rule = StaleRule(lib)
    for _ in range(5):
        rule.mi(60_000, sent=0, delivered=20_000, duration_us=1_000)
    assert rule.py[1] == 32_767
    rule = StaleRule(lib)
    for _ in range(5):
        rule.mi(60_000, sent=20_000, delivered=0, duration_us=1_000)
    assert rule.py[1] == -32_767


def test_the_stale_rule_matches_the_simulator_on_random_intervals(lib):
    import numpy as np

    rng = np.random.default_rng(3)
    for _ in range(50):
        rule = StaleRule(lib, int(rng.integers(1, 100_000)))
        for _ in range(40):
            rule.mi(int(rng.integers(0, 200_000)), *(int(v) for v in rng.integers(0, 300, 3)),
                    duration_us=int(rng.integers(1, 300_000)))




def test_context_is_forty_four_bytes(lib):
    assert lib.lf_cc_user_context_size() == 44


def test_the_sockets_u16_times_round_as_their_use_needs(lib):
    """MI targets round up (an MI never ends before its target), RTT samples down, and a sample
    never becomes 0, the socket's "no sample yet"; both saturate instead of wrapping."""
    assert lib.lf_cc_user_target_units(1000) == 63          # 1 ms -> 1008 us
    assert lib.lf_cc_user_target_units(1008) == 63
    assert lib.lf_cc_user_target_units(1_000_000) == 62_500  # the longest MI fits
    assert lib.lf_cc_user_target_units(2_000_000) == 0xFFFF
    assert lib.lf_cc_user_target_units(0xFFFF_FFFF) == 0xFFFF   # no wrap on the way
    assert lib.lf_cc_user_rtt_units(0) == 0
    assert lib.lf_cc_user_rtt_units(5) == 1
    assert lib.lf_cc_user_rtt_units(60_031) == 3751          # 60.016 ms
    assert lib.lf_cc_user_rtt_units(4_000_000) == 0xFFFF


def test_the_simulator_computes_what_the_kernel_computes(lib):
    """userspace/cc/features.py (what the network is trained on) against the module's C, on
    random intervals: any difference would train the network on features the kernel never sees."""
    import numpy as np

    from userspace.cc import features as F

    rng = np.random.default_rng(7)
    for _ in range(2000):
        mi = np.zeros((), F.MI_DTYPE)
        mi["duration_us"] = rng.integers(0, 200_000)
        mi["rtt_count"] = rng.integers(0, 50, 2)
        mi["rtt_sum_us"] = mi["rtt_count"] * rng.integers(1_000, 300_000, 2)
        c0, c1 = (int(v) for v in mi["rtt_count"])
        s0, s1 = (int(v) for v in mi["rtt_sum_us"])
        assert int(F.q_latency_inflation(mi)) == lib.lf_cc_user_latency_inflation(int(mi["duration_us"]), c0, s0, c1, s1)
        assert int(F.mean_rtt_us(mi)) == lib.lf_cc_user_mean_rtt_us(c0, s0, c1, s1)
        mean, minimum = (int(v) for v in rng.integers(0, 300_000, 2))
        assert int(F.q_latency_ratio(mean, minimum)) == lib.lf_cc_user_latency_ratio(mean, minimum)
        sent, delivered = (int(v) for v in rng.integers(0, 400, 2))
        assert int(F.q_send_ratio(sent, delivered)) == lib.lf_cc_user_send_ratio(sent, delivered)
        rate, q = int(rng.integers(1, 10**10)), int(rng.integers(-128, 128))
        assert int(F.apply_action(rate, q)) == lib.lf_cc_user_apply_action(rate, q)
        srtt = int(rng.integers(0, 2_000_000))
        assert int(F.mi_target_us(srtt, rate, 1448)) == lib.lf_cc_user_mi_target_us(srtt, rate, 1448)
        assert int(F.cwnd_cap(rate, srtt, 1448)) == lib.lf_cc_user_cwnd_cap(rate, srtt, 1448)
        assert int(F.mi_min_rtt_context_us(srtt)) == lib.lf_cc_user_rtt_units(srtt) * F.RTT_UNIT_US
