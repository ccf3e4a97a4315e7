"""Online adaptation in the simulator: the slow path's loop, on the host, in seconds.

Why: in the guest one cc-adapt run takes 20 minutes and shows only what one adapter did on one
link.  Here the same adapter (CCAdapter, or anything with its interface) learns from the same
sample contexts lf_cc sends (sim.run emits them), on the service's schedule -- every
`sample_every`-th decision sampled, one adapt call per `round_s` of simulated time, the new
network deployed from the next round on -- so an adapter or a teacher can be judged against
the frozen network before it costs a guest run.  `compare` runs both from one starting network
through a link change and reports utilisation and queueing delay per phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from userspace.slowpath.interface import Batch, Encoding

from . import features as F
from . import sim
from .context import pack_contexts
from .teacher import (QUEUE_TARGET, online_label, oracle_label, rate_before, rtt_inflation, share_target,
                      step_label)
from .train import network_policy, numpy_forward, rollout

SNAPSHOT_OUTPUT = Encoding(scale=F.OUTPUT_SCALE, zero_point=0)


@dataclass
class OnlineLoop:
    """A simulator policy that is the adapter's network, adapted as the slow path would."""

    adapter: Any
    sample_every: int = 4
    round_s: float = 5.0
    min_round_samples: int = 64
    oracle_teacher: bool = False      # label with the oracle (the truth), not the sample contexts
    start_s: float = 0.0              # frozen until then: earlier samples are dropped
    updates_s: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.weights = self.adapter.model.get_weights()
        self.prev: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
        self.decisions = 0
        self.pending: list[tuple[np.ndarray, int, np.ndarray]] = []
        self.next_round_s = self.start_s + self.round_s

    def __call__(self, obs: np.ndarray, truth: dict) -> np.ndarray:
        now = float(np.max(truth["time_s"]))
        if now < self.start_s:
            self.pending = []
        q = F.output_to_int8(numpy_forward(self.weights, F.to_real(obs))[:, 0])
        oracle = oracle_label(truth) if self.oracle_teacher else None
        for i, (e, f) in enumerate(zip(truth["episode"], truth["flow"])):
            key = (int(e), int(f))
            if oracle is not None:
                if self.decisions % self.sample_every == 0:
                    self.pending.append((obs[i].copy(), 0, np.array([oracle[i]], np.float32)))
            elif key in self.prev and self.decisions % self.sample_every == 0:
                x, a = self.prev[key]
                self.pending.append((x, a, truth["context"][i:i + 1]))
            self.prev[key] = (obs[i].copy(), int(q[i]))
            self.decisions += 1
        if now >= self.next_round_s:
            self.next_round_s = now + self.round_s
            if len(self.pending) >= self.min_round_samples:
                self._round(now)
        return q

    def _round(self, now_s: float) -> None:
        inputs = np.stack([x for x, _, _ in self.pending]).astype(np.int8)
        if self.oracle_teacher:   # the third item is the oracle's label
            self.adapter.adapt_labelled(inputs, np.stack([y for _, _, y in self.pending]))
        else:                     # ... the context of the MI after the decision, as lf_cc sends it
            outputs = np.array([[a] for _, a, _ in self.pending], np.int8)
            contexts = pack_contexts(np.concatenate([c for _, _, c in self.pending]))
            self.adapter.adapt(Batch(inputs, outputs, Encoding(F.INPUT_SCALE, 0), SNAPSHOT_OUTPUT,
                                     np.zeros(len(inputs), np.uint64), now_s, contexts=contexts))
        self.pending = []
        self.weights = self.adapter.model.get_weights()
        self.updates_s.append(round(now_s, 2))


def phase_metrics(trace: dict, edges_s: list[float]) -> list[dict]:
    """Utilisation (delivered / capacity) and mean queueing delay between consecutive edges."""
    t = trace["t_s"]
    dt = t[1] - t[0] if len(t) > 1 else 1.0
    out = []
    for lo, hi in zip(edges_s[:-1], edges_s[1:]):
        m = (t >= lo) & (t < hi)
        cap = float(np.sum(trace["capacity_Bps"][m]) * dt)
        qd = trace["queue_bytes"][m] / trace["capacity_Bps"][m]
        out.append({"from_s": lo, "to_s": hi,
                    "utilisation": round(float(trace["acked_bytes"][m].sum()) / max(cap, 1e-9), 3),
                    "queue_delay_ms": round(float(qd.mean()) * 1e3, 2)})
    return out


