"""`invoke smoke` for real: a TCG guest, the real modules, snapshots swapped under load.

The passing smoke itself runs in the fresh-clone test (`invoke bench --quick`), and the full one
(100 swaps) in `invoke bench`. These prove the smoke can fail (a wrong expected output and a
leaked module are each caught) and that a guest killed mid-run gives an error naming the step,
leaves no qemu behind, and does not stop the next smoke from passing, with the metadata every
run carries. They run on the integration tests' shared VM (conftest.py), to keep CI inside its budget.
"""

import os
import signal
import threading
import time

import pytest

from testbed.session import SessionError
from vm.qemu import pid_alive, status
from workloads.runner import run_experiment

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]


@pytest.fixture(scope="module")
def pool(guest_pool, tmp_path_factory):
    os.environ["LITEFLOW_RESULTS"] = str(tmp_path_factory.mktemp("results"))
    yield guest_pool
    del os.environ["LITEFLOW_RESULTS"]


def smoke(pool, profile="quick", **overrides):
    return run_experiment("smoke", pool, profile=profile, overrides=overrides or None)


def failed_checks(run):
    (record,) = run.results["records"]
    return [check["name"] for check in record["failed_checks"]]


def test_a_wrong_snapshot_output_is_caught(pool):
    run = smoke(pool, inject="wrong-output")
    assert run.metadata["status"] == "failed"
    failed = failed_checks(run)
    assert failed and all("outputs equal the user-space engine's" in name for name in failed), failed


def test_a_leaked_module_is_caught(pool):
    run = smoke(pool, inject="leak-module")
    assert run.metadata["status"] == "failed"
    assert failed_checks(run) == ["everything unloads cleanly"]


def test_sigkill_of_qemu_mid_smoke_is_named_and_recoverable(pool):
    outcome = {}

    def run_smoke():
        try:
            outcome["result"] = smoke(pool, module_swaps=20, hot_swaps=20)
        except SessionError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run_smoke)
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
    assert isinstance(error, SessionError), outcome
    assert error.step == "run the smoke in the guest"
    assert "died" in str(error)
    assert not pid_alive(handle.pid)

    again = smoke(pool)   # the session notices the dead VM and boots a new one
    assert again.metadata["status"] == "passed", again.results["summary"]["text"]
    assert status().state == "running" and status().handle.pid != handle.pid
    (record,) = again.results["records"]
    assert record["swaps"] == 10 and record["stress_errors"] == 0 and record["core_errors"] == 0
    for key in ("git_sha", "git_dirty", "qemu", "accelerator", "kernel_release", "image_manifest_sha256",
                "build_root", "experiment_file_sha256"):
        assert again.metadata.get(key) is not None, key
    assert again.metadata["build_root"]["gcc_version"]
    assert (again.path / "logs" / "smoke-0.stderr").is_file()
