"""Unit tests of the slow-path service with a fake kernel (no VM, no TensorFlow)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import (FakeKernel, ListSource, SpecAdapter, sample_batch,  # noqa: E402
                   spec_with_encoding)

from userspace.slowpath.interface import Encoding  # noqa: E402
from userspace.slowpath.service import (DecisionLog, ModuleUpdater, SampleQueue, Service,  # noqa: E402
                                        ServiceConfig, Stability, decide, load_adapter)
from userspace.snapshot import Engine, read_blob, write_blob  # noqa: E402


@pytest.fixture
def initial():
    return spec_with_encoding(1)


@pytest.fixture
def candidate():
    return spec_with_encoding(2)


def make_service(tmp_path, kernel, adapter, batches=8, update="hot", updater=None, **cfg):
    config = ServiceConfig(app="lf_test", update=update, threshold=cfg.pop("threshold", 1e-6),
                           window=cfg.pop("window", 2), round_wait_s=0.05, work_dir=tmp_path / "work",
                           symvers=tmp_path / "Module.symvers", **cfg)
    (tmp_path / "Module.symvers").write_text("")
    blob = tmp_path / "active.blob"
    blob.write_bytes(write_blob(kernel_spec(kernel)))
    config.active_blob = blob
    log = DecisionLog(tmp_path / "decisions.jsonl", echo=None)
    source = ListSource([sample_batch(seed=i) for i in range(batches)])
    svc = Service(kernel, adapter, config, log, sample_source=source, updater=updater, runner=kernel.runner)
    return svc


def kernel_spec(kernel):
    return kernel.initial_spec


def fake_kernel(spec):
    k = FakeKernel(spec)
    k.initial_spec = spec
    return k


def rounds_until_samples(svc, n=1):
    """Run rounds until one has samples (the reader thread needs a moment); feeds one if none left."""
    if not svc.source.batches and svc.queue.qsize() == 0:
        svc.source.batches.append(sample_batch(seed=1000 + svc.counters.rounds))
    for _ in range(100):
        entry = svc.round()
        if entry.get("samples"):
            return entry
    raise AssertionError("no samples reached the service")


def log_lines(tmp_path):
    return [json.loads(l) for l in (tmp_path / "decisions.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- decision logic


def test_stability_needs_a_full_window_within_the_band():
    s = Stability(window=3, band=0.1)
    assert not s.push(1.0) and not s.push(1.0)   # window not full yet
    assert s.push(1.05)                          # spread 0.05 <= 0.1 * 1.0167
    assert not s.push(2.0)                       # a jump leaves the band
    assert not s.push(2.0)
    assert s.push(2.0)                           # the jump left the window
    assert not s.push(float("nan"))


def test_stability_floor_keeps_tiny_metrics_stable():
    s = Stability(window=3, band=0.25, floor=0.01)
    for v in (0.001, 0.003, 0.002):
        s.push(v)
    assert s.stable  # spread 0.002 <= 0.25 * 0.01
    assert not Stability(3, 0.25, 1e-6).push(0.001) or True
    t = Stability(window=3, band=0.25, floor=1e-6)
    for v in (0.001, 0.003, 0.002):
        t.push(v)
    assert not t.stable


def test_threshold_decision():
    assert decide(False, 1.0, 0.1) == "wait-unstable"
    assert decide(True, 0.05, 0.1) == "keep"
    assert decide(True, 0.1, 0.1) == "keep"        # not strictly above
    assert decide(True, 0.1001, 0.1) == "update"
    assert decide(True, None, 0.1) == "keep"       # no fidelity loss (EVALUATE failed): do nothing
    assert decide(True, float("nan"), 0.1) == "keep"


# ---------------------------------------------------------------------------- samples


def test_samples_arriving_too_fast_are_dropped_and_counted_with_bounded_memory():
    q = SampleQueue(max_batches=4)
    for i in range(50):
        q.offer(sample_batch(k=16, seed=i))
        assert q.qsize() <= 4
    c = q.counters()
    assert c["received_batches"] == 50 and c["dropped_batches"] == 46 and c["dropped_samples"] == 46 * 16
    assert c["queue_high_water"] == 4
    got = q.drain(0.01)
    assert len(got) == 4 and q.qsize() == 0


def test_service_drops_samples_while_adapt_is_slow(tmp_path, initial, candidate):
    class SlowAdapter(SpecAdapter):
        def adapt(self, batch):
            time.sleep(0.3)
            super().adapt(batch)

    kernel = fake_kernel(initial)
    svc = make_service(tmp_path, kernel, SlowAdapter(candidate), batches=0, queue_batches=3,
                       threshold=1e9)
    svc.source.batches = [sample_batch(seed=i) for i in range(40)]
    svc.start()
    for _ in range(4):
        svc.round()
    svc.close()
    c = svc.queue.counters()
    assert c["dropped_batches"] > 0
    assert c["received_batches"] == 40
    assert c["queue_high_water"] <= 3
    assert len(svc.recent) <= svc.config.fidelity_samples   # the service's own memory is bounded too
    stop = [l for l in log_lines(tmp_path) if l["event"] == "stop"][0]
    assert stop["samples"]["dropped_samples"] == c["dropped_samples"] > 0


def test_a_round_interval_paces_rounds_and_loses_no_sample_while_they_wait(tmp_path, initial, candidate):
    kernel = fake_kernel(initial)
    svc = make_service(tmp_path, kernel, SpecAdapter(candidate), batches=0, queue_batches=3,
                       threshold=1e9, round_interval_s=0.4)
    # 30 batches trickling in over ~0.9 s: ten times the queue's bound, which back-to-back rounds
    # would take a few at a time
    svc.source.batches = [sample_batch(seed=i) for i in range(30)]
    svc.source.delay_s = 0.03
    svc.start()
    starts, samples = [], 0
    while samples < 30 * 32:
        entry = svc.round()
        starts.append(svc._round_started)
        samples += entry.get("samples", 0)
        assert len(starts) < 40, "the samples never all arrived"
    svc.close()
    assert all(b - a >= 0.4 for a, b in zip(starts, starts[1:]))
    assert len(starts) >= 2                        # ~0.9 s of samples: not all in one round
    c = svc.queue.counters()
    assert c["received_batches"] == 30 and c["dropped_batches"] == 0


def test_a_negative_round_interval_is_refused(tmp_path):
    with pytest.raises(ValueError, match="round_interval_s"):
        ServiceConfig(app="lf_test", round_interval_s=-1.0)


# ---------------------------------------------------------------------------- the update path


def test_stable_and_above_threshold_updates_hot(tmp_path, initial, candidate):
    kernel = fake_kernel(initial)
    svc = make_service(tmp_path, kernel, SpecAdapter(candidate, metrics=[1.0, 1.0, 1.0]))
    svc.start()
    first = rounds_until_samples(svc)
    assert first["action"] == "wait-unstable"      # window of 2 not full
    second = rounds_until_samples(svc)
    assert second["action"] == "update", second
    assert second["result"] == "switched" and kernel.active[0] == second["new_id"]
    for key in ("stability_metric", "fidelity_loss", "threshold", "update_steps_s", "steps_s"):
        assert key in second
    assert set(second["update_steps_s"]) >= {"freeze", "quantize", "validate", "load_kernel", "load_client", "verify"}
    # the kernel now computes exactly the candidate
    x = np.random.default_rng(0).integers(-128, 128, (64, 30)).astype(np.int8)
    assert np.array_equal(kernel.evaluate(3, x)[1], Engine.from_blob(write_blob(candidate)).infer(x))
    # ... and the fidelity loss drops to ~0, so the next stable round keeps it
    svc.source.batches = [sample_batch(seed=99)]
    third = rounds_until_samples(svc)
    svc.close()
    assert third["action"] == "keep" and third["fidelity_loss"] < 1e-9


def test_below_threshold_keeps(tmp_path, initial):
    kernel = fake_kernel(initial)
    svc = make_service(tmp_path, kernel, SpecAdapter(initial), threshold=0.01)
    svc.start()
    entries = [rounds_until_samples(svc) for _ in range(3)]
    svc.close()
    assert entries[-1]["action"] == "keep" and entries[-1]["fidelity_loss"] == 0
    assert kernel.loads == []


@pytest.mark.parametrize("where", ["adapt", "evaluate", "predict", "freeze", "snapshot_model"])
def test_adapter_exception_is_reported_and_last_good_snapshot_stays(tmp_path, initial, candidate, where):
    kernel = fake_kernel(initial)
    svc = make_service(tmp_path, kernel, SpecAdapter(candidate, fail=where))
    svc.start()
    for _ in range(3):
        rounds_until_samples(svc)
    svc.close()
    assert kernel.active[0] == 0x11 and kernel.loads == []
    errors = [l for l in log_lines(tmp_path) if l["event"] == "adapter-error"]
    assert errors and errors[0]["where"] == where
    assert "Traceback" in errors[0]["traceback"] and f"adapter bug in {where}" in errors[0]["traceback"]
    assert svc.counters.adapter_errors >= 1


def _two_stable_rounds(svc):
    svc.start()
    rounds_until_samples(svc)
    entry = rounds_until_samples(svc)
    svc.close()
    return entry


def test_candidate_with_wrong_input_encoding_is_rejected(tmp_path, initial):
    bad = spec_with_encoding(2, Encoding(1 / 64, 0))
    kernel = fake_kernel(initial)
    entry = _two_stable_rounds(make_service(tmp_path, kernel, SpecAdapter(bad)))
    assert entry["action"] == "update-rejected" and entry["rejected_step"] == "validate"
    assert "input quantization" in entry["reason"]
    assert kernel.active[0] == 0x11 and kernel.loads == []


def test_candidate_failing_to_generate_is_rejected(tmp_path, initial):
    bad = spec_with_encoding(2)
    bad.layers[0].weights = bad.layers[0].weights[:, :5]     # inconsistent: the blob step fails
    kernel = fake_kernel(initial)
    entry = _two_stable_rounds(make_service(tmp_path, kernel, SpecAdapter(spec_with_encoding(2), snapshot=bad)))
    assert entry["action"] == "update-rejected" and entry["rejected_step"] in ("quantize", "validate")
    assert kernel.active[0] == 0x11 and kernel.loads == []


def test_candidate_refused_by_the_kernel_is_rejected(tmp_path, initial, candidate):
    kernel = fake_kernel(initial)
    kernel.fail_load_errno = errno.EINVAL
    entry = _two_stable_rounds(make_service(tmp_path, kernel, SpecAdapter(candidate)))
    assert entry["rejected_step"] == "load" and "LOAD_MODEL refused" in entry["reason"]
    assert kernel.active[0] == 0x11


def test_kernel_disagreeing_after_switch_rolls_back(tmp_path, initial, candidate):
    kernel = fake_kernel(initial)
    svc = make_service(tmp_path, kernel, SpecAdapter(candidate))
    svc.start()
    rounds_until_samples(svc)
    kernel.corrupt_outputs = True
    entry = rounds_until_samples(svc)
    svc.close()
    assert entry["rejected_step"] == "verify" and "differ" in entry["reason"]
    # the last good snapshot's weights are back in the kernel (under a fresh id)
    kernel.corrupt_outputs = False
    x = np.random.default_rng(0).integers(-128, 128, (64, 30)).astype(np.int8)
    assert np.array_equal(kernel.evaluate(3, x)[1], Engine.from_blob(write_blob(initial)).infer(x))
    assert svc.counters.rollbacks == 1


class RecordingModuleUpdater(ModuleUpdater):
    def prepare(self, cand, timer):
        self.kernel.modules[cand.snapshot_id] = cand.spec
        super().prepare(cand, timer)


def _module_service(tmp_path, kernel, adapter):
    config_probe = ServiceConfig(app="lf_test", update="module", work_dir=tmp_path / "work",
                                 symvers=tmp_path / "Module.symvers")
    updater = RecordingModuleUpdater(kernel, "lf_test", 3, config_probe, runner=kernel.runner)
    return make_service(tmp_path, kernel, adapter, update="module", updater=updater)


def test_module_update_builds_inserts_and_removes_the_standby(tmp_path, initial, candidate):
    kernel = fake_kernel(initial)
    svc = _module_service(tmp_path, kernel, SpecAdapter(candidate))
    entry = _two_stable_rounds(svc)
    assert entry["result"] == "switched", entry
    assert kernel.active[2].startswith("lf_snap_lf_test_")
    assert set(entry["update_steps_s"]) >= {"generate", "build", "load", "verify", "cleanup"}
    # a second update: the first module became standby and was rmmod'ed
    other = spec_with_encoding(3)
    svc.adapter.spec = other
    svc.source.batches = [sample_batch(seed=50), sample_batch(seed=51)]
    svc.start()
    second = next(e for e in (rounds_until_samples(svc) for _ in range(3)) if "result" in e)
    svc.close()
    assert second["result"] == "switched"
    assert second["removed_standby"] == f"lf_snap_lf_test_{entry['new_id']:016x}"
    assert kernel.standby is None


@pytest.mark.parametrize("failure,step", [("fail_build", "build"), ("fail_insmod", "load")])
def test_module_that_fails_to_build_or_load_is_rejected(tmp_path, initial, candidate, failure, step):
    kernel = fake_kernel(initial)
    setattr(kernel, failure, True)
    entry = _two_stable_rounds(_module_service(tmp_path, kernel, SpecAdapter(candidate)))
    assert entry["action"] == "update-rejected" and entry["rejected_step"] == step
    assert kernel.active[0] == 0x11 and kernel.loads == []


# ---------------------------------------------------------------------------- killed mid-update


class Killed(BaseException):
    """SIGKILL, simulated: nothing after it runs (not even except Exception handlers)."""


@pytest.mark.parametrize("kill_at", ["freeze", "quantize", "validate", "generate", "build", "before-load",
                                     "after-load"])
def test_killed_mid_update_leaves_the_last_good_snapshot(tmp_path, initial, candidate, kill_at):
    """Whatever step the service dies in, the kernel runs a complete, good snapshot.

    Before the switch command it is the previous one; the switch itself is one atomic command
    (LOAD_MODEL / insmod's lf_register_model), so after it the kernel runs the complete new one.
    """
    import userspace.slowpath.service as service_mod

    kernel = fake_kernel(initial)
    kernel.active = (*kernel.active[:2], "lf_snap_lf_test_0000000000000011")  # a module, as LiteFlow ships
    svc = _module_service(tmp_path, kernel, SpecAdapter(candidate))
    real_step = service_mod.StepTimer.step
    real_runner = kernel.runner

    def dying_step(timer, name):
        if name == kill_at:
            raise Killed(name)
        return real_step(timer, name)

    def dying_runner(argv, timeout):
        if argv[0] == "insmod" and kill_at == "before-load":
            raise Killed("before insmod")
        result = real_runner(argv, timeout)
        if argv[0] == "insmod" and kill_at == "after-load":
            raise Killed("after insmod")
        return result

    svc.runner = svc.updater.runner = dying_runner
    service_mod.StepTimer.step = dying_step
    try:
        svc.start()
        with pytest.raises(Killed):
            for _ in range(10):
                rounds_until_samples(svc)
    finally:
        service_mod.StepTimer.step = real_step
    x = np.random.default_rng(0).integers(-128, 128, (64, 30)).astype(np.int8)
    sid, out = kernel.evaluate(3, x)
    if kill_at == "after-load":
        assert np.array_equal(out, Engine.from_blob(write_blob(candidate)).infer(x))
        # a restarted service removes the module the dead one left in standby
        svc2 = _module_service(tmp_path, kernel, SpecAdapter(candidate))
        svc2.start()
        svc2.close()
        assert kernel.standby is None
    else:
        assert sid == 0x11 and kernel.loads == []
        assert np.array_equal(out, Engine.from_blob(write_blob(initial)).infer(x))


def test_killed_process_mid_update_really_dies_with_the_kernel_unchanged(tmp_path, initial, candidate):
    """A real SIGKILL of a process stuck in the build step: nothing reaches the kernel."""
    # The fake kernel lives in this process; the child only "builds" (sleeps) then would insmod.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    kernel = fake_kernel(initial)
    svc = _module_service(tmp_path, kernel, SpecAdapter(candidate))

    def runner(argv, timeout):
        if argv[0] == "make":
            child.wait()                       # the "build" dies with SIGKILL below
            raise subprocess.SubprocessError(f"make killed by signal {-child.returncode}")
        return kernel.runner(argv, timeout)

    svc.updater.runner = runner
    threading.Timer(0.5, child.kill).start()
    entry = _two_stable_rounds(svc)
    assert entry["action"] == "update-rejected" and entry["rejected_step"] == "build"
    assert kernel.active[0] == 0x11 and kernel.loads == []


def test_load_adapter_by_import_path():
    ad = load_adapter("fakes:SpecAdapter", {"spec": spec_with_encoding(1)})
    assert isinstance(ad, SpecAdapter)
    with pytest.raises(ValueError):
        load_adapter("no_colon")
    with pytest.raises(TypeError):
        load_adapter("fakes:FakeKernel", {"initial_spec": spec_with_encoding(1)})


def test_interface_imports_no_ml_framework():
    code = ("import sys, userspace.slowpath, userspace.slowpath.interface, userspace.slowpath.service; "
            "bad = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2]).returncode == 0


# ---------------------------------------------------------------------------- restart


def test_a_restarted_service_finds_the_active_snapshot_it_saved(tmp_path, initial, candidate):
    """After an update the --active-blob on the command line is stale; the restarted service
    must use the blob it saved for the kernel's active id, not the stale one."""
    kernel = fake_kernel(initial)
    svc = make_service(tmp_path, kernel, SpecAdapter(candidate))
    svc.start()
    rounds_until_samples(svc)
    entry = rounds_until_samples(svc)
    assert entry["result"] == "switched"
    svc.close()

    again = make_service(tmp_path, kernel, SpecAdapter(candidate))   # same stale --active-blob
    assert again.active.snapshot_id == entry["new_id"]
    assert again.active.blob == write_blob(candidate)
    assert again.active.output_encoding == Encoding.of(read_blob(write_blob(candidate)).output_quant)
    chosen = [l for l in log_lines(tmp_path) if l["event"] == "active"][-1]
    assert chosen["blob"].endswith(f"{entry['new_id']:016x}.blob")


def test_a_stale_active_blob_is_refused_with_a_warning(tmp_path, initial, candidate):
    kernel = fake_kernel(initial)
    config_blob = tmp_path / "stale.blob"
    config_blob.write_bytes(write_blob(candidate))     # not what the kernel runs
    svc = make_service(tmp_path, kernel, SpecAdapter(candidate))
    svc.config.active_blob = config_blob
    active = svc._initial_active(kernel.app("lf_test"))
    assert active.blob is None                          # no rollback to a snapshot it cannot trust
    warnings = [line["message"] for line in log_lines(tmp_path) if line["event"] == "warning"]
    assert any("stale.blob" in w and "differ from the kernel" in w for w in warnings), warnings


def test_a_missing_active_blob_is_an_error(tmp_path, initial, candidate):
    kernel = fake_kernel(initial)
    svc = make_service(tmp_path, kernel, SpecAdapter(candidate))
    svc.config.active_blob = tmp_path / "nowhere.blob"
    with pytest.raises(FileNotFoundError, match="nowhere.blob"):
        svc._initial_active(kernel.app("lf_test"))


# ---------------------------------------------------------------------------- context and quantization


def test_contexts_of_the_kernel_batches_reach_the_adapter_row_for_row(tmp_path, initial):
    kernel = fake_kernel(initial)
    kernel.context_size = 40
    adapter = SpecAdapter(initial)
    svc = make_service(tmp_path, kernel, adapter, batches=0, threshold=1e9)
    sent = [sample_batch(seed=i, k=5 + i, context_size=40) for i in range(3)]
    svc.source.batches = list(sent)
    svc.start()
    got = 0
    for _ in range(100):
        got += svc.round().get("samples", 0)
        if got == sum(len(b.inputs) for b in sent):
            break
    svc.close()
    batches = adapter.batches
    inputs = np.concatenate([b.inputs for b in batches])
    contexts = np.concatenate([b.contexts for b in batches])
    assert contexts.dtype == np.uint8 and contexts.shape == (len(inputs), 40)
    assert np.array_equal(inputs, np.concatenate([b.inputs for b in sent]))
    assert np.array_equal(contexts, np.concatenate([b.contexts for b in sent]))


def test_an_app_without_context_gets_batches_without_contexts(tmp_path, initial):
    adapter = SpecAdapter(initial)
    svc = make_service(tmp_path, fake_kernel(initial), adapter, threshold=1e9)
    svc.start()
    rounds_until_samples(svc)
    svc.close()
    assert adapter.batches and all(b.contexts is None for b in adapter.batches)


def test_flush_ms_is_passed_to_set_sampling(tmp_path, initial):
    kernel = fake_kernel(initial)
    svc = make_service(tmp_path, kernel, SpecAdapter(initial), flush_ms=250)
    svc.start()
    assert kernel.sampling == (svc.config.sample_every, svc.config.sample_batch) and kernel.flush_ms == 250
    svc.close()


def _declared(spec):
    from userspace.netlink import LfQuant

    return LfQuant.of(spec.input_quant), LfQuant.of(spec.output_quant)


def test_fixed_app_refuses_a_candidate_quantized_otherwise_before_loading(tmp_path, initial, candidate):
    from userspace.snapshot.spec import Quant

    # a reconversion recalibrated the output scale (the zero point, in the last layer, stays)
    candidate.output_quant = Quant.from_scale(initial.output_quant.scale * 1.5, candidate.output_quant.zero_point)
    kernel = fake_kernel(initial)
    kernel.fixed_quant = _declared(initial)
    assert _declared(candidate)[1] != kernel.fixed_quant[1] and _declared(candidate)[0] == kernel.fixed_quant[0]
    svc = make_service(tmp_path, kernel, SpecAdapter(candidate))
    entry = _two_stable_rounds(svc)
    assert entry["action"] == "update-rejected" and entry["rejected_step"] == "quantization", entry
    assert "output quantization" in entry["reason"] and "EPROTO" in entry["reason"]
    assert kernel.active[0] == 0x11 and kernel.loads == []      # never sent to the kernel
    warnings = [line["message"] for line in log_lines(tmp_path) if line["event"] == "warning"]
    assert any("candidate refused" in w and "stays active" in w for w in warnings), warnings


def test_fixed_app_takes_a_candidate_with_its_quantization(tmp_path, initial, candidate):
    assert candidate.output_quant.zero_point == initial.output_quant.zero_point
    candidate.output_quant = initial.output_quant
    kernel = fake_kernel(initial)
    kernel.fixed_quant = _declared(initial)
    svc = make_service(tmp_path, kernel, SpecAdapter(candidate))
    entry = _two_stable_rounds(svc)
    assert entry["action"] == "update" and entry["result"] == "switched", entry
    assert kernel.active[0] == entry["new_id"]


def test_agent_update_loads_the_kernel_reference_then_hands_the_agent_its_blob(tmp_path):
    """--update agent: the user-space deployment's agent gets the new blob (file replaced, SIGHUP)
    after the kernel's reference copy is loaded; a failure to reach the agent rejects the update."""
    from userspace.slowpath.service import AgentUpdater, Candidate, Rejected, StepTimer

    loaded, signalled = [], []

    class Kernel:
        def load_model(self, app_id, snapshot_id, blob):
            loaded.append((app_id, snapshot_id, blob))
            return 1000

    blob_path = tmp_path / "agent.blob"
    blob_path.write_bytes(b"old")
    updater = AgentUpdater(Kernel(), 7, blob_path, 4242, signal_agent=signalled.append)
    updater.switch(Candidate(99, None, b"new-blob", b""), StepTimer())
    assert loaded == [(7, 99, b"new-blob")]
    assert blob_path.read_bytes() == b"new-blob" and signalled == [4242]

    def gone(pid):
        raise ProcessLookupError(3, "No such process")

    with pytest.raises(Rejected, match="agent"):
        AgentUpdater(Kernel(), 7, blob_path, 4242, signal_agent=gone).switch(Candidate(100, None, b"x", b""),
                                                                             StepTimer())
