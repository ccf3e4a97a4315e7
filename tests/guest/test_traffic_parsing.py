"""iperf3 -J parsing and aggregation (guest.net.traffic), on hand-written iperf3 3.12 outputs."""

import json
import os
import threading
import time

import pytest

from guest.net.topology import parse_net_dev
from guest.net.traffic import CounterSampler, aggregate, parse_iperf3


def _interval(start, end, bits, rtt_us, cwnd, retrans):
    stream = {"socket": 5, "start": start, "end": end, "seconds": end - start, "bytes": int(bits * (end - start) / 8),
              "bits_per_second": bits, "retransmits": retrans, "snd_cwnd": cwnd, "snd_wnd": 3145728,
              "rtt": rtt_us, "rttvar": 500, "pmtu": 1500, "omitted": False, "sender": True}
    total = {k: stream[k] for k in ("start", "end", "seconds", "bytes", "bits_per_second", "retransmits", "omitted",
                                    "sender")}
    return {"streams": [stream], "sum": total}


def iperf3_output(received_bps=47_100_000.0, sent_bps=48_300_000.0):
    """A trimmed client output of `iperf3 -c 10.2.1.1 -t 2 -i 1 -C cubic -J` (2 intervals)."""
    return json.dumps({
        "start": {"connected": [{"socket": 5, "local_host": "10.1.1.1", "local_port": 41234,
                                 "remote_host": "10.2.1.1", "remote_port": 5201}],
                  "version": "iperf 3.12", "tcp_mss_default": 1448,
                  "test_start": {"protocol": "TCP", "num_streams": 1, "duration": 2}},
        "intervals": [_interval(0.0, 1.000121, 52_400_000.0, 24_120, 262_144, 3),
                      _interval(1.000121, 2.000087, 44_200_000.0, 21_980, 131_072, 0)],
        "end": {
            "streams": [{"sender": {"socket": 5, "start": 0, "end": 2.000087, "seconds": 2.000087,
                                    "bytes": 12_075_000, "bits_per_second": sent_bps, "retransmits": 3,
                                    "max_snd_cwnd": 262_144, "max_snd_wnd": 3_145_728, "max_rtt": 31_004,
                                    "min_rtt": 20_402, "mean_rtt": 23_050, "sender": True},
                         "receiver": {"socket": 5, "start": 0, "end": 2.021, "seconds": 2.000087,
                                      "bytes": 11_775_000, "bits_per_second": received_bps, "sender": True}}],
            "sum_sent": {"start": 0, "end": 2.000087, "seconds": 2.000087, "bytes": 12_075_000,
                         "bits_per_second": sent_bps, "retransmits": 3, "sender": True},
            "sum_received": {"start": 0, "end": 2.021, "seconds": 2.021, "bytes": 11_775_000,
                             "bits_per_second": received_bps, "sender": True},
            "cpu_utilization_percent": {"host_total": 41.2, "remote_total": 12.5},
            "sender_tcp_congestion": "cubic", "receiver_tcp_congestion": "cubic"}})


def test_goodput_is_the_receivers_count_and_rtt_is_in_ms():
    flow = parse_iperf3(iperf3_output())
    assert "error" not in flow
    assert flow["goodput_mbit"] == 47.1
    assert flow["sender_mbit"] == 48.3
    assert flow["bytes_received"] == 11_775_000
    assert flow["retransmits"] == 3
    assert flow["rtt_ms"] == {"mean": 23.05, "min": 20.402, "max": 31.004}
    assert flow["cc_used"] == "cubic"


def test_intervals_carry_throughput_rtt_and_cwnd():
    series = parse_iperf3(iperf3_output())["intervals"]
    assert [point["mbit"] for point in series] == [52.4, 44.2]
    assert series[0]["rtt_ms"] == 24.12
    assert series[0]["cwnd_kbyte"] == 256.0
    assert series[1]["start_s"] == 1.0


