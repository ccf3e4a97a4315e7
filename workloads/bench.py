"""Which benchmark experiments exist and how each is run (one driver module per experiment)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from testbed.results import Run
from workloads.experiment import ExperimentError

# experiment name -> module whose run() drives it (the experiment's data file has the same name)
DRIVERS: dict[str, str] = {
    "engine": "workloads.engine_bench",
    "overhead": "workloads.overhead_bench",
}


def available_experiments() -> list[str]:
    return list(DRIVERS)


def run_experiment(name: str) -> Run:
    if name not in DRIVERS:
        raise ExperimentError(f"unknown experiment {name!r}; available: {', '.join(DRIVERS)}")
    driver: Callable[[], Run] = import_module(DRIVERS[name]).run
    return driver()
