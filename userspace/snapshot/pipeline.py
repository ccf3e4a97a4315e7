"""Keras model -> (TFLite bytes, SnapshotSpec): the steps every consumer of a snapshot shares.

The slow path (C module or hot-update blob), verify() and the tests all need the same thing: a
checked model, quantized once, read into a spec whose layer names are the Keras names (so the
generated C's comments say which layer is which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .check import check_model
from .quantize import DEFAULT_INPUT_RANGE, DEFAULT_SEED, load_keras, quantize
from .spec import SnapshotSpec, read_spec


@dataclass
class Snapshot:
    """A quantized model and its spec."""

    tflite: bytes
    spec: SnapshotSpec


def build_snapshot(model: Any, *, data: np.ndarray | None = None,
                   input_range: tuple[float, float] = DEFAULT_INPUT_RANGE,
                   seed: int = DEFAULT_SEED) -> Snapshot:
    """Check (SnapshotError before any conversion), quantize and read a Keras model."""
    keras_model = load_keras(model)
    summary = check_model(keras_model)
    tflite = quantize(keras_model, data=data, input_range=input_range, seed=seed)
    return Snapshot(tflite, read_spec(tflite, names=list(summary.names)))
