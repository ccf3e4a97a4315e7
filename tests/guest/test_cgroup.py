"""guest/cgroup.py against a cgroup v2 tree laid out in a temporary folder (the real one is the
guest's: tests/integration runs the service under it)."""

import pytest

from guest.cgroup import BACKGROUND_WEIGHT, PERIOD_US, CpuGroup


@pytest.fixture
def root(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    return tmp_path


def test_create_enables_the_controller_and_writes_the_limit_and_weight(root):
    limit = CpuGroup("slow", BACKGROUND_WEIGHT, 0.5, root=root)
    limit.create()
    assert (root / "cgroup.subtree_control").read_text() == "+cpu\n"
    assert (root / "slow" / "cpu.max").read_text() == f"{PERIOD_US // 2} {PERIOD_US}\n"
    assert (root / "slow" / "cpu.weight").read_text() == f"{BACKGROUND_WEIGHT}\n"
    limit.create()       # a leftover group is reused, not an error
    assert (root / "slow" / "cpu.max").read_text() == f"{PERIOD_US // 2} {PERIOD_US}\n"


def test_a_group_without_a_limit_has_only_its_weight(root):
    CpuGroup("other", 100, root=root).create()
    assert (root / "other" / "cpu.max").read_text() == f"max {PERIOD_US}\n"
    assert (root / "other" / "cpu.weight").read_text() == "100\n"


def test_stats_read_usage_and_throttling(root):
    limit = CpuGroup("slow", BACKGROUND_WEIGHT, 1.5, root=root)
    limit.create()
    (root / "slow" / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
                                            "nr_periods 40\nnr_throttled 12\nthrottled_usec 750000\n")
    assert limit.stats() == {"cpus": 1.5, "weight": BACKGROUND_WEIGHT, "usage_s": 2.5, "throttled_s": 0.75,
                             "periods": 40, "throttled_periods": 12}
    for name in ("cpu.max", "cpu.weight", "cpu.stat"):
        (root / "slow" / name).unlink()
    limit.remove()
    assert not (root / "slow").exists()


def test_no_cpu_controller_is_an_error(root):
    (root / "cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(OSError, match="no cpu controller"):
        CpuGroup("slow", BACKGROUND_WEIGHT, 0.5, root=root).create()


@pytest.mark.parametrize("cpus", [0, -1.0, float("nan")])
def test_a_limit_must_be_positive(cpus):
    with pytest.raises(ValueError, match="> 0 CPUs"):
        CpuGroup("slow", BACKGROUND_WEIGHT, cpus)


@pytest.mark.parametrize("weight", [0, 10_001])
def test_a_weight_must_be_one_the_kernel_takes(weight):
    with pytest.raises(ValueError, match="1-10000"):
        CpuGroup("slow", weight)


def test_add_moves_a_process_by_pid(root):
    limit = CpuGroup("slow", BACKGROUND_WEIGHT, 0.5, root=root)
    limit.create()
    limit.add(4242)
    assert (root / "slow" / "cgroup.procs").read_text() == "4242\n"
