"""The report and figures, from recorded runs alone (no VM: the runs are written by hand)."""

import pytest

from reports.report import build_report, latest_runs
from testbed import store
from workloads import registry
from workloads.contract import Job


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path))
    return tmp_path


def recorded(name, jobs_and_raws, *, status=None, **metadata):
    """A finished run of a real experiment's module, from raw repetitions given here."""
    experiment = registry.load(name)
    run = store.new_run(name, profile=metadata.pop("profile", "full"), repetitions=len(jobs_and_raws))
    run.update_metadata(**metadata)
    records = []
    for rep, pairs in enumerate(jobs_and_raws):
        for job, raw in pairs:
            run.save_repetition(job.key, rep, raw)
            records += [{**r, "repetition": rep} for r in experiment.records(job, raw)]
    run.record("records", records)
    run.record("summary", experiment.summarize({"bound": 0.1, "update": "hot"}, records))
    run.finish(status or "complete")
    return run


def engine_repetition(kernel_ns):
    host = {"networks": {"aurora": {"macs": 1488, "iterations": 1000, "ns_per_inference": 1500.0}}}
    guest = {"networks": {"aurora": {"kernel_ns_per_query": kernel_ns, "guest_userspace_ns_per_inference": 29000.0,
                                     "installed_by": "hot load"}}}
    return [(Job("host"), host), (Job("guest"), guest)]


def test_report_names_the_run_behind_every_number_with_spread(results_dir):
    failed = store.new_run("engine")
    failed.finish("failed")
    run = recorded("engine", [engine_repetition(29000.0), engine_repetition(30000.0), engine_repetition(31000.0)],
                   accelerator="tcg", kernel_release="6.1.0-57-amd64")
    text = build_report().read_text()
    assert f"run `{run.run_id}` (full profile, 3 repetitions)" in text
    assert failed.run_id not in text  # a failed run never feeds the report
    assert "| aurora | 1,488 | 1500 | 1.008 | 30000 [29000–31000] | 29000 | 1.03 [1.00–1.07] |" in text
    assert "+44.4%" in text and "-56.7%" in text
    assert (run.path / "figures" / "engine_ns_per_inference.png").stat().st_size > 0


def test_latest_complete_run_wins(results_dir):
    recorded("engine", [engine_repetition(1.0)])
    newer = recorded("engine", [engine_repetition(1.0)])
    assert latest_runs(results_dir)[("engine", None)] == newer.path


def test_a_quick_run_after_a_full_one_does_not_take_its_place(results_dir):
    full = recorded("engine", [engine_repetition(1.0)])
    recorded("engine", [engine_repetition(1.0)], profile="quick")
    assert latest_runs(results_dir)[("engine", None)] == full.path
    quick_only = recorded("engine", [engine_repetition(1.0)], profile="quick", config={"kernel": "linux-4.15"})
    assert latest_runs(results_dir)[("engine", "linux-4.15")] == quick_only.path   # better than nothing


def test_a_run_on_another_kernel_gets_its_own_section_after_the_data_files(results_dir):
    default = recorded("engine", [engine_repetition(29000.0)], accelerator="tcg", kernel_release="6.1.0-57-amd64",
                       config={"kernel": "debian-6.1"})
    paper = recorded("engine", [engine_repetition(45000.0)], accelerator="tcg", kernel_release="4.15.1-liteflow",
                     config={"kernel": "linux-4.15"})
    assert latest_runs(results_dir) == {("engine", "debian-6.1"): default.path, ("engine", "linux-4.15"): paper.path}
    text = build_report().read_text()
    main, rest = text.split("\n## ")[2:]
    assert default.run_id in main and paper.run_id not in main
    assert rest.startswith(f"{registry.load('engine').title}, on linux-4.15") and paper.run_id in rest


def test_overhead_figure_and_section_from_results_alone(results_dir):
    trip = {"kernel": {"ns_per_query": 10_000.0, "iterations": 100, "macs": 1488},
            "upcall": {"ns_per_query": 3_000_000.0, "iterations": 500, "errors": 0, "timeouts": 0},
            "checks": [{"name": "ok", "ok": True, "detail": ""}]}
    updates = {"hot": [{"total_s": 0.1, "steps_s": {"load_client": 0.09, "load_kernel": 0.01}},
                       {"total_s": 0.3, "steps_s": {"load_client": 0.29, "load_kernel": 0.01}}],
               "module": [{"total_s": 9.0, "steps_s": {"generate": 1.0, "build": 7.5, "load": 0.5}}]}
    run = recorded("overhead", [[(Job("round-trip"), trip), (Job("updates"), updates)]], accelerator="tcg",
                   kernel_release="6.1.0-57-amd64")
    summary = run.results["summary"]
    assert summary["ratio"]["median"] == 300.0 and summary["module"]["dominant_step"] == "build"
    text = build_report().read_text()
    assert "ratio **300x**" in text
    assert "update by hot weight load: 200.0 [100.0–300.0] ms over 2 updates, p90 300.0 ms" in text
    assert "load_kernel 10.0 ms" in text
    assert (run.path / "figures" / "overhead.png").stat().st_size > 0
