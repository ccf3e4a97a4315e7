"""The training signal: a rule that says which output the network should have given.

Two teachers share one rule, "move the rate toward a target rate", and the target is a
proportional queue controller around the flow's fair share:

    target = share x (1 + (queue target - queue) / DRAIN_RTTS)

with the queue in units of the base RTT (queueing delay / base RTT).  The queue target is
small but not zero (QUEUE_TARGET = 0.1 RTT, at most half the buffer): a controller that holds
the link exactly full and the queue exactly empty gives the network nothing to see -- its
features (latency inflation, latency ratio, send ratio) are all zero both at the target and far
below it, so imitation learns "hold the rate" everywhere.  With a small standing queue at the
target, all-zero features always mean "below capacity, go up", and the equilibrium has a
visible signature (a latency ratio of about 1.1).

* the **oracle** (offline, in the simulator) knows the link: share = capacity / active flows,
  queue = backlog / capacity / base RTT;
* the **online teacher** (in the slow path, from lf_cc's `struct lf_cc_context`) knows only what
  the MI after the decision measured: when the MI shows the link saturated (even its least RTT
  sample is inflated over the connection's minimum mean RTT, or it delivered clearly less than
  it sent) the share is estimated by its delivery rate and the queue by that inflation; otherwise the
  flow is below capacity and the target is a full probe step above the current rate.

The label for a target is the output y in [-1, 1] whose action (lf_cc's rule: x(1 + y/10) for
y >= 0, x/(1 - y/10) otherwise) lands the rate on the target in one MI, saturated at +-1 (the
rule's 10 % per MI).  Imitation of this rule rather than reinforcement learning on Aurora's reward
is what keeps training deterministic and small (minutes on 2 CPUs), and it makes the offline
and the online signal the same function, so the slow path keeps training the network on the
objective it was trained on.
"""

from __future__ import annotations

import numpy as np

from . import features as F
from .context import CONTEXT_DTYPE

QUEUE_TARGET = 0.10       # standing queue aimed at, in base RTTs (a latency ratio of 1.1)
QUEUE_TARGET_BUFFER = 0.5  # ... but at most this fraction of the buffer (shallow queues)
DRAIN_RTTS = 1.0          # close the gap to the queue target within about one base RTT
MIN_TARGET_FRACTION = 0.1  # never aim below 10 % of the (estimated) share while draining
SATURATED_INFLATION = 0.05  # online: an MI's least RTT 5 % over the minimum means a queue
DELIVERY_TOLERANCE = 0.10  # online: delivering < 90 % of what was sent (net of losses) too
PROBE = 0.10              # online: below capacity -> a full step (+10 %) up


def step_label(rate_Bps: np.ndarray, target_Bps: np.ndarray) -> np.ndarray:
    """The output y in [-1, 1] that moves `rate` to `target` in one MI under the action rule."""
    rate = np.maximum(np.asarray(rate_Bps, np.float64), 1.0)
    target = np.maximum(np.asarray(target_Bps, np.float64), 1.0)
    y = np.where(target >= rate, 10.0 * (target / rate - 1.0), 10.0 * (1.0 - rate / target))
    return np.clip(y, -1.0, 1.0)


def queue_target(truth: dict) -> np.ndarray:
    """The oracle's queue target in base RTTs: QUEUE_TARGET, at most half the buffer."""
    buffer_rtts = truth["queue_cap_bytes"] / (truth["capacity_Bps"] * truth["base_rtt_s"])
    return np.minimum(QUEUE_TARGET, QUEUE_TARGET_BUFFER * buffer_rtts)


def share_target(share_Bps: np.ndarray, queue_rtts: np.ndarray, target_rtts) -> np.ndarray:
    """The rule both teachers share: the share, corrected toward the queue target within
    DRAIN_RTTS, never below MIN_TARGET_FRACTION of the share."""
    share = np.asarray(share_Bps, np.float64)
    return np.maximum(share * (1.0 + (target_rtts - queue_rtts) / DRAIN_RTTS), share * MIN_TARGET_FRACTION)


def oracle_target(truth: dict) -> np.ndarray:
    """Target rate [Bps] from the link's truth (sim.TRUTH_FIELDS arrays)."""
    queue_rtts = truth["queue_bytes"] / (truth["capacity_Bps"] * truth["base_rtt_s"])
    return share_target(truth["fair_Bps"], queue_rtts, queue_target(truth))


def oracle_label(truth: dict) -> np.ndarray:
    """The oracle's y* for each decision (float [k])."""
    return step_label(truth["rate_Bps"], oracle_target(truth))


def oracle_policy(obs: np.ndarray, truth: dict) -> np.ndarray:
    """The oracle as a simulator policy (int8 answers, quantized as the snapshot's output)."""
    return F.output_to_int8(oracle_label(truth))


def online_target(ctx: np.ndarray) -> np.ndarray:
    """Target rate [Bps] from sample contexts (CONTEXT_DTYPE [k]); no knowledge of the link."""
    ctx = np.asarray(ctx, CONTEXT_DTYPE)
    pacing = ctx["pacing_rate_Bps"].astype(np.float64)
    delivery = ctx["delivery_rate_Bps"].astype(np.float64)
    inflation = rtt_inflation(ctx)
    sent = ctx["segs_sent"].astype(np.float64)
    lost = ctx["segs_lost"].astype(np.float64)
    dlv = ctx["segs_delivered"].astype(np.float64)
    short = (sent > 0) & (dlv + lost < (1.0 - DELIVERY_TOLERANCE) * sent)
    saturated = (inflation > SATURATED_INFLATION) | short
    share = np.where(delivery > 0, delivery, pacing)
    return np.where(saturated, share_target(share, inflation, QUEUE_TARGET), pacing * (1.0 + PROBE))


def rtt_inflation(ctx: np.ndarray) -> np.ndarray:
    """The online teacher's queue estimate in base RTTs: the MI's least RTT sample over the
    connection's minimum per-MI mean RTT, minus one, at least 0 (0 without both).

    The least sample, not the mean: a queue delays every packet, noise on the path (ACKs held
    back and released in bursts) delays most but not all, so the least delayed sample of an MI
    still shows the queue and little of the noise, where the mean reads the noise as queue."""
    rtt = ctx["mi_min_rtt_us"].astype(np.float64)
    low = ctx["min_mean_rtt_us"].astype(np.float64)
    return np.where((rtt > 0) & (low > 0), np.maximum(rtt - low, 0.0) / np.maximum(low, 1.0), 0.0)


def rate_before(pacing_Bps: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The rate a decision started from, given the rate it set and its int8 answer q."""
    pacing = np.asarray(pacing_Bps, np.float64)
    q = np.asarray(q, np.float64)
    return np.where(q >= 0, pacing * F.ACTION_DEN / (F.ACTION_DEN + q),
                    pacing * (F.ACTION_DEN - q) / F.ACTION_DEN)


def online_label(ctx: np.ndarray, q: np.ndarray | None = None) -> np.ndarray:
    """The online teacher's y* for each sample (float [k]).

    The context describes the MI after the decision, whose pacing rate the decision set; with
    the decision's answer `q` the label is relative to the rate it started from (what the
    network should have answered), without it relative to the pacing rate.
    """
    ctx = np.asarray(ctx, CONTEXT_DTYPE)
    pacing = ctx["pacing_rate_Bps"].astype(np.float64)
    base = pacing if q is None else rate_before(pacing, np.asarray(q).reshape(-1))
    return step_label(base, online_target(ctx))
