"""LiteFlow Testbed: the user's front door.

Tasks are thin: each parses its arguments and calls into the packages, where the logic lives and
is tested. Heavy imports (TensorFlow) happen inside the tasks so `invoke --list` stays instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from invoke import Collection, Exit, task
from invoke.executor import Executor

# TensorFlow's C++ info lines (oneDNN banners, converter chatter) drown the tasks' own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent
BUILD_DIR = REPO / "build"


def _fail(message: str) -> Exit:
    return Exit(f"error: {message}", code=1)


@task(
    help={
        "kernel": "debian-5.10, debian-6.1 (default), debian-6.12, local:DIR (your own .debs), or all",
        "strict": "fail on any compiler warning (default: true)",
    }
)
def build(c, kernel="debian-6.1", strict=True):
    """Build liteflow.ko, lf_test.ko and an example snapshot module for one kernel or all."""
    from vm.kernels import KernelNameError
    from vm.matrix import build_matrix

    try:
        reports = build_matrix(kernel, out_dir=BUILD_DIR / "modules", strict=strict)
    except KernelNameError as exc:
        raise _fail(str(exc)) from exc
    for report in reports:
        print(report.summary())


@task(help={"test_args": "extra arguments passed to pytest", "unit": "only the fast unit tests"})
def test(c, test_args="", unit=False):
    """Install what the tests need (apt), then run the whole test suite: unit, build matrix, snapshot exactness."""
    from vm.hosttools import ensure_host_tools

    ensure_host_tools()
    selection = "-m 'not kernelbuild'" if unit else ""
    c.run(f"{sys.executable} -m pytest -q {selection} {test_args}", pty=False)


@task(help={"only": "one experiment (same as `invoke bench NAME`); default: every experiment that exists"})
def bench(c, only=""):
    """Run benchmark experiments (`invoke bench` for all, `invoke bench engine` for one) into results/<run-id>/."""
    _run_experiments([only] if only else None)


def _run_experiments(names: list[str] | None) -> None:
    from workloads.bench import available_experiments, run_experiment

    for name in names or available_experiments():
        try:
            run = run_experiment(name)
        except ValueError as exc:
            raise _fail(str(exc)) from exc
        print(f"{name}: results in {run.path.relative_to(REPO) if run.path.is_relative_to(REPO) else run.path}")


@task(help={"model": "path of a .keras model", "samples": "number of random inputs (default 2000)", "seed": "RNG seed"})
def snapshot_verify(c, model, samples=2000, seed=0):
    """Quantize a Keras model, build the snapshot, and check the engine is bit-exact with TFLite."""
    from userspace.snapshot import SnapshotError, verify

    path = Path(model)
    if not path.is_file():
        raise _fail(f"no model file at {path}")
    try:
        result = verify(path, samples=int(samples), seed=int(seed))
    except SnapshotError as exc:
        raise _fail(str(exc)) from exc
    print(f"bit-exact: {result.exact}/{result.samples}")
    print(f"  engine vs TFLite built-in kernels: {result}")
    if not result.bit_exact:
        raise Exit(code=1)


@task(help={"path": "where to write the model (default: build/example.keras)"})
def snapshot_example(c, path=str(BUILD_DIR / "example.keras")):
    """Write a small example Keras model (Aurora-sized, 30-32-16-1 tanh) to try snapshot.verify on."""
    from userspace.snapshot import example_model

    written = example_model(Path(path))
    print(f"wrote {written}; try: invoke snapshot.verify --model {written}")


@task(help={"kind": "buildroots, engine, ... (default: everything)"})
def clean_cache(c, kind=""):
    """Remove cached build roots, engine builds and images from the user's cache directory."""
    from common.cache import clean

    for removed in clean(kind or None):
        print(f"removed {removed}")


EXPERIMENTS = ("engine",)


def _experiment_task(name: str):
    def body(c):
        _run_experiments([name])

    body.__doc__ = f"Run the '{name}' benchmark experiment (same as `invoke bench {name}`)."
    body.__name__ = name
    return task(body)


class BenchExecutor(Executor):
    """Reads `invoke bench engine` as one bench run of experiment "engine", not as two tasks.

    Invoke's positional arguments are always required, so `invoke bench NAME` with an optional
    NAME cannot be declared; instead each experiment is also a task, and a bare `bench` directly
    followed by experiment tasks is dropped so the experiments run once each.
    """

    def execute(self, *tasks):
        names = [getattr(t, "name", t) for t in tasks]
        kept = [
            t for index, t in enumerate(tasks)
            if not (names[index] == "bench" and index + 1 < len(names) and names[index + 1] in EXPERIMENTS)
        ]
        return super().execute(*kept)


snapshot = Collection("snapshot")
snapshot.add_task(snapshot_verify, name="verify")
snapshot.add_task(snapshot_example, name="example")

ns = Collection(build, test, bench, clean_cache, *(_experiment_task(name) for name in EXPERIMENTS))
ns.add_collection(snapshot)
