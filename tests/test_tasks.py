"""The front door's own logic: exit codes and argument handling (the work itself is tested elsewhere)."""

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


class _Named:
    def __init__(self, name):
        self.name = name


def test_bench_followed_by_an_experiment_runs_it_once(monkeypatch):
    seen = []
    monkeypatch.setattr(tasks.Executor, "execute", lambda self, *t: seen.extend(x.name for x in t))
    tasks.BenchExecutor.execute(object.__new__(tasks.BenchExecutor), _Named("bench"), _Named("engine"))
    assert seen == ["engine"]
    seen.clear()
    tasks.BenchExecutor.execute(object.__new__(tasks.BenchExecutor), _Named("bench"), _Named("test"))
    assert seen == ["bench", "test"]
