"""/proc/stat parsing and diffing (guest.net.cpu)."""

import pytest

from guest.net.cpu import cpu_use, parse_proc_stat

BEFORE = """cpu  1000 0 500 8000 100 0 400 0 0 0
cpu0 500 0 250 4000 50 0 200 0 0 0
cpu1 500 0 250 4000 50 0 200 0 0 0
intr 123456 0 0
ctxt 99999
btime 1700000000
"""
# cpu0: +60 user, +20 system, +10 idle, +10 softirq (100 jiffies, 90% busy)
# cpu1: +10 user, +80 idle, +10 iowait            (100 jiffies, 10% busy; iowait is not busy)
AFTER = """cpu  1070 0 520 8090 110 0 410 0 0 0
cpu0 560 0 270 4010 50 0 210 0 0 0
cpu1 510 0 250 4080 60 0 200 0 0 0
intr 223456 0 0
"""


def test_busy_and_softirq_fractions_per_cpu_and_overall():
    use = cpu_use(parse_proc_stat(BEFORE), parse_proc_stat(AFTER))
    assert use["per_cpu"]["cpu0"] == {"busy": 0.9, "softirq": 0.1}
    assert use["per_cpu"]["cpu1"] == {"busy": 0.1, "softirq": 0.0}
    assert use["busy"] == 0.5
    assert use["softirq"] == 0.05


def test_cpus_are_ordered_numerically():
    names = [f"cpu{i}" for i in (0, 1, 2, 10)]
    text = "cpu 1 1 1 1 1 1 1 1\n" + "".join(f"{n} 1 1 1 1 1 1 1 1\n" for n in reversed(names))
    assert list(cpu_use(parse_proc_stat(text), parse_proc_stat(text))["per_cpu"]) == names


def test_no_time_passed_is_zero_not_a_division_error():
    stat = parse_proc_stat(BEFORE)
    assert cpu_use(stat, stat)["busy"] == 0.0


def test_text_without_cpu_line_is_refused():
    with pytest.raises(ValueError, match="cpu"):
        parse_proc_stat("intr 1 2 3\n")
