"""Train lf_cc's network by DAgger imitation of the oracle, quantize it, evaluate it as the kernel
runs it, and write userspace/cc/model/.

Why DAgger: behaviour cloning alone trains on the oracle's own trajectories, and the network then
drifts into states the oracle never visits (a standing queue, a rate far off its share).  DAgger
rolls out the *current* network, labels every state it visits with the oracle, aggregates and
retrains, so the data covers the states the network itself produces.  The first iteration rolls
out the oracle; afterwards each decision is the oracle's with probability beta_i = beta0^i.

Everything the network sees goes through the kernel's arithmetic: the simulator builds a struct
lf_cc_mi per MI, features.py encodes it like lf_cc_model.h, and the network's real input is
q / 16.  The final evaluation runs the *quantized* snapshot in the same C engine the kernel runs
(userspace.snapshot.Engine), so its numbers are the kernel's.

Deterministic: one seed drives numpy (scenarios, subsampling, mixing, shuffling) and
tf.keras.utils.set_random_seed (weights); TensorFlow runs single-threaded with op determinism.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import features as F
from . import sim, teacher

MODEL_DIR = Path(__file__).resolve().parent / "model"
#: The links cc-adapt starts on (40 Mbit/s, 20 ms, one BDP of queue), give or take: the only
#: ones "cc-narrow" is trained on.
NARROW_LINKS = {"mbps": (30.0, 50.0), "rtt_ms": (15.0, 25.0), "queue_bdp": (0.8, 1.2)}
#: The committed networks, by name: where each lives and how its training differs from Config().
#: "cc" is the network every experiment starts from, trained on the whole simulator's range.
#: "cc-narrow" is the same training on cc-adapt's starting link only, never changing: a network
#: fitted to where it was deployed, as an operator would train one, and the start from which
#: cc-adapt shows what online adaptation does once the link changes.
NETWORKS: dict[str, tuple[Path, dict]] = {
    "cc": (MODEL_DIR, {}),
    "cc-narrow": (MODEL_DIR.parent / "model-narrow", {"links": NARROW_LINKS}),
}
MODEL_FILE = "cc.keras"
CALIBRATION_FILE = "calibration.npy"   # the int8 states the committed snapshot is calibrated on
LAYERS = (F.INPUTS, 32, 16, F.OUTPUTS)
INPUT_RANGE = (-8.0, 7.9375)   # pins the snapshot's input quantization at scale 1/16, zp 0
L2 = 1e-4                      # keeps pre-activations moderate: int8 activations are per tensor
CALIBRATION_ROWS = 2000
OFFLINE_ROWS = 1000   # of those, what an adapted snapshot is calibrated on beside the kernel's inputs


@dataclass
class Config:
    """Everything that determines the trained model (recorded in training.json)."""

    seed: int = 1
    iterations: int = 8             # DAgger iterations (the first rolls out the oracle)
    episodes: int = 192             # per iteration
    batch_episodes: int = 64        # episodes simulated at once
    rtts: int = 120                 # episode length in base RTTs
    samples_per_iteration: int = 60_000   # subsampled from each iteration's decisions
    beta0: float = 0.5              # oracle mixing: beta_i = beta0 ** i
    epochs: int = 6                 # per iteration, over the whole aggregate
    batch_size: int = 256
    learning_rate: float = 3e-3
    eval_episodes: int = 64         # held-out random episodes
    eval_rtts: int = 200
    scenarios: list = field(default_factory=lambda: [dict(s) for s in EVAL_SCENARIOS])
    links: dict | None = None       # narrower links than the simulator's ranges (sim.sample_scenarios)

    @classmethod
    def quick(cls, seed: int = 1) -> "Config":
        """A tiny budget for tests: seconds, not minutes."""
        return cls(seed=seed, iterations=2, episodes=8, batch_episodes=8, rtts=40,
                   samples_per_iteration=3000, epochs=1, eval_episodes=4, eval_rtts=60,
                   scenarios=[dict(s) for s in EVAL_SCENARIOS[:2]])


#: Fixed evaluation scenarios: the experiments' settings and the hard cases.
EVAL_SCENARIOS = [
    dict(name="1 flow 20M 20ms", mbps=20, rtt_ms=20),
    dict(name="1 flow 100M 50ms", mbps=100, rtt_ms=50),
    dict(name="1 flow 200M 150ms", mbps=200, rtt_ms=150),
    dict(name="4 flows 50M 30ms staggered", mbps=50, rtt_ms=30, flows=4, stagger=0.3),
    dict(name="16 flows 100M 10ms", mbps=100, rtt_ms=10, flows=16),
    dict(name="1 flow 20M 50ms 1% loss", mbps=20, rtt_ms=50, loss=0.01),
    dict(name="2 flows 50M 40ms shallow queue", mbps=50, rtt_ms=40, flows=2, queue_bdp=0.2),
    dict(name="bw step 100->25M 20ms", mbps=100, rtt_ms=20, step_at=0.5, mbps_after=25),
    dict(name="bw step 10->40M 40ms", mbps=10, rtt_ms=40, step_at=0.5, mbps_after=40),
    dict(name="rtt step 20->80ms 50M", mbps=50, rtt_ms=20, step_at=0.5, rtt_ms_after=80),
]


TRACE_SCENARIO = "bw step 100->25M 20ms"


def limit_threads(tf: Any, threads: int) -> None:
    """Keep TensorFlow's thread pools (every CPU by default) to `threads`; possible only before
    TensorFlow has run anything in this process, and a no-op after."""
    try:
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        pass


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    limit_threads(tf, 1)
    tf.config.experimental.enable_op_determinism()
    return tf


def build_model(seed: int) -> Any:
    """The Aurora-sized MLP, 30 -> 32 -> 16 -> 1, tanh everywhere.

    The last tanh is not a choice: TFLite quantizes a tanh output at scale 1/128, zero point 0,
    which is the output encoding lf_cc decodes with constants.
    """
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(shape=(F.INPUTS,), name="features")
    h = inputs
    for i, units in enumerate(LAYERS[1:]):
        h = tf.keras.layers.Dense(units, activation="tanh", name=f"dense{i}",
                                  kernel_regularizer=tf.keras.regularizers.L2(L2))(h)
    return tf.keras.Model(inputs, h, name="lf_cc")


def compile_model(model: Any, learning_rate: float) -> Any:
    tf = _tf()
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def numpy_forward(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The float network in numpy (rollouts: no TensorFlow call per simulator tick)."""
    h = np.asarray(x, np.float32)
    for w, b in zip(weights[0::2], weights[1::2]):
        h = np.tanh(h @ w + b)
    return h


