"""The slow path's user interface: subclass `Adapter` (LiteFlow, SIGCOMM 2022, section 4).

The paper gives users three interfaces and the service does the rest:

* `freeze()`   save the user-space NN and return the path of what was saved;
* `evaluate()` a stability metric (e.g. the training loss) that the service watches until it stays
               within a band over a window of rounds (correctness); the service itself computes
               the fidelity loss L(x) = |f'(x) - f(x)| between the kernel's snapshot and the NN
               (necessity), from `predict()`;
* `adapt(batch)` tune the NN on a batch of (input, kernel output) pairs collected from the kernel.

Plus what the service needs to make a snapshot of the NN: `snapshot_model(frozen_path)`, which
returns anything the snapshot toolchain accepts (a Keras model object, a path to a .keras/.h5
file, or a ready `userspace.snapshot.SnapshotSpec`), and `predict(x)` (real-valued outputs).

This module imports no ML framework; an adapter may use any.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Encoding:
    """How int8 values map to reals: real = (q - zero_point) * scale (TFLite's convention)."""

    scale: float
    zero_point: int = 0

    def to_real(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, np.float64) - self.zero_point) * self.scale

    def to_int8(self, x: np.ndarray) -> np.ndarray:
        q = np.asarray(x, np.float64) / self.scale
        q = np.sign(q) * np.floor(np.abs(q) + 0.5) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    @classmethod
    def of(cls, quant: Any) -> "Encoding":
        """From a userspace.snapshot.Quant (a spec read back from a blob has only the Q31 form)."""
        scale = float(getattr(quant, "scale", 0.0) or 0.0)
        if scale <= 0.0:
            scale = float(quant.multiplier) * 2.0 ** (int(quant.shift) - 31)
        return cls(scale, int(quant.zero_point))


@dataclass(frozen=True)
class Batch:
    """Samples collected from the kernel, as the adapter receives them.

    `inputs` / `outputs` are the raw int8 pairs (the kernel's features and what the active
    snapshot answered); `x` and `y_kernel` are the same in reals, converted with the encodings
    the service passes (the app's input encoding, the active snapshot's output quantization).
    `contexts` holds, for an app that declares a context (a congestion controller: what the
    interval after each decision delivered), the app's own bytes for each pair as the kernel
    reported them, row i with pair i; None for an app without context.
    """

    inputs: np.ndarray            # int8 [k, input_size]
    outputs: np.ndarray           # int8 [k, output_size]
    input_encoding: Encoding
    output_encoding: Encoding
    snapshot_ids: np.ndarray      # uint64 [k]: the snapshot that answered each sample
    received_at: float            # time.time() of the newest sample batch in it
    contexts: np.ndarray | None = None  # uint8 [k, context_size], or None (no context)

    @property
    def x(self) -> np.ndarray:
        return self.input_encoding.to_real(self.inputs)

    @property
    def y_kernel(self) -> np.ndarray:
        return self.output_encoding.to_real(self.outputs)

    def __len__(self) -> int:
        return len(self.inputs)


class Adapter(abc.ABC):
    """Subclass this, then run `python -m userspace.slowpath.serve --adapter module:Class`.

    The service constructs the class with the keyword arguments of `--adapter-config FILE.json`
    (none by default) and calls every method from one thread. Any exception an adapter raises is
    logged with its traceback; the kernel keeps its last good snapshot and the service goes on.
    """

    #: The app's input encoding: how the kernel's int8 features map to the reals the NN sees.
    #: Every snapshot must use it (the service rejects a snapshot quantized differently).
    input_encoding: Encoding = Encoding(scale=1.0 / 128.0, zero_point=0)

    @abc.abstractmethod
    def adapt(self, batch: Batch) -> None:
        """Tune the NN on one batch of collected samples."""

    @abc.abstractmethod
    def evaluate(self) -> float:
        """The stability metric after the last adapt (lower or higher, it only has to settle)."""

    @abc.abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """The NN's real-valued outputs [k, output_size] for real inputs x [k, input_size]."""

    @abc.abstractmethod
    def freeze(self, directory: Path) -> Path:
        """Save the NN as it is now under `directory`; return the saved file's path."""

    def snapshot_model(self, frozen: Path) -> Any:
        """What the snapshot toolchain quantizes: by default the frozen file itself.

        Return a Keras model object (faster than reloading the file), a model path, or a
        ready SnapshotSpec (no framework at all: the service then skips quantization).
        """
        return frozen

    def warm_up(self) -> None:
        """Called once before the service reports ready. Pay one-time costs here (a framework
        tracing its functions on first use) so that they fall before the datapath carries
        traffic, not in its first minute. Must leave the NN and its training state as they were."""

    def close(self) -> None:
        """Called once when the service stops."""
