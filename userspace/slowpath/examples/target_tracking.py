"""Example adapter (TensorFlow): track a target function of lf_test's inputs that changes mid-run.

lf_test queries its snapshot with random int8 features. Here a feature q means the real
x = q / 128 (the adapter's `input_encoding`), and the "right answer" for x is a target function
known to this example:

    target "A":  y = 0.8 * tanh(x . w)        target "B":  y = 0.8 * tanh(-x . w)

(w a fixed random vector; B is A with every coefficient flipped). The adapter labels the inputs
it receives with the target in force when they arrive, keeps the latest `buffer` labelled samples
and fits its Keras MLP (30-32-16-1, tanh) on them each round; the stability metric is the
training MSE. The target switches when the `control_file` says so (its content: "A" or "B"), or
after `switch_after_s` seconds / `switch_after_samples` samples.

Only numpy is imported at module import, so drivers can use `target()` without TensorFlow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from userspace.slowpath.interface import Adapter, Batch, Encoding

INPUT_SIZE = 30
OUTPUT_SIZE = 1
INPUT_ENCODING = Encoding(scale=1.0 / 128.0, zero_point=0)
LAYERS = [INPUT_SIZE, 32, 16, OUTPUT_SIZE]
ACTIVATIONS = ["tanh", "tanh", "linear"]


def weights(seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=INPUT_SIZE) * 1.5 / np.sqrt(INPUT_SIZE)


def target(name: str, x: np.ndarray, seed: int = 7) -> np.ndarray:
    """The target function `name` ("A" or "B") on real inputs x [k, 30] -> [k, 1]."""
    sign = {"A": 1.0, "B": -1.0}[name]
    return (0.8 * np.tanh(sign * (np.asarray(x, np.float64) @ weights(seed))))[:, None]


def build_model(seed: int = 0) -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(shape=(INPUT_SIZE,), name="features")
    h = inputs
    for i, (units, act) in enumerate(zip(LAYERS[1:], ACTIVATIONS)):
        h = tf.keras.layers.Dense(units, activation=act, name=f"dense{i}")(h)
    return tf.keras.Model(inputs, h, name="target_tracking")


def compile_model(model: Any, learning_rate: float) -> Any:
    import tensorflow as tf

    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def train_initial(target_name: str = "A", samples: int = 8192, epochs: int = 40, seed: int = 0) -> Any:
    """A model trained offline on `target_name` (the first snapshot; drivers call it on the host)."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-128, 128, (samples, INPUT_SIZE))
    x = INPUT_ENCODING.to_real(q)
    model = compile_model(build_model(seed), 0.01)
    model.fit(x, target(target_name, x), epochs=epochs, batch_size=128, verbose=0)
    return model


class TargetTracking(Adapter):
    input_encoding = INPUT_ENCODING

    def __init__(self, initial_model: str | None = None, control_file: str | None = None,
                 initial_target: str = "A", switch_after_s: float | None = None,
                 switch_after_samples: int | None = None, buffer: int = 2048, epochs: int = 3,
                 batch_size: int = 256, learning_rate: float = 0.01, seed: int = 0):
        import tensorflow as tf  # once, here: ~80 s under TCG

        self.tf = tf
        self.control_file = Path(control_file) if control_file else None
        self.initial_target = initial_target
        self.switch_after_s, self.switch_after_samples = switch_after_s, switch_after_samples
        self.started = time.monotonic()
        self.samples_seen = 0
        self.buffer = buffer
        self.epochs, self.batch_size = epochs, batch_size
        self.x = np.zeros((0, INPUT_SIZE), np.float32)
        self.y = np.zeros((0, OUTPUT_SIZE), np.float32)
        self.loss = float("nan")
        self.freezes = 0
        if initial_model:
            model = tf.keras.models.load_model(initial_model, compile=False)
        else:
            model = train_initial(initial_target, samples=2048, epochs=10, seed=seed)
        self.model = compile_model(model, learning_rate)

    def current_target(self) -> str:
        if self.control_file is not None and self.control_file.exists():
            text = self.control_file.read_text().strip()
            if text in ("A", "B"):
                return text
        flip = {"A": "B", "B": "A"}[self.initial_target]
        if self.switch_after_s is not None and time.monotonic() - self.started >= self.switch_after_s:
            return flip
        if self.switch_after_samples is not None and self.samples_seen >= self.switch_after_samples:
            return flip
        return self.initial_target

    def adapt(self, batch: Batch) -> None:
        name = self.current_target()
        x = batch.x.astype(np.float32)
        self.samples_seen += len(x)
        self.x = np.concatenate([self.x, x])[-self.buffer:]
        self.y = np.concatenate([self.y, target(name, x).astype(np.float32)])[-self.buffer:]
        history = self.model.fit(self.x, self.y, epochs=self.epochs, batch_size=self.batch_size,
                                 shuffle=True, verbose=0)
        self.loss = float(history.history["loss"][-1])
        self.target_name = name

    def evaluate(self) -> float:
        return self.loss

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model(np.asarray(x, np.float32), training=False).numpy()

    def freeze(self, directory: Path) -> Path:
        self.freezes += 1
        path = Path(directory) / f"target_tracking-{self.freezes:04d}.keras"
        self.model.save(path)
        return path

    def snapshot_model(self, frozen: Path) -> Any:
        return self.model  # the live object: no reload (the frozen file is its exact copy)