def compare(spec: dict, make_adapter, seconds: float, change_s: float, settle_s: float = 5.0,
            stale_min: bool = False, **loop_kw) -> dict:
    """Frozen vs adapting from the same start through one scenario (sim.make_scenarios spec with
    its step at change_s); phases: before, the settle window after the change, the rest.
    `stale_min` runs lf_cc with its stale_min parameter set (lf_cc_stale_min_update)."""
    rtts = int(round(seconds * 1000 / spec["rtt_ms"]))
    scen = sim.make_scenarios([dict(spec, step_at=change_s / seconds)], rtts=rtts)
    edges = [seconds * 0.1, change_s, change_s + settle_s, seconds]
    loop = OnlineLoop(make_adapter(), **loop_kw)
    runs = {"frozen": network_policy(loop.weights), "adapting": loop}   # both from the same weights
    out: dict = {"scenario": spec, "edges_s": edges}
    for name, policy in runs.items():
        ro = sim.run(scen, policy, record=False, trace_episode=0, stale_min=stale_min)
        out[name] = phase_metrics(ro.metrics["trace"], edges)
    out["updates_s"] = loop.updates_s
    return out


def rtt_step_study(make_adapter, change_times_s: tuple[float, ...] = (30.0, 33.0, 36.0),
                   settle_s: float = 10.0, after_s: float = 30.0) -> dict:
    """cc-adapt's RTT step (20 -> 60 ms, two flows) at several moments, frozen against adapting
    with the online teacher and with the oracle as teacher, with lf_cc's minimum as it is and
    with its stale_min parameter set (lf_cc_stale_min_update).

    Why: in the guest the step's outcome scattered from 3 to 45 s of starvation per run. Moving
    the step by a few seconds moves it against the 10-s window of the minimum, so if the spread
    comes from that window it shows here as well, and goes away with the rule. The oracle-taught
    column bounds what any teacher could add at this step.
    """
    spec = dict(name="RTT 20 -> 60 ms", mbps=40, rtt_ms=20, flows=2, rtt_ms_after=60)
    out: dict[str, Any] = {"scenario": spec, "change_times_s": list(change_times_s), "settle_s": settle_s}
    for rule in (False, True):
        rows: dict[str, list] = {"frozen": [], "online teacher": [], "oracle teacher": []}
        for change in change_times_s:
            for teacher, oracle in (("online teacher", False), ("oracle teacher", True)):
                run = compare(spec, make_adapter, seconds=change + after_s, change_s=change,
                              settle_s=settle_s, stale_min=rule, oracle_teacher=oracle)
                if teacher == "online teacher":
                    rows["frozen"].append(_after_change(run["frozen"]))
                rows[teacher].append(_after_change(run["adapting"]))
        out["stale-minimum rule" if rule else "minimum as in lf_cc"] = rows
    return out


def _after_change(phases: list[dict]) -> list:
    """(utilisation, queueing delay ms) of the settle window and of the rest."""
    return [(p["utilisation"], p["queue_delay_ms"]) for p in phases[1:]]


def drift(start_model: str, make_adapter, seconds: float = 60.0, flows: int = 2,
          learning_rates: tuple[float, ...] = (1e-4, 1e-5), window_s: float = 10.0) -> dict:
    """Queue delay per window on a link that never changes: frozen, and adapting with the online
    teacher and with the oracle as teacher, at each learning rate.

    Why: on a steady link there is nothing to adapt to, so a good slow path leaves the network
    where it was. A queue that grows under the *oracle's* labels is the adaptation procedure's
    doing, not the teacher's. The likely way: lf_cc reads the latency ratio against a 10-s
    windowed minimum, so a standing queue that outlives the window becomes the new minimum and
    reads as no queue, and a network fine-tuned on its own recent states can keep adding to it.
    """
    spec = dict(name="steady", mbps=40, rtt_ms=20, flows=flows)
    scen = sim.make_scenarios([spec], rtts=int(round(seconds * 1000 / spec["rtt_ms"])))
    edges = list(np.arange(0.0, seconds + 1e-9, window_s))
    frozen = network_policy(make_adapter(start_model).model.get_weights())
    runs: dict[str, Any] = {"frozen": frozen}
    for lr in learning_rates:
        runs[f"online teacher, lr {lr:g}"] = OnlineLoop(make_adapter(start_model, learning_rate=lr))
        runs[f"oracle teacher, lr {lr:g}"] = OnlineLoop(make_adapter(start_model, learning_rate=lr),
                                                        oracle_teacher=True)
    out: dict[str, Any] = {"scenario": spec, "edges_s": edges}
    for name, policy in runs.items():
        trace = sim.run(scen, policy, record=False, trace_episode=0).metrics["trace"]
        out[name] = [p["queue_delay_ms"] for p in phase_metrics(trace, edges)]
    return out


