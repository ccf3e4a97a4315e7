"""The snapshot spec: what a quantized TFLite model computes, in the engine's terms.

The spec is read from the TFLite interpreter's own tensors (weights, per-channel scales, zero
points), so the kernel runs exactly the numbers TFLite runs.  Three things are derived here, each
the way TFLite derives it at Prepare time, because bit-exactness depends on it:

* the Q31 multiplier and shift per output channel (tflite::QuantizeMultiplier on
  double(input_scale) * double(weight_scale) / double(output_scale)), applied with TFLite's
  single rounding (TF 2.21's interpreter is built with TFLITE_SINGLE_ROUNDING: measured, the
  gemmlowp double rounding disagrees with it on 1-6 % of inputs);
* the fused-activation clamp (CalculateActivationRangeQuantized: RELU clamps at the output zero
  point);
* the 256-entry TANH / LOGISTIC table, computed as TFLite's PopulateLookupTable does: float32
  arithmetic, libm's tanhf / expf, roundf (ties away from zero), clamp to int8.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import SnapshotError

LF_MAX_LAYERS = 8
LF_MAX_UNITS = 256
LF_ACT_TABLE_SIZE = 256
LF_MULTIPLIER_FRAC_BITS = 31
LF_MAX_SHIFT = 30
LF_MIN_SHIFT = -31

# enum lf_activation in lf_engine.h
ACT_LINEAR, ACT_RELU, ACT_TANH, ACT_SIGMOID = 0, 1, 2, 3
ACTIVATION_NAMES = {ACT_LINEAR: "linear", ACT_RELU: "relu", ACT_TANH: "tanh",
                    ACT_SIGMOID: "sigmoid"}

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class Quant:
    """real = (q - zero_point) * scale; scale also as Q31 multiplier/shift (struct lf_quant)."""

    zero_point: int
    scale: float
    multiplier: int
    shift: int

    @classmethod
    def from_scale(cls, scale: float, zero_point: int) -> "Quant":
        m, s = quantize_multiplier(float(scale))
        return cls(int(zero_point), float(scale), m, s)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Floats to int8 as TFLite's QUANTIZE does (round half away from zero, saturate)."""
        q = np.asarray(x, np.float64) / self.scale
        q = np.sign(q) * np.floor(np.abs(q) + 0.5) + self.zero_point
        return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


@dataclass
class LayerSpec:
    """One fully connected layer (struct lf_layer) plus the reals it came from, for comments."""

    name: str
    in_units: int
    out_units: int
    activation: int
    input_zero_point: int
    output_zero_point: int
    act_min: int
    act_max: int
    weights: np.ndarray            # int8 [out, in]
    bias: np.ndarray               # int32 [out]
    multiplier: np.ndarray         # int32 [out], Q31
    shift: np.ndarray              # int32 [out]
    act_table: np.ndarray | None   # int8 [256] indexed by q + 128
    input_scale: float = 0.0
    weight_scales: np.ndarray = field(default_factory=lambda: np.zeros(0))
    output_scale: float = 0.0      # of the FULLY_CONNECTED output (before the table)
    result_scale: float = 0.0      # of the layer's result (after the table, if any)
    result_zero_point: int = 0

    @property
    def activation_name(self) -> str:
        return ACTIVATION_NAMES[self.activation]


@dataclass
class SnapshotSpec:
    """A whole snapshot (struct lf_snapshot_spec)."""

    input_size: int
    output_size: int
    input_quant: Quant
    output_quant: Quant
    layers: list[LayerSpec]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def macs(self) -> int:
        return sum(l.in_units * l.out_units for l in self.layers)


# ---------------------------------------------------------------------------------------------
# TFLite's Prepare-time arithmetic


