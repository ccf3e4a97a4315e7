"""The guest half of the hardening regression tests (issue 12): one check per hole the review found.

Runs inside the guest as root (`python -m guest.driver hardening PLAN.json`) with the modules, blobs
and expected outputs the host prepared next to the plan. Each check is phrased as the behaviour the
core must have, so on a core without the fix it fails rather than errors out:

- a single BENCH request asking for the maximum iterations returns within its bound (the handler
  must not hold generic netlink's lock for minutes);
- an unprivileged user cannot join the samples multicast group (samples carry flows' features);
- a snapshot whose id is already loaded is refused with EEXIST, hot-loaded or inserted as a module;
- a snapshot over the app's declared cost budget is refused with EFBIG, both ways;
- a blob of more than 100 KB hot-loads and computes what the user-space engine computes.

Only the standard library, numpy and pyroute2 (via userspace.netlink) are needed here, and the
samples check needs no numpy: the debian-5.10 guest's venv has none, and that kernel is the one
whose samples guard differs, so a plan can ask for that check alone (`"only": ["private_samples"]`).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from guest.tools import (
    UNPRIVILEGED,
    CheckedReport,
    DriverAbort,
    check_dmesg,
    check_unloaded,
    dmesg_lines,
    insmod_test,
    sh,
    unload_liteflow,
)

if TYPE_CHECKING:  # imported where used: the samples check must run without numpy
    from userspace.netlink import LiteFlowNetlink

APP_NAME = "lf_test"
# One raw BENCH request (no client-side splitting), timed around the request alone: the
# interpreter's start under TCG takes seconds and is not the handler's.
ONE_BENCH_REQUEST = """
import sys, time
from userspace.netlink import LiteFlowNetlink
with LiteFlowNetlink() as nl:
    app = nl.app("lf_test")
    t0 = time.monotonic()
    (reply,) = nl._request("BENCH", {"APP_ID": app.app_id, "ITERATIONS": int(sys.argv[1])})
    print(reply.get_attr("LF_ATTR_ITERATIONS"), time.monotonic() - t0)
"""
# Joins the group the way LiteFlowNetlink.subscribe_samples does, without the client's numpy.
UNPRIVILEGED_SUBSCRIBER = """
import errno, sys
from userspace.genl import GenlSubscriber, resolve_family
from userspace.uapi import load_uapi
uapi = load_uapi()
_, groups = resolve_family(uapi.family)
try:
    GenlSubscriber(groups[uapi.samples_group], object).close()
except OSError as exc:
    sys.exit(0 if exc.errno == errno.EPERM else 3)
sys.exit(2)                           # joined the samples group without CAP_NET_ADMIN
"""


@dataclass
class Report(CheckedReport):
    bench_request: dict = field(default_factory=dict)
    big_blob_bytes: int = 0


def main(plan: dict, base: Path) -> Report:
    report = Report()
    dmesg_before = len(dmesg_lines())
    started = time.monotonic()
    try:
        report.step = "load core and lf_test"
        sh("insmod", str(base / plan["core_module"]))
        insmod_test(plan, base)
        _check_private_samples(report)
        if plan.get("only") != ["private_samples"]:
            from userspace.netlink import LiteFlowNetlink

            with LiteFlowNetlink() as nl:
                app_id = nl.app(APP_NAME).app_id
                _check_unique_ids(nl, app_id, plan, base, report)
                _check_bounded_bench(nl, app_id, plan, report)
                _check_large_blob(nl, app_id, plan, base, report)
            _check_budget(plan, base, report)
    except (DriverAbort, OSError) as exc:  # LiteFlowNetlinkError is an OSError
        report.check(f"step '{report.step}' completed", False, str(exc))
    finally:
        report.step = "unload everything"
        check_unloaded(report)
        report.timings_s["total"] = round(time.monotonic() - started, 3)
        check_dmesg(report, dmesg_before)
    return report


def _errno_name(call) -> str:
    """Run `call` and name how it ended: "accepted" or the errno's symbol (EEXIST, EFBIG, ...)."""
    from userspace.netlink import LiteFlowNetlinkError

    try:
        call()
    except LiteFlowNetlinkError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "accepted"


def _insmod_errno(path: Path, app_id: int) -> tuple[str, str]:
    """insmod a snapshot module; ("accepted", "") or the errno insmod reports and its message.
    insmod only prints strerror, so map it back to the symbol the check names."""
    done = sh("insmod", str(path), f"app_id={app_id}", check=False)
    if done.returncode == 0:
        return "accepted", ""
    message = done.stderr.strip()
    for code, name in errno.errorcode.items():
        if os.strerror(code) in message:
            return name, message
    return "unknown", message


def _check_private_samples(report: Report) -> None:
    report.step = "unprivileged samples subscriber"
    done = subprocess.run([*UNPRIVILEGED, sys.executable, "-c", UNPRIVILEGED_SUBSCRIBER], capture_output=True,
                          text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, cwd=os.getcwd())
    report.check("an unprivileged user cannot join the samples group (EPERM)", done.returncode == 0,
                 f"exit {done.returncode} (2 = joined): {done.stderr.strip()[-400:]}")


