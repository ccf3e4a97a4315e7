"""The slow-path service: collect samples, adapt, evaluate, and update the kernel's snapshot.

One round of the loop (LiteFlow, SIGCOMM 2022, section 4):

1. take every sample batch queued since the last round (a reader thread fills a bounded queue
   from the netlink multicast group; batches arriving while the queue is full are dropped and
   counted, so memory stays bounded however fast the kernel samples) and call `adapter.adapt`;
2. evaluate: the adapter's stability metric must stay within a band over a window of rounds
   (correctness); the fidelity loss L = mean |f'(x) - f(x)| is computed between the kernel's
   active snapshot, run by the kernel's own arithmetic (EVALUATE) on the latest inputs, and the
   adapter's NN on the same inputs (necessity);
3. when stable and L > threshold: freeze, quantize, validate, then switch the kernel to the new
   snapshot, either "hot" (weight blob over LOAD_MODEL) or "module" (C source + Kbuild, make
   against the running kernel's headers with the core's Module.symvers, insmod, rmmod the module
   that became standby). An app that declares a fixed quantization (LIST_APPS: QUANT_MODE
   FIXED) gets no candidate quantized otherwise: the kernel would refuse it with EPROTO, so the
   service refuses it first and says why. A candidate that fails any step is rejected with the reason and the
   active snapshot stays; after the switch the kernel's outputs are checked against the user-space
   engine, and a mismatch rolls back to the last good snapshot.

Every decision is one JSON line (see `DecisionLog`). The switch itself is one atomic command in
the core (LOAD_MODEL, or lf_register_model in the module's init), so a service killed at any
point leaves the kernel on its last good snapshot.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .interface import Adapter, Batch, Encoding

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_INCLUDE_DIR = REPO_ROOT / "kernel" / "include"


class Rejected(RuntimeError):
    """A candidate snapshot failed a step; `step` names it."""

    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


# ------------------------------------------------------------------------------ configuration


@dataclass
class ServiceConfig:
    app: str
    update: str = "hot"                 # "hot" | "module" | "agent"
    threshold: float = 0.05             # fidelity loss (output units) above which we update
    window: int = 3                     # rounds the stability metric must stay in the band
    band: float = 0.25                  # relative band: (max - min) <= band * max(|mean|, band_floor)
    band_floor: float = 1e-3
    sample_every: int = 64              # SET_SAMPLING: every Nth query per CPU
    sample_batch: int = 128             # pairs per SAMPLES message
    flush_ms: int | None = None         # SET_SAMPLING FLUSH_MS (None: the kernel's default)
    queue_batches: int = 64             # bound of the sample queue (batches)
    fidelity_samples: int = 512         # latest inputs kept for the fidelity loss and calibration
    min_round_samples: int = 1          # a round waits for at least this many new samples
    round_wait_s: float = 5.0           # ... or this long
    round_interval_s: float = 0.0       # rounds start at least this far apart (0: as samples come)
    validate_samples: int = 512
    work_dir: Path = Path(tempfile.gettempdir()) / "liteflow-slowpath"
    include_dir: Path = DEFAULT_INCLUDE_DIR
    symvers: Path | None = None         # the core's Module.symvers (module updates)
    kernel_build_dir: Path | None = None  # default /lib/modules/$(uname -r)/build
    active_blob: Path | None = None     # blob of the snapshot active at start (its quantization)
    agent_blob: Path | None = None      # update "agent": the blob file the user-space agent serves
    agent_pid: int | None = None        # ... and the agent to SIGHUP once it is rewritten
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.update not in ("hot", "module", "agent"):
            raise ValueError(f"update must be 'hot', 'module' or 'agent', not {self.update!r}")
        if self.update == "agent" and (self.agent_blob is None or not self.agent_pid):
            raise ValueError("update 'agent' needs agent_blob and agent_pid")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if not self.round_interval_s >= 0:
            raise ValueError(f"round_interval_s must be >= 0, not {self.round_interval_s!r}")
        self.work_dir = Path(self.work_dir)


# ------------------------------------------------------------------------------ decision logic


class Stability:
    """The stability metric is 'stable' once its last `window` values lie within a band.

    Band: max - min <= band * max(|mean|, floor). A NaN/inf value is never stable.
    """

    def __init__(self, window: int, band: float, floor: float = 1e-3):
        self.window, self.band, self.floor = window, band, floor
        self.values: deque[float] = deque(maxlen=window)

    def push(self, value: float) -> bool:
        self.values.append(float(value))
        return self.stable

    def reset(self) -> None:
        self.values.clear()

    @property
    def spread(self) -> float:
        return max(self.values) - min(self.values) if self.values else math.inf

    @property
    def stable(self) -> bool:
        if len(self.values) < self.window or not all(math.isfinite(v) for v in self.values):
            return False
        mean = sum(self.values) / len(self.values)
        return self.spread <= self.band * max(abs(mean), self.floor)


def decide(stable: bool, fidelity_loss: float | None, threshold: float) -> str:
    """'wait-unstable' | 'keep' (not worth it) | 'update'."""
    if not stable:
        return "wait-unstable"
    if fidelity_loss is None or not math.isfinite(fidelity_loss) or fidelity_loss <= threshold:
        return "keep"
    return "update"


def fidelity_loss(kernel_out: np.ndarray, nn_out: np.ndarray) -> float:
    """mean |f'(x) - f(x)| over samples and outputs (reals)."""
    return float(np.mean(np.abs(np.asarray(kernel_out, np.float64) - np.asarray(nn_out, np.float64))))


