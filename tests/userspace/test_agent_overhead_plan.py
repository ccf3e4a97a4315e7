"""The overhead measurement's host half with fakes: the plan it writes, what it packs for the
guest, and the numbers it derives from a guest report. No VM, no TensorFlow, no chroot."""

import json
import tarfile

import pytest

from testbed.guestrun import pack_plan
from workloads import overhead_bench as ob


def fake_build(root, plan_dir):
    for name in ("liteflow.ko", "lf_test.ko"):
        (plan_dir / name).write_bytes(b"\x7fELF fake")
    (plan_dir / "build.log").write_text("ok\n")


def test_plan_names_the_modules_blob_sizes_and_iterations(tmp_path):
    config = ob.OverheadConfig(kernel_iterations=1000, upcall_iterations=50, warmup_iterations=5, timeout_ms=200)
    path = ob.prepare_plan(config, root=None, plan_dir=tmp_path / "plan", guest_work="/root/w",
                           blob=lambda seed: b"BLOB%d" % seed, build=fake_build)
    plan = json.loads(path.read_text())
    assert (tmp_path / "plan" / plan["blob"]).read_bytes() == b"BLOB0"
    assert plan["core_module"] == "liteflow.ko" and plan["test_module"] == "lf_test.ko"
    assert (plan["input_size"], plan["output_size"]) == (30, 1)
    assert (plan["kernel_iterations"], plan["upcall_iterations"], plan["warmup_iterations"],
            plan["timeout_ms"]) == (1000, 50, 5, 200)
    assert plan["snapshot_id"] > 0 and plan["agent_build_dir"] == "/root/w/agent"

    archive = tmp_path / "plan.tar.gz"
    (tmp_path / "plan" / "build.log").write_text("not for the guest\n")
    pack_plan(tmp_path / "plan", archive)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["lf_test.ko", "liteflow.ko", "plan.json", "snapshot.blob"]


def test_a_missing_module_is_an_error(tmp_path):
    with pytest.raises(ob.OverheadError, match="lf_test.ko missing"):
        ob.prepare_plan(ob.OverheadConfig(), root=None, plan_dir=tmp_path, guest_work="/w",
                        blob=lambda seed: b"x",
                        build=lambda root, d: (d / "liteflow.ko").write_bytes(b""))


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        ob.OverheadConfig(upcall_iterations=0)


def test_summary_ratio_and_errors_from_a_guest_report():
    report = {
        "kernel": {"ns_per_query": 400, "iterations": 1000, "macs": 1488},
        "upcall": {"ns_per_query": 80_000, "iterations": 50, "errors": 0, "timeouts": 0, "stale_answers": 0},
        "checks": [{"name": "a", "ok": True, "detail": ""}],
        "timings_s": {"agent_build": 2.5},
    }
    summary = ob.summarize(report, ob.OverheadConfig())
    assert summary["kernel_ns_per_query"] == 400 and summary["user_round_trip_ns_per_query"] == 80_000
    assert summary["ratio"] == 200.0 and summary["errors"] == 0 and summary["passed"]
    assert summary["upcall_iterations"] == 50 and summary["macs_per_query"] == 1488


def test_summary_of_a_failed_run_has_no_ratio_and_is_not_passed():
    report = {"kernel": {}, "upcall": {}, "checks": [{"name": "step 'x' completed", "ok": False, "detail": "boom"}]}
    summary = ob.summarize(report, ob.OverheadConfig())
    assert summary["ratio"] is None and not summary["passed"]