def teacher_agreement(weights: list, episodes: int = 96, seed: int = 11) -> dict:
    """How well the online teacher's labels agree with the oracle's on the states a network visits.

    The network rolls out random episodes (sim.sample_scenarios); each decision gets the oracle's
    label (it knows the link at that moment) and the online teacher's (from the context of the MI
    after the decision, as lf_cc sends it).  Online adaptation can only move a network toward the
    online teacher, so when the two disagree a network trained on the oracle can only lose.
    `regimes` splits the decisions by what the teacher cannot know: whether lf_cc's windowed
    minimum RTT is the path's base (within 5 %; above it when it holds a standing queue, below
    it after the path got longer) and whether the flow sends within 20 % of its fair share.
    """
    ro, decision, after = _labelled_decisions(weights, episodes, seed)
    oracle = oracle_label(ro.truth)[decision]
    online = online_label(ro.context[after], ro.actions[decision])
    base_us = np.asarray(ro.truth["base_rtt_s"])[after] * 1e6
    min_error = ro.context["min_mean_rtt_us"][after] / base_us - 1.0
    fair = np.abs(np.asarray(ro.truth["rate_Bps"])[decision] / np.asarray(ro.truth["fair_Bps"])[decision] - 1.0) < 0.2
    regimes = {"minimum at the base": np.abs(min_error) < 0.05,
               "minimum above the base (a standing queue)": min_error >= 0.05,
               "minimum below the base (the path got longer)": min_error <= -0.05,
               "within 20 % of the fair share": fair,
               "off the fair share by more": ~fair,
               "minimum at the base and fair": (np.abs(min_error) < 0.05) & fair}
    return {"decisions": int(len(decision)), **_agreement(online, oracle),
            "network_vs_oracle_mse": round(float(np.mean((ro.actions[decision] / 128.0 - oracle) ** 2)), 4),
            "regimes": {name: {"share": round(float(m.mean()), 3), **_agreement(online[m], oracle[m])}
                        for name, m in regimes.items() if m.sum() > 1}}


def teacher_ablation(weights: list, episodes: int = 96, seed: int = 11) -> dict:
    """The online teacher's correlation with the oracle when it is told what it cannot measure.

    Same rollouts as teacher_agreement; the teacher's rule is kept and its two estimates replaced
    by the truth, one at a time: the base RTT (instead of lf_cc's windowed minimum) and the flow's
    fair share (instead of its own delivery rate, and instead of a blind +10 % probe when the MI
    shows no queue). `oracle_one_mi_later` is the oracle itself judged on the MI after the decision,
    the ceiling of any teacher that labels a decision by its outcome. Which estimate is worth
    building a better online signal for is the one whose truth closes the gap.
    """
    ro, decision, after = _labelled_decisions(weights, episodes, seed)
    oracle = oracle_label(ro.truth)[decision]
    answers = ro.actions[decision]
    context = ro.context[after]
    with_base = context.copy()
    with_base["min_mean_rtt_us"] = np.asarray(ro.truth["base_rtt_s"])[after] * 1e6
    fair = np.asarray(ro.truth["fair_Bps"])[after]

    def share_known(ctx: np.ndarray) -> np.ndarray:
        target = share_target(fair, rtt_inflation(ctx), QUEUE_TARGET)
        return step_label(rate_before(ctx["pacing_rate_Bps"], answers), target)

    one_mi_later = {k: np.asarray(v)[after] for k, v in ro.truth.items()}
    one_mi_later["rate_Bps"] = np.asarray(ro.truth["rate_Bps"])[decision]
    labels = {"online": online_label(context, answers), "base_known": online_label(with_base, answers),
              "share_known": share_known(context), "both_known": share_known(with_base),
              "oracle_one_mi_later": oracle_label(one_mi_later)}
    return {name: round(float(np.corrcoef(label, oracle)[0, 1]), 3) for name, label in labels.items()}


