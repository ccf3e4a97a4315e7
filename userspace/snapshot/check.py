"""Refuse models the kernel engine cannot run, before any conversion or compilation.

The engine (kernel/include/lf_engine.h) runs a chain of fully connected layers with linear,
ReLU, tanh or sigmoid activations, at most LF_MAX_LAYERS layers of at most LF_MAX_UNITS units
(the input counts as a layer's width too).  Anything else would either fail deep inside the
TFLite converter or, worse, produce ops the spec reader would silently misread; so we look at
the Keras model first and name the offending layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SnapshotError

# Mirrors of lf_engine.h; tests check them against the header.
LF_MAX_LAYERS = 8
LF_MAX_UNITS = 256

SUPPORTED_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid")


@dataclass(frozen=True)
class ModelSummary:
    """What the checker learned: the widths of the chain and each layer's activation."""

    input_size: int
    units: tuple[int, ...]
    activations: tuple[str, ...]
    names: tuple[str, ...]


def _activation_name(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    if act is None:
        return "linear"
    return getattr(act, "__name__", type(act).__name__)


def check_model(model: Any) -> ModelSummary:
    """Check a Keras model against the engine's limits; raise SnapshotError naming the layer."""
    import tensorflow as tf

    dense_cls = tf.keras.layers.Dense
    input_cls = tf.keras.layers.InputLayer
    if not isinstance(model, tf.keras.Model):
        raise SnapshotError(f"model: expected a Keras model, got {type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise SnapshotError(f"model {model.name!r}: needs exactly one input and one output")
    in_shape = tuple(model.inputs[0].shape)
    if len(in_shape) != 2 or in_shape[1] is None:
        raise SnapshotError(
            f"model {model.name!r}: input shape {in_shape} is not (batch, features)")
    input_size = int(in_shape[1])
    if input_size > LF_MAX_UNITS:
        raise SnapshotError(
            f"input layer: {input_size} features exceed LF_MAX_UNITS={LF_MAX_UNITS}")

    layers = [l for l in model.layers if not isinstance(l, input_cls)]
    if not layers:
        raise SnapshotError(f"model {model.name!r}: has no Dense layer")
    units: list[int] = []
    acts: list[str] = []
    names: list[str] = []
    width = input_size
    previous = None
    is_sequential = isinstance(model, tf.keras.Sequential)
    for index, layer in enumerate(layers):
        where = f"layer {index} {layer.name!r} ({type(layer).__name__})"
        if type(layer) is not dense_cls:
            raise SnapshotError(f"{where}: unsupported layer type, only Dense is supported")
        if not is_sequential:
            # A functional model must still be a plain chain: each layer eats the previous output.
            expected = model.inputs[0] if previous is None else previous.output
            if layer.input is not expected:
                raise SnapshotError(f"{where}: model is not a single chain of Dense layers")
        act = _activation_name(layer)
        if act not in SUPPORTED_ACTIVATIONS:
            raise SnapshotError(
                f"{where}: activation {act!r} unsupported (supported: {', '.join(SUPPORTED_ACTIVATIONS)})")
        kernel = np.asarray(layer.get_weights()[0]) if layer.get_weights() else None
        if kernel is None or kernel.ndim != 2:
            raise SnapshotError(f"{where}: has no 2-D kernel (is the model built?)")
        if kernel.shape[0] != width:
            raise SnapshotError(f"{where}: expects {kernel.shape[0]} inputs, previous width is {width}")
        out = int(kernel.shape[1])
        if out > LF_MAX_UNITS:
            raise SnapshotError(f"{where}: {out} units exceed LF_MAX_UNITS={LF_MAX_UNITS}")
        for w in layer.get_weights():
            if not np.all(np.isfinite(w)):
                bad = "NaN" if np.any(np.isnan(w)) else "infinite"
                raise SnapshotError(f"{where}: has {bad} weights")
        units.append(out)
        acts.append(act)
        names.append(layer.name)
        width = out
        previous = layer
    if len(layers) > LF_MAX_LAYERS:
        raise SnapshotError(
            f"layer {LF_MAX_LAYERS} {layers[LF_MAX_LAYERS].name!r}: {len(layers)} layers exceed "
            f"LF_MAX_LAYERS={LF_MAX_LAYERS}")
    return ModelSummary(input_size, tuple(units), tuple(acts), tuple(names))