# ------------------------------------------------------------------------------ samples


class SampleQueue:
    """A bounded queue of sample batches; a full queue drops (and counts) the new batch."""

    def __init__(self, max_batches: int):
        self._q: queue.Queue = queue.Queue(maxsize=max_batches)
        self.max_batches = max_batches
        self.lock = threading.Lock()
        self.received_batches = self.received_samples = 0
        self.dropped_batches = self.dropped_samples = 0
        self.kernel_dropped_total = 0
        self.high_water = 0

    def offer(self, batch: Any) -> bool:
        k = len(batch.inputs)
        with self.lock:
            self.received_batches += 1
            self.received_samples += k
            self.kernel_dropped_total = max(self.kernel_dropped_total, int(getattr(batch, "dropped_total", 0)))
        try:
            self._q.put_nowait((time.time(), batch))
        except queue.Full:
            with self.lock:
                self.dropped_batches += 1
                self.dropped_samples += k
            return False
        with self.lock:
            self.high_water = max(self.high_water, self._q.qsize())
        return True

    def drain(self, wait_s: float, min_samples: int = 1) -> list[tuple[float, Any]]:
        """Everything queued now; waits up to wait_s for at least min_samples."""
        items: list[tuple[float, Any]] = []
        deadline = time.monotonic() + wait_s
        got = 0
        while True:
            try:
                while True:
                    item = self._q.get_nowait()
                    items.append(item)
                    got += len(item[1].inputs)
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if got >= min_samples or remaining <= 0:
                return items
            try:
                item = self._q.get(timeout=min(remaining, 0.2))
                items.append(item)
                got += len(item[1].inputs)
            except queue.Empty:
                pass

    def qsize(self) -> int:
        return self._q.qsize()

    def counters(self) -> dict:
        with self.lock:
            return {"received_batches": self.received_batches, "received_samples": self.received_samples,
                    "dropped_batches": self.dropped_batches, "dropped_samples": self.dropped_samples,
                    "kernel_dropped_total": self.kernel_dropped_total, "queue_high_water": self.high_water,
                    "queue_bound": self.max_batches}


class SampleSource(Protocol):
    def subscribe_samples(self) -> None: ...
    def next_sample_batch(self, timeout: float) -> Any: ...
    def close(self) -> None: ...


class SampleReader(threading.Thread):
    """Moves sample batches of one app from a netlink socket into a SampleQueue."""

    def __init__(self, source: SampleSource | Callable[[], SampleSource], app_id: int, sink: SampleQueue,
                 on_error: Callable[[str], None]):
        super().__init__(name="liteflow-samples", daemon=True)
        self.source, self.app_id, self.sink, self.on_error = source, app_id, sink, on_error
        self._stop_event = threading.Event()
        self.subscribed = threading.Event()
        self.owned = isinstance(source, type) or not hasattr(source, "next_sample_batch")

    def run(self) -> None:
        # A factory is called here, so the socket belongs to the thread that reads it.
        try:
            if self.owned:
                self.source = self.source()
            self.source.subscribe_samples()
        except Exception as exc:  # noqa: BLE001
            self.on_error(f"sample socket: {exc}")
            return
        finally:
            self.subscribed.set()
        try:
            self._loop()
        finally:
            if self.owned:
                self.source.close()

    def _loop(self) -> None:
        while not self._stop_event.is_set():
            try:
                batch = self.source.next_sample_batch(0.2)
            except OSError as exc:  # e.g. ENOBUFS: the socket overflowed, samples lost in the kernel
                self.on_error(f"sample socket: {exc}")
                continue
            if batch is not None and batch.app_id == self.app_id:
                self.sink.offer(batch)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


# ------------------------------------------------------------------------------ kernel & updates


class Kernel(Protocol):
    """What the service needs from userspace.netlink.LiteFlowNetlink (fakes implement it too)."""

    def app(self, name: str) -> Any: ...
    def set_sampling(self, app_id: int, every: int, batch: int, flush_ms: int | None = None) -> None: ...
    def evaluate(self, app_id: int, inputs: np.ndarray) -> tuple[int, np.ndarray]: ...
    def load_model(self, app_id: int, snapshot_id: int, blob: bytes) -> int | None: ...


