"""lf_cc's arithmetic (kernel/cc/lf_cc_model.h) in numpy, one function per C function.

Why a mirror and not a re-derivation: the network is trained on features the simulator computes
and then run on features the kernel computes; any difference in rounding or clamping between the
two is a distribution shift the network never saw.  So every function here takes and returns
integers with the C's semantics -- C integer division (`div64_u64`), rounding to nearest with
halves away from zero (`lf_cc_div_round`), saturation to int8 (`lf_cc_clamp_s8`), u64 wrap-around
where the C multiplies u64s -- and keeps the C's name without the `lf_cc_` prefix, so a ctypes
test can compare the two on random inputs.  All functions are vectorised: arguments may be
scalars or equal-shaped (broadcastable) arrays.

`struct lf_cc_mi` is `MI_DTYPE` (a numpy structured dtype); functions that take the struct in C
take a structured array (or record) of that dtype here.
"""

from __future__ import annotations

import numpy as np

HISTORY = 10                 # LF_CC_HISTORY: MIs the network sees, oldest first
FEATURES = 3                 # LF_CC_FEATURES: inflation, ratio, send ratio
INPUTS = HISTORY * FEATURES  # LF_CC_INPUTS
OUTPUTS = 1                  # LF_CC_OUTPUTS

INPUT_SCALE_INV = 16         # LF_CC_INPUT_SCALE_INV: real = q / 16
INPUT_SCALE = 1.0 / INPUT_SCALE_INV
INPUT_RANGE = (-8.0, 127.0 / INPUT_SCALE_INV)   # [-8, 7.9375]: what the snapshot calibrates on
INPUT_QUANT_MULT, INPUT_QUANT_SHIFT = 1 << 30, -3    # Q31 form of 1/16
OUTPUT_SCALE = 1.0 / 128.0   # TFLite's tanh output quantization
OUTPUT_QUANT_MULT, OUTPUT_QUANT_SHIFT = 1 << 30, -6  # Q31 form of 1/128

LI_GAIN = 10                 # LF_CC_LI_GAIN
LR_GAIN = 8                  # LF_CC_LR_GAIN
SR_GAIN = 8                  # LF_CC_SR_GAIN
ACTION_DEN = 1280            # LF_CC_ACTION_DEN

MI_SEGS = 5                  # LF_CC_MI_SEGS
MI_MIN_US = 1000             # LF_CC_MI_MIN_US
MI_MAX_US = 1_000_000        # LF_CC_MI_MAX_US
RTT_UNIT_US = 16             # LF_CC_RTT_UNIT_US: the per-socket u16 fields' time unit

CWND_BDPS = 2                # LF_CC_CWND_BDPS
MIN_RTT_WIN_MS = 10_000      # LF_CC_MIN_RTT_WIN_MS
CWND_MIN_SEGS = 4            # LF_CC_CWND_MIN_SEGS

STALE_MIS = 10               # LF_CC_STALE_MIS
STALE_NUM, STALE_DEN = 3, 2  # LF_CC_STALE_NUM / LF_CC_STALE_DEN
STALE_MIS_MAX = 63           # LF_CC_STALE_MIS_MAX
STALE_DRAINED_MAX = 32767    # LF_CC_STALE_DRAINED_MAX

FALLBACK_UP_NUM, FALLBACK_UP_DEN = 21, 20
FALLBACK_DOWN_NUM, FALLBACK_DOWN_DEN = 7, 10
FALLBACK_RTT_NUM, FALLBACK_RTT_DEN = 5, 4

USEC_PER_SEC = 1_000_000

#: struct lf_cc_mi: what one MI measured, as a socket accumulates it ACK by ACK.
MI_DTYPE = np.dtype([
    ("duration_us", "<u4"),
    ("rtt_count", "<u4", (2,)),
    ("rtt_sum_us", "<u8", (2,)),
    ("segs_sent", "<u4"),
    ("segs_delivered", "<u4"),
    ("segs_lost", "<u4"),
])

