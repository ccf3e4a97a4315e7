"""The front door's own logic: exit codes and argument handling (the work itself is tested elsewhere)."""

from types import SimpleNamespace

import pytest
from invoke import Context, Exit

import tasks
import userspace.snapshot as snapshot
from userspace.snapshot.verify import VerifyResult


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"placeholder: verify is replaced in these tests")
    return path


def test_verify_exits_nonzero_unless_every_sample_is_exact(monkeypatch, model_file, capsys):
    monkeypatch.setattr(snapshot, "verify", lambda *a, **k: VerifyResult(samples=2000, exact=1999, max_abs_diff=1))
    with pytest.raises(Exit) as excinfo:
        tasks.snapshot_verify(Context(), model=str(model_file))
    assert excinfo.value.code == 1
    assert "bit-exact: 1999/2000" in capsys.readouterr().out


def test_verify_passes_when_exact(monkeypatch, model_file, capsys):
    monkeypatch.setattr(snapshot, "verify", lambda *a, **k: VerifyResult(samples=2000, exact=2000, max_abs_diff=0))
    tasks.snapshot_verify(Context(), model=str(model_file))
    assert "bit-exact: 2000/2000" in capsys.readouterr().out


def test_verify_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(Exit, match="no model file"):
        tasks.snapshot_verify(Context(), model=str(tmp_path / "absent.keras"))


def test_unknown_kernel_is_a_clear_error():
    with pytest.raises(Exit, match="debian-6.1"):
        tasks.build(Context(), kernel="debian-9.9")


class _Parsed:
    """What invoke's parser hands the executor: a task name and its parsed arguments."""

    def __init__(self, name, only="", **flags):
        self.name = name
        self.args = {"only": SimpleNamespace(value=only),
                     **{flag: SimpleNamespace(value=flags.get(flag)) for flag in tasks.EXPERIMENT_FLAGS}}


def _execute(*calls):
    seen = []
    executor = object.__new__(tasks.BenchExecutor)
    original = tasks.Executor.execute
    tasks.Executor.execute = lambda self, *t: seen.extend((x.name, x.args["only"].value) for x in t)
    try:
        tasks.BenchExecutor.execute(executor, *calls)
    finally:
        tasks.Executor.execute = original
    return seen


def test_bench_followed_by_experiments_runs_them_once_with_benchs_flags():
    assert _execute(_Parsed("bench"), _Parsed("engine"), _Parsed("slowpath")) == [("bench", "engine,slowpath")]
    assert _execute(_Parsed("bench", "overhead"), _Parsed("engine")) == [("bench", "overhead,engine")]
    assert _execute(_Parsed("bench"), _Parsed("test")) == [("bench", ""), ("test", "")]
    assert _execute(_Parsed("engine")) == [("engine", "")]


def test_an_experiments_own_flags_become_benchs():
    seen = []
    executor = object.__new__(tasks.BenchExecutor)
    original = tasks.Executor.execute
    tasks.Executor.execute = lambda self, *t: seen.extend(t)
    try:
        tasks.BenchExecutor.execute(executor, _Parsed("bench"), _Parsed("iperf", quick=True, kernel="linux-4.15",
                                                                          schemes="cubic"))
    finally:
        tasks.Executor.execute = original
    (bench,) = seen
    assert bench.args["only"].value == "iperf"
    assert bench.args["quick"].value is True and bench.args["kernel"].value == "linux-4.15"
    assert bench.args["schemes"].value == "cubic"


def test_schemes_become_an_override_the_data_file_checks():
    assert tasks._overrides("", "") is None
    assert tasks._overrides("linux-4.15", "liteflow,,cubic") == {"kernel": "linux-4.15",
                                                                 "schemes": ["liteflow", "cubic"]}
    with pytest.raises(Exit, match="cubicc"):
        tasks.bench(Context(), only="cc-concurrency", schemes="cubicc")


def test_bench_list_names_every_experiment_with_its_description(capsys):
    from workloads import registry

    tasks.bench(Context(), list=True)
    out = capsys.readouterr().out
    for name in registry.names():
        assert name in out and registry.description(name) in out