def network_policy(weights: list[np.ndarray]) -> sim.Policy:
    """The float network as a simulator policy: q/16 in, output quantized like TFLite's."""
    return lambda obs, truth: F.output_to_int8(numpy_forward(weights, F.to_real(obs))[:, 0])


def mixed_policy(weights: list[np.ndarray], beta: float, rng: np.random.Generator) -> sim.Policy:
    """Each decision the oracle's with probability beta, the network's otherwise."""
    net = network_policy(weights)

    def policy(obs: np.ndarray, truth: dict) -> np.ndarray:
        use_oracle = rng.random(len(obs)) < beta
        out = net(obs, truth)
        if use_oracle.any():
            out = np.where(use_oracle, teacher.oracle_policy(obs, truth), out)
        return out

    return policy


def rollout(scen: sim.Scenarios, policy: sim.Policy, batch: int) -> sim.Rollout:
    """sim.run over `scen` in chunks of `batch` episodes, concatenated."""
    parts = []
    for lo in range(0, len(scen), batch):
        idx = slice(lo, lo + batch)
        sub = sim.Scenarios(scen.bandwidth_Bps[idx], scen.base_rtt_s[idx], scen.queue_pkts[idx],
                            scen.loss[idx], scen.flows[idx], scen.start_tick[idx],
                            scen.change_tick[idx], scen.bandwidth_after_Bps[idx],
                            scen.base_rtt_after_s[idx], scen.ticks, scen.names[idx],
                            None if scen.jitter_s is None else scen.jitter_s[idx], scen.noise_seed + lo)
        width = int(sub.flows.max())
        sub.start_tick = sub.start_tick[:, :width]
        parts.append(sim.run(sub, policy))
    return sim.Rollout(
        obs=np.concatenate([p.obs for p in parts]),
        actions=np.concatenate([p.actions for p in parts]),
        truth={k: np.concatenate([p.truth[k] for p in parts]) for k in sim.TRUTH_FIELDS},
        mi=np.concatenate([p.mi for p in parts]),
        context=np.concatenate([p.context for p in parts]),
        episode=np.concatenate([p.episode for p in parts]),
        flow=np.concatenate([p.flow for p in parts]),
        metrics={k: np.concatenate([p.metrics[k] for p in parts]) for k in parts[0].metrics},
    )


