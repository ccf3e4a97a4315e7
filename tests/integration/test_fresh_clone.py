"""The README's main command on a fresh clone: `./scripts/setup && .venv/bin/invoke bench --quick`.

A green suite once hid a `bench` that failed on a fresh machine (no build/ directory, host tools
never installed). This test clones the committed repository into a temporary folder and runs the
main job there in its quick profile, with its own venv, build/ and results/, so a missing
directory, install step or file that git ignores fails here. It shares nothing with the working
tree: only the user's cache (images, build roots, wheels), which is what a second checkout on
the same machine would share too. It checks the console carries the harness's own lines, not
TensorFlow's converter chatter, and that every experiment finished into the report.
"""

import os
import subprocess
import time

import pytest

from testbed.store import REPO_ROOT, all_runs, load_run
from vm.qemu import down
from workloads import registry

pytestmark = [
    pytest.mark.vm,
    pytest.mark.tensorflow,
    pytest.mark.kernelbuild,
    pytest.mark.skipif(os.geteuid() != 0, reason="provisioning and booting the guest need root"),
]

CHATTER = ("Saved artifact at", "fully_quantize", "TensorSpec", "Estimated count of arithmetic ops")


def test_bench_quick_from_a_fresh_clone(tmp_path):
    clone = tmp_path / "liteflow-testbed"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LITEFLOW_RESULTS", "VIRTUAL_ENV", "PYTHON", "PYTEST"))}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if not p.startswith(str(REPO_ROOT)))
    down()  # a VM left by another test shares the working tree: the clone must boot its own
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", "./scripts/setup && .venv/bin/invoke bench --quick"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=3 * 3600)
    wall_s = time.monotonic() - started
    console = done.stdout + done.stderr
    print(f"\nfresh clone: setup + bench --quick took {wall_s:.0f} s\n{console[-3000:]}")
    assert done.returncode == 0, console[-5000:]
    assert (clone / "results" / "REPORT.md").is_file()
    for chatter in CHATTER:
        assert chatter not in console, f"{chatter!r} reached the console"
    finished = {load_run(path)[0]["experiment"]: load_run(path)[0] for path in all_runs(clone / "results")}
    assert set(finished) == set(registry.names())
    for name, metadata in finished.items():
        assert metadata["status"] in ("complete", "passed"), (name, metadata["status"])
        assert metadata["profile"] == "quick" and not metadata["git_dirty"]
        if metadata["accelerator"] is not None:
            assert metadata["build_root"]["gcc_version"] and metadata["image_manifest_sha256"]
