"""The README's main command on a fresh clone: `./scripts/setup && .venv/bin/invoke bench --quick`.

A green suite once hid a `bench` that failed on a fresh machine (no build/ directory, host tools
never installed). This test clones the committed repository into a temporary folder and runs the
main job there in its quick profile, with its own venv, build/ and results/, so a missing
directory, install step or file that git ignores fails here. It shares nothing with the working
tree: only the user's cache (images, build roots, wheels), which is what a second checkout on
the same machine would share too. It checks the console carries the harness's own lines, not
TensorFlow's converter chatter, and that every experiment finished into the report.

The quick runs it leaves are real guest runs, so the checks that need nothing more than a quick
profile read them instead of booting and running the same job again: kernel-full's training in
the kernel is checked on cc-concurrency's quick run, the slow path's recovery from a SIGKILL mid-
update on slowpath's, LiteFlow's flows outliving a SIGKILLed slow-path service on cc-adapt's (both
quick profiles inject their fault).
"""

import json
import os
import subprocess
import time

import pytest

from guest.cgroup import PERIOD_US
from testbed.store import REPO_ROOT, all_runs, load_run
from vm.qemu import down
from workloads import registry
from workloads.contract import experiment_path, read_toml

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.kernelbuild,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]

CHATTER = ("Saved artifact at", "fully_quantize", "TensorSpec", "Estimated count of arithmetic ops")


@pytest.fixture(scope="module")
def fresh_bench(tmp_path_factory) -> dict:
    """The clone, its console and its finished runs: the bench runs once for the tests below."""
    clone = tmp_path_factory.mktemp("fresh") / "liteflow-testbed"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LITEFLOW_RESULTS", "VIRTUAL_ENV", "PYTHON", "PYTEST"))}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if not p.startswith(str(REPO_ROOT)))
    down()  # the integration tests' shared VM runs the working tree: the clone must boot its own
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", "./scripts/setup && .venv/bin/invoke bench --quick"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=3 * 3600)
    wall_s = time.monotonic() - started
    console = done.stdout + done.stderr
    print(f"\nfresh clone: setup + bench --quick took {wall_s:.0f} s\n{console[-3000:]}")
    runs, metadata = {}, {}
    for path in all_runs(clone / "results"):
        run_metadata = load_run(path)[0]
        runs[run_metadata["experiment"]], metadata[run_metadata["experiment"]] = path, run_metadata
    return {"clone": clone, "returncode": done.returncode, "console": console, "runs": runs, "metadata": metadata}


def test_bench_quick_from_a_fresh_clone(fresh_bench):
    console = fresh_bench["console"]
    assert fresh_bench["returncode"] == 0, console[-5000:]
    assert (fresh_bench["clone"] / "results" / "REPORT.md").is_file()
    for chatter in CHATTER:
        assert chatter not in console, f"{chatter!r} reached the console"
    finished = fresh_bench["metadata"]
    assert set(finished) == set(registry.names())
    for name, metadata in finished.items():
        assert metadata["status"] in ("complete", "passed"), (name, metadata["status"])
        assert metadata["profile"] == "quick" and not metadata["git_dirty"]
        if metadata["accelerator"] is not None:
            assert metadata["build_root"]["gcc_version"] and metadata["image_manifest_sha256"]


def test_kernel_full_trains_in_the_kernel_and_serves_what_it_trained(fresh_bench):
    """kernel-full in cc-concurrency's quick run: the flows' decisions are labelled by the teacher
    into the kernel's replay, minibatches are trained in softirq at most full_budget samples per
    ACK, and the network is requantized into app cc_full's snapshot, which the flows then query."""
    raw = _raw(fresh_bench, "cc-concurrency", "4-flows_full")
    assert raw["ok"], [c for c in raw["checks"] if not c["ok"]]
    stats = raw["scheme_results"]["lf_cc"]
    assert stats["full_samples"] > 0 and stats["full_trained"] > 0, stats
    assert stats["full_published"] > 0 and stats["full_publish_errors"] == 0, stats
    assert stats["decisions"] > 0 and stats["fallback_error"] == 0, stats
    core = raw["scheme_results"]["core"]
    assert core["swaps"] > stats["full_published"] - 1 and core["errors"] == 0, core   # its snapshots went live
    assert core["active_id"] != raw["scheme"]["initial_snapshot_id"]


def test_slow_path_runs_under_its_cpu_limit(fresh_bench):
    """cc-concurrency's quick profile caps the slow-path service (LiteFlow's and the user-space
    deployment's) with a cgroup once it is ready: the guest's cgroup v2 tree took it, and it used
    CPU under the cap."""
    limit = read_toml(experiment_path("cc-concurrency"))["slowpath"]["cpu_limit"]
    for scheme in ("liteflow", "user"):
        raw = _raw(fresh_bench, "cc-concurrency", f"4-flows_{scheme}")
        assert raw["ok"], [c for c in raw["checks"] if not c["ok"]]
        used = raw["scheme_results"]["service_cpu"]
        assert used and used["cpus"] == limit, (scheme, used)
        assert used["usage_s"] > 0 and used["periods"] > 0, (scheme, used)
        assert used["usage_s"] <= limit * used["periods"] * PERIOD_US / 1e6 * 1.2, (scheme, used)


