"""The runner with a host-only fake experiment: repetitions stored, a killed run resumed, never mixed."""

import pytest

from testbed import store
from workloads import registry, runner
from workloads.contract import Experiment, Field, Job, spread

DATA = '''description = "fake"
repetitions = 3
values = [1.0, 2.0]
[quick]
repetitions = 2
'''


class Fake(Experiment):
    title = "Fake"
    schema = {"values": Field(list)}
    uses_guest = False

    def __init__(self):
        self.calls = []
        self.fail_at = None
        self.prepared = 0

    def prepare(self, ctx):
        self.prepared += 1
        ctx.state["offset"] = 100

    def jobs(self, config):
        return [Job(f"v{i}", {"value": v}) for i, v in enumerate(config["values"])]

    def run_job(self, ctx, job):
        self.calls.append((ctx.repetition, job.key))
        if (ctx.repetition, job.key) == self.fail_at:
            raise RuntimeError("the guest died")
        return {"value": job.params["value"] * 10 + ctx.repetition + ctx.state["offset"]}

    def records(self, job, raw):
        return [{"job": job.key, "value": raw["value"]}]

    def summarize(self, config, records):
        return {"v0": spread([r["value"] for r in records if r["job"] == "v0"])}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(store, "git_state", lambda repo=None: {"git_sha": "abc", "git_dirty": False})
    data = tmp_path / "fake.toml"
    data.write_text(DATA)
    experiment = Fake()
    type(experiment).name = "fake"
    monkeypatch.setattr(registry, "load", lambda name: experiment)
    monkeypatch.setattr(runner, "experiment_path", lambda name: data)
    return experiment, data


def run(**kwargs):
    with runner.sessions() as pool:
        return runner.run_experiment("fake", pool, **kwargs)


def test_every_repetition_of_every_job_is_stored_and_summarized(fake):
    experiment, _ = fake
    done = run()
    assert experiment.calls == [(0, "v0"), (0, "v1"), (1, "v0"), (1, "v1"), (2, "v0"), (2, "v1")]
    assert done.metadata["status"] == "complete" and done.metadata["repetitions"] == 3
    assert done.repetition("v1", 2) == {"value": 122.0}
    assert [r["repetition"] for r in done.results["records"]] == [0, 0, 1, 1, 2, 2]
    assert done.results["summary"]["v0"]["median"] == 111.0
    assert done.metadata["profile"] == "full" and done.metadata["accelerator"] is None


def test_quick_profile(fake):
    assert run(profile="quick").metadata["repetitions"] == 2


def test_a_run_that_dies_keeps_its_repetitions_and_the_next_one_resumes_it(fake, capsys):
    experiment, _ = fake
    experiment.fail_at = (1, "v1")
    with pytest.raises(RuntimeError, match="the guest died"):
        run()
    failed = store.open_run(store.all_runs()[-1])
    assert failed.metadata["status"] == "failed" and failed.finished_repetitions() == 3
    assert "keeps its 3 finished job-repetition(s)" in capsys.readouterr().out

    experiment.fail_at, experiment.calls = None, []
    resumed = run()
    assert resumed.run_id == failed.run_id and len(resumed.metadata["resumed"]) == 1
    assert experiment.calls == [(1, "v1"), (2, "v0"), (2, "v1")]   # only what was missing
    assert "resuming run" in capsys.readouterr().out
    assert resumed.metadata["status"] == "complete" and len(resumed.results["records"]) == 6


def test_a_changed_experiment_file_starts_clean_and_says_why(fake, capsys):
    experiment, data = fake
    experiment.fail_at = (0, "v1")
    with pytest.raises(RuntimeError):
        run()
    data.write_text(DATA.replace("[1.0, 2.0]", "[1.0, 3.0]"))
    experiment.fail_at = None
    capsys.readouterr()
    fresh = run()
    assert len(store.all_runs()) == 2 and fresh.metadata["resumed"] == []
    out = capsys.readouterr().out
    assert "starting clean" in out and "the experiment file changed" in out


def test_fresh_never_resumes(fake):
    experiment, _ = fake
    experiment.fail_at = (0, "v0")
    with pytest.raises(RuntimeError):
        run()
    experiment.fail_at = None
    assert run(fresh=True).metadata["resumed"] == [] and len(store.all_runs()) == 2


def test_an_interrupted_run_is_marked_interrupted(fake):
    experiment, _ = fake

    def interrupt(ctx, job):
        raise KeyboardInterrupt

    experiment.run_job = interrupt
    with pytest.raises(KeyboardInterrupt):
        run()
    assert store.open_run(store.all_runs()[-1]).metadata["status"] == "interrupted"


def test_reanalysis_recomputes_records_and_summary_from_the_raw_data_alone(fake, monkeypatch):
    experiment, _ = fake
    done = run()
    calls = list(experiment.calls)
    monkeypatch.setattr(Fake, "records", lambda self, job, raw: [{"job": job.key, "value": raw["value"] * 2}])
    monkeypatch.setattr(store, "git_state", lambda repo=None: {"git_sha": "def", "git_dirty": False})
    again = runner.reanalyze(done.path)
    assert experiment.calls == calls                         # nothing ran again
    assert again.results["summary"]["v0"]["median"] == 222.0
    assert [r["repetition"] for r in again.results["records"]] == [0, 0, 1, 1, 2, 2]
    assert again.results["analysed_git_sha"] == "def" and again.metadata["git_sha"] == "abc"
