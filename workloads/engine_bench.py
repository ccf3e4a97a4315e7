"""Experiment "engine": what one snapshot inference costs, per inference and per multiply-accumulate.

The user-space build of the engine is compiled with the kernel's code-generation constraints (no
SIMD, no floating-point registers), so it times the arithmetic the kernel runs; timing happens
inside C (the thread's CPU time around a loop) so neither Python's call overhead nor other
processes holding the CPU are in the figure. Each network is timed several times and the median
is reported with the spread, because the machines are shared and noisy. The in-kernel figure comes from the core's BENCH command in the guest.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from testbed.results import Run, new_run
from workloads.experiment import Field, experiment_path, load_experiment

GOAL_NS_PER_MAC = 1.0  # issue goal: at most 1 ns per multiply-accumulate on these CPUs

SCHEMA = {
    "description": Field(str),
    "repetitions": Field(int),
    "macs_per_repetition": Field(int),
    "seed": Field(int),
    "networks": Field(
        list,
        item_schema={"name": Field(str), "units": Field(list), "activations": Field(list)},
    ),
    "kernel": Field(dict, required=False),
}
KERNEL_SCHEMA = {
    "enabled": Field(bool),
    "kernel": Field(str),
    "macs_per_repetition": Field(int),
}


@dataclass(frozen=True)
class EngineTiming:
    network: str
    units: list[int]
    activations: list[str]
    macs: int
    iterations: int
    ns_per_inference: float  # median over repetitions
    ns_per_inference_min: float
    ns_per_inference_max: float
    ns_per_mac: float
    meets_goal: bool
    repetitions_ns: list[float]


def network_blob(network: dict[str, Any], seed: int) -> bytes:
    """The hot-update blob of an experiment's network, quantized (seeded) by the toolchain."""
    from userspace.snapshot import build_snapshot, write_blob
    from workloads.models import dense_model

    model = dense_model(network["units"], network["activations"], seed=seed, name=network["name"])
    return write_blob(build_snapshot(model, seed=seed).spec)


def time_network(network: dict[str, Any], blob: bytes, repetitions: int, macs_per_repetition: int,
                 seed: int) -> EngineTiming:
    """Load the blob into the C engine (parsed exactly as the kernel parses it) and time it."""
    from userspace.snapshot import Engine

    engine = Engine.from_blob(blob)
    macs = engine.macs
    iterations = max(1000, macs_per_repetition // max(macs, 1))
    sample = np.random.default_rng(seed).integers(-128, 128, size=engine.input_size, dtype=np.int8)
    engine.bench(sample, iterations=max(100, iterations // 10))  # warm caches and the branch predictor
    per_inference = [engine.bench(sample, iterations=iterations) for _ in range(repetitions)]
    median = statistics.median(per_inference)
    return EngineTiming(
        network=network["name"],
        units=list(network["units"]),
        activations=list(network["activations"]),
        macs=macs,
        iterations=iterations,
        ns_per_inference=median,
        ns_per_inference_min=min(per_inference),
        ns_per_inference_max=max(per_inference),
        ns_per_mac=median / macs,
        meets_goal=median / macs <= GOAL_NS_PER_MAC,
        repetitions_ns=per_inference,
    )


def run(experiment_file: Path | None = None) -> Run:
    """Run the engine experiment into a new results directory; each network is recorded as it finishes."""
    from common.proc import run as run_command
    from userspace.snapshot.engine import ENGINE_DIR, library_path

    path = experiment_file or experiment_path("engine")
    config = load_experiment(path, SCHEMA)
    kernel_config = config.get("kernel", {"enabled": False, "kernel": "", "macs_per_repetition": 0})
    _check_kernel_table(kernel_config, path)
    run = new_run(
        "engine",
        experiment_file=path,
        engine_build={
            "cflags": run_command(["make", "-s", "-C", ENGINE_DIR, "print-cflags"], "engine flags").strip(),
            "library_key": library_path().parent.name,
        },
        goal_ns_per_mac=GOAL_NS_PER_MAC,
    )
    blobs: dict[str, bytes] = {}
    try:
        for network in config["networks"]:
            blobs[network["name"]] = network_blob(network, config["seed"])
            timing = time_network(network, blobs[network["name"]], config["repetitions"],
                                  config["macs_per_repetition"], config["seed"])
            run.record(f"userspace/{timing.network}", asdict(timing))
            print(
                f"  {timing.network:10s} {timing.macs:7d} MACs  {timing.ns_per_inference:10.1f} ns/inference  "
                f"{timing.ns_per_mac:6.3f} ns/MAC  (goal <= {GOAL_NS_PER_MAC} ns/MAC: "
                f"{'met' if timing.meets_goal else 'NOT met'})"
            )
        if kernel_config["enabled"]:
            from workloads.engine_kernel import time_in_guest

            time_in_guest(run, config["networks"], blobs, kernel_config)
    except BaseException:
        run.finish(status="failed")
        raise
    run.finish()
    return run


def _check_kernel_table(table: dict[str, Any], path: Path) -> None:
    from workloads.experiment import ExperimentError, check_table

    if not isinstance(table, dict):
        raise ExperimentError(f"{path.name}: [kernel] must be a table")
    check_table(table, KERNEL_SCHEMA, f"{path.name}: [kernel]")