def _check_unique_ids(nl: LiteFlowNetlink, app_id: int, plan: dict, base: Path, report: Report) -> None:
    report.step = "duplicate snapshot ids"
    first = plan["small"]
    nl.load_model(app_id, first["snapshot_id"], (base / first["blob"]).read_bytes())
    got = _errno_name(lambda: nl.load_model(app_id, first["snapshot_id"], (base / first["blob"]).read_bytes()))
    report.check("hot load of an id already loaded refused with EEXIST", got == "EEXIST", f"got {got}")
    got, message = _insmod_errno(base / plan["duplicate_module"], app_id)
    report.check("snapshot module with an id already loaded refused with EEXIST", got == "EEXIST",
                 f"got {got} {message}")
    stats = nl.app(APP_NAME)
    report.check("the first snapshot with that id still serves",
                 stats.active_id == first["snapshot_id"] and stats.active_origin == "hot",
                 f"active={stats.active_id:#x} origin={stats.active_origin} standby={stats.standby_id:#x}")


def _check_bounded_bench(nl: LiteFlowNetlink, app_id: int, plan: dict, report: Report) -> None:
    """One BENCH request for the most iterations the UAPI allows, from a child process so that a
    handler that runs for minutes can be cut short (the kill is a signal the handler heeds)."""
    report.step = "one BENCH request within its bound"
    bound, kill_after = plan["bench_request_bound_s"], plan["bench_kill_after_s"]
    try:
        done = subprocess.run([sys.executable, "-c", ONE_BENCH_REQUEST, str(plan["bench_iterations"])],
                              capture_output=True, text=True, timeout=kill_after, cwd=os.getcwd(),
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        words = done.stdout.split()
        ran, took = (int(words[-2]), float(words[-1])) if done.returncode == 0 and len(words) >= 2 else (0, 0.0)
        detail = f"{took:.3f} s, {ran} iterations; {done.stderr.strip()[-300:]}"
        ok = done.returncode == 0 and 0 < ran <= plan["bench_iterations"] and took <= bound
    except subprocess.TimeoutExpired:
        took, ran, ok = float(kill_after), 0, False
        detail = f"no reply within {kill_after} s (killed)"
    report.bench_request = {"seconds": round(took, 3), "iterations": ran, "asked": plan["bench_iterations"]}
    report.check(f"a BENCH request of {plan['bench_iterations']} iterations returns within {bound} s", ok, detail)

    report.step = "BENCH split into requests by the client"
    want = plan["bench_client_iterations"]
    result = nl.bench(app_id, want)
    report.check("the client's bench runs every iteration it asked for", result.iterations == want,
                 f"{result.iterations} of {want}, {result.ns_per_query} ns/query")


def _check_large_blob(nl: LiteFlowNetlink, app_id: int, plan: dict, base: Path, report: Report) -> None:
    import numpy as np

    report.step = "hot load of a large blob"
    big = plan["big"]
    blob = (base / big["blob"]).read_bytes()
    report.big_blob_bytes = len(blob)
    got = _errno_name(lambda: nl.load_model(app_id, big["snapshot_id"], blob))
    report.check(f"a {len(blob)}-byte blob hot-loads", got == "accepted", f"got {got}")
    if got != "accepted":
        return
    inputs = np.load(base / plan["inputs"])
    evaluated, outputs = nl.evaluate(app_id, inputs)
    same = evaluated == big["snapshot_id"] and np.array_equal(outputs, np.load(base / big["expected"]))
    report.check("the large snapshot computes what the user-space engine computes", same,
                 f"evaluated by {evaluated:#x}")


def _check_budget(plan: dict, base: Path, report: Report) -> None:
    report.step = "cost budget"
    unload_liteflow()
    sh("insmod", str(base / plan["core_module"]))
    budget = plan["tight_budget_macs"]
    loaded = sh("insmod", str(base / plan["test_module"]), f"input_size={plan['input_size']}",
                f"output_size={plan['output_size']}", f"max_macs={budget}", check=False)
    if not report.check(f"lf_test takes a cost budget (max_macs={budget})", loaded.returncode == 0,
                        loaded.stderr.strip()):
        report.check("over-budget hot load refused with EFBIG", False, "no app with a budget")
        report.check("over-budget snapshot module refused with EFBIG", False, "no app with a budget")
        return
    from userspace.netlink import LiteFlowNetlink

    small = plan["small"]
    with LiteFlowNetlink() as nl:
        app_id = nl.app(APP_NAME).app_id
        got = _errno_name(lambda: nl.load_model(app_id, small["snapshot_id"], (base / small["blob"]).read_bytes()))
        report.check("over-budget hot load refused with EFBIG", got == "EFBIG",
                     f"got {got} for {small['macs']} MACs over a budget of {budget}")
        got, message = _insmod_errno(base / plan["over_budget_module"], app_id)
        report.check("over-budget snapshot module refused with EFBIG", got == "EFBIG", f"got {got} {message}")
        stats = nl.app(APP_NAME)
        report.check("nothing was installed over the budget", stats.active_id == 0 and stats.standby_id == 0,
                     f"active={stats.active_id:#x} standby={stats.standby_id:#x}")