def _labelled_decisions(weights: list, episodes: int, seed: int):
    """A network's rollouts over random episodes, and the index pairs (decision, the same flow's
    next decision, whose context is the MI the first one set)."""
    scen = sim.sample_scenarios(np.random.default_rng(seed), episodes, rtts=200)
    ro = rollout(scen, network_policy(weights), 48)
    order = np.lexsort((np.arange(len(ro.episode)), ro.flow, ro.episode))
    same = (ro.episode[order][1:] == ro.episode[order][:-1]) & (ro.flow[order][1:] == ro.flow[order][:-1])
    return ro, order[:-1][same], order[1:][same]


def _agreement(online: np.ndarray, oracle: np.ndarray) -> dict:
    return {"mse": round(float(np.mean((online - oracle) ** 2)), 4),
            "correlation": round(float(np.corrcoef(online, oracle)[0, 1]), 3),
            "mean_online": round(float(online.mean()), 3), "mean_oracle": round(float(oracle.mean()), 3)}


#: The link changes cc-adapt makes, one at a time (the simulator steps a link once per episode).
#: The last is cc-adapt's bursty ACK path as the simulator can have it: its RTT noise is |N(0, 18 ms)|,
#: independent per sample (a spread of 11 ms), where the guest's ACK slots (0-30 ms apart) delay
#: ACKs by 10 ms on average with a spread of 7 ms, in bursts the simulator does not model.
CHANGES = (
    dict(name="bandwidth 40 -> 10 Mbit/s", mbps=40, rtt_ms=20, flows=2, mbps_after=10),
    dict(name="RTT 20 -> 60 ms", mbps=40, rtt_ms=20, flows=2, rtt_ms_after=60),
    dict(name="RTT noise 1 -> 18 ms at 60 ms", mbps=40, rtt_ms=60, flows=2, jitter_ms_after=18),
)


def main(argv: list[str] | None = None) -> None:
    """Frozen vs adapting for a committed network through each of CHANGES."""
    import argparse
    import json

    from .adapter import CCAdapter
    from .train import MODEL_FILE, NETWORKS, network_dir

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("network", nargs="?", default="cc-narrow", choices=sorted(NETWORKS))
    parser.add_argument("--seconds", type=float, default=60.0, help="episode length (default 60)")
    parser.add_argument("--change-at", type=float, default=30.0, help="the change, s (default 30)")
    parser.add_argument("--settle", type=float, default=5.0, help="the phase right after it, s (default 5)")
    args = parser.parse_args(argv)
    start = str(network_dir(args.network) / MODEL_FILE)
    weights = CCAdapter(start).model.get_weights()
    print(json.dumps({"network": args.network, "teacher_agreement": teacher_agreement(weights),
                      "teacher_ablation": teacher_ablation(weights)}))
    print(json.dumps({"network": args.network, "drift_queue_delay_ms": drift(start, CCAdapter)}))
    print(json.dumps({"network": args.network, "rtt_step_study": rtt_step_study(lambda: CCAdapter(start))}))
    for spec in CHANGES:
        out = compare(spec, lambda: CCAdapter(start), seconds=args.seconds, change_s=args.change_at,
                      settle_s=args.settle)
        print(json.dumps({"network": args.network, **out}))
    # the same last change, adapting only from the change on: what the slow path learns from the
    # new link itself, without what it learnt (and drifted) before
    out = compare(CHANGES[-1], lambda: CCAdapter(start), seconds=args.seconds, change_s=args.change_at,
                  settle_s=args.settle, start_s=args.change_at)
    print(json.dumps({"network": args.network, "adapting_from_the_change_on": True, **out}))


if __name__ == "__main__":
    main()
