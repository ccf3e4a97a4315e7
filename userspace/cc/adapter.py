"""The slow path's adapter for lf_cc: keep imitating the teacher, online, from the kernel's samples.

Why this shape: offline, the network imitates an oracle that knows the link (train.py).  In the
guest nobody knows the link, but lf_cc ships with every sampled decision a `struct lf_cc_context`
-- what the MI after the decision measured (delivery rate, mean and least RTT against the
connection's minimum, losses, the pacing rate the decision set).  The online teacher (teacher.online_label)
turns that into the output the network should have given, with the same rule the oracle uses,
so adaptation continues the offline objective instead of starting a new one.  A few small
gradient steps per batch over a replay of recent samples keep it stable: the replay smooths over
one batch's flows, the small learning rate keeps the network near the offline solution.

Run it with
    python -m userspace.slowpath.serve --app lf_cc --adapter userspace.cc.adapter:CCAdapter

Batches without `contexts` (a kernel that does not send them) are skipped and counted.
TensorFlow is imported once, in the constructor (slow to import under TCG in the guest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from userspace.slowpath.interface import Adapter, Batch, Encoding

from . import features as F
from .context import parse_contexts
from .teacher import online_label

DEFAULT_MODEL = Path(__file__).resolve().parent / "model" / "cc.keras"


class CCAdapter(Adapter):
    """Online imitation of teacher.online_label on lf_cc's sampled (input, output, context)."""

    input_encoding = Encoding(scale=F.INPUT_SCALE, zero_point=0)
    REPLAY_ROWS = 1000    # replay rows a snapshot is calibrated on (a fresh pick per snapshot)

    def __init__(self, initial_model: str | None = None, learning_rate: float = 1e-4,
                 steps: int = 4, batch_size: int = 256, replay: int = 8192, seed: int = 0,
                 threads: int = 1):
        import tensorflow as tf  # once, here

        from .train import limit_threads, offline_states

        # the service shares the host's CPUs with the datapath it tunes (in the guest, two vCPUs)
        limit_threads(tf, threads)
        self.tf = tf
        tf.keras.utils.set_random_seed(seed)
        self.rng = np.random.default_rng(seed)
        model_path = Path(initial_model or DEFAULT_MODEL)
        self.model = tf.keras.models.load_model(str(model_path), compile=False)
        self.offline_states = offline_states(model_path)
        self.model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss="mse")
        self.steps, self.batch_size, self.replay = steps, batch_size, replay
        self.q = np.zeros((0, F.INPUTS), np.int8)      # replay: the kernel's int8 inputs
        self.y = np.zeros((0, F.OUTPUTS), np.float32)  # replay: the teacher's labels
        self.loss = float("nan")
        self.skipped = 0
        self.samples = 0
        self.freezes = 0

    def warm_up(self) -> None:
        """Run training, inference, saving and quantization once on dummy samples, then put the
        network and the optimizer's state back: in the TCG guest the first call of each took
        20-35 s of a vCPU (TensorFlow tracing), which the flows lost when it came during traffic.

        Training runs on two batch sizes: Keras traces its train step for the first shape it
        sees and again, shape-relaxed, for the second, so one size left a retrace (7.5 s of a
        vCPU in the guest) to the first real round."""
        import tempfile

        weights = self.model.get_weights()
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        state = [v.numpy() for v in optimizer.variables]
        for rows in (1, 2):
            x = np.zeros((rows, F.INPUTS), np.float32)
            self.model.train_on_batch(x, np.zeros((rows, F.OUTPUTS), np.float32))
        self.predict(x)
        for variable, value in zip(optimizer.variables, state):
            variable.assign(value)
        self.model.set_weights(weights)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "warm-up.keras"
            self.model.save(path)
            self.snapshot_model(path)

    def label(self, batch: Batch) -> tuple[np.ndarray, np.ndarray] | None:
        """(int8 inputs [k, 30], labels [k, 1]) for a batch, or None without contexts."""
        raw = getattr(batch, "contexts", None)
        if raw is None or len(raw) == 0:
            return None
        ctx = parse_contexts(raw)
        k = min(len(ctx), len(batch))
        q_in = np.asarray(batch.inputs, np.int8)[:k].reshape(k, F.INPUTS)
        q_out = np.asarray(batch.outputs, np.int8)[:k].reshape(k, -1)[:, 0]
        return q_in, online_label(ctx[:k], q_out).astype(np.float32)[:, None]

    def adapt(self, batch: Batch) -> None:
        labelled = self.label(batch)
        if labelled is None:
            self.skipped += 1
            return
        self.adapt_labelled(*labelled)

    def adapt_labelled(self, q_in: np.ndarray, y: np.ndarray) -> None:
        """One round on int8 inputs [k, 30] with their labels [k, 1], whoever labelled them (the
        online teacher here; the oracle when online.py asks what a perfect teacher would do)."""
        self.samples += len(q_in)
        self.q = np.concatenate([self.q, q_in])[-self.replay:]
        self.y = np.concatenate([self.y, y])[-self.replay:]
        x = F.to_real(self.q)
        for _ in range(self.steps):
            pick = self.rng.integers(0, len(x), min(self.batch_size, len(x)))
            self.model.train_on_batch(x[pick], self.y[pick])
        self.loss = self.imitation_loss()

    def imitation_loss(self) -> float:
        """MSE between the network and the teacher over the replay."""
        if not len(self.q):
            return float("nan")
        return float(np.mean((self.predict(F.to_real(self.q)) - self.y) ** 2))

    def evaluate(self) -> float:
        return self.loss

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model(np.asarray(x, np.float32), training=False).numpy()

    def freeze(self, directory: Path) -> Path:
        self.freezes += 1
        path = Path(directory) / f"cc-{self.freezes:04d}.keras"
        self.model.save(path)
        return path

    def snapshot_model(self, frozen: Path) -> Any:
        """A ready SnapshotSpec, quantized as train.py does: input pinned at scale 1/16 zero
        point 0, hidden layers calibrated on calibration_inputs()."""
        from .train import quantized_snapshot

        states = self.calibration_inputs()
        return quantized_snapshot(self.model, states if len(states) else None).spec

    def calibration_inputs(self) -> np.ndarray:
        """The int8 states a snapshot's hidden layers are calibrated on: the committed network's
        offline calibration states and a pick of the replay (the kernel's own inputs).

        Why both: the replay alone is what the kernel saw *so far*.  At the first update of a
        run that is a few seconds of an empty queue; int8 ranges calibrated on it clip every
        queue state, and the snapshot then answers a building queue as if there were none
        (measured on the committed calibration states: p95 error 0.34 against the float
        network, 0.11 with the offline states in; a guest run filled the buffer for the two
        seconds such a snapshot was active).  The recent-input fidelity check cannot see this:
        its inputs are the same quiet states.  The pick is seeded by the snapshot's number, not
        the training generator, so snapshots do not change what the adapter learns."""
        pick = np.random.default_rng(self.freezes).permutation(len(self.q))[:self.REPLAY_ROWS]
        return np.concatenate([self.offline_states, self.q[np.sort(pick)]])