def _flows_had_a_queue_to_drain(raw: dict) -> bool:
    """Whether stale_min could fire at the RTT step: it lets go of a minimum once the flow has
    drained more than its own share of the inflated RTT, so flows that crawl with no queue have
    nothing to drain. On 2026-12-03 LiteFlow from cc-narrow crawled (0-2 Mbit/s over the 40) in 2
    of 4 quick runs from its first seconds, before any update (docs/cc.md, "cc-adapt's quick
    profile"). Taken as moving when the aggregate's median in the 6 s before the step is at least
    a tenth of the link."""
    (step,) = [c for c in raw["link_changes"] if "delay_ms" in c["changes"]]
    rate_mbit = raw["link"]["bottlenecks"]["bottleneck"]["rate_mbit"]
    for change in raw["link_changes"]:
        if change["applied_at_s"] < step["applied_at_s"]:
            rate_mbit = change["changes"].get("rate_mbit", rate_mbit)
    before = sorted(p["mbit"] for p in raw["aggregate"]["series"]
                    if step["applied_at_s"] - 6 <= p["t_s"] < step["applied_at_s"])
    assert before, raw["aggregate"]["series"]
    return before[len(before) // 2] >= 0.1 * rate_mbit


def _raw(fresh_bench: dict, experiment: str, job: str) -> dict:
    assert experiment in fresh_bench["runs"], fresh_bench["console"][-3000:]
    path = fresh_bench["runs"][experiment] / "raw" / job / "0.json"
    assert path.is_file(), sorted(p.name for p in path.parent.parent.iterdir())
    return json.loads(path.read_text())


def test_kernel_snapshot_follows_a_target_change_and_survives_a_killed_service(fresh_bench):
    """slowpath's quick run: lf_test's stress threads and the slow-path service with the
    TensorFlow example adapter in the guest; the target switches from A to B and the kernel's
    active snapshot's error on B (EVALUATE on held-out inputs) must fall below the bound within
    5 minutes, through at least one update, with zero failed queries. Then the target goes back
    to A and the service is SIGKILLed in the middle of an update: the kernel must go on serving
    the last good snapshot, and the restarted service must make it follow A."""
    report = _raw(fresh_bench, "slowpath", "follow-target-hot")
    assert "error" not in report, report.get("error")
    assert report["time_to_recover_s"] is not None and report["time_to_recover_s"] <= 300, report["timeline"][-5:]
    assert report["updates"] >= 1
    assert report["failed_queries"] == 0, (report["stress"], report["core"])
    assert report["initial_error"]["B"] > 0.1   # the change really was one
    assert not report["dmesg_trouble"]
    kill = report["kill"]
    assert kill["mid_update"], f"the update finished {kill['seconds_into_update']} s in, before the kill"
    assert kill["serving_last_good"] and kill["active_after_kill"] == kill["update_began_active_id"], kill
    assert kill["queries_after_kill"] > 0 and kill["stress_errors"] == 0, kill
    assert kill["time_to_recover_after_restart_s"] is not None, report["kill_timeline"][-5:]
    assert report["ok"] and fresh_bench["metadata"]["slowpath"]["status"] == "passed"
    assert (fresh_bench["runs"]["slowpath"] / "logs" / "follow-target-hot-0.service.jsonl").stat().st_size > 0


def test_liteflow_keeps_its_snapshot_when_the_service_dies(fresh_bench):
    """cc-adapt's quick run SIGKILLs LiteFlow's slow-path service after the link's changes: the
    flows go on, the network keeps deciding, the kernel keeps the last snapshot it had, and lf_cc's
    stale_min (which cc-adapt sets) let go of the old minimum RTT at the RTT step."""
    raw = _raw(fresh_bench, "cc-adapt", "liteflow")
    assert raw["ok"], [c for c in raw["checks"] if not c["ok"]]
    (fault,) = raw["faults"]
    assert fault["ok"] and fault["kind"] == "kill_service", fault
    results = raw["scheme_results"]
    assert not results["service_alive"]
    updates_before = [u for u in results["updates"] if u["t_unix"] <= fault["t_unix"]]
    expected = updates_before[-1]["new_id"] if updates_before else raw["scheme"]["initial_snapshot_id"]
    assert results["core"]["active_id"] == expected
    assert results["lf_cc"]["fallback_error"] == 0 and results["lf_cc"]["fallback_no_snapshot"] == 0
    assert results["core"]["errors"] == 0
    if _flows_had_a_queue_to_drain(raw):
        assert results["lf_cc"]["stale_min_resets"] > 0, results["lf_cc"]
    # the network went on deciding with the snapshot it kept, and the flows went on moving data.
    # Not how much: a one-run quick profile once caught both flows sending nothing for two seconds
    # right after the kill, at 60 ms with bursty ACKs (aggregate [0, 0, 4.2] Mbit/s; the run's
    # files went with CI's clone, so the cause is not known); goodput is cc-adapt's measurement,
    # over repetitions
    assert results["lf_cc"]["decisions"] > fault["decisions_before"], (results["lf_cc"], fault)
    assert raw["aggregate"]["flows_failed"] == 0, raw["flows"]
    after_kill = [p["mbit"] for p in raw["aggregate"]["series"] if p["t_s"] > fault["applied_at_s"] + 1]
    assert len(after_kill) >= 4 and max(after_kill) > 1.0, after_kill
    for scheme in ("frozen", "cubic", "bbr"):   # the fault goes only where there is a service
        assert not _raw(fresh_bench, "cc-adapt", scheme).get("faults"), scheme
