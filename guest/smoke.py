"""The guest half of `invoke smoke`: drive LiteFlow in a real kernel and check every invariant.

Runs inside the guest as root (`python -m guest.driver smoke PLAN.json`), with the project's
code from the read-only share and the modules and blobs the host prepared next to the plan. It
loads the core and lf_test, installs a first snapshot module, starts lf_test's stress threads
(queries on every vCPU, bottom halves disabled) and, while they run, swaps snapshots the two
ways LiteFlow can — inserting a new snapshot module and hot-loading weights over netlink — and
checks after each swap that the kernel reports it and computes exactly what the user-space
engine computes for that snapshot. The host turns the JSON report into the run's results.

Only the standard library, numpy and pyroute2 (via userspace.netlink) are needed here: the
guest never imports TensorFlow for the smoke.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from guest.tools import (
    UNPRIVILEGED,
    CheckedReport,
    DriverAbort,
    check_dmesg,
    dmesg_lines,
    liteflow_modules,
    read_stress,
    sh,
    unload_modules,
    write_debugfs,
)
from userspace.netlink import LiteFlowNetlink, LiteFlowNetlinkError

APP_NAME = "lf_test"
UNPRIVILEGED_PROBE = """
import errno, sys
from userspace.netlink import LiteFlowNetlink, LiteFlowNetlinkError
with LiteFlowNetlink() as nl:
    app = nl.app("lf_test")           # listing is unprivileged
    try:
        nl.set_sampling(app.app_id, every=1, batch=1)
    except LiteFlowNetlinkError as exc:
        sys.exit(0 if exc.errno == errno.EPERM else 3)
    sys.exit(2)                       # a mutating command succeeded without CAP_NET_ADMIN
