from testbed import results
from reports.report import build_report, latest_runs


def make_engine_run(kernel=True):
    run = results.new_run("engine", accelerator="tcg")
    run.record("userspace/aurora", {"macs": 1488, "ns_per_inference": 1500.0, "ns_per_mac": 1.008})
    if kernel:
        run.record("kernel/aurora", {"kernel_ns_per_query": 30000.0, "guest_userspace_ns_per_inference": 29000.0,
                                     "kernel_over_userspace": 30000 / 29000})
    run.finish()
    return run


def test_report_names_the_run_behind_every_number(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path))
    failed = results.new_run("engine")
    failed.finish("failed")
    run = make_engine_run()
    text = build_report().read_text()
    assert f"run `{run.run_id}`" in text
    assert failed.run_id not in text  # a failed run never feeds the report
    assert "| aurora | 1,488 | 1500 | 1.008 | 30000 | 29000 | 1.03 |" in text
    assert "+44.4%" in text and "-56.7%" in text
    assert (run.path / "figures" / "engine_ns_per_inference.png").stat().st_size > 0


def test_latest_complete_run_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path))
    make_engine_run(kernel=False)
    newer = make_engine_run(kernel=False)
    assert latest_runs(tmp_path)["engine"] == newer.path


def test_overhead_figure_and_section_from_results_alone(tmp_path, monkeypatch):
    from workloads.overhead_bench import summarize_updates

    monkeypatch.setenv("LITEFLOW_RESULTS", str(tmp_path))
    run = results.new_run("overhead", accelerator="tcg", kernel_release="6.1.0-56-amd64")
    run.record("round_trip", {"kernel_ns_per_query": 10_000.0, "user_round_trip_ns_per_query": 3_000_000.0,
                              "ratio": 300.0, "upcall_iterations": 500, "errors": 0})
    raw = {"hot": [{"total_s": 0.1, "steps_s": {"load_client": 0.09, "load_kernel": 0.01}},
                   {"total_s": 0.3, "steps_s": {"load_client": 0.29, "load_kernel": 0.01}}],
           "module": [{"total_s": 9.0, "steps_s": {"generate": 1.0, "build": 7.5, "load": 0.5}}]}
    updates = summarize_updates(raw)
    assert updates["hot"]["median_total_ms"] == 200.0 and updates["module"]["dominant_step"] == "build"
    run.record("update_latency", updates)
    run.finish()
    text = build_report().read_text()
    assert "ratio **300x**" in text
    assert "update by hot weight load: median 200.0 ms over 2, min 100.0 / p90 300.0 ms" in text
    assert "load_kernel 10.0 ms" in text
    assert (run.path / "figures" / "overhead.png").stat().st_size > 0
