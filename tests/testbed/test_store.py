import json

import pytest

from common.files import atomic_write_json, file_sha256
from testbed import store


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(store, "git_state", lambda repo=None: {"git_sha": "abc", "git_dirty": False})
    return tmp_path / "results"


def test_new_run_writes_one_metadata_schema(results_dir, tmp_path):
    experiment = tmp_path / "exp.toml"
    experiment.write_text("x = 1\n")
    run = store.new_run("demo", experiment_file=experiment, profile="quick", config={"x": 1}, repetitions=3)
    metadata, data = store.load_run(run.path)
    assert run.path.parent == results_dir
    assert set(metadata) == set(store.METADATA_KEYS)
    assert (metadata["experiment"], metadata["status"], metadata["profile"]) == ("demo", "running", "quick")
    assert metadata["experiment_file_sha256"] == file_sha256(experiment)
    assert metadata["accelerator"] is None  # no guest yet: the key is there, empty
    assert data == {}
    assert (run.path / "logs").is_dir() and (run.path / "figures").is_dir()
    with pytest.raises(KeyError, match="acceleratr"):
        run.update_metadata(acceleratr="tcg")


def test_record_and_repetitions_persist_immediately(results_dir):
    run = store.new_run("demo")
    run.record("first", {"value": 1})
    run.save_repetition("a/b c", 0, {"raw": [1, 2]})
    # a crash here must keep both: read straight from disk, as a later analysis would
    assert json.loads((run.path / "results.json").read_text()) == {"first": {"value": 1}}
    assert store.open_run(run.path).repetition("a/b c", 0) == {"raw": [1, 2]}
    assert run.repetition("a/b c", 1) is None and run.finished_repetitions() == 1
    run.finish()
    metadata, _ = store.load_run(run.path)
    assert metadata["status"] == "complete" and metadata["finished"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_run_ids_are_unique(results_dir):
    assert len({store.new_run("demo").run_id for _ in range(5)}) == 5


def test_only_an_unfinished_run_of_the_same_file_profile_and_code_resumes(results_dir, tmp_path, monkeypatch):
    experiment = tmp_path / "exp.toml"
    experiment.write_text("x = 1\n")
    sha = file_sha256(experiment)
    run = store.new_run("demo", experiment_file=experiment, profile="full", config={"x": 1})
    run.finish("failed")
    assert "configuration differs" in store.resumable_run("demo", "full", sha, {"x": 2})[1]
    resumed, why = store.resumable_run("demo", "full", sha)
    assert resumed is not None and resumed.run_id == run.run_id and why == ""
    assert store.resumable_run("demo", "quick", sha)[0] is None
    assert "profile full != quick" in store.resumable_run("demo", "quick", sha)[1]
    assert "experiment file changed" in store.resumable_run("demo", "full", "0" * 64)[1]
    monkeypatch.setattr(store, "git_state", lambda repo=None: {"git_sha": "def", "git_dirty": False})
    assert "code changed" in store.resumable_run("demo", "full", sha)[1]
    monkeypatch.setattr(store, "git_state", lambda repo=None: {"git_sha": "abc", "git_dirty": True})
    assert "uncommitted" in store.resumable_run("demo", "full", sha)[1]


def test_a_finished_run_is_never_resumed(results_dir):
    store.new_run("demo").finish()
    assert store.resumable_run("demo", "full", "x") == (None, "")