def dagger(cfg: Config, log=print) -> tuple[Any, list[dict], np.ndarray]:
    """Train; return the Keras model, the per-iteration log and the last iteration's visited
    states (int8 [n, 30], the network's own distribution: what the snapshot calibrates on)."""
    rng = np.random.default_rng(cfg.seed)
    model = compile_model(build_model(cfg.seed), cfg.learning_rate)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    history = []
    for it in range(cfg.iterations):
        t0 = time.monotonic()
        beta = 1.0 if it == 0 else cfg.beta0 ** it
        scen = sim.sample_scenarios(rng, cfg.episodes, rtts=cfg.rtts, links=cfg.links)
        weights = [w.astype(np.float32) for w in model.get_weights()]
        ro = rollout(scen, mixed_policy(weights, beta, rng), cfg.batch_episodes)
        x = F.to_real(ro.obs)
        y = teacher.oracle_label(ro.truth).astype(np.float32)[:, None]
        # DAgger's own error: the current network on the states it (mostly) visited itself.
        on_policy_mse = float(np.mean((numpy_forward(weights, x) - y) ** 2))
        keep = rng.permutation(len(x))[:cfg.samples_per_iteration]
        states = ro.obs[keep]
        xs.append(x[keep])
        ys.append(y[keep])
        X, Y = np.concatenate(xs), np.concatenate(ys)
        order = rng.permutation(len(X))
        fit = model.fit(X[order], Y[order], epochs=cfg.epochs, batch_size=cfg.batch_size,
                        shuffle=False, verbose=0)
        train_mse = float(fit.history["loss"][-1])
        entry = dict(iteration=it, beta=beta, decisions=int(len(x)), aggregate=int(len(X)),
                     on_policy_mse_before=on_policy_mse, train_mse=train_mse,
                     rollout_utilisation=float(np.mean(ro.metrics["utilisation"])),
                     rollout_latency_ratio=float(np.mean(ro.metrics["latency_ratio"])),
                     seconds=round(time.monotonic() - t0, 1))
        history.append(entry)
        log(f"iteration {it}: beta {beta:.3f}, {len(x)} decisions, on-policy MSE {on_policy_mse:.4f}, "
            f"train MSE {train_mse:.4f}, util {entry['rollout_utilisation']:.3f}, "
            f"latency ratio {entry['rollout_latency_ratio']:.3f} ({entry['seconds']} s)")
    return model, history, states


