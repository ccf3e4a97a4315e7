import json

import pytest

from testbed import results


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def test_new_run_writes_provenance(results_dir, tmp_path):
    experiment = tmp_path / "exp.toml"
    experiment.write_text("x = 1\n")
    run = results.new_run("demo", experiment_file=experiment, accelerator="tcg")
    metadata, data = results.load_run(run.path)
    assert run.path.parent == results_dir
    assert metadata["experiment"] == "demo"
    assert metadata["status"] == "running"
    assert metadata["accelerator"] == "tcg"
    assert metadata["experiment_file_sha256"] == results.file_sha256(experiment)
    assert "git_sha" in metadata and "git_dirty" in metadata
    assert data == {}
    assert (run.path / "logs").is_dir() and (run.path / "figures").is_dir()


def test_record_persists_each_result_immediately(results_dir):
    run = results.new_run("demo")
    run.record("first", {"value": 1})
    # A crash here must keep "first": read straight from disk, as a later analysis would.
    assert json.loads((run.path / "results.json").read_text()) == {"first": {"value": 1}}
    run.record("second", 2)
    run.finish()
    metadata, data = results.load_run(run.path)
    assert data == {"first": {"value": 1}, "second": 2}
    assert metadata["status"] == "complete" and "finished" in metadata


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    results.atomic_write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        results.atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_run_ids_are_unique(results_dir):
    ids = {results.new_run("demo").run_id for _ in range(5)}
    assert len(ids) == 5
