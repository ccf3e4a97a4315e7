"""`invoke smoke` for real: a TCG guest, the real modules, snapshots swapped under load.

The first test runs the full smoke (100 swaps, >= 100,000 queries on both vCPUs); the others
prove the smoke can fail — a wrong expected output and a leaked module are each caught — and that
a guest killed mid-run gives an error naming the step, leaves no qemu behind, and does not stop
the next smoke from passing. They share one VM where they can, to keep CI inside its budget.
"""

import os
import signal
import threading
import time

import pytest

from testbed.smoke import SmokeConfig, SmokeError, run_smoke
from vm.qemu import down, pid_alive, status

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]

SMALL = dict(module_swaps=2, hot_swaps=3, min_queries=1000, keep_vm=True)


@pytest.fixture(scope="module", autouse=True)
def vm_stopped_afterwards():
    yield
    down()


def failed_checks(outcome):
    return [check["name"] for check in outcome.checks if not check["ok"]]


def test_full_smoke_passes():
    outcome = run_smoke(SmokeConfig(keep_vm=True))
    assert outcome.passed, outcome.summary
    report = outcome.run.results["report"]
    assert len(report["swaps"]) == 100
    assert {swap["kind"] for swap in report["swaps"]} == {"module", "hot"}
    assert report["stress"]["queries"] >= 100_000 and report["stress"]["errors"] == 0
    assert report["stats"]["errors"] == 0
    metadata = outcome.run.metadata
    for key in ("git_sha", "git_dirty", "qemu", "accelerator", "kernel_release", "image_manifest_sha256"):
        assert metadata.get(key) is not None, key
    assert (outcome.run.path / "logs" / "dmesg.txt").is_file()


def test_a_wrong_snapshot_output_is_caught():
    outcome = run_smoke(SmokeConfig(inject="wrong-output", **SMALL))
    assert not outcome.passed
    failed = failed_checks(outcome)
    assert failed and all("outputs equal the user-space engine's" in name for name in failed), failed


def test_a_leaked_module_is_caught():
    outcome = run_smoke(SmokeConfig(inject="leak-module", **SMALL))
    assert not outcome.passed
    assert failed_checks(outcome) == ["everything unloads cleanly"]


def test_sigkill_of_qemu_mid_smoke_is_named_and_recoverable():
    outcome = {}

    def smoke():
        try:
            outcome["result"] = run_smoke(SmokeConfig(**{**SMALL, "module_swaps": 20, "hot_swaps": 20}))
        except SmokeError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=smoke)
    worker.start()
    handle = None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and worker.is_alive():
        current = status()
        if current.state == "running":
            handle = current.handle
            with handle.guest() as guest:
                if guest.run("test -d /sys/kernel/debug/liteflow_test", timeout=30, check=False).exited == 0:
                    break
        time.sleep(2)
    assert handle is not None, "the smoke never reached the guest"
    os.kill(handle.pid, signal.SIGKILL)
    worker.join(timeout=600)
    assert not worker.is_alive()
    error = outcome.get("error")
    assert isinstance(error, SmokeError), outcome
    assert error.step == "run the smoke in the guest"
    assert "died" in str(error)
    assert not pid_alive(handle.pid)
    assert status().state == "stopped"

    again = run_smoke(SmokeConfig(**SMALL))
    assert again.passed, again.summary
