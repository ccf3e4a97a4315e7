"""Keras MLPs named by experiments and tests (seeded, so a run's snapshot is reproducible)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def dense_model(units: Sequence[int], activations: Sequence[str], seed: int, name: str = "mlp") -> Any:
    """A Sequential MLP: units[0] inputs, then one Dense per further entry with its activation."""
    import tensorflow as tf

    if len(activations) != len(units) - 1:
        raise ValueError(f"{name}: {len(units) - 1} layers need {len(units) - 1} activations, got {len(activations)}")
    tf.keras.utils.set_random_seed(seed)
    layers: list[Any] = [tf.keras.Input((units[0],))]
    for index, (width, activation) in enumerate(zip(units[1:], activations)):
        layers.append(tf.keras.layers.Dense(width, activation=activation, name=f"{name}_dense_{index}"))
    return tf.keras.Sequential(layers, name=name)
