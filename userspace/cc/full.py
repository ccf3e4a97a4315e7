"""kernel-full's master weights: the committed network in lf_cc_full.h's flat Q24 layout.

lf_cc's "liteflow_full" trains its own copy of the network in the kernel, starting from the very
weights LiteFlow's slow path starts from. The kernel takes them as LF_FULL_PARAMS little-endian
s32 through /sys/kernel/debug/lf_cc/full_weights; this module makes that file from cc.keras
(read with h5py: no TensorFlow needed).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from .train import MODEL_DIR, MODEL_FILE

W_ONE = 1 << 24                          # LF_FULL_W_SHIFT: master weights are Q24
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


def master_weights_file(path: Path, model: Path = MODEL_DIR / MODEL_FILE) -> Path:
    """Write the bytes the kernel's full_weights file takes (little-endian s32)."""
    flat = to_flat_q24(float_weights(model))
    assert flat.size == PARAMS
    path.write_bytes(flat.astype("<i4").tobytes())
    return path