"""


@dataclass
class Report(CheckedReport):
    swaps: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    stress: dict = field(default_factory=dict)


def main(plan: dict, base: Path) -> Report:
    report = Report()
    dmesg_before = len(dmesg_lines())
    started = time.monotonic()
    inputs = np.load(base / plan["fixed_inputs"])
    expected = {int(k): np.load(base / v) for k, v in plan["expected_outputs"].items()}
    loaded_snapshot_modules: list[str] = []
    try:
        report.step = "load core and lf_test"
        sh("insmod", str(base / plan["core_module"]))
        sh("insmod", str(base / plan["test_module"]), f"input_size={plan['input_size']}", f"output_size={plan['output_size']}")
        with LiteFlowNetlink() as nl:
            app = nl.app(APP_NAME)
            report.check("app registered with the planned sizes",
                         (app.input_size, app.output_size) == (plan["input_size"], plan["output_size"]),
                         f"{app.input_size}x{app.output_size}")
            _swap_loop(nl, app.app_id, plan, base, inputs, expected, report, loaded_snapshot_modules)
            report.step = "read final stats"
            final = nl.app(APP_NAME)
            report.stats = asdict(final)
            report.check("no failed query (core stats)", final.errors == 0, f"errors={final.errors}")
            report.check("every swap counted by the core", final.swaps == len(plan["swaps"]) + 1,
                         f"swaps={final.swaps}, expected {len(plan['swaps']) + 1} (first install included)")
            report.step = "unprivileged netlink"
            _check_unprivileged(report)
    except (DriverAbort, LiteFlowNetlinkError, OSError) as exc:
        report.check(f"step '{report.step}' completed", False, str(exc))
    finally:
        report.step = "unload everything"
        _unload(plan, loaded_snapshot_modules, report)
        report.timings_s["total"] = round(time.monotonic() - started, 3)
        check_dmesg(report, dmesg_before)
    return report


def _swap_loop(nl: LiteFlowNetlink, app_id: int, plan: dict, base: Path, inputs: np.ndarray,
               expected: dict[int, np.ndarray], report: Report, loaded: list[str]) -> None:
    first = plan["first_snapshot"]
    report.step = "refuse a snapshot module inserted without app_id"
    refused = sh("insmod", str(base / first["module"]), check=False)
    report.check("snapshot module without app_id= refused with a message saying so",
                 refused.returncode != 0 and any("app_id=N is required" in line for line in dmesg_lines()[-5:]),
                 refused.stderr.strip())
    report.step = "install the first snapshot module"
    sh("insmod", str(base / first["module"]), f"app_id={app_id}")
    loaded.append(first["name"])
    expect_active(nl, app_id, first, inputs, expected, report, label="first snapshot")

    report.step = "refuse malformed blobs"
    for bad in plan["bad_blobs"]:
        try:
            nl.load_model(app_id, 0x0BAD, (base / bad["blob"]).read_bytes())
            got = "accepted"
        except LiteFlowNetlinkError as exc:
            got = errno.errorcode.get(exc.errno, str(exc.errno))
        report.check(f"{bad['name']} blob refused with {bad['errno']}", got == bad["errno"], f"got {got}")
    expect_active(nl, app_id, first, inputs, expected, report, label="after the refused blobs")

    report.step = "start stress"
    write_debugfs("stress", str(plan["stress_queries_per_cpu"]))
    report.check("samples reach user space over the multicast group", _check_sampling(nl, app_id))

    swap_started = time.monotonic()
    previous = first
    for index, swap in enumerate(plan["swaps"]):
        report.step = f"swap {index + 1}/{len(plan['swaps'])} ({swap['kind']} snapshot {swap['snapshot_id']:#x})"
        t0 = time.monotonic()
        if swap["kind"] == "module":
            sh("insmod", str(base / swap["module"]), f"app_id={app_id}")
            loaded.append(swap["name"])
        else:
            nl.load_model(app_id, swap["snapshot_id"], (base / swap["blob"]).read_bytes())
        took = time.monotonic() - t0
        stats = expect_active(nl, app_id, swap, inputs, expected, report, label=f"swap {index + 1}")
        entry = {"kind": swap["kind"], "snapshot_id": swap["snapshot_id"], "seconds": round(took, 4),
                 "active_id": stats.active_id, "standby_id": stats.standby_id}
        if swap["kind"] == "module" and index == plan["refuse_rmmod_at"]:
            refused = sh("rmmod", swap["name"], check=False)
            report.check("removing the active snapshot's module is refused", refused.returncode != 0,
                         refused.stderr.strip())
        if previous["kind"] == "module" and swap.get("leak_previous"):
            loaded.remove(previous["name"])  # fault injection: the harness "forgets" a module
        elif previous["kind"] == "module":
            removed = sh("rmmod", previous["name"], check=False)
            report.check(f"removing the standby module {previous['name']} works", removed.returncode == 0,
                         removed.stderr.strip())
            if removed.returncode == 0:
                loaded.remove(previous["name"])
                after = nl.app(APP_NAME)
                report.check("standby slot empty after its module left", after.standby_id == 0,
                             f"standby_id={after.standby_id:#x}")
        report.swaps.append(entry)
        previous = swap
    report.timings_s["swaps"] = round(time.monotonic() - swap_started, 3)

    report.step = "finish stress"
    deadline = time.monotonic() + plan["stress_min_wait_s"]
    while read_stress()["queries"] < plan["min_queries"] and time.monotonic() < deadline:
        time.sleep(1)
    write_debugfs("stress", "0")
    report.stress = read_stress()
    report.check(f"at least {plan['min_queries']} queries during the swaps",
                 report.stress["queries"] >= plan["min_queries"], str(report.stress))
    report.check("no failed query (stress threads)", report.stress["errors"] == 0, str(report.stress))


def expect_active(nl: LiteFlowNetlink, app_id: int, snapshot: dict, inputs: np.ndarray,
                  expected: dict[int, np.ndarray], report: CheckedReport, label: str, app_name: str = APP_NAME):
    """Check that `snapshot` (snapshot_id, model) is active and computes the engine's outputs."""
    stats = nl.app(app_name)
    report.check(f"{label}: active snapshot is {snapshot['snapshot_id']:#x}", stats.active_id == snapshot["snapshot_id"],
                 f"active={stats.active_id:#x} origin={stats.active_origin}")
    evaluated_id, outputs = nl.evaluate(app_id, inputs)
    want = expected[snapshot["model"]]
    same = evaluated_id == snapshot["snapshot_id"] and np.array_equal(outputs, want)
    detail = ""
    if not same:
        bad = np.argwhere(outputs != want)
        detail = f"evaluated by {evaluated_id:#x}; {len(bad)} of {want.size} outputs differ, first at {bad[:3].tolist()}"
    report.check(f"{label}: kernel outputs equal the user-space engine's", same, detail)
    return stats


def _check_sampling(nl: LiteFlowNetlink, app_id: int, timeout_s: float = 60.0) -> bool:
    """Turn sampling on, wait for one batch on the multicast group, turn it off again."""
    batch_size = 16
    with LiteFlowNetlink() as listener:
        listener.subscribe_samples()
        nl.set_sampling(app_id, every=64, batch=batch_size)
        try:
            batch = listener.next_sample_batch(timeout_s)
        finally:
            nl.set_sampling(app_id, every=0, batch=batch_size)
    return batch is not None and batch.app_id == app_id and batch.inputs.shape[0] == batch_size


def _check_unprivileged(report: Report) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [*UNPRIVILEGED, sys.executable, "-c", UNPRIVILEGED_PROBE],
        capture_output=True, text=True, env=env, cwd=os.getcwd(),
    )
    report.check("mutating netlink command from an unprivileged user fails with EPERM", done.returncode == 0,
                 f"exit {done.returncode}: {done.stderr.strip()[-400:]}")


def _unload(plan: dict, loaded: list[str], report: Report) -> None:
    """Unload what this run knows it loaded, in dependency order: lf_test first (its exit unpins
    the active snapshot), then the snapshot modules, then the core. Anything left over was leaked."""
    failures = unload_modules(["lf_test", *reversed(loaded), "liteflow"])
    leftovers = liteflow_modules()
    report.check("everything unloads cleanly", not failures and not leftovers,
                 "; ".join(failures) + (f" still loaded: {leftovers}" if leftovers else ""))
