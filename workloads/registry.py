"""Which experiments exist: one per data file in workloads/experiments/, its code in workloads/.

This is the only list of experiments: `invoke bench`, `invoke bench --list`, `invoke report` and
the figures all read it, so adding an experiment is adding its data file and its module.
"""

from __future__ import annotations

from importlib import import_module

from workloads.contract import EXPERIMENTS_DIR, Experiment, ExperimentError, experiment_path, read_toml


def names() -> list[str]:
    return sorted(path.stem for path in EXPERIMENTS_DIR.glob("*.toml"))


def module_name(name: str) -> str:
    return "workloads." + name.replace("-", "_")


def description(name: str) -> str:
    """The data file's description (without importing the experiment's code: `--list` is instant)."""
    return str(read_toml(experiment_path(name)).get("description", "(no description)"))


def load(name: str) -> Experiment:
    experiment_path(name)  # an unknown name is an error listing the known ones
    try:
        module = import_module(module_name(name))
    except ModuleNotFoundError as exc:
        if exc.name == module_name(name):
            raise ExperimentError(f"experiment {name!r} has a data file but no module {module_name(name)}") from exc
        raise
    experiment = getattr(module, "EXPERIMENT", None)
    if not isinstance(experiment, Experiment):
        raise ExperimentError(f"{module_name(name)} defines no EXPERIMENT (an Experiment instance)")
    type(experiment).name = name
    return experiment
