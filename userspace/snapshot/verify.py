"""Bit-exactness of the kernel engine against tf.lite.Interpreter, and an example model.

The snapshot contract is "the kernel computes exactly what TFLite computes".  verify() checks
it end to end the way the kernel will see the model: Keras model -> TFLite -> spec -> weight
blob -> lf_engine_parse_blob -> lf_engine_infer (the kernel's C, built for user space), against
the TFLite interpreter on the same int8 inputs.

Which interpreter: TFLite's built-in int8 kernels (OpResolverType.BUILTIN_REF) define the
arithmetic — fixed-point requantization with single rounding — and the engine must match them
bit for bit.  Python's default interpreter additionally hands the graph to the XNNPACK delegate,
which requantizes in float32 (float(acc) * float(scale), round half to even); measured, that
moves one output by one step on roughly 0.05 % of vectors.  verify() reports both; only the
first is the contract.
Inputs are the representative range quantized with the model's input parameters, plus the int8
extremes, which exercise saturation and the ends of the activation tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .blob import write_blob
from .engine import Engine
from .pipeline import Snapshot, build_snapshot
from .quantize import DEFAULT_INPUT_RANGE
from .spec import INT8_MAX, INT8_MIN, SnapshotSpec

EXTREME_FRACTION = 0.02
"""Share of input entries replaced by -128 or 127 (besides two all-extreme rows)."""

MAX_REPORTED_MISMATCHES = 10


@dataclass
class Mismatch:
    index: int
    input: np.ndarray
    engine: np.ndarray
    tflite: np.ndarray


@dataclass
class VerifyResult:
    """k of n inputs bit-exact, the largest int8 difference, and the first mismatches.

    `exact`/`max_abs_diff` compare against TFLite's built-in kernels (the contract);
    `default_exact`/`default_max_abs_diff` against the default (XNNPACK) interpreter.
    """

    samples: int
    exact: int
    max_abs_diff: int
    mismatches: list[Mismatch] = field(default_factory=list)
    spec: SnapshotSpec | None = None
    default_exact: int | None = None
    default_max_abs_diff: int | None = None

    @property
    def bit_exact(self) -> bool:
        return self.exact == self.samples

    def __str__(self) -> str:
        extra = ("" if self.default_exact is None else
                 f" (default XNNPACK interpreter: {self.default_exact}/{self.samples}, "
                 f"max |diff| {self.default_max_abs_diff})")
        return (f"{self.exact}/{self.samples} bit-exact, max |diff| {self.max_abs_diff}{extra}"
                + "".join(f"\n  #{m.index}: engine {m.engine.tolist()} tflite {m.tflite.tolist()}"
                          for m in self.mismatches))


def sample_inputs(spec: SnapshotSpec, samples: int, seed: int,
                  input_range: tuple[float, float] = DEFAULT_INPUT_RANGE) -> np.ndarray:
    """int8 [samples, input_size]: the range quantized, sprinkled with the int8 extremes."""
    rng = np.random.default_rng(seed)
    low, high = input_range
    x = spec.input_quant.quantize(rng.uniform(low, high, (samples, spec.input_size)))
    extreme = rng.random(x.shape) < EXTREME_FRACTION
    x[extreme] = rng.choice(np.array([INT8_MIN, INT8_MAX], np.int8), size=int(extreme.sum()))
    if samples >= 2:
        x[0, :] = INT8_MIN
        x[1, :] = INT8_MAX
    return x


def tflite_infer(tflite: bytes, x: np.ndarray, kernels: str = "builtin") -> np.ndarray:
    """The TFLite interpreter on a batch of int8 inputs.

    kernels="builtin": TFLite's built-in reference kernels (the contract); "default": the
    interpreter as Python users get it (XNNPACK delegate).
    """
    import tensorflow as tf

    resolver = {"builtin": tf.lite.experimental.OpResolverType.BUILTIN_REF,
                "default": tf.lite.experimental.OpResolverType.AUTO}[kernels]
    interp = tf.lite.Interpreter(model_content=tflite, experimental_op_resolver_type=resolver)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.ascontiguousarray(x, np.int8))
    interp.invoke()
    return np.array(interp.get_tensor(out["index"]))


def compare(engine_out: np.ndarray, tflite_out: np.ndarray, x: np.ndarray,
            spec: SnapshotSpec | None = None) -> VerifyResult:
    """Row-wise comparison of two int8 output batches."""
    diff = np.abs(engine_out.astype(np.int32) - tflite_out.astype(np.int32))
    row_ok = (diff == 0).all(axis=1)
    bad = np.flatnonzero(~row_ok)[:MAX_REPORTED_MISMATCHES]
    return VerifyResult(
        samples=len(x), exact=int(row_ok.sum()), max_abs_diff=int(diff.max(initial=0)),
        mismatches=[Mismatch(int(i), x[i], engine_out[i], tflite_out[i]) for i in bad], spec=spec)


def verify_snapshot(snap: Snapshot, samples: int = 2000, seed: int = 0,
                    input_range: tuple[float, float] = DEFAULT_INPUT_RANGE) -> VerifyResult:
    """Engine (through the weight blob) vs the TFLite interpreter on one quantized model."""
    engine = Engine.from_blob(write_blob(snap.spec))
    x = sample_inputs(snap.spec, samples, seed, input_range)
    y = engine.infer(x)
    result = compare(y, tflite_infer(snap.tflite, x, "builtin"), x, snap.spec)
    default = compare(y, tflite_infer(snap.tflite, x, "default"), x)
    result.default_exact, result.default_max_abs_diff = default.exact, default.max_abs_diff
    return result


def verify(model: Any, samples: int = 2000, seed: int = 0, *,
           input_range: tuple[float, float] = DEFAULT_INPUT_RANGE,
           data: np.ndarray | None = None) -> VerifyResult:
    """Quantize a Keras model (path or object) and check the engine bit for bit against TFLite."""
    snap = build_snapshot(model, data=data, input_range=input_range)
    return verify_snapshot(snap, samples, seed, input_range)


def example_model(path: Path | str, seed: int = 0) -> Path:
    """Write the Aurora-sized example model (example_keras_model) to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example_keras_model(seed).save(path)
    return path


def example_keras_model(seed: int = 0) -> Any:
    """An Aurora-sized example (30 -> 32 tanh -> 16 tanh -> 1 linear), seeded.

    Aurora (PCC-RL, ICML 2019) is the congestion-control NN the LiteFlow paper deploys; its
    shape is the reference workload for the engine.  The weights are random (the toolchain does
    not care whether a model is trained); biases are non-zero so the bias path is exercised.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    init_b = tf.keras.initializers.RandomNormal(stddev=0.2, seed=seed)
    model = tf.keras.Sequential([
        tf.keras.Input((30,), name="features"),
        tf.keras.layers.Dense(32, activation="tanh", bias_initializer=init_b, name="hidden1"),
        tf.keras.layers.Dense(16, activation="tanh", bias_initializer=init_b, name="hidden2"),
        tf.keras.layers.Dense(1, activation="linear", bias_initializer=init_b, name="action"),
    ], name="aurora")
    return model
