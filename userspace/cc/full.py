"""kernel-full's master weights: the committed network in lf_cc_full.h's flat Q24 layout.

lf_cc's "liteflow_full" trains its own copy of the network in the kernel, starting from the very
weights LiteFlow's slow path starts from. The kernel takes them through
/sys/kernel/debug/lf_cc/full_weights as LF_FULL_UPLOAD_WORDS little-endian s32: the parameters,
then each layer's pre-activation range on the offline states LiteFlow's snapshots are calibrated
on too (train.offline_states), from which the kernel's requantization ranges start after every
reset -- so both deployments' int8 grids cover the same states. This module makes that file from
cc.keras (read with h5py: no TensorFlow needed).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from . import features as F
from .train import MODEL_DIR, MODEL_FILE, offline_states

W_ONE = 1 << 24                          # LF_FULL_W_SHIFT: master weights are Q24
A_ONE = 1 << 16                          # LF_FULL_A_SHIFT: pre-activations are Q16
DIMS = ((30, 32), (32, 16), (16, 1))     # (in, out) per layer
PARAMS = sum(i * o + o for i, o in DIMS)  # LF_FULL_PARAMS


def float_weights(model: Path = MODEL_DIR / MODEL_FILE) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W [out, in], b [out]) per layer, float64, from a .keras file."""
    import h5py

    with zipfile.ZipFile(model) as z:
        blob = z.read("model.weights.h5")
    with h5py.File(io.BytesIO(blob), "r") as f:
        layers = f["layers"]
        names = sorted((n for n in layers if n.startswith("dense")), key=lambda n: (len(n), n))
        out = [(np.asarray(layers[n]["vars"]["0"][()], np.float64).T, np.asarray(layers[n]["vars"]["1"][()], np.float64))
               for n in names]
    if [w.shape for w, _ in out] != [(o, i) for i, o in DIMS]:
        raise ValueError(f"{model}: expected layers {DIMS}, found {[w.shape[::-1] for w, _ in out]}")
    return out


def to_flat_q24(layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """lf_full_load's layout: per layer W[out][in] row-major, then b[out], Q24 (rounded)."""
    flat = np.concatenate([np.concatenate([w.reshape(-1), b]) for w, b in layers])
    return np.round(flat * W_ONE).astype(np.int32)


def range_seed(layers: list[tuple[np.ndarray, np.ndarray]], states: np.ndarray) -> np.ndarray:
    """lf_full_load's seed: [min0, max0, min1, max1, min2, max2], each layer's pre-activation
    range (Q16, rounded outwards) over int8 `states` [n, 30]; zeros without states."""
    seed = np.zeros(2 * len(layers), np.int64)
    a = F.to_real(np.asarray(states, np.int8)).astype(np.float64)
    for i, (w, b) in enumerate(layers):
        if not len(a):
            break
        z = a @ w.T + b
        seed[2 * i], seed[2 * i + 1] = np.floor(z.min() * A_ONE), np.ceil(z.max() * A_ONE)
        a = np.tanh(z)
    return seed.astype(np.int32)


def master_weights_file(path: Path, model: Path = MODEL_DIR / MODEL_FILE) -> Path:
    """Write the bytes the kernel's full_weights file takes (little-endian s32)."""
    layers = float_weights(model)
    flat = to_flat_q24(layers)
    assert flat.size == PARAMS
    upload = np.concatenate([flat, range_seed(layers, offline_states(model))])
    path.write_bytes(upload.astype("<i4").tobytes())
    return path
