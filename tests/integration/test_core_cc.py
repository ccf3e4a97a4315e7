"""The core API congestion control needs, for real: a TCG guest, the real modules, lf_test standing in
for lf_cc (see guest/core_cc.py for the checks).

An app that declares a fixed quantization is never served a snapshot quantized otherwise (EPROTO,
hot load or insmod); an app with context gets its contexts on the samples group byte for byte; a
partial batch on a quiet CPU is flushed after FLUSH_MS; rmmod with a flush pending is clean. The
host builds the snapshots from synthetic specs (no TensorFlow).
"""

import copy
import os
from pathlib import Path

import pytest

from testbed.modules import SnapshotModule
from testbed.store import new_run

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]

APP = "lf_test"
INPUT_SIZE, OUTPUT_SIZE = 30, 1
UNITS = [INPUT_SIZE, 32, 16, OUTPUT_SIZE]
CONTEXT_SIZE = 44           # what lf_cc declares
FLUSH_MS = 500
FLUSH_SLACK_S = 2.0         # TCG: the work item and the Python reader run on a slow guest
GUEST_TIMEOUT_S = 600
KERNEL = os.environ.get("LITEFLOW_CORE_CC_KERNEL", "debian-6.1")


def _prepare(plan_dir: Path, build) -> dict:
    from userspace.netlink import LfQuant
    from userspace.snapshot import module_name, new_snapshot_id, write_blob
    from userspace.snapshot.random_model import random_spec
    from userspace.snapshot.spec import Quant

    right = random_spec(21, sizes=UNITS)
    # the same network reconverted: TFLite recalibrated its output scale
    wrong = copy.deepcopy(right)
    wrong.output_quant = Quant.from_scale(right.output_quant.scale * 1.5, right.output_quant.zero_point)
    assert LfQuant.of(wrong.output_quant) != LfQuant.of(right.output_quant)
    (plan_dir / "right.blob").write_bytes(write_blob(right))
    (plan_dir / "wrong.blob").write_bytes(write_blob(wrong))
    right_id, wrong_id, right_module_id, wrong_module_id = (new_snapshot_id() for _ in range(4))
    build(plan_dir, [SnapshotModule(right, APP, right_module_id, "core_cc: the app's quantization"),
                     SnapshotModule(wrong, APP, wrong_module_id, "core_cc: another quantization")])
    return {
        "core_module": "liteflow.ko",
        "test_module": "lf_test.ko",
        "input_size": INPUT_SIZE,
        "output_size": OUTPUT_SIZE,
        "declared": {"input": list(LfQuant.of(right.input_quant)), "output": list(LfQuant.of(right.output_quant))},
        "right": {"blob": "right.blob", "snapshot_id": right_id},
        "wrong": {"blob": "wrong.blob", "snapshot_id": wrong_id},
        "right_module": f"{module_name(APP, right_module_id)}.ko",
        "right_module_id": right_module_id,
        "wrong_module": f"{module_name(APP, wrong_module_id)}.ko",
        "context_size": CONTEXT_SIZE,
        "context_reports": 16,
        "sample_timeout_s": 20,
        "default_flush_ms": 100,
        "flush_ms": FLUSH_MS,
        "flush_max_ms": 10000,
        "flush_reports": 3,
        "flush_slack_s": FLUSH_SLACK_S,
        "batch": 256,
    }


def test_core_cc_api_in_the_guest(tmp_path, monkeypatch, guest_pool):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path))
    run = new_run("core-cc", profile="quick")
    session = guest_pool.get(KERNEL)
    plan_dir = session.plan_dir(run, "core-cc")
    plan = _prepare(plan_dir, session.build_modules)
    result = session.run_driver(run, "core_cc", plan, plan_dir, timeout_s=GUEST_TIMEOUT_S,
                                step="run the core's congestion-control API checks in the guest")
    report = result.report
    checks = {check["name"]: check for check in report["checks"]}
    failed = {name: check["detail"] for name, check in checks.items() if not check["ok"]}
    run.record("checks", report["checks"])
    print(f"flush latency {report['flush_latency_s']} s for FLUSH_MS {report['flush_ms']}; "
          f"{len(checks)} checks, timings {report['timings_s']}")
    assert not failed, failed
    for name in ("hot load with another quantization refused with EPROTO and the core's reason",
                 "the active snapshot stays after the refused hot load",
                 "snapshot module with another quantization fails insmod with EPROTO",
                 "snapshot module with the app's quantization loads",
                 "contexts arrive byte-exact, row for row with their pairs",
                 "plain queries of an app with context are not sampled",
                 f"3 pairs of a 256-pair batch arrive within FLUSH_MS + {FLUSH_SLACK_S} s",
                 "rmmod lf_test with a flush pending succeeds",
                 "dmesg clean (no WARNING/BUG/Oops/atomic sleep/lockdep)"):
        assert name in checks, sorted(checks)
    assert report["flush_latency_s"] < FLUSH_MS / 1000 + FLUSH_SLACK_S