def tflite_round(x: float) -> int:
    """TfLiteRound / std::round: half away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """tflite::QuantizeMultiplier: real = m * 2^(shift - 31), m in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = tflite_round(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if shift > LF_MAX_SHIFT:
        # TFLITE_SINGLE_ROUNDING build: the total right shift 31 - shift must stay >= 1
        shift, q_fixed = LF_MAX_SHIFT, (1 << 31) - 1
    return int(q_fixed), int(shift)


_libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
_libm.tanhf.restype = ctypes.c_float
_libm.tanhf.argtypes = [ctypes.c_float]
_libm.expf.restype = ctypes.c_float
_libm.expf.argtypes = [ctypes.c_float]
_libm.roundf.restype = ctypes.c_float
_libm.roundf.argtypes = [ctypes.c_float]


def _tanh_f32(x: np.float32) -> np.float32:
    return np.float32(_libm.tanhf(x))


def _sigmoid_f32(x: np.float32) -> np.float32:
    # 1.0f / (1.0f + std::exp(-value)), every step in float32
    return np.float32(np.float32(1.0) / (np.float32(1.0) + np.float32(_libm.expf(-x))))


def activation_table(activation: int, input_scale: float, input_zero_point: int,
                     output_scale: float, output_zero_point: int) -> np.ndarray:
    """The int8 table TFLite's PopulateLookupTable builds for TANH/LOGISTIC, indexed by q + 128.

    TFLite computes it in float32 with libm (tanhf, expf) and roundf; numpy's own float32 tanh
    is a different implementation that may differ in the last ulp, so we call libm via ctypes and
    keep every intermediate in np.float32 (IEEE single, like the C code on x86-64 SSE).
    """
    transform = {ACT_TANH: _tanh_f32, ACT_SIGMOID: _sigmoid_f32}[activation]
    in_scale = np.float32(input_scale)
    inverse_scale = np.float32(np.float32(1.0) / np.float32(output_scale))
    table = np.zeros(LF_ACT_TABLE_SIZE, np.int8)
    with np.errstate(over="ignore"):
        for val in range(INT8_MIN, INT8_MAX + 1):
            dequantized = np.float32(in_scale * np.float32(val - input_zero_point))
            transformed = transform(dequantized)
            rescaled = np.float32(_libm.roundf(np.float32(transformed * inverse_scale)))
            quantized = int(rescaled) + output_zero_point
            table[val - INT8_MIN] = max(INT8_MIN, min(INT8_MAX, quantized))
    return table


# ---------------------------------------------------------------------------------------------
# Reading a TFLite model


def _fused_activations(tflite_model: bytes) -> list[int]:
    """Fused activation function code of each operator, from the flatbuffer's op options.

    The interpreter's Python API does not expose builtin options, so we read them from the
    model with TFLite's generated schema module (0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6, ...).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite_model, 0))
    ops = model.subgraphs[0].operators or []
    out = []
    for op in ops:
        opts = op.builtinOptions
        out.append(int(getattr(opts, "fusedActivationFunction", 0) or 0))
    return out


_FUSED_NONE, _FUSED_RELU = 0, 1


def read_spec(tflite_model: bytes, names: list[str] | None = None) -> SnapshotSpec:
    """Read the snapshot spec of a full-integer TFLite model made by quantize.quantize.

    Accepted graph: FULLY_CONNECTED ops in a chain, each optionally followed by a TANH or
    LOGISTIC op, int8 everywhere.  Anything else raises SnapshotError naming the op.
    """
    import tensorflow as tf

    interp = tf.lite.Interpreter(
        model_content=tflite_model,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = [op for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"]
    fused = _fused_activations(tflite_model)
    if len(fused) != len(ops):
        raise SnapshotError("model: operator count differs between flatbuffer and interpreter")

    def quant_of(index: int) -> tuple[np.ndarray, np.ndarray]:
        qp = tensors[index]["quantization_parameters"]
        return np.asarray(qp["scales"], np.float32), np.asarray(qp["zero_points"], np.int64)

    def scalar_quant(index: int, what: str) -> tuple[float, int]:
        scales, zps = quant_of(index)
        if tensors[index]["dtype"] != np.int8 or scales.size != 1:
            raise SnapshotError(f"{what}: tensor {tensors[index]['name']!r} is not per-tensor int8")
        return float(scales[0]), int(zps[0])

    inputs = interp.get_input_details()
    outputs = interp.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise SnapshotError("model: needs exactly one input and one output tensor")
    current = inputs[0]["index"]
    in_scale, in_zp = scalar_quant(current, "model input")
    input_quant = Quant.from_scale(in_scale, in_zp)

    layers: list[LayerSpec] = []
    i = 0
    while i < len(ops):
        op = ops[i]
        where = f"op {i} {op['op_name']}"
        if op["op_name"] != "FULLY_CONNECTED":
            raise SnapshotError(f"{where}: unsupported TFLite op (expected FULLY_CONNECTED)")
        idx = [int(x) for x in op["inputs"]]
        if idx[0] != current:
            raise SnapshotError(f"{where}: not chained to the previous layer's output")
        w_t = tensors[idx[1]]
        weights = interp.get_tensor(idx[1]).astype(np.int8)
        if w_t["dtype"] != np.int8 or weights.ndim != 2:
            raise SnapshotError(f"{where}: weights are not a 2-D int8 tensor")
        out_units, in_units = weights.shape
        w_scales, w_zps = quant_of(idx[1])
        if np.any(w_zps != 0):
            raise SnapshotError(f"{where}: weights are not symmetrically quantized")
        if w_scales.size == 1:
            w_scales = np.repeat(w_scales, out_units)
        if w_scales.size != out_units:
            raise SnapshotError(f"{where}: {w_scales.size} weight scales for {out_units} channels")
        if len(idx) > 2 and idx[2] >= 0:
            bias = interp.get_tensor(idx[2]).astype(np.int64).reshape(-1)
            if bias.size != out_units:
                raise SnapshotError(f"{where}: bias has {bias.size} entries, {out_units} expected")
        else:
            bias = np.zeros(out_units, np.int64)  # the converter drops all-zero biases
        layer_in_scale, layer_in_zp = scalar_quant(idx[0], where)
        out_index = int(op["outputs"][0])
        out_scale, out_zp = scalar_quant(out_index, where)

        mult = np.zeros(out_units, np.int64)
        shift = np.zeros(out_units, np.int64)
        for o in range(out_units):
            real = float(np.float32(layer_in_scale)) * float(w_scales[o]) / float(np.float32(out_scale))
            mult[o], shift[o] = quantize_multiplier(real)

        act_code = fused[i]
        if act_code == _FUSED_NONE:
            activation, act_min, act_max = ACT_LINEAR, INT8_MIN, INT8_MAX
        elif act_code == _FUSED_RELU:
            # CalculateActivationRangeQuantized: max(qmin, zp + round(0 / scale))
            activation, act_min, act_max = ACT_RELU, max(INT8_MIN, out_zp), INT8_MAX
        else:
            raise SnapshotError(f"{where}: fused activation {act_code} unsupported")

        table = None
        res_scale, res_zp = out_scale, out_zp
        current = out_index
        if i + 1 < len(ops) and ops[i + 1]["op_name"] in ("TANH", "LOGISTIC"):
            nxt = ops[i + 1]
            if int(nxt["inputs"][0]) != out_index or act_code != _FUSED_NONE:
                raise SnapshotError(f"op {i + 1} {nxt['op_name']}: does not follow a plain FULLY_CONNECTED")
            activation = ACT_TANH if nxt["op_name"] == "TANH" else ACT_SIGMOID
            current = int(nxt["outputs"][0])
            res_scale, res_zp = scalar_quant(current, f"op {i + 1} {nxt['op_name']}")
            table = activation_table(activation, out_scale, out_zp, res_scale, res_zp)
            i += 1
        i += 1
        if np.any(bias < INT32_MIN) or np.any(bias > INT32_MAX):
            raise SnapshotError(f"{where}: bias outside int32")
        name = names[len(layers)] if names and len(layers) < len(names) else f"layer{len(layers)}"
        layers.append(LayerSpec(
            name=name, in_units=int(in_units), out_units=int(out_units), activation=activation,
            input_zero_point=layer_in_zp, output_zero_point=out_zp, act_min=act_min,
            act_max=act_max, weights=weights, bias=bias.astype(np.int32),
            multiplier=mult.astype(np.int32), shift=shift.astype(np.int32), act_table=table,
            input_scale=layer_in_scale, weight_scales=w_scales.astype(np.float64),
            output_scale=out_scale, result_scale=res_scale, result_zero_point=res_zp))

    if current != outputs[0]["index"]:
        raise SnapshotError("model: the last layer's output is not the model output")
    out_scale, out_zp = scalar_quant(current, "model output")
    spec = SnapshotSpec(input_size=layers[0].in_units if layers else 0,
                        output_size=layers[-1].out_units if layers else 0,
                        input_quant=input_quant, output_quant=Quant.from_scale(out_scale, out_zp),
                        layers=layers)
    check_spec(spec)
    return spec


def check_spec(spec: SnapshotSpec) -> None:
    """The limits and chaining lf_engine_validate enforces, checked before C or blob is made."""
    if not 1 <= spec.num_layers <= LF_MAX_LAYERS:
        raise SnapshotError(f"model: {spec.num_layers} layers, 1..{LF_MAX_LAYERS} supported")
    width = spec.input_size
    for n, l in enumerate(spec.layers):
        where = f"layer {n} {l.name!r}"
        if l.in_units != width:
            raise SnapshotError(f"{where}: {l.in_units} inputs, previous width {width}")
        if not (1 <= l.in_units <= LF_MAX_UNITS and 1 <= l.out_units <= LF_MAX_UNITS):
            raise SnapshotError(f"{where}: {l.in_units}x{l.out_units} exceeds LF_MAX_UNITS={LF_MAX_UNITS}")
        if not INT8_MIN <= l.act_min <= l.act_max <= INT8_MAX:
            raise SnapshotError(f"{where}: clamp [{l.act_min}, {l.act_max}] outside int8")
        if np.any(l.shift > LF_MAX_SHIFT) or np.any(l.shift < LF_MIN_SHIFT) or np.any(l.multiplier < 0):
            raise SnapshotError(f"{where}: requantization multiplier out of range")
        width = l.out_units
    if width != spec.output_size:
        raise SnapshotError(f"model: output size {spec.output_size} != last layer width {width}")


# ---------------------------------------------------------------------------------------------
# A numpy model of the engine, for diagnosing mismatches (the engine itself is the C library)


def _srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    # C integer division truncates toward zero
    res = np.where(v >= 0, v >> 31, -((-v) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, res)


def _rdbypot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, rounding: str = "single") -> np.ndarray:
    """MultiplyByQuantizedMultiplier: TFLITE_SINGLE_ROUNDING (what TF 2.21 runs) or the
    gemmlowp double rounding (kept to show, in tests, that the choice matters)."""
    acc = acc.astype(np.int64)
    mult = mult.astype(np.int64)
    shift = shift.astype(np.int64)
    if rounding == "single":
        total = 31 - shift
        return (acc * mult + (np.int64(1) << (total - 1))) >> total
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = ((acc << left) + 2**31) % 2**32 - 2**31  # int32 wrap-around, as in C
    return _rdbypot(_srdhm(shifted, mult), right)


def reference_infer(spec: SnapshotSpec, x: np.ndarray, rounding: str = "single") -> np.ndarray:
    """int8 [n, in] -> int8 [n, out], the engine's arithmetic in numpy."""
    h = np.asarray(x, np.int64).reshape(-1, spec.input_size)
    for l in spec.layers:
        acc = (h - l.input_zero_point) @ l.weights.astype(np.int64).T + l.bias.astype(np.int64)
        q = requantize(acc, l.multiplier[None, :], l.shift[None, :], rounding) + l.output_zero_point
        q = np.clip(q, l.act_min, l.act_max)
        if l.act_table is not None:
            q = l.act_table.astype(np.int64)[q + 128]
        h = q
    return h.astype(np.int8)
