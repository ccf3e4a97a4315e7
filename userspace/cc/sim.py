"""A seeded fluid simulator of rate-paced flows sharing one bottleneck, run per monitor interval.

Why this simulator: the network is trained offline and then runs in lf_cc, so what matters is
that it sees, per monitor interval (MI), the numbers the kernel measures -- a `struct lf_cc_mi`
(duration, RTT sample sums in the MI's two time halves, segments sent / delivered / lost) turned
into features by exactly the kernel's integer arithmetic (features.py mirrors lf_cc_model.h).
A packet-level simulator would be more faithful but far slower; a fluid model at 1/16 of the
base RTT is enough to get queue build-up, delivery-rate saturation and the feedback delay right,
and it is vectorised over many episodes at once so DAgger can roll out hundreds of episodes a
minute on 2 cores.

The model, per episode ("env") and tick (dt = base RTT / 16, fixed per episode):

* each flow sends `rate * dt` bytes, limited by lf_cc's cwnd cap (features.cwnd_cap on the
  smoothed RTT) minus its bytes in flight; the first flow starts at the kernel's initial
  rate, 10 segments per (handshake) RTT;
* a fraction `loss` of what is sent is lost at random; the rest joins one FIFO drop-tail queue
  of `queue_pkts * MSS` bytes served at the link's bandwidth; whatever does not fit is dropped;
* bytes that enter when the backlog is Q are acknowledged base RTT + Q / C later (FIFO fluid);
  losses are detected at the same moment (three dupacks come back about one RTT later);
* an ACK tick of n segments is n RTT samples; srtt is the kernel's 1/8 EWMA over them;
* a flow's MI lasts mi_target_us(srtt, rate, MSS) (rounded up to ticks); when it ends the
  flow's features are computed and pushed into its history, the policy answers with an int8
  q, and the rate becomes clamp(apply_action(rate, q)) -- as in lf_cc.

Link parameters are drawn per episode (`sample_scenarios`): Aurora's training ranges widened to
the testbed's experiments -- bandwidth 5-200 Mbit/s, base RTT 5-200 ms, queue 1 + e^U(0,8)
packets (capped at 4 BDPs), random loss 0-2 %, 1-16 flows with staggered starts, and in half
the episodes one mid-episode step of the bandwidth (x0.25-x4) and/or of the base RTT (x0.5-x2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import features as F
from .context import CONTEXT_DTYPE

MSS = 1448                       # bytes of payload per segment, as in the testbed
TICKS_PER_RTT = 16               # simulation resolution: ticks per (initial) base RTT
RING = 1024                      # ACK delay line, in ticks (delays beyond are clipped)
RATE_MIN_BPS = 12_500            # 0.1 Mbit/s: the rate clamp's floor
RATE_MAX_BPS = 125_000_000       # 1 Gbit/s: far above any bottleneck here
INITIAL_SEGS = 10                # the kernel's initial rate: 10 segments per first RTT

BW_RANGE_MBPS = (5.0, 200.0)
RTT_RANGE_MS = (5.0, 200.0)
LOSS_MAX = 0.02
MAX_FLOWS = 16
# RTT measurement noise: an ACK's RTT sample is late by |N(0, jitter)| (per episode, up to
# JITTER_MS_MAX), and now and then by a spike of up to SPIKE_MS: what the guest's RTT samples show
# (a 20 ms path measured 20.5-23 ms, with single samples of 30-40 ms, under TCG). A network trained
# on noiseless RTTs read that noise as latency inflation and drove its rate down.
JITTER_MS_MAX = 3.0
JITTER_EPISODES = 0.8        # share of random episodes with noise
SPIKE_PROB = 0.02            # per flow and tick
SPIKE_MS = 20.0
EVAL_JITTER_MS = 1.0         # the fixed scenarios' noise, about the guest's
QUEUE_MAX_BDPS = 4.0

#: What the oracle may know about a flow when it decides (never shown to the network).
TRUTH_FIELDS = ("rate_Bps", "capacity_Bps", "flows", "fair_Bps", "base_rtt_s", "queue_bytes",
                "queue_cap_bytes")

#: policy(obs int8 [k, 30], truth {name: [k]}) -> int8 [k]
Policy = Callable[[np.ndarray, dict], np.ndarray]


@dataclass
class Scenarios:
    """A batch of episodes, arrays over episodes [E] and flows [E, F]."""

    bandwidth_Bps: np.ndarray        # [E] before the change
    base_rtt_s: np.ndarray           # [E] before the change
    queue_pkts: np.ndarray           # [E]
    loss: np.ndarray                 # [E]
    flows: np.ndarray                # [E] int
    start_tick: np.ndarray           # [E, F] int (huge for unused flow slots)
    change_tick: np.ndarray          # [E] int (huge: no change)
    bandwidth_after_Bps: np.ndarray  # [E]
    base_rtt_after_s: np.ndarray     # [E]
    ticks: int                       # episode length, same for all
    names: list[str] = field(default_factory=list)
    jitter_s: np.ndarray | None = None   # [E] RTT measurement noise scale (None: none)
    noise_seed: int = 0
    jitter_after_s: np.ndarray | None = None   # [E] the noise scale after the change (None: as before)

    def __len__(self) -> int:
        return len(self.bandwidth_Bps)


NEVER = np.iinfo(np.int64).max // 4


def _log_uniform(rng: np.random.Generator, low: float, high: float, size) -> np.ndarray:
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def _queue_cap(queue_pkts: np.ndarray, bandwidth_Bps: np.ndarray, rtt_s: np.ndarray) -> np.ndarray:
    bdp_pkts = bandwidth_Bps * rtt_s / MSS
    return np.maximum(2, np.minimum(queue_pkts, np.ceil(QUEUE_MAX_BDPS * bdp_pkts))).astype(np.int64)


def sample_scenarios(rng: np.random.Generator, count: int, rtts: int = 120,
                     links: dict | None = None) -> Scenarios:
    """`count` random episodes of `rtts` base RTTs each, in the documented ranges.

    With `links` ({"mbps": (low, high), "rtt_ms": (low, high), "queue_bdp": (low, high)}) the
    bottleneck is drawn from those narrower ranges instead and never changes mid-episode: a
    network trained for the one link it is deployed on (train.NETWORKS's "cc-narrow").  Flows,
    losses and RTT noise are drawn as before, and every draw is made either way.
    """
    bw = _log_uniform(rng, *BW_RANGE_MBPS, count) * 1e6 / 8
    rtt = _log_uniform(rng, *RTT_RANGE_MS, count) / 1e3
    queue = _queue_cap(np.floor(1 + np.exp(rng.uniform(0, 8, count))), bw, rtt)
    loss = np.where(rng.random(count) < 0.5, 0.0, rng.uniform(0, LOSS_MAX, count))
    flows = np.minimum(MAX_FLOWS, np.floor(np.exp(rng.uniform(0, np.log(MAX_FLOWS + 1), count))))
    flows = flows.astype(np.int64)
    ticks = rtts * TICKS_PER_RTT
    fmax = int(flows.max())
    staggered = rng.random(count) < 0.5
    start = np.where(staggered[:, None], rng.integers(0, int(0.3 * ticks), (count, fmax)), 0)
    start[:, 0] = 0
    start = np.where(np.arange(fmax)[None, :] < flows[:, None], start, NEVER)
    changes = rng.random(count) < 0.5
    change_tick = np.where(changes, rng.integers(int(0.4 * ticks), int(0.6 * ticks), count), NEVER)
    bw_step = np.where(rng.random(count) < 0.7, _log_uniform(rng, 0.25, 4.0, count), 1.0)
    rtt_step = np.where(rng.random(count) < 0.5, _log_uniform(rng, 0.5, 2.0, count), 1.0)
    bw_after = np.clip(bw * bw_step, BW_RANGE_MBPS[0] * 1e6 / 8, BW_RANGE_MBPS[1] * 1e6 / 8)
    rtt_after = np.clip(rtt * rtt_step, RTT_RANGE_MS[0] / 1e3, RTT_RANGE_MS[1] / 1e3)
    jitter = np.where(rng.random(count) < JITTER_EPISODES, rng.uniform(0, JITTER_MS_MAX, count), 0.0) / 1e3
    if links is not None:
        bw = _log_uniform(rng, *links["mbps"], count) * 1e6 / 8
        rtt = rng.uniform(*links["rtt_ms"], count) / 1e3
        queue = _queue_cap(np.ceil(bw * rtt / MSS * rng.uniform(*links["queue_bdp"], count)), bw, rtt)
        change_tick[:] = NEVER
        bw_after, rtt_after = bw.copy(), rtt.copy()
    return Scenarios(bw, rtt, queue, loss, flows, start, change_tick, bw_after, rtt_after, ticks,
                     [f"random{i}" for i in range(count)], jitter, int(rng.integers(2**31)))


def make_scenarios(specs: list[dict], rtts: int = 120) -> Scenarios:
    """Named, fixed episodes: each spec has name, mbps, rtt_ms, and optionally queue_bdp (default
    1), loss, flows, stagger (fraction of the episode over which flows 2.. start), and a step:
    step_at (fraction of the episode), mbps_after, rtt_ms_after, jitter_ms_after (RTT noise)."""
    n = len(specs)
    ticks = rtts * TICKS_PER_RTT
    get = lambda key, default: np.array([s.get(key, default) for s in specs], np.float64)  # noqa: E731
    bw = get("mbps", 0) * 1e6 / 8
    rtt = get("rtt_ms", 0) / 1e3
    queue = _queue_cap(np.ceil(get("queue_bdp", 1.0) * bw * rtt / MSS), bw, rtt)
    flows = get("flows", 1).astype(np.int64)
    fmax = int(flows.max())
    start = np.zeros((n, fmax), np.int64)
    for i, s in enumerate(specs):
        k = int(flows[i])
        start[i, :k] = (np.arange(k) * s.get("stagger", 0.0) * ticks / max(k, 1)).astype(np.int64)
        start[i, k:] = NEVER
    at = get("step_at", np.nan)
    change = np.where(np.isnan(at), NEVER, np.nan_to_num(at) * ticks).astype(np.int64)
    bw_after = np.where(np.isnan(get("mbps_after", np.nan)), bw, get("mbps_after", 0) * 1e6 / 8)
    rtt_after = np.where(np.isnan(get("rtt_ms_after", np.nan)), rtt, get("rtt_ms_after", 0) / 1e3)
    jitter = get("jitter_ms", EVAL_JITTER_MS) / 1e3
    jitter_after = np.where(np.isnan(get("jitter_ms_after", np.nan)), jitter, get("jitter_ms_after", 0) / 1e3)
    return Scenarios(bw, rtt, queue, get("loss", 0.0), flows, start, change, bw_after, rtt_after,
                     ticks, [s["name"] for s in specs], jitter, 1, jitter_after)


@dataclass
class Rollout:
    """What a run recorded: one row per decision, and per-episode metrics."""

    obs: np.ndarray                  # int8 [n, 30]: the network's input at each decision
    actions: np.ndarray              # int8 [n]: what the policy answered
    truth: dict                      # {TRUTH_FIELDS: [n]} at each decision
    mi: np.ndarray                   # MI_DTYPE [n]: the MI that ended at the decision
    context: np.ndarray              # CONTEXT_DTYPE [n]: the same MI as lf_cc's sample context
    episode: np.ndarray              # int [n]
    flow: np.ndarray                 # int [n]
    metrics: dict                    # {name: [E]}


def run(scen: Scenarios, policy: Policy, *, record: bool = True, measure_from: float = 0.2,
        trace_episode: int | None = None, initial_rate_Bps: float | None = None,
        stale_min: bool = False) -> Rollout:
    """Run every episode of `scen` under `policy`; deterministic given its inputs.

    Metrics are measured from `measure_from` of the episode on (after the start-up ramp):
    utilisation (delivered / capacity), mean queueing delay, the mean latency ratio of RTT
    samples to the base RTT, loss rate and Jain's fairness over flows active the whole window.
    With `trace_episode`, metrics["trace"] holds that episode's per-tick rates and queue.
    `initial_rate_Bps` overrides the kernel's initial rate (tests pin a flow's rate with it).
    `stale_min` runs lf_cc with its stale_min parameter set (lf_cc_stale_min_update).
    """
    E = len(scen)
    Fn = scen.start_tick.shape[1]
    T = scen.ticks
    dt = scen.base_rtt_s / TICKS_PER_RTT                                  # [E]
    dt_us = dt * 1e6
    qcap = scen.queue_pkts.astype(np.float64) * MSS                       # [E]
    e_idx = np.repeat(np.arange(E), Fn).reshape(E, Fn)
    f_idx = np.tile(np.arange(Fn), (E, 1))

    rate = np.zeros((E, Fn), np.int64)
    active = np.zeros((E, Fn), bool)
    inflight = np.zeros((E, Fn))
    cum = {k: np.zeros((E, Fn)) for k in ("sent", "dlv", "lost", "win_dlv")}
    mark = {k: np.zeros((E, Fn), np.int64) for k in ("sent", "dlv", "lost")}
    mark_bytes = {k: np.zeros((E, Fn)) for k in ("sent", "dlv")}
    acc_cnt = np.zeros((E, Fn, 2))
    acc_sum = np.zeros((E, Fn, 2))
    mi_min_rtt_us = np.zeros((E, Fn))                                    # 0 = no sample yet
    srtt_us = np.zeros((E, Fn))
    min_mean_rtt = np.zeros((E, Fn), np.int64)
    min_stamp_ms = np.zeros((E, Fn), np.int64)
    stale_mis = np.zeros((E, Fn), np.int64)
    stale_drained = np.zeros((E, Fn), np.int64)
    hist = np.zeros((E, Fn, F.INPUTS), np.int8)
    mi_start = np.zeros((E, Fn), np.int64)
    mi_ticks = np.ones((E, Fn), np.int64)
    ring_ack = np.zeros((E, Fn, RING))
    ring_rtt = np.zeros((E, Fn, RING))                                   # segments x RTT (us)
    ring_lost = np.zeros((E, Fn, RING))
    Q = np.zeros(E)

    m_from = int(measure_from * T)
    m_cap = np.zeros(E)
    m_qdelay = np.zeros(E)
    m_rtt_ratio = np.zeros(E)
    m_rtt_n = np.zeros(E)
    m_sent = np.zeros(E)
    m_lost = np.zeros(E)
    present_whole = np.zeros((E, Fn), bool)
    trace = [] if trace_episode is not None else None

    rec: dict[str, list] = {k: [] for k in ("obs", "act", "mi", "ctx", "ep", "fl", *TRUTH_FIELDS)}
    noise = np.random.default_rng(scen.noise_seed)
    jitter_before_us = (scen.jitter_s if scen.jitter_s is not None else np.zeros(E)) * 1e6
    jitter_after_us = jitter_before_us if scen.jitter_after_s is None else scen.jitter_after_s * 1e6
    noisy = bool(jitter_before_us.any() or jitter_after_us.any())

    for t in range(T):
        changed = t >= scen.change_tick
        C = np.where(changed, scen.bandwidth_after_Bps, scen.bandwidth_Bps)   # [E] bytes/s
        base = np.where(changed, scen.base_rtt_after_s, scen.base_rtt_s)       # [E] s
        jitter_us = np.where(changed, jitter_after_us, jitter_before_us)       # [E] us

        starting = (scen.start_tick == t)
        if starting.any():
            hs_rtt_us = (base + Q / C)[:, None] * 1e6 * np.ones((1, Fn))
            first = INITIAL_SEGS * MSS * 1e6 / hs_rtt_us if initial_rate_Bps is None else \
                np.full_like(hs_rtt_us, float(initial_rate_Bps))
            rate = np.where(starting, first.astype(np.int64), rate)
            srtt_us = np.where(starting, hs_rtt_us, srtt_us)
            target = F.mi_target_us(srtt_us.astype(np.int64), rate, MSS).astype(np.float64)
            mi_ticks = np.where(starting, np.maximum(1, np.ceil(target / dt_us[:, None])), mi_ticks)
            mi_ticks = mi_ticks.astype(np.int64)
            mi_start = np.where(starting, t, mi_start)
            active |= starting
        if t == m_from:
            present_whole = active.copy()
            cum["win_dlv"][:] = 0

        # Send: paced, limited by the cwnd cap.
        cap_bytes = F.cwnd_cap(rate, np.minimum(srtt_us, 4e9).astype(np.int64), MSS)
        cap_bytes = cap_bytes.astype(np.float64) * MSS
        send = np.where(active, np.minimum(rate * dt[:, None], np.maximum(0.0, cap_bytes - inflight)), 0.0)
        rand_lost = send * scen.loss[:, None]
        arrive = send - rand_lost
        total = arrive.sum(1)
        space = np.maximum(0.0, qcap + C * dt - Q)
        keep = np.where(total > space, space / np.maximum(total, 1e-9), 1.0)
        dropped = arrive * (1 - keep[:, None])
        arrive = arrive - dropped
        Q = np.maximum(0.0, Q + arrive.sum(1) - C * dt)
        delay_s = base + Q / C                                                 # [E]
        lag = np.clip(np.rint(delay_s / dt), 1, RING - 1).astype(np.int64)
        slot = (t + lag) % RING
        ring_ack[e_idx, f_idx, slot[:, None]] += arrive
        ring_rtt[e_idx, f_idx, slot[:, None]] += arrive / MSS * (delay_s * 1e6)[:, None]
        ring_lost[e_idx, f_idx, slot[:, None]] += rand_lost + dropped
        inflight += send
        cum["sent"] += send

        # ACKs (and loss detections) arriving now.
        now = t % RING
        acked = ring_ack[:, :, now].copy()
        rtt_seg_us = ring_rtt[:, :, now].copy()
        lost = ring_lost[:, :, now].copy()
        ring_ack[:, :, now] = 0
        ring_rtt[:, :, now] = 0
        ring_lost[:, :, now] = 0
        inflight = np.maximum(0.0, inflight - acked - lost)
        cum["dlv"] += acked
        cum["win_dlv"] += acked
        cum["lost"] += lost
        cnt = acked / MSS
        if noisy:
            late_us = np.abs(noise.standard_normal((E, Fn))) * jitter_us[:, None]
            late_us += (noise.random((E, Fn)) < SPIKE_PROB) * noise.uniform(0, SPIKE_MS * 1e3, (E, Fn)) \
                * (jitter_us[:, None] > 0)
            rtt_seg_us += cnt * late_us
        has = cnt > 1e-9
        mean_us = np.where(has, rtt_seg_us / np.where(has, cnt, 1), 0.0)
        w = 1 - (7 / 8) ** cnt
        srtt_us = np.where(has, srtt_us + w * (mean_us - srtt_us), srtt_us)
        half = ((t - mi_start) * 2 >= mi_ticks).astype(np.int64)
        acc_cnt[e_idx, f_idx, half] += cnt
        acc_sum[e_idx, f_idx, half] += rtt_seg_us
        mi_min_rtt_us = np.where(has & ((mi_min_rtt_us == 0) | (mean_us < mi_min_rtt_us)), mean_us, mi_min_rtt_us)

        if t >= m_from:
            m_cap += C * dt
            m_qdelay += Q / C
            m_rtt_ratio += (rtt_seg_us.sum(1) / (base * 1e6))
            m_rtt_n += cnt.sum(1)
            m_sent += send.sum(1)
            m_lost += (rand_lost + dropped).sum(1)
        if trace is not None:
            trace.append((t * dt[trace_episode], rate[trace_episode].copy(), Q[trace_episode],
                          C[trace_episode], acked[trace_episode].sum()))

        # MI ends: features, decision, next MI.
        ending = active & (t + 1 - mi_start >= mi_ticks)
        if not ending.any():
            continue
        ei, fi = np.nonzero(ending)
        mi = np.zeros(len(ei), F.MI_DTYPE)
        mi["duration_us"] = np.rint((t + 1 - mi_start[ei, fi]) * dt_us[ei]).astype(np.int64)
        n_h = np.rint(acc_cnt[ei, fi])
        mi["rtt_count"] = n_h.astype(np.int64)
        mean_h = acc_sum[ei, fi] / np.maximum(acc_cnt[ei, fi], 1e-12)
        mi["rtt_sum_us"] = np.where(n_h > 0, np.rint(mean_h * n_h), 0).astype(np.int64)
        seg = {k: np.floor(cum[k][ei, fi] / MSS).astype(np.int64) for k in ("sent", "dlv", "lost")}
        mi["segs_sent"] = seg["sent"] - mark["sent"][ei, fi]
        mi["segs_delivered"] = seg["dlv"] - mark["dlv"][ei, fi]
        mi["segs_lost"] = seg["lost"] - mark["lost"][ei, fi]
        mean = F.mean_rtt_us(mi).astype(np.int64)
        now_ms = np.rint((t + 1) * dt_us[ei] / 1000).astype(np.int64)
        new_min, new_stamp = F.min_rtt_update(min_mean_rtt[ei, fi], min_stamp_ms[ei, fi], mean, now_ms)
        if stale_min:
            mis, drained, new_min, new_stamp, _ = F.stale_min_update(
                stale_mis[ei, fi], stale_drained[ei, fi], new_min, new_stamp, mean, mi, now_ms)
            stale_mis[ei, fi], stale_drained[ei, fi] = mis, drained
        min_mean_rtt[ei, fi] = new_min
        min_stamp_ms[ei, fi] = new_stamp
        li, lr, sr = F.mi_features(mi, new_min)
        h = F.push_history(hist[ei, fi], li, lr, sr)
        hist[ei, fi] = h

        secs = np.maximum(mi["duration_us"].astype(np.float64), 1) / 1e6
        ctx = np.zeros(len(ei), CONTEXT_DTYPE)
        ctx["mi_duration_us"] = mi["duration_us"]
        ctx["pacing_rate_Bps"] = np.minimum(rate[ei, fi], 2**32 - 1)
        ctx["send_rate_Bps"] = np.minimum((cum["sent"][ei, fi] - mark_bytes["sent"][ei, fi]) / secs, 2**32 - 1)
        ctx["delivery_rate_Bps"] = np.minimum((cum["dlv"][ei, fi] - mark_bytes["dlv"][ei, fi]) / secs, 2**32 - 1)
        ctx["mean_rtt_us"] = mean
        ctx["min_mean_rtt_us"] = new_min
        ctx["segs_sent"] = mi["segs_sent"]
        ctx["segs_delivered"] = mi["segs_delivered"]
        ctx["segs_lost"] = mi["segs_lost"]
        ctx["mss_bytes"] = MSS
        ctx["mi_min_rtt_us"] = F.mi_min_rtt_context_us(np.rint(mi_min_rtt_us[ei, fi]).astype(np.int64))

        n_active = active.sum(1)
        truth = {
            "rate_Bps": rate[ei, fi].astype(np.float64),
            "capacity_Bps": C[ei],
            "flows": n_active[ei].astype(np.float64),
            "fair_Bps": C[ei] / n_active[ei],
            "base_rtt_s": base[ei],
            "queue_bytes": Q[ei],
            "queue_cap_bytes": qcap[ei],
        }
        # Not the oracle's (never recorded): what an online learner sees, to label the flow's
        # previous decision with `ctx` (userspace/cc/online.py).
        truth.update(episode=ei, flow=fi, context=ctx, time_s=(t + 1) * dt[ei])
        q = np.asarray(policy(h, truth), np.int8).reshape(-1)
        rate[ei, fi] = F.clamp_rate(F.apply_action(rate[ei, fi], q), RATE_MIN_BPS, RATE_MAX_BPS)
        target = F.mi_target_us(srtt_us[ei, fi].astype(np.int64), rate[ei, fi], MSS).astype(np.float64)
        mi_ticks[ei, fi] = np.maximum(1, np.ceil(target / dt_us[ei]))
        mi_start[ei, fi] = t + 1
        acc_cnt[ei, fi] = 0
        acc_sum[ei, fi] = 0
        mi_min_rtt_us[ei, fi] = 0
        for k in ("sent", "dlv", "lost"):
            mark[k][ei, fi] = seg[k]
        for k in ("sent", "dlv"):
            mark_bytes[k][ei, fi] = cum[k][ei, fi]

        if record:
            rec["obs"].append(h)
            rec["act"].append(q)
            rec["mi"].append(mi)
            rec["ctx"].append(ctx)
            rec["ep"].append(ei)
            rec["fl"].append(fi)
            for k in TRUTH_FIELDS:
                rec[k].append(truth[k])

    window = np.maximum(m_cap, 1e-9)
    tput = cum["win_dlv"] * present_whole
    k_flows = present_whole.sum(1)
    jain = np.where(k_flows > 0, tput.sum(1) ** 2 / np.maximum(k_flows * (tput ** 2).sum(1), 1e-9), 1.0)
    steps = T - m_from
    metrics = {
        "utilisation": cum["win_dlv"].sum(1) / window,
        "queue_delay_ms": m_qdelay / steps * 1e3,
        "latency_ratio": m_rtt_ratio / np.maximum(m_rtt_n, 1e-9),
        "loss_rate": m_lost / np.maximum(m_sent, 1e-9),
        "jain": jain,
    }
    if trace is not None:
        metrics["trace"] = {
            "t_s": np.array([x[0] for x in trace]),
            "rate_Bps": np.array([x[1] for x in trace]),
            "queue_bytes": np.array([x[2] for x in trace]),
            "capacity_Bps": np.array([x[3] for x in trace]),
            "acked_bytes": np.array([x[4] for x in trace]),
        }

    def cat(key, dtype=None, width=None):
        if not rec[key]:
            shape = (0,) if width is None else (0, width)
            return np.zeros(shape, dtype or np.float64)
        return np.concatenate(rec[key])

    return Rollout(
        obs=cat("obs", np.int8, F.INPUTS),
        actions=cat("act", np.int8),
        truth={k: cat(k) for k in TRUTH_FIELDS},
        mi=cat("mi", F.MI_DTYPE),
        context=cat("ctx", CONTEXT_DTYPE),
        episode=cat("ep", np.int64),
        flow=cat("fl", np.int64),
        metrics=metrics,
    )


def fixed_rate_policy(q: int = 0) -> Policy:
    """A policy that always answers `q` (0: keep the rate) -- for tests and baselines."""
    return lambda obs, truth: np.full(len(obs), q, np.int8)