_U64 = np.uint64
_S64 = np.int64


def _s64(x) -> np.ndarray:
    return np.asarray(x).astype(_S64)


def _u64(x) -> np.ndarray:
    return np.asarray(x).astype(_U64)


def _scalar(x: np.ndarray):
    """Return numpy scalars for 0-d results, like the C returns one value for one call."""
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def div_round(n, d) -> np.ndarray:
    """lf_cc_div_round: round(n / d) for d > 0, halves away from zero (s64 n, u64 d)."""
    n, d = _s64(n), _s64(d)
    mag = (np.abs(n) + d // 2) // d
    return _scalar(np.where(n >= 0, mag, -mag).astype(_S64))


def clamp_s8(q) -> np.ndarray:
    """lf_cc_clamp_s8: saturate an s64 to int8."""
    return _scalar(np.clip(_s64(q), -128, 127).astype(np.int8))


def mean_rtt_us(mi) -> np.ndarray:
    """lf_cc_mean_rtt_us: the MI's mean RTT (integer division), 0 without samples."""
    count = _u64(mi["rtt_count"][..., 0]) + _u64(mi["rtt_count"][..., 1])
    total = _u64(mi["rtt_sum_us"][..., 0]) + _u64(mi["rtt_sum_us"][..., 1])
    safe = np.where(count == 0, _U64(1), count)
    return _scalar(np.where(count == 0, _U64(0), total // safe).astype(np.uint32))


def q_latency_inflation(mi) -> np.ndarray:
    """lf_cc_q_latency_inflation: round(160 * (mean RTT 2nd half - 1st half) / duration).

    0 unless both halves have samples and the duration is non-zero (the C's early return).
    """
    c0, c1 = _u64(mi["rtt_count"][..., 0]), _u64(mi["rtt_count"][..., 1])
    dur = _u64(mi["duration_us"])
    ok = (c0 > 0) & (c1 > 0) & (dur > 0)
    first = (_u64(mi["rtt_sum_us"][..., 0]) // np.where(ok, c0, _U64(1))).astype(_S64)
    second = (_u64(mi["rtt_sum_us"][..., 1]) // np.where(ok, c1, _U64(1))).astype(_S64)
    q = div_round((second - first) * (LI_GAIN * INPUT_SCALE_INV), np.where(ok, dur, _U64(1)))
    return _scalar(np.where(ok, clamp_s8(q), 0).astype(np.int8))


def min_rtt_update(min_us, stamp_ms, mean_rtt_us, now_ms) -> tuple[np.ndarray, np.ndarray]:
    """lf_cc_min_rtt_update: (new minimum, its stamp); a new minimum, or any mean once the
    minimum is older than MIN_RTT_WIN_MS (u32 time arithmetic), replaces it; 0 means none."""
    min_us, stamp = np.asarray(min_us, np.int64), np.asarray(stamp_ms, np.int64)
    mean, now = np.asarray(mean_rtt_us, np.int64), np.asarray(now_ms, np.int64)
    age = (now - stamp) & 0xFFFFFFFF
    take = (mean > 0) & ((min_us == 0) | (mean <= min_us) | (age > MIN_RTT_WIN_MS))
    return np.where(take, mean, min_us), np.where(take, now & 0xFFFFFFFF, stamp)


def stale_min_update(mis, drained_segs, min_us, stamp_ms, mean_rtt_us, mi, now_ms) -> tuple:
    """lf_cc_stale_min_update, after min_rtt_update: (mis, drained, minimum, stamp, fired).

    While the MI mean RTT is at least 3/2 of the minimum, count the MIs and sum what the flow
    took out of the network (delivered + lost - sent, saturating); after STALE_MIS of them, once
    that sum covers the flow's own share of a queue ((mean - minimum) x its delivery rate), the
    inflation is not its own queue and the mean becomes the minimum.
    """
    mis, drained = _s64(mis), _s64(drained_segs)
    low, stamp, mean, now = _s64(min_us), _s64(stamp_ms), _s64(mean_rtt_us), _s64(now_ms)
    sent, dlv = _s64(mi["segs_sent"]), _s64(mi["segs_delivered"])
    lost, dur = _s64(mi["segs_lost"]), _s64(mi["duration_us"])
    inflated = (low > 0) & (mean > 0) & (mean * STALE_DEN >= low * STALE_NUM)
    drained = np.where(inflated, np.clip(drained + dlv + lost - sent, -STALE_DRAINED_MAX, STALE_DRAINED_MAX), 0)
    mis = np.where(inflated, np.minimum(mis + 1, STALE_MIS_MAX), 0)
    fired = inflated & (mis >= STALE_MIS) & (drained > 0) & (drained * dur >= (mean - low) * dlv)
    return (np.where(fired, 0, mis), np.where(fired, 0, drained), np.where(fired, mean, low),
            np.where(fired, now & 0xFFFFFFFF, stamp), fired)


def q_latency_ratio(mean_rtt_us, min_mean_rtt_us) -> np.ndarray:
    """lf_cc_q_latency_ratio: round(128 * (rtt - min) / min); 0 if either is 0."""
    rtt, low = _s64(mean_rtt_us), _s64(min_mean_rtt_us)
    ok = (rtt != 0) & (low != 0)
    q = div_round((rtt - low) * (LR_GAIN * INPUT_SCALE_INV), np.where(ok, low, 1))
    return _scalar(np.where(ok, clamp_s8(q), 0).astype(np.int8))


def q_send_ratio(segs_sent, segs_delivered) -> np.ndarray:
    """lf_cc_q_send_ratio: round(128 * (sent - delivered) / delivered); 0 if nothing delivered."""
    sent, dlv = _s64(segs_sent), _s64(segs_delivered)
    ok = dlv != 0
    q = div_round((sent - dlv) * (SR_GAIN * INPUT_SCALE_INV), np.where(ok, dlv, 1))
    return _scalar(np.where(ok, clamp_s8(q), 0).astype(np.int8))


def push_history(history, latency_inflation, latency_ratio, send_ratio) -> np.ndarray:
    """lf_cc_push_history: drop the oldest MI, append this one (returns a new int8 [..., 30]).

    The C shifts in place; here the result is returned so rows of a batch can be updated with
    fancy indexing (`h[rows] = push_history(h[rows], ...)`).
    """
    history = np.asarray(history, np.int8)
    out = np.empty_like(history)
    out[..., :INPUTS - FEATURES] = history[..., FEATURES:]
    out[..., INPUTS - 3] = latency_inflation
    out[..., INPUTS - 2] = latency_ratio
    out[..., INPUTS - 1] = send_ratio
    return out


def apply_action(rate_Bps, q) -> np.ndarray:
    """lf_cc_apply_action: x(1280 + q)/1280 for q >= 0, x 1280/(1280 - q) otherwise (u64)."""
    rate, q = _u64(rate_Bps), _s64(q)
    up = rate * _u64(ACTION_DEN + np.maximum(q, 0)) // _U64(ACTION_DEN)
    down = rate * _U64(ACTION_DEN) // _u64(ACTION_DEN - np.minimum(q, 0))
    return _scalar(np.where(q >= 0, up, down).astype(_U64))


def clamp_rate(rate_Bps, min_Bps, max_Bps) -> np.ndarray:
    """lf_cc_clamp_rate."""
    return _scalar(np.clip(_u64(rate_Bps), _u64(min_Bps), _u64(max_Bps)).astype(_U64))


def mi_target_us(srtt_us, rate_Bps, mss) -> np.ndarray:
    """lf_cc_mi_target_us: max(srtt / 2, time to send 5 segments at the rate), in [1 ms, 1 s]."""
    srtt, rate, mss = _u64(srtt_us).astype(np.uint32).astype(_U64), _u64(rate_Bps), \
        _u64(mss).astype(np.uint32).astype(_U64)
    segs_us = np.where(rate != 0,
                       _U64(MI_SEGS) * mss * _U64(USEC_PER_SEC) // np.where(rate != 0, rate, _U64(1)),
                       _U64(MI_MAX_US))
    target = np.maximum(srtt // _U64(2), segs_us)
    target = np.clip(target, _U64(MI_MIN_US), _U64(MI_MAX_US))
    return _scalar(target.astype(np.uint32))


def mi_min_rtt_context_us(min_rtt_us) -> np.ndarray:
    """An MI's least RTT sample as lf_cc keeps it (lf_cc_rtt_units: a u16 in
    RTT_UNIT_US, rounded down, at least 1, saturating) and reports it in its context, us; 0 = no
    sample."""
    us = _u64(min_rtt_us)
    units = np.where(us > 0, np.clip(us // _U64(RTT_UNIT_US), _U64(1), _U64(0xFFFF)), _U64(0))
    return _scalar((units * _U64(RTT_UNIT_US)).astype(np.uint32))


def cwnd_cap(rate_Bps, srtt_us, mss) -> np.ndarray:
    """lf_cc_cwnd_cap: 2 x rate x smoothed RTT in segments + 4, at most 0xffff; 4 if mss is 0."""
    rate = _u64(rate_Bps)
    rtt = _u64(srtt_us).astype(np.uint32).astype(_U64)
    mss = _u64(mss).astype(np.uint32).astype(_U64)
    safe = np.where(mss == 0, _U64(1), mss)
    bdp = rate * rtt // (safe * _U64(USEC_PER_SEC))
    bdp = bdp * _U64(CWND_BDPS) + _U64(CWND_MIN_SEGS)
    bdp = np.minimum(bdp, _U64(0xFFFF))
    return _scalar(np.where(mss == 0, _U64(CWND_MIN_SEGS), bdp).astype(np.uint32))


def fallback_rate(rate_Bps, mi, mean_rtt_us, min_mean_rtt_us) -> np.ndarray:
    """lf_cc_fallback_rate: x7/10 after a loss or a latency ratio over 5/4, else x21/20."""
    rate = _u64(rate_Bps)
    rtt, low = _u64(mean_rtt_us), _u64(min_mean_rtt_us)
    queued = (low != 0) & (rtt * _U64(FALLBACK_RTT_DEN) > low * _U64(FALLBACK_RTT_NUM))
    down = (_u64(mi["segs_lost"]) != 0) | queued
    return _scalar(np.where(down, rate * _U64(FALLBACK_DOWN_NUM) // _U64(FALLBACK_DOWN_DEN),
                            rate * _U64(FALLBACK_UP_NUM) // _U64(FALLBACK_UP_DEN)).astype(_U64))


# ---------------------------------------------------------------------------------------------
# Real-valued view (what the float network sees)


def to_real(q) -> np.ndarray:
    """The network's real input for int8 features: x = q / 16 (scale 1/16, zero point 0)."""
    return np.asarray(q, np.float32) * np.float32(INPUT_SCALE)


def output_to_real(q) -> np.ndarray:
    """The network's real output for an int8 answer: y = q / 128 (TFLite's tanh quantization)."""
    return np.asarray(q, np.float32) * np.float32(OUTPUT_SCALE)


def output_to_int8(y) -> np.ndarray:
    """Quantize a real output in [-1, 1] to int8 like TFLite (half away from zero, saturating)."""
    v = np.asarray(y, np.float64) * 128.0
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -128, 127).astype(np.int8)


def mi_features(mi, min_mean_rtt_us) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three encoded features of an MI, as lf_cc computes them after the MI's last ACK.

    `min_mean_rtt_us` must already include this MI's mean RTT (the header's convention).
    """
    return (q_latency_inflation(mi), q_latency_ratio(mean_rtt_us(mi), min_mean_rtt_us),
            q_send_ratio(mi["segs_sent"], mi["segs_delivered"]))
