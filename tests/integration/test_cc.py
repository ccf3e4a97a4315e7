"""lf_cc for real: a TCG guest, the real core and lf_cc, TCP through the guest's ACK path.

guest/cc_checks.py checks the counted fallback without a snapshot, snapshots of the wrong sizes
(EINVAL) and quantization (EPROTO) refused, the network deciding with the committed snapshot,
sampled decisions arriving with their context, and lf_cc refusing to leave while a socket uses
it. LiteFlow's flows outliving a SIGKILLed slow path are checked on cc-adapt's quick run, which
injects that fault (tests/integration/test_fresh_clone.py).
"""

import os

import pytest

from testbed.store import new_run

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]

GUEST_TIMEOUT_S = 900


def _prepare(plan_dir, build) -> dict:
    from userspace.snapshot import build_snapshot, new_snapshot_id, write_blob
    from userspace.snapshot.random_model import random_spec
    from workloads.cc_plan import cc_blob, model_path

    build(plan_dir)
    model = model_path()
    (plan_dir / "right.blob").write_bytes(cc_blob())
    # calibrated on a different input range: another scale, refused by the core
    (plan_dir / "wrong_quant.blob").write_bytes(write_blob(build_snapshot(model, input_range=(-4.0, 4.0)).spec))
    (plan_dir / "wrong_sizes.blob").write_bytes(write_blob(random_spec(3, sizes=[8, 4, 1])))
    return {"transfer_s": 4, "sample_batch": 16, "sample_wait_s": 10,
            **{name: {"blob": f"{name}.blob", "snapshot_id": new_snapshot_id()}
               for name in ("right", "wrong_quant", "wrong_sizes")}}


def test_lf_cc_in_the_kernel(tmp_path, monkeypatch, guest_pool):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path))
    run = new_run("cc-checks", profile="quick")
    session = guest_pool.get("debian-6.1")
    plan_dir = session.plan_dir(run, "cc-checks")
    plan = _prepare(plan_dir, session.build_modules)
    result = session.run_driver(run, "cc_checks", plan, plan_dir, timeout_s=GUEST_TIMEOUT_S,
                                step="run the lf_cc checks in the guest")
    report = result.report
    checks = {check["name"]: check for check in report["checks"]}
    failed = {name: check["detail"] for name, check in checks.items() if not check["ok"]}
    assert not failed, failed
    for name in ("without a snapshot the fallback decides every interval, and counts it",
                 "a snapshot with wrong sizes is refused with EINVAL",
                 "a snapshot with wrong quant is refused with EPROTO",
                 "with a snapshot the network decides the intervals",
                 "sampled decisions arrive with a 44-byte context each",
                 "lf_cc cannot be removed while a socket uses it",
                 "lf_cc is removed once no socket uses it"):
        assert name in checks, sorted(checks)
