"""Fakes for the slow-path service: a kernel with the core's switch semantics, and adapters.

FakeKernel keeps an active and a standby snapshot like the core: LOAD_MODEL parses the blob with
the real engine code (user-space build), installs it and switches in one step (atomic: either it
happened or not); EVALUATE runs the active snapshot with that engine. Samples are handed out from
a list. Module "insmod"/"rmmod" are simulated by `runner`. An app may declare a fixed
quantization (`fixed_quant`): LIST_APPS then reports it and a load of a snapshot quantized
otherwise is refused with EPROTO, as the core does.
"""

from __future__ import annotations

import errno
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from userspace.netlink import QUANT_ANY, QUANT_FIXED, LfQuant, LiteFlowNetlinkError, SampleBatch
from userspace.slowpath.interface import Adapter, Batch, Encoding
from userspace.snapshot import Engine, EngineError, read_blob, write_blob
from userspace.snapshot.random_model import random_spec
from userspace.snapshot.spec import Quant, reference_infer

INPUT_SIZE, OUTPUT_SIZE = 30, 1


def spec_with_encoding(seed: int, encoding: Encoding = Encoding(1 / 128, 0)):
    """A random valid spec whose input quantization is `encoding` (the app's)."""
    spec = random_spec(seed, [INPUT_SIZE, 8, OUTPUT_SIZE])
    spec.input_quant = Quant.from_scale(encoding.scale, encoding.zero_point)
    spec.layers[0].input_zero_point = encoding.zero_point
    return spec


@dataclass
class FakeStats:
    app_id: int
    name: str
    input_size: int
    output_size: int
    active_id: int
    standby_id: int
    active_origin: str
    standby_origin: str
    errors: int = 0
    context_size: int = 0
    flush_ms: int = 0
    quant_mode: int = QUANT_ANY
    input_quant: LfQuant | None = None
    output_quant: LfQuant | None = None


class FakeKernel:
    def __init__(self, initial_spec, initial_id: int = 0x11, app: str = "lf_test", app_id: int = 3,
                 origin: str = "hot"):
        self.app_name, self.app_id = app, app_id
        self.active = (initial_id, Engine.from_blob(write_blob(initial_spec)), origin)
        self.standby: tuple | None = None
        self.sampling = (0, 0)
        self.loads: list[int] = []
        self.evaluations = 0
        self.lock = threading.Lock()
        self.fail_load_errno: int | None = None
        self.corrupt_outputs = False     # EVALUATE answers wrong numbers (a broken kernel)
        self.modules: dict[str, object] = {}  # "built" .ko path -> spec
        self.fixed_quant: tuple[LfQuant, LfQuant] | None = None  # the app's (input, output), if FIXED
        self.context_size = 0

    # the Kernel protocol
    def app(self, name: str) -> FakeStats:
        if name != self.app_name:
            raise LiteFlowNetlinkError(errno.ENOENT, name)
        sb = self.standby
        fixed = self.fixed_quant
        return FakeStats(self.app_id, name, INPUT_SIZE, OUTPUT_SIZE, self.active[0], sb[0] if sb else 0,
                         self.active[2], sb[2] if sb else "", context_size=self.context_size,
                         flush_ms=100 if self.sampling[0] else 0,
                         quant_mode=QUANT_FIXED if fixed else QUANT_ANY,
                         input_quant=fixed[0] if fixed else None, output_quant=fixed[1] if fixed else None)

    def set_sampling(self, app_id: int, every: int, batch: int, flush_ms: int | None = None) -> None:
        self.sampling = (every, batch)
        self.flush_ms = flush_ms

    def evaluate(self, app_id: int, inputs: np.ndarray):
        self.evaluations += 1
        with self.lock:
            sid, engine, _ = self.active
        out = engine.infer(np.ascontiguousarray(inputs, np.int8))
        if self.corrupt_outputs:
            out = (out.astype(np.int16) + 1).clip(-128, 127).astype(np.int8)
        return sid, out

    def load_model(self, app_id: int, snapshot_id: int, blob: bytes) -> int:
        if self.fail_load_errno:
            raise LiteFlowNetlinkError(self.fail_load_errno, "LOAD_MODEL: fake refusal")
        started = time.monotonic_ns()
        try:
            engine = Engine.from_blob(blob)
        except EngineError as exc:
            raise LiteFlowNetlinkError(errno.EINVAL, str(exc)) from exc
        if self.fixed_quant:
            spec = read_blob(blob)
            if (LfQuant.of(spec.input_quant), LfQuant.of(spec.output_quant)) != self.fixed_quant:
                raise LiteFlowNetlinkError(errno.EPROTO, "LOAD_MODEL: liteflow: snapshot quantization differs "
                                                         "from the app's")
        self._switch(snapshot_id, engine, "hot")
        return time.monotonic_ns() - started

    def _switch(self, snapshot_id: int, engine, origin: str) -> None:
        with self.lock:  # the core's atomic switch
            self.standby = self.active
            self.active = (snapshot_id, engine, origin)
            self.loads.append(snapshot_id)

    # a runner for ModuleUpdater: make / insmod / rmmod
    def runner(self, argv, timeout):
        if argv[0] == "make":
            folder = Path(next(a for a in argv if a.startswith("M=")).removeprefix("M="))
            name = folder.name
            if getattr(self, "fail_build", False):
                return 2, "error: fake compiler failure"
            (folder / f"{name}.ko").write_bytes(b"fake")
            return 0, ""
        if argv[0] == "insmod":
            ko = Path(argv[1])
            if getattr(self, "fail_insmod", False):
                return 1, "insmod: ERROR: could not insert module: Invalid parameters"
            sid = int(ko.stem.rsplit("_", 1)[1], 16)
            c_file = ko.with_suffix(".c")
            spec = self.modules[sid]
            self._switch(sid, Engine.from_blob(write_blob(spec)), ko.stem)
            assert c_file.exists()
            return 0, ""
        if argv[0] == "rmmod":
            with self.lock:
                if self.standby and self.standby[2] == argv[1]:
                    self.standby = None
                    return 0, ""
            return 1, f"rmmod: ERROR: {argv[1]} is in use or not loaded"
        raise AssertionError(f"unexpected command {argv}")


