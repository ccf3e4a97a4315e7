"""Keras model -> TFLite full-integer model bytes.

The kernel runs integer-only arithmetic, so the snapshot must be quantized the way TFLite's
full-integer converter does it (int8 weights per channel, int32 bias, int8 activations and an
int8 input/output).  The converter needs a representative dataset to calibrate activation
ranges; when the caller has none we draw inputs uniformly from a documented range, which is
what the apps' feature scaling targets (features are normalised to about [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .check import check_model

DEFAULT_INPUT_RANGE: tuple[float, float] = (-1.0, 1.0)
"""Representative inputs are drawn uniformly from this range unless the caller gives data."""

DEFAULT_CALIBRATION_SAMPLES = 256
DEFAULT_SEED = 0


def load_keras(model: Any) -> Any:
    """A Keras model from a path (.keras/.h5) or the model object itself."""
    if isinstance(model, (str, Path)):
        import tensorflow as tf

        return tf.keras.models.load_model(str(model), compile=False)
    return model


def representative_dataset(
    input_size: int,
    *,
    data: np.ndarray | None = None,
    input_range: tuple[float, float] = DEFAULT_INPUT_RANGE,
    samples: int = DEFAULT_CALIBRATION_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> Callable[[], Iterable[list[np.ndarray]]]:
    """A generator factory in the form TFLiteConverter.representative_dataset expects.

    With `data` ([n, input_size]) the given rows are used; otherwise `samples` rows uniform over
    `input_range`, seeded so the same model always quantizes to the same snapshot.
    """
    if data is not None:
        rows = np.asarray(data, dtype=np.float32).reshape(-1, input_size)
    else:
        low, high = input_range
        rng = np.random.default_rng(seed)
        rows = rng.uniform(low, high, size=(samples, input_size)).astype(np.float32)
    # The range's end points make the calibrated input scale cover the whole range.
    if data is None:
        rows = np.concatenate([rows, np.full((1, input_size), input_range[0], np.float32),
                               np.full((1, input_size), input_range[1], np.float32)])

    def gen() -> Iterable[list[np.ndarray]]:
        for row in rows:
            yield [row.reshape(1, input_size)]

    return gen


def quantize(
    model: Any,
    *,
    data: np.ndarray | None = None,
    input_range: tuple[float, float] = DEFAULT_INPUT_RANGE,
    samples: int = DEFAULT_CALIBRATION_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> bytes:
    """Full-integer TFLite model bytes for a supported Keras model.

    The model is checked first (check.check_model) so an unsupported one fails with a
    SnapshotError before the (slow) converter runs.
    """
    import tensorflow as tf

    keras_model = load_keras(model)
    summary = check_model(keras_model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen_forward(tf, keras_model, summary.input_size)])
    full_integer(converter, representative_dataset(
        summary.input_size, data=data, input_range=input_range, samples=samples, seed=seed))
    return bytes(converter.convert())


def full_integer(converter: Any, dataset: Callable[[], Iterable[list[np.ndarray]]]) -> Any:
    """Set a TFLite converter to full-integer int8 (int8 input and output), calibrated on `dataset`."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter


def _frozen_forward(tf: Any, keras_model: Any, input_size: int) -> Any:
    """The model's inference as a concrete function with its weights as constants.

    The converter's Keras entry point exports a SavedModel and loads it back before converting:
    80% of a conversion's time, which the slow path pays at every update on the guest's vCPUs
    while the flows run. From this function the converter gives the same snapshot (checked bit
    for bit by tests/snapshot), in a third of the time.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    forward = tf.function(lambda x: keras_model(x, training=False))
    return convert_variables_to_constants_v2(
        forward.get_concrete_function(tf.TensorSpec([None, input_size], tf.float32)))
