"""Random dense networks within the engine's limits, for property-style tests.

Hand-picked test models miss corner cases (a one-unit layer, sigmoid after linear, wide weights
that saturate); drawing architectures and weight scales at random, seeded, covers them and
stays reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .check import SUPPORTED_ACTIVATIONS
from .spec import (ACT_RELU, ACT_SIGMOID, ACT_TANH, LayerSpec, Quant, SnapshotSpec,
                   quantize_multiplier)

MAX_RANDOM_LAYERS = 5
MAX_RANDOM_UNITS = 128


def random_architecture(seed: int, max_layers: int = MAX_RANDOM_LAYERS,
                        max_units: int = MAX_RANDOM_UNITS) -> tuple[int, list[int], list[str]]:
    """(input_size, units per layer, activation per layer), seeded."""
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(1, max_layers + 1))
    input_size = int(rng.integers(1, max_units + 1))
    units = [int(rng.integers(1, max_units + 1)) for _ in range(n_layers)]
    acts = [str(rng.choice(SUPPORTED_ACTIVATIONS)) for _ in range(n_layers)]
    return input_size, units, acts


def random_dense_model(seed: int, max_layers: int = MAX_RANDOM_LAYERS,
                       max_units: int = MAX_RANDOM_UNITS) -> Any:
    """A Keras Sequential of 1..max_layers Dense layers (1..max_units units, mixed activations).

    Weight and bias scales are drawn per layer so some layers saturate and some barely move.
    """
    import tensorflow as tf

    input_size, units, acts = random_architecture(seed, max_layers, max_units)
    rng = np.random.default_rng(seed + 1)
    tf.keras.utils.set_random_seed(seed)
    layers: list[Any] = [tf.keras.Input((input_size,))]
    fan_in = input_size
    for n, (u, a) in enumerate(zip(units, acts)):
        gain = float(rng.uniform(0.3, 3.0))
        layers.append(tf.keras.layers.Dense(
            u, activation=a, name=f"dense_{n}",
            kernel_initializer=tf.keras.initializers.RandomNormal(
                stddev=gain / np.sqrt(fan_in), seed=seed + n),
            bias_initializer=tf.keras.initializers.RandomNormal(
                stddev=float(rng.uniform(0.0, 0.5)), seed=seed + 100 + n)))
        fan_in = u
    return tf.keras.Sequential(layers, name=f"random_{seed}")


def random_spec(seed: int, sizes: list[int] | None = None) -> SnapshotSpec:
    """A synthetic but valid spec (no TensorFlow needed) for blob and engine tests."""
    rng = np.random.default_rng(seed)
    if sizes is None:
        sizes = [int(rng.integers(1, 65)) for _ in range(int(rng.integers(2, 6)))]
    layers = []
    in_zp = int(rng.integers(-128, 128))
    for n, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        act = int(rng.integers(0, 4))
        out_zp = int(rng.integers(-128, 128))
        mult, shift = zip(*(quantize_multiplier(float(s))
                            for s in rng.uniform(1e-4, 2e-2, o)))
        table = rng.integers(-128, 128, 256).astype(np.int8) if act in (ACT_TANH, ACT_SIGMOID) else None
        layers.append(LayerSpec(
            name=f"l{n}", in_units=i, out_units=o, activation=act, input_zero_point=in_zp,
            output_zero_point=out_zp, act_min=out_zp if act == ACT_RELU else -128, act_max=127,
            weights=rng.integers(-127, 128, (o, i)).astype(np.int8),
            bias=rng.integers(-20000, 20000, o).astype(np.int32),
            multiplier=np.array(mult, np.int32), shift=np.array(shift, np.int32),
            act_table=table))
        in_zp = 0 if act == ACT_TANH else (-128 if act == ACT_SIGMOID else out_zp)
    return SnapshotSpec(sizes[0], sizes[-1], Quant.from_scale(0.01, 3), Quant.from_scale(0.05, -2),
                        layers)