@pytest.mark.parametrize("text, fragment", [
    ("", "printed nothing"),
    ("iperf3: error - unable to connect", "not JSON"),
    (json.dumps({"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}),
     "Connection refused"),
    (json.dumps({"start": {}, "intervals": [], "end": {}}), "no end summary"),
])
def test_a_failed_iperf3_is_an_error_not_numbers(text, fragment):
    flow = parse_iperf3(text)
    assert fragment in flow["error"]
    assert "goodput_mbit" not in flow


def _flow(started_at, goodput, error=None):
    if error:
        return {"started_at_s": started_at, "error": error}
    parsed = parse_iperf3(iperf3_output(received_bps=goodput * 1e6))
    return {"started_at_s": started_at, **parsed}


def test_aggregate_sums_goodput_counts_failures_and_bins_on_the_traffic_clock():
    flows = [_flow(0.0, 30.0), _flow(1.0, 10.0), _flow(0.0, 0.0, error="iperf3: boom")]
    total = aggregate(flows, interval_s=1.0)
    assert total["goodput_mbit"] == 40.0
    assert (total["flows_ok"], total["flows_failed"]) == (2, 1)
    assert total["retransmits"] == 6
    # Jain over (30, 10): 40² / (2 × 1000) = 0.8
    assert total["jain_fairness"] == 0.8
    # flow 0's intervals land in bins 0 and 1, flow 1's (started at 1 s) in bins 1 and 2
    assert [(p["t_s"], p["mbit"]) for p in total["series"]] == [(0.5, 52.4), (1.5, 96.6), (2.5, 44.2)]


def test_aggregate_of_nothing_that_worked():
    total = aggregate([_flow(0.0, 0.0, error="x")], interval_s=1.0)
    assert total["goodput_mbit"] == 0 and total["jain_fairness"] is None and total["series"] == []


NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
r1-eth1: 4675802   70831    0    0    0     0          0         0 188403017  124411    0    0    0     0       0          0
"""


def test_net_dev_gives_each_interface_its_transmit_bytes_and_packets():
    assert parse_net_dev(NET_DEV) == {"lo": (0, 0), "r1-eth1": (188403017, 124411)}


def test_the_counter_sampler_stamps_readings_on_the_traffic_clock():
    count = iter(range(1, 1000))

    def counters():
        n = next(count)
        return {"a>b": (100 * n, n)}

    t0 = time.monotonic() - 10.0                      # the traffic began 10 s ago
    sampler = CounterSampler(counters, 0.01)
    sampler.start(t0)
    time.sleep(0.2)
    series = sampler.stop()["a>b"]
    assert len(series) >= 3 and sampler.error is None
    assert [point[1:] for point in series] == [[100 * n, n] for n in range(1, len(series) + 1)]
    assert series[0][0] >= 10.0 and all(a[0] < b[0] for a, b in zip(series, series[1:]))


def test_the_counter_sampler_keeps_what_it_read_when_a_node_is_gone():
    readings = iter([{"a>b": (1, 1)}])

    def counters():
        try:
            return next(readings)
        except StopIteration:
            raise OSError("no such process") from None

    sampler = CounterSampler(counters, 0.01)
    sampler.start(time.monotonic())
    time.sleep(0.1)
    assert sampler.stop() == {"a>b": [[pytest.approx(0.0, abs=0.5), 1, 1]]}
    assert sampler.error == "no such process"


def test_the_counter_sampler_drops_a_reading_taken_long_after_its_stamp():
    """A reading that took longer than MAX_READ_S (the thread lost the CPU between taking the time
    and reading) would be stamped early: it is dropped and counted, the others kept."""
    slow = iter([False, True, False, False, False, False])

    def counters():
        if next(slow, False):
            time.sleep(CounterSampler.MAX_READ_S * 3)
        return {"a>b": (1, 1)}

    sampler = CounterSampler(counters, 0.01)
    sampler.start(time.monotonic())
    time.sleep(CounterSampler.MAX_READ_S * 3 + 0.3)
    series = sampler.stop()["a>b"]
    assert sampler.late == 1 and len(series) >= 3 and sampler.error is None


def test_the_counter_sampler_reads_at_a_raised_priority_when_it_may():
    """Its thread alone is reniced (Linux: per thread), so the flows' processes keep theirs."""
    seen = []

    def counters():
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return {"a>b": (1, 1)}

    before = os.getpriority(os.PRIO_PROCESS, 0)
    sampler = CounterSampler(counters, 0.01)
    sampler.start(time.monotonic())
    time.sleep(0.1)
    sampler.stop()
    assert seen and os.getpriority(os.PRIO_PROCESS, 0) == before
    assert seen[0] == (CounterSampler.NICE if os.geteuid() == 0 else before)