def calibration_rows(states: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Reals to calibrate on: visited states (int8 features) plus two pin rows.

    TFLite calibrates the input scale from the min and max over every element, and each hidden
    layer's from the min and max of its pre-activations.  Rows with *one* element at each end of
    INPUT_RANGE pin the input at scale 1/16, zero point 0 without also being extreme hidden
    activations (full rows of -8 or 7.9375 are, and they coarsen every later layer's int8 grid;
    so does calibrating on uniform random rows, which the network never sees).  Without
    visited states, random rows of INPUT_RANGE are used (what build_snapshot does by default).
    """
    pins = np.zeros((2, F.INPUTS), np.float32)
    pins[0, 0], pins[1, 0] = INPUT_RANGE
    if states is None or not len(states):
        rng = np.random.default_rng(seed)
        rows = rng.uniform(*INPUT_RANGE, size=(256, F.INPUTS)).astype(np.float32)
    else:
        rng = np.random.default_rng(seed)
        pick = rng.permutation(len(states))[:CALIBRATION_ROWS]
        rows = F.to_real(np.asarray(states, np.int8)[pick])
    return np.concatenate([pins, rows]).astype(np.float32)


def calibration_states(states: np.ndarray, seed: int = 0) -> np.ndarray:
    """The visited states (int8 [n, 30]) a snapshot calibrates on: at most CALIBRATION_ROWS."""
    pick = np.random.default_rng(seed).permutation(len(states))[:CALIBRATION_ROWS]
    return np.asarray(states, np.int8)[np.sort(pick)]


def offline_states(model: Path | str, seed: int = 0) -> np.ndarray:
    """The committed calibration states (int8 [<= OFFLINE_ROWS, 30]) beside `model` that every
    later snapshot of it is calibrated on too, by LiteFlow's slow path (adapter.py) and in the
    kernel (kernel-full's range seed, full.py); none if the network has no calibration file."""
    path = Path(model).with_name(CALIBRATION_FILE)
    if not path.exists():
        return np.zeros((0, F.INPUTS), np.int8)
    return calibration_states(np.load(path), seed)[:OFFLINE_ROWS]


def network_dir(name: str) -> Path:
    """Where the committed network `name` (a key of NETWORKS) lives."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r} (known: {', '.join(NETWORKS)})")
    return NETWORKS[name][0]


def network_config(name: str, *, quick: bool = False, seed: int | None = None) -> Config:
    """The training configuration that reproduces the committed network `name`."""
    network_dir(name)
    overrides = dict(NETWORKS[name][1], **({} if seed is None else {"seed": seed}))
    return replace(Config.quick() if quick else Config(), **overrides)


def committed_snapshot(model_dir: Path = MODEL_DIR) -> Any:
    """The snapshot of the committed network every lf_cc scheme starts from: cc.keras quantized
    on the calibration states training saved next to it, so it is the snapshot training.json
    evaluated, bit for bit."""
    return quantized_snapshot(Path(model_dir) / MODEL_FILE, np.load(Path(model_dir) / CALIBRATION_FILE))


def quantized_snapshot(model: Any, states: np.ndarray | None = None, seed: int = 0) -> Any:
    """Quantize (input pinned to INPUT_RANGE, hidden layers calibrated on visited `states`, int8
    [n, 30]) and check the encodings lf_cc hard-codes."""
    from userspace.snapshot import build_snapshot

    snap = build_snapshot(model, data=calibration_rows(states, seed), input_range=INPUT_RANGE,
                          seed=seed)
    check_quantization(snap.spec)
    return snap


def check_quantization(spec: Any) -> None:
    """Assert the snapshot's input is scale 1/16 zp 0 and its output 1/128 zp 0 (Q31 form too)."""
    iq, oq = spec.input_quant, spec.output_quant
    assert (iq.zero_point, iq.multiplier, iq.shift) == (0, F.INPUT_QUANT_MULT, F.INPUT_QUANT_SHIFT), iq
    assert (oq.zero_point, oq.multiplier, oq.shift) == (0, F.OUTPUT_QUANT_MULT, F.OUTPUT_QUANT_SHIFT), oq
    if iq.scale:
        assert abs(iq.scale - F.INPUT_SCALE) < 1e-12, iq
    if oq.scale:
        assert abs(oq.scale - F.OUTPUT_SCALE) < 1e-12, oq


def engine_policy(spec: Any) -> sim.Policy:
    """The quantized snapshot in the kernel's C engine as a simulator policy."""
    from userspace.snapshot import Engine

    engine = Engine.from_spec(spec)
    return lambda obs, truth: engine.infer(obs)[:, 0]


def _summary(metrics: dict) -> dict:
    keys = ("utilisation", "queue_delay_ms", "latency_ratio", "loss_rate", "jain")
    return {k: float(np.mean(metrics[k])) for k in keys}


def evaluate(spec: Any, cfg: Config, trace_name: str | None = None) -> dict:
    """The quantized policy next to the oracle: fixed scenarios and held-out random episodes."""
    fixed = sim.make_scenarios(cfg.scenarios, rtts=cfg.eval_rtts)
    rng = np.random.default_rng(cfg.seed + 10_000)
    held_out = sim.sample_scenarios(rng, cfg.eval_episodes, rtts=cfg.eval_rtts)
    trace_ep = fixed.names.index(trace_name) if trace_name in fixed.names else None
    out: dict = {"scenarios": {}, "held_out_random": {}}
    traces = {}
    for who, policy in (("oracle", teacher.oracle_policy), ("snapshot", engine_policy(spec))):
        ro = sim.run(fixed, policy, record=True, trace_episode=trace_ep)
        y = teacher.oracle_label(ro.truth)
        for i, name in enumerate(fixed.names):
            row = out["scenarios"].setdefault(name, {})
            row[who] = {k: round(float(ro.metrics[k][i]), 4)
                        for k in ("utilisation", "queue_delay_ms", "latency_ratio", "loss_rate", "jain")}
        if trace_ep is not None:
            traces[who] = ro.metrics["trace"]
        rr = rollout(held_out, policy, cfg.batch_episodes)
        out["held_out_random"][who] = {k: round(v, 4) for k, v in _summary(rr.metrics).items()}
        if who == "snapshot":
            yr = teacher.oracle_label(rr.truth)
            out["held_out_random"]["snapshot_imitation_mse"] = round(
                float(np.mean((F.output_to_real(rr.actions) - yr) ** 2)), 5)
            out["scenarios_snapshot_imitation_mse"] = round(
                float(np.mean((F.output_to_real(ro.actions) - y) ** 2)), 5)
    out["traces"] = traces
    return out


def plot(history: list[dict], evaluation: dict, path: Path, trace_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), dpi=80)
    it = [h["iteration"] for h in history]
    axes[0].semilogy(it, [h["on_policy_mse_before"] for h in history], "o-", label="on-policy, before fit")
    axes[0].semilogy(it, [h["train_mse"] for h in history], "s-", label="aggregate, after fit")
    axes[0].set(xlabel="DAgger iteration", ylabel="imitation MSE", title="imitation error")
    axes[0].legend(fontsize=7)
    names = list(evaluation["scenarios"])
    xs = np.arange(len(names))
    for off, who in ((-0.2, "oracle"), (0.2, "snapshot")):
        axes[1].bar(xs + off, [evaluation["scenarios"][n][who]["utilisation"] for n in names], 0.4, label=who)
    axes[1].set(ylabel="utilisation", title="fixed scenarios (int8 snapshot)", ylim=(0, 1.05))
    axes[1].set_xticks(xs, [str(i) for i in range(len(names))])
    axes[1].legend(fontsize=7)
    for who, style in (("oracle", "--"), ("snapshot", "-")):
        tr = evaluation["traces"].get(who)
        if tr is None:
            continue
        axes[2].plot(tr["t_s"], tr["rate_Bps"].sum(1) * 8 / 1e6, style, label=f"{who} total rate")
    tr = evaluation["traces"].get("oracle")
    if tr is not None:
        axes[2].plot(tr["t_s"], tr["capacity_Bps"] * 8 / 1e6, ":k", label="capacity")
    axes[2].set(xlabel="s", ylabel="Mbit/s", title=trace_name)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train(cfg: Config | None = None, out_dir: Path | str | None = MODEL_DIR, *,
          evaluate_snapshot: bool = True, log=print) -> dict:
    """Train from scratch; with `out_dir` write cc.keras, training.json and training.png there.

    Returns the training record (what training.json holds) plus "model" (the Keras model).
    """
    cfg = cfg or Config()
    _tf()
    started = time.monotonic()
    model, history, states = dagger(cfg, log=log)
    train_seconds = time.monotonic() - started
    record: dict = {
        "config": asdict(cfg),
        "seed": cfg.seed,
        "network": {"layers": list(LAYERS), "activations": ["tanh"] * 3,
                    "input": "int8 features q, real x = q / 16 (kernel/cc/lf_cc_model.h)",
                    "output": "tanh y, int8 q = 128 y"},
        "teacher": {"queue_target_rtts": teacher.QUEUE_TARGET, "drain_rtts": teacher.DRAIN_RTTS,
                    "queue_target_buffer": teacher.QUEUE_TARGET_BUFFER},
        "l2": L2,
        "iterations": history,
        "final_imitation_mse": history[-1]["train_mse"],
        "train_seconds": round(train_seconds, 1),
    }
    names = [s["name"] for s in cfg.scenarios]
    trace_name = TRACE_SCENARIO if TRACE_SCENARIO in names else names[0]
    evaluation = None
    calibration = calibration_states(states, cfg.seed)
    if evaluate_snapshot:
        snap = quantized_snapshot(model, calibration, cfg.seed)
        spec = snap.spec
        record["quantization"] = {
            "input": {"scale": spec.input_quant.scale, "zero_point": spec.input_quant.zero_point,
                      "multiplier": spec.input_quant.multiplier, "shift": spec.input_quant.shift},
            "output": {"scale": spec.output_quant.scale, "zero_point": spec.output_quant.zero_point,
                       "multiplier": spec.output_quant.multiplier, "shift": spec.output_quant.shift},
        }
        evaluation = evaluate(spec, cfg, trace_name)
        record["evaluation"] = {k: v for k, v in evaluation.items() if k != "traces"}
        log(json.dumps(record["evaluation"]["held_out_random"]))
    record["total_seconds"] = round(time.monotonic() - started, 1)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / MODEL_FILE)
        np.save(out / CALIBRATION_FILE, calibration)
        (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
        if evaluation is not None:
            plot(history, evaluation, out / "training.png", trace_name)
        log(f"wrote {out / MODEL_FILE}, training.json, training.png")
    record["model"] = model
    return record


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("network", nargs="?", default="cc", choices=sorted(NETWORKS))
    parser.add_argument("--quick", action="store_true", help="a tiny budget (tests)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", default=None, help="default: the network's committed folder")
    args = parser.parse_args(argv)
    cfg = network_config(args.network, quick=args.quick, seed=args.seed)
    train(cfg, args.out or network_dir(args.network))


if __name__ == "__main__":
    main()