@dataclass
class Candidate:
    snapshot_id: int
    spec: Any                       # userspace.snapshot.SnapshotSpec
    blob: bytes
    tflite: bytes | None = None
    frozen: str | None = None
    module_name: str | None = None


def run_command(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    return done.returncode, (done.stdout + done.stderr).strip()


class HotUpdater:
    """write_blob + LOAD_MODEL: the core parses, validates and switches atomically.

    The load is split into the kernel's share (its own clock, from the reply) and the client's
    (message encoding, the syscalls, reply parsing), because they call for different fixes.
    """

    kind = "hot"

    def __init__(self, kernel: Kernel, app_id: int):
        self.kernel, self.app_id = kernel, app_id

    def prepare(self, cand: Candidate, timer: "StepTimer") -> None:
        pass  # the blob is the artifact

    def switch(self, cand: Candidate, timer: "StepTimer") -> None:
        with timer.step("load"):
            try:
                kernel_ns = self.kernel.load_model(self.app_id, cand.snapshot_id, cand.blob)
            except OSError as exc:
                raise Rejected("load", f"LOAD_MODEL refused: {exc}") from exc
        if kernel_ns is not None:
            timer.split("load", {"load_kernel": kernel_ns / 1e9}, rest="load_client")


class AgentUpdater(HotUpdater):
    """The user-space deployment's update: the agent serves the new blob from its next query.

    The kernel gets the same snapshot by LOAD_MODEL first, as the reference the fidelity loss is
    computed against (EVALUATE), so the slow path decides exactly as it does for LiteFlow; then
    the blob file is replaced atomically and the agent is told (SIGHUP) to reread it.
    """

    kind = "agent"

    def __init__(self, kernel: Kernel, app_id: int, blob_path: Path, agent_pid: int,
                 signal_agent: Callable[[int], None] | None = None):
        super().__init__(kernel, app_id)
        self.blob_path, self.agent_pid = Path(blob_path), agent_pid
        self.signal_agent = signal_agent or (lambda pid: os.kill(pid, signal.SIGHUP))

    def switch(self, cand: Candidate, timer: "StepTimer") -> None:
        super().switch(cand, timer)
        with timer.step("agent"):
            staged = self.blob_path.with_name(self.blob_path.name + ".new")
            try:
                staged.write_bytes(cand.blob)
                staged.replace(self.blob_path)
                self.signal_agent(self.agent_pid)
            except OSError as exc:
                raise Rejected("agent", f"the agent could not be given the new blob: {exc}") from exc


class ModuleUpdater:
    """generate C + Kbuild, make against the running kernel, insmod app_id=, rmmod the standby."""

    kind = "module"

    def __init__(self, kernel: Kernel, app: str, app_id: int, config: ServiceConfig,
                 runner: Callable[[Sequence[str], float], tuple[int, str]] = run_command):
        self.kernel, self.app, self.app_id, self.config, self.runner = kernel, app, app_id, config, runner
        build = config.kernel_build_dir or Path(f"/lib/modules/{os.uname().release}/build")
        self.build_dir = Path(build)

    def prepare(self, cand: Candidate, timer: "StepTimer") -> None:
        from userspace.snapshot import SnapshotError, generate_module

        modules = self.config.work_dir / "modules"
        with timer.step("generate"):
            try:
                folder = generate_module(cand.spec, modules, app=self.app, snapshot_id=cand.snapshot_id,
                                         include_dir=self.config.include_dir,
                                         source="the slow path's adapted NN",
                                         extra_symbols=self.config.symvers)
            except (SnapshotError, OSError) as exc:
                raise Rejected("generate", str(exc)) from exc
        cand.module_name = folder.name
        with timer.step("build"):
            if self.config.symvers is None or not Path(self.config.symvers).exists():
                raise Rejected("build", f"the core's Module.symvers is missing ({self.config.symvers})")
            try:
                code, out = self.runner(["make", "-s", "-C", str(self.build_dir), f"M={folder}", "modules"], 900)
            except Exception as exc:  # noqa: BLE001 - make missing, killed, timed out
                raise Rejected("build", f"{type(exc).__name__}: {exc}") from exc
            ko = folder / f"{folder.name}.ko"
            if code != 0 or not ko.exists():
                raise Rejected("build", f"make exited {code}: {out[-1500:]}")
        cand.module_path = ko  # type: ignore[attr-defined]

    def switch(self, cand: Candidate, timer: "StepTimer") -> None:
        with timer.step("load"):
            code, out = self.runner(["insmod", str(cand.module_path), f"app_id={self.app_id}"], 120)  # type: ignore[attr-defined]
            if code != 0:
                raise Rejected("load", f"insmod exited {code}: {out[-800:]}")


def remove_standby_module(kernel: Kernel, app: str, runner=run_command) -> str | None:
    """rmmod the snapshot module sitting in the standby slot (after a switch, or left by a kill)."""
    stats = kernel.app(app)
    origin = getattr(stats, "standby_origin", "") or ""
    if not origin.startswith("lf_snap_"):
        return None
    code, out = runner(["rmmod", origin], 120)
    if code != 0:
        raise RuntimeError(f"rmmod {origin} exited {code}: {out[-400:]}")
    return origin


# ------------------------------------------------------------------------------ candidates


def calibration_data(recent_inputs: np.ndarray, encoding: Encoding, input_size: int) -> np.ndarray:
    """Reals for the quantizer: recent inputs plus the int8 extremes, pinning the input encoding.

    TFLite calibrates the input scale from min/max; rows at q=-128 and q=127 make it exactly
    (127 - (-128)) * scale / 255 = scale, with zero point `encoding.zero_point` when it is 0.
    """
    rows = [encoding.to_real(np.full((1, input_size), -128)), encoding.to_real(np.full((1, input_size), 127))]
    if len(recent_inputs):
        rows.append(encoding.to_real(recent_inputs))
    else:
        rng = np.random.default_rng(0)
        rows.append(encoding.to_real(rng.integers(-128, 128, (256, input_size))))
    return np.concatenate(rows).astype(np.float32)


def make_candidate(model: Any, recent_inputs: np.ndarray, encoding: Encoding, input_size: int,
                   timer: "StepTimer") -> Candidate:
    """Quantize what snapshot_model() returned (or take a ready SnapshotSpec)."""
    from userspace.snapshot import SnapshotSpec, build_snapshot, new_snapshot_id, write_blob

    with timer.step("quantize"):
        try:
            if isinstance(model, SnapshotSpec):
                spec, tflite = model, None
            else:
                snap = build_snapshot(model, data=calibration_data(recent_inputs, encoding, input_size))
                spec, tflite = snap.spec, snap.tflite
            blob = write_blob(spec)
        except Exception as exc:  # noqa: BLE001 - any toolchain failure rejects the candidate
            raise Rejected("quantize", f"{type(exc).__name__}: {exc}") from exc
    return Candidate(snapshot_id=new_snapshot_id(), spec=spec, blob=blob, tflite=tflite)


def validate_candidate(cand: Candidate, encoding: Encoding, input_size: int, output_size: int,
                       inputs: np.ndarray, timer: "StepTimer") -> np.ndarray:
    """Checks before any switch; returns the user-space engine's outputs on `inputs`.

    Sizes, the app's input encoding, the blob parsed by the kernel's engine code in user space,
    and the engine bit-exact against the TFLite interpreter (or the numpy reference when the
    adapter gave a spec directly).
    """
    from userspace.snapshot import Engine, EngineError, reference_infer
    from userspace.snapshot.verify import tflite_infer

    with timer.step("validate"):
        spec = cand.spec
        if (spec.input_size, spec.output_size) != (input_size, output_size):
            raise Rejected("validate", f"snapshot is {spec.input_size}x{spec.output_size}, "
                                       f"app is {input_size}x{output_size}")
        iq = Encoding.of(spec.input_quant)
        if iq.zero_point != encoding.zero_point or not math.isclose(iq.scale, encoding.scale, rel_tol=1e-4):
            raise Rejected("validate", f"input quantization (scale {iq.scale:.6g}, zero point {iq.zero_point}) "
                                       f"differs from the app's encoding ({encoding.scale:.6g}, {encoding.zero_point})")
        try:
            engine = Engine.from_blob(cand.blob)
            ours = engine.infer(inputs)
        except EngineError as exc:
            raise Rejected("validate", f"the engine refuses the blob: {exc}") from exc
        want = tflite_infer(cand.tflite, inputs) if cand.tflite is not None else reference_infer(spec, inputs)
        bad = int(np.count_nonzero((np.asarray(ours) != np.asarray(want)).any(axis=1)))
        if bad:
            raise Rejected("validate", f"engine differs from {'TFLite' if cand.tflite else 'the reference'} "
                                       f"on {bad}/{len(inputs)} inputs")
    return ours


def _quant_text(q: Any) -> str:
    return f"zero point {q.zero_point}, multiplier {q.multiplier}, shift {q.shift}"


def check_app_quantization(cand: Candidate, stats: Any) -> None:
    """Refuse a candidate the kernel would refuse with EPROTO: the app (as LIST_APPS reports it)
    declares a fixed quantization and the candidate's input or output quantization is not exactly
    it. An app without a fixed quantization (or a core that reports none) takes any."""
    from userspace.netlink import QUANT_FIXED, LfQuant

    if getattr(stats, "quant_mode", None) != QUANT_FIXED:
        return
    for side, declared, ours in (("input", stats.input_quant, cand.spec.input_quant),
                                 ("output", stats.output_quant, cand.spec.output_quant)):
        if declared is None:
            raise Rejected("quantization", f"the app declares a fixed quantization but LIST_APPS gave no "
                                           f"{side} quantization")
        if LfQuant.of(ours) != LfQuant.of(declared):
            raise Rejected("quantization", f"candidate's {side} quantization ({_quant_text(ours)}) differs from "
                                           f"the one app {stats.name!r} declares ({_quant_text(declared)}); "
                                           f"the kernel would refuse it (EPROTO)")


# ------------------------------------------------------------------------------ logging


class StepTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    class _Step:
        def __init__(self, timer: "StepTimer", name: str):
            self.timer, self.name = timer, name

        def __enter__(self):
            self.t0 = time.monotonic()

        def __exit__(self, *exc):
            self.timer.seconds[self.name] = round(self.timer.seconds.get(self.name, 0.0)
                                                  + time.monotonic() - self.t0, 6)
            return False

    def step(self, name: str) -> "StepTimer._Step":
        return StepTimer._Step(self, name)

    def split(self, name: str, parts: dict[str, float], rest: str) -> None:
        """Replace step `name` by `parts` measured elsewhere and `rest`, the remainder, so the
        steps still add up to the time taken."""
        whole = self.seconds.pop(name)
        for part, seconds in parts.items():
            self.seconds[part] = round(min(seconds, whole), 6)
        self.seconds[rest] = round(max(whole - sum(self.seconds[p] for p in parts), 0.0), 6)


class DecisionLog:
    """One JSON object per line: `event` plus what it is about, `t` (unix time) on every line."""

    def __init__(self, path: Path | None, echo=sys.stderr):
        self.path = Path(path) if path else None
        self.echo = echo
        self._fh = open(self.path, "a", buffering=1) if self.path else None  # noqa: SIM115
        self.lines: deque[dict] = deque(maxlen=1000)  # the latest, for tests and summaries

    def write(self, event: str, **fields: Any) -> dict:
        entry = {"t": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(entry, default=_json_default)
        self.lines.append(json.loads(line))
        if self._fh:
            self._fh.write(line + "\n")
            self._fh.flush()
        if self.echo:
            print(line, file=self.echo, flush=True)
        return entry

    def close(self) -> None:
        if self._fh:
            self._fh.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


# ------------------------------------------------------------------------------ the service


@dataclass
class ActiveSnapshot:
    snapshot_id: int
    output_encoding: Encoding
    blob: bytes | None = None       # for rollback (None when started from an unknown snapshot)
    origin: str = ""


@dataclass
class Counters:
    rounds: int = 0
    updates: int = 0
    rejected: int = 0
    adapter_errors: int = 0
    rollbacks: int = 0
    sample_socket_errors: int = 0
    reject_reasons: list = field(default_factory=list)


class Service:
    """The slow path of one app. `run()` loops; `round()` is one iteration (tests drive it)."""

    def __init__(self, kernel: Kernel, adapter: Adapter, config: ServiceConfig, log: DecisionLog,
                 sample_source: SampleSource | None = None, updater: Any | None = None,
                 runner: Callable[[Sequence[str], float], tuple[int, str]] = run_command):
        self.kernel, self.adapter, self.config, self.log = kernel, adapter, config, log
        self.runner = runner
        stats = kernel.app(config.app)
        self.app_id, self.input_size, self.output_size = stats.app_id, stats.input_size, stats.output_size
        self.encoding: Encoding = adapter.input_encoding
        self.queue = SampleQueue(config.queue_batches)
        self.source = sample_source
        self.reader: SampleReader | None = None
        self.recent = np.zeros((0, self.input_size), np.int8)   # bounded: fidelity_samples rows
        self.stability = Stability(config.window, config.band, config.band_floor)
        self._round_started: float | None = None   # time.monotonic() of the last round's start
        self.counters = Counters()
        self.updater = updater or self._updater(kernel, config, runner)
        self.frozen_dir = config.work_dir / "frozen"
        self.frozen_dir.mkdir(parents=True, exist_ok=True)
        self.active = self._initial_active(stats)
        self._stopping = threading.Event()

    def _updater(self, kernel: Kernel, config: ServiceConfig, runner) -> Any:
        if config.update == "hot":
            return HotUpdater(kernel, self.app_id)
        if config.update == "agent":
            return AgentUpdater(kernel, self.app_id, config.agent_blob, config.agent_pid)
        return ModuleUpdater(kernel, config.app, self.app_id, config, runner)

    # -- start/stop ---------------------------------------------------------------------------

    def _initial_active(self, stats: Any) -> ActiveSnapshot:
        """What the kernel's active snapshot is, so fidelity and rollback use the right one.

        First the blob this service saved when it made that snapshot live (a restart after the
        service died), then --active-blob; each is used only if the kernel computes exactly what
        it describes, because a stale blob would make every fidelity figure wrong. Failing both,
        the output scale is derived from the adapter's NN and no rollback blob is known.
        """
        sources = [(self._saved_blob_path(stats.active_id), False)]
        if self.config.active_blob:
            sources.append((Path(self.config.active_blob), True))
        for path, given in sources:
            if not given and not path.exists():
                continue
            blob = path.read_bytes()   # a missing --active-blob is the user's error: raise
            problem = self._differs_from_kernel(blob)
            if problem is None:
                from userspace.snapshot import read_blob

                self.log.write("active", snapshot_id=stats.active_id, blob=str(path))
                return ActiveSnapshot(stats.active_id, Encoding.of(read_blob(blob).output_quant), blob,
                                      stats.active_origin)
            self.log.write("warning", message=f"{path} is not the kernel's active snapshot "
                                              f"{stats.active_id:#x}: {problem}")
        timer = StepTimer()
        try:
            frozen = self.adapter.freeze(self.frozen_dir)
            cand = make_candidate(self.adapter.snapshot_model(frozen), self.recent, self.encoding,
                                  self.input_size, timer)
            enc = Encoding.of(cand.spec.output_quant)
        except Exception as exc:  # noqa: BLE001
            self.log.write("warning", message=f"cannot derive the active snapshot's output scale: {exc}; "
                                              "using 1/128")
            enc = Encoding(1.0 / 128.0, 0)
        return ActiveSnapshot(stats.active_id, enc, None, stats.active_origin)

    def _differs_from_kernel(self, blob: bytes) -> str | None:
        """None when the kernel's active snapshot computes what `blob` does on random inputs."""
        from userspace.snapshot import Engine, EngineError

        x = np.random.default_rng().integers(-128, 128, (64, self.input_size)).astype(np.int8)
        try:
            ours = Engine.from_blob(blob).infer(x)
        except EngineError as exc:
            return f"the engine refuses it: {exc}"
        return self._kernel_mismatch(None, x, ours)

    def _saved_blob_path(self, snapshot_id: int) -> Path:
        return self.config.work_dir / "snapshots" / f"{snapshot_id:016x}.blob"

    def start(self) -> None:
        self.log.write("start", app=self.config.app, app_id=self.app_id, update=self.config.update,
                       threshold=self.config.threshold, window=self.config.window, band=self.config.band,
                       active_id=self.active.snapshot_id, input_encoding=vars(self.encoding),
                       output_encoding=vars(self.active.output_encoding), pid=os.getpid())
        try:
            removed = remove_standby_module(self.kernel, self.config.app, self.runner)
            if removed:
                self.log.write("cleanup", removed_standby_module=removed)
        except Exception as exc:  # noqa: BLE001
            self.log.write("warning", message=f"standby cleanup: {exc}")
        if self.source is not None:
            self.reader = SampleReader(self.source, self.app_id, self.queue, self._sample_error)
            self.reader.start()
            self.reader.subscribed.wait(30)
        if self.config.flush_ms is None:
            self.kernel.set_sampling(self.app_id, self.config.sample_every, self.config.sample_batch)
        else:
            self.kernel.set_sampling(self.app_id, self.config.sample_every, self.config.sample_batch,
                                     flush_ms=self.config.flush_ms)

    def _sample_error(self, message: str) -> None:
        self.counters.sample_socket_errors += 1
        if self.counters.sample_socket_errors <= 5:
            self.log.write("warning", message=message)

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        try:
            self.kernel.set_sampling(self.app_id, 0, self.config.sample_batch)
        except Exception as exc:  # noqa: BLE001
            self.log.write("warning", message=f"turning sampling off: {exc}")
        if self.reader is not None:
            self.reader.stop()
        try:
            self.adapter.close()
        except Exception:  # noqa: BLE001
            self.log.write("adapter-error", where="close", traceback=traceback.format_exc())
        self.log.write("stop", **vars(self.counters), samples=self.queue.counters(),
                       active_id=self.active.snapshot_id)

    def run(self, duration_s: float | None = None) -> Counters:
        self.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self._stopping.is_set() and (deadline is None or time.monotonic() < deadline):
                self.round()
        finally:
            self.close()
        return self.counters

    # -- one round ------------------------------------------------------------------------------

    def round(self) -> dict:
        c = self.counters
        c.rounds += 1
        timer = StepTimer()
        with timer.step("collect"):
            items = self._collect()
        self._round_started = time.monotonic()
        entry: dict[str, Any] = {"round": c.rounds, "threshold": self.config.threshold}
        if not items:
            return self.log.write("round", **entry, action="idle", samples=0, steps_s=timer.seconds,
                                  sample_counters=self.queue.counters())
        inputs = np.concatenate([b.inputs for _, b in items]).astype(np.int8)
        outputs = np.concatenate([b.outputs for _, b in items]).astype(np.int8)
        ids = np.concatenate([np.full(len(b.inputs), b.snapshot_id, np.uint64) for _, b in items])
        self.recent = np.concatenate([self.recent, inputs])[-self.config.fidelity_samples:]
        batch = Batch(inputs, outputs, self.encoding, self.active.output_encoding, ids, items[-1][0],
                      contexts=self._contexts(items))
        entry["samples"] = len(inputs)

        with timer.step("adapt"):
            ok = self._call("adapt", self.adapter.adapt, batch)
        metric = None
        if ok:
            with timer.step("evaluate"):
                ok, metric = self._call_value("evaluate", self.adapter.evaluate)
        if not ok:
            self.stability.reset()
            return self.log.write("round", **entry, action="adapter-error", active_id=self.active.snapshot_id,
                                  steps_s=timer.seconds, sample_counters=self.queue.counters())
        stable = self.stability.push(float(metric))
        loss = None
        with timer.step("fidelity"):
            try:
                loss = self.fidelity()
            except _AdapterFailed:
                stable = False
            except OSError as exc:
                self.log.write("warning", message=f"EVALUATE failed: {exc}")
        action = decide(stable, loss, self.config.threshold)
        entry.update(stability_metric=_round(float(metric)), stability_spread=_round(self.stability.spread),
                     stable=stable, fidelity_loss=_round(loss), active_id=self.active.snapshot_id)
        if action == "update":
            result = self.update()
            entry.update(result)
            action = "update" if result["result"] == "switched" else "update-rejected"
        return self.log.write("round", **entry, action=action, steps_s=timer.seconds,
                              sample_counters=self.queue.counters())

    def _collect(self) -> list[tuple[float, Any]]:
        """The samples of the next round. With a round interval, everything that arrives until the
        interval is over (taken off the bounded queue as it comes, so waiting drops nothing);
        then, or without one, the queue's content once it holds min_round_samples or round_wait_s
        passed.

        Why an interval: a round is a few training steps however few samples it has, and when the
        samples trickle in, rounds back to back keep a CPU busy, the one the datapath it tunes
        runs on, to learn from a handful of samples at a time."""
        items: list[tuple[float, Any]] = []
        if self.config.round_interval_s > 0 and self._round_started is not None:
            until = self._round_started + self.config.round_interval_s
            while (left := until - time.monotonic()) > 0 and not self._stopping.is_set():
                items += self.queue.drain(left, 1)
        got = sum(len(batch.inputs) for _, batch in items)
        if got < self.config.min_round_samples:
            items += self.queue.drain(self.config.round_wait_s, self.config.min_round_samples - got)
        return items

    @staticmethod
    def _contexts(items: list[tuple[float, Any]]) -> np.ndarray | None:
        """The batches' contexts, row for row with their pairs; None when no batch has any (an app
        without context). An app's batches all carry context or none do (the kernel's choice)."""
        contexts = [getattr(b, "contexts", None) for _, b in items]
        if all(c is None for c in contexts):
            return None
        if any(c is None for c in contexts):
            raise ValueError("sample batches of one app with and without contexts")
        return np.concatenate([np.asarray(c, np.uint8) for c in contexts])

    def fidelity(self) -> float:
        """L on the latest inputs: kernel arithmetic (EVALUATE) vs the adapter's NN."""
        x = self.recent
        _, kernel_q = self.kernel.evaluate(self.app_id, x)
        kernel_real = self.active.output_encoding.to_real(kernel_q)
        ok, nn = self._call_value("predict", self.adapter.predict, self.encoding.to_real(x))
        if not ok:
            raise _AdapterFailed()
        return fidelity_loss(kernel_real, np.asarray(nn).reshape(kernel_real.shape))

    # -- update ---------------------------------------------------------------------------------

    def update(self) -> dict:
        """Freeze, quantize, validate, switch, check; any failure keeps the active snapshot."""
        timer = StepTimer()
        previous = self.active
        cand: Candidate | None = None
        # marks where a crash would leave things: the kernel still serves `previous`
        self.log.write("update-begin", active_id=previous.snapshot_id, update=self.updater.kind)
        try:
            with timer.step("freeze"):
                ok, frozen = self._call_value("freeze", self.adapter.freeze, self.frozen_dir)
                if not ok:
                    raise Rejected("freeze", "the adapter raised (traceback logged)")
                ok, model = self._call_value("snapshot_model", self.adapter.snapshot_model, frozen)
                if not ok:
                    raise Rejected("freeze", "snapshot_model raised (traceback logged)")
            cand = make_candidate(model, self.recent, self.encoding, self.input_size, timer)
            cand.frozen = str(frozen)
            check_inputs = self._validation_inputs()
            expected = validate_candidate(cand, self.encoding, self.input_size, self.output_size,
                                          check_inputs, timer)
            with timer.step("quantization"):
                check_app_quantization(cand, self.kernel.app(self.config.app))
            self.updater.prepare(cand, timer)
            self.updater.switch(cand, timer)
            with timer.step("verify"):
                problem = self._kernel_mismatch(cand.snapshot_id, check_inputs, expected)
            if problem:
                self._rollback(previous, problem, timer)
                raise Rejected("verify", problem)
            self.active = ActiveSnapshot(cand.snapshot_id, Encoding.of(cand.spec.output_quant), cand.blob,
                                         cand.module_name or "hot")
            self.counters.updates += 1
            self._save_blob(cand)
            with timer.step("cleanup"):
                try:
                    removed = remove_standby_module(self.kernel, self.config.app, self.runner)
                except Exception as exc:  # noqa: BLE001 - the switch stands; report the leftover
                    removed = f"failed: {exc}"
            return {"result": "switched", "update": self.updater.kind, "new_id": cand.snapshot_id,
                    "previous_id": previous.snapshot_id, "frozen": cand.frozen, "removed_standby": removed,
                    "output_encoding": vars(self.active.output_encoding),
                    "update_steps_s": timer.seconds}
        except Rejected as exc:
            if exc.step == "quantization":
                self.log.write("warning", message=f"candidate refused, snapshot {self.active.snapshot_id:#x} "
                                                  f"stays active: {exc.reason}")
            self.counters.rejected += 1
            self.counters.reject_reasons.append(str(exc))
            del self.counters.reject_reasons[:-20]
            return {"result": "rejected", "update": self.updater.kind, "rejected_step": exc.step,
                    "reason": exc.reason, "candidate_id": cand.snapshot_id if cand else None,
                    "active_id": self.active.snapshot_id, "update_steps_s": timer.seconds}

    def _save_blob(self, cand: Candidate) -> None:
        """Keep the blob of every snapshot that went live (work_dir/snapshots/<id>.blob)."""
        try:
            path = self._saved_blob_path(cand.snapshot_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            partial.write_bytes(cand.blob)
            partial.replace(path)   # a service killed mid-write leaves no truncated blob behind
        except OSError as exc:
            self.log.write("warning", message=f"saving the blob: {exc}")

    def _validation_inputs(self) -> np.ndarray:
        rng = np.random.default_rng()
        n = max(self.config.validate_samples - len(self.recent), 2)
        rand = rng.integers(-128, 128, (n, self.input_size)).astype(np.int8)
        rand[0, :], rand[1, :] = -128, 127
        return np.concatenate([self.recent, rand])

    def _kernel_mismatch(self, snapshot_id: int | None, inputs: np.ndarray, expected: np.ndarray) -> str | None:
        """None when the kernel's active snapshot (`snapshot_id`, if given) computes `expected`
        on `inputs` with its own arithmetic (EVALUATE); else what differs."""
        try:
            sid, out = self.kernel.evaluate(self.app_id, inputs)
        except OSError as exc:
            return f"EVALUATE failed: {exc}"
        if snapshot_id is not None and sid != snapshot_id:
            return f"kernel's active snapshot is {sid:#x}, not the candidate {snapshot_id:#x}"
        if np.shape(out) != np.shape(expected):
            return "the user-space engine's outputs differ from the kernel's in shape"
        bad = int(np.count_nonzero((np.asarray(out) != expected).any(axis=1)))
        if bad:
            return f"the user-space engine's outputs differ from the kernel's on {bad}/{len(inputs)} inputs"
        return None

    def _rollback(self, previous: ActiveSnapshot, problem: str, timer: StepTimer) -> None:
        """The new snapshot is active but wrong: hot-load the last good one back."""
        with timer.step("rollback"):
            if previous.blob is None:
                self.log.write("warning", message=f"{problem}; no blob of the previous snapshot to roll back to")
                return
            from userspace.snapshot import new_snapshot_id

            try:
                self.kernel.load_model(self.app_id, new_snapshot_id(), previous.blob)
                sid, _ = self.kernel.evaluate(self.app_id, self._validation_inputs()[:1])
                self.active = ActiveSnapshot(sid, previous.output_encoding, previous.blob, "hot")
                self.counters.rollbacks += 1
                remove_standby_module(self.kernel, self.config.app, self.runner)
            except Exception as exc:  # noqa: BLE001
                self.log.write("warning", message=f"rollback failed: {exc}")

    # -- adapter calls ------------------------------------------------------------------------

    def _call(self, where: str, fn: Callable, *args: Any) -> bool:
        return self._call_value(where, fn, *args)[0]

    def _call_value(self, where: str, fn: Callable, *args: Any) -> tuple[bool, Any]:
        try:
            return True, fn(*args)
        except Exception as exc:  # noqa: BLE001 - a user's bug must not stop the service
            self.counters.adapter_errors += 1
            self.log.write("adapter-error", where=where, error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc(), active_id=self.active.snapshot_id
                           if hasattr(self, "active") else None)
            return False, None


class _AdapterFailed(Exception):
    pass


def load_adapter(spec: str, kwargs: dict | None = None) -> Adapter:
    """'package.module:Class' -> an instance (kwargs from --adapter-config)."""
    import importlib

    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"--adapter must be module:Class, not {spec!r}")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"{spec} is not a subclass of userspace.slowpath.Adapter")
    return cls(**(kwargs or {}))