class ListSource:
    """A sample source that hands out prepared batches (then None)."""

    def __init__(self, batches: list[SampleBatch], delay_s: float = 0.0):
        self.batches = list(batches)
        self.delay_s = delay_s
        self.subscribed = False

    def subscribe_samples(self) -> None:
        self.subscribed = True

    def next_sample_batch(self, timeout: float):
        if self.batches:
            if self.delay_s:
                time.sleep(self.delay_s)
            return self.batches.pop(0)
        time.sleep(min(timeout, 0.01))
        return None

    def close(self) -> None:
        pass


def sample_batch(app_id: int = 3, k: int = 32, seed: int = 0, snapshot_id: int = 0x11,
                 context_size: int = 0) -> SampleBatch:
    """A batch as LiteFlowNetlink decodes one; with `context_size`, contexts as an app with context
    reports them (uint8 [k, context_size])."""
    rng = np.random.default_rng(seed)
    contexts = rng.integers(0, 256, (k, context_size)).astype(np.uint8) if context_size else None
    return SampleBatch(app_id=app_id, snapshot_id=snapshot_id,
                       inputs=rng.integers(-128, 128, (k, INPUT_SIZE)).astype(np.int8),
                       outputs=rng.integers(-128, 128, (k, OUTPUT_SIZE)).astype(np.int8), dropped_total=0,
                       contexts=contexts)


class SpecAdapter(Adapter):
    """A framework-free adapter: its 'NN' is a snapshot spec; predictions are that spec's outputs.

    `metrics` scripts what evaluate() returns round by round; `fail` names a method that raises.
    """

    input_encoding = Encoding(1 / 128, 0)

    def __init__(self, spec, metrics=None, fail: str | None = None, snapshot=None):
        self.spec = spec
        self.snapshot = snapshot  # what snapshot_model() returns, if not the spec itself
        self.metrics = list(metrics or [])
        self.fail = fail
        self.adapted = 0
        self.last_metric = 1.0
        self.batches: list[Batch] = []   # every batch adapt() got

    def _maybe_fail(self, where: str) -> None:
        if self.fail == where:
            raise RuntimeError(f"adapter bug in {where}")

    def adapt(self, batch: Batch) -> None:
        self._maybe_fail("adapt")
        assert batch.inputs.dtype == np.int8 and batch.x.shape == batch.inputs.shape
        self.adapted += 1
        self.batches.append(batch)

    def evaluate(self) -> float:
        self._maybe_fail("evaluate")
        if self.metrics:
            self.last_metric = self.metrics.pop(0)
        return self.last_metric

    def predict(self, x: np.ndarray) -> np.ndarray:
        self._maybe_fail("predict")
        q = self.input_encoding.to_int8(x)
        out = reference_infer(self.spec, q)
        oq = self.spec.output_quant
        return (out.astype(np.float64) - oq.zero_point) * oq.scale

    def freeze(self, directory: Path) -> Path:
        self._maybe_fail("freeze")
        path = Path(directory) / "spec.blob"
        path.write_bytes(write_blob(self.spec))
        return path

    def snapshot_model(self, frozen: Path):
        self._maybe_fail("snapshot_model")
        return self.snapshot if self.snapshot is not None else read_blob(Path(frozen).read_bytes())
