"""struct lf_cc_context (kernel/cc/lf_cc_model.h) as a numpy structured dtype.

lf_cc ships one 44-byte context with every sampled (input, output) pair: what the MI *after* the
decision measured.  The slow path's online teacher (teacher.online_label) reads it to judge the
decision without knowing the link; the simulator emits the same records so that teacher can be
checked against the oracle offline.
"""

from __future__ import annotations

import numpy as np

#: Eleven little-endian u32, in the header's order, no padding (44 bytes).
CONTEXT_DTYPE = np.dtype([
    ("mi_duration_us", "<u4"),
    ("pacing_rate_Bps", "<u4"),
    ("send_rate_Bps", "<u4"),
    ("delivery_rate_Bps", "<u4"),
    ("mean_rtt_us", "<u4"),
    ("min_mean_rtt_us", "<u4"),
    ("segs_sent", "<u4"),
    ("segs_delivered", "<u4"),
    ("segs_lost", "<u4"),
    ("mss_bytes", "<u4"),
    ("mi_min_rtt_us", "<u4"),
])
CONTEXT_SIZE = CONTEXT_DTYPE.itemsize
assert CONTEXT_SIZE == 44


def parse_contexts(raw: np.ndarray) -> np.ndarray:
    """uint8 [k, 44] (as the kernel sends them) -> structured array [k] of CONTEXT_DTYPE.

    Raises ValueError on a wrong width, so a kernel/user-space layout mismatch is loud.
    """
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raw = raw.astype(np.uint8)
    raw = raw.reshape(-1, raw.shape[-1]) if raw.ndim else raw
    if raw.ndim != 2 or raw.shape[1] != CONTEXT_SIZE:
        raise ValueError(f"contexts: expected uint8 [k, {CONTEXT_SIZE}], got {raw.shape}")
    return np.ascontiguousarray(raw).view(CONTEXT_DTYPE).reshape(-1)


def pack_contexts(ctx: np.ndarray) -> np.ndarray:
    """The inverse: structured array [k] -> uint8 [k, 44] (for tests and the simulator)."""
    ctx = np.ascontiguousarray(np.asarray(ctx, CONTEXT_DTYPE).reshape(-1))
    return ctx.view(np.uint8).reshape(-1, CONTEXT_SIZE)
