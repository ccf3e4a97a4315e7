"""The guest half of the netlink fuzzer (`python -m guest.driver fuzz PLAN.json`, as root).

It loads the core and lf_test, hot-loads a snapshot and starts lf_test's queries on every vCPU,
so the fuzzed handlers run against a live app, then sends the plan's malformed messages
(userspace/nlfuzz.py) as root and again as an unprivileged user (setpriv, no capabilities). The
checks, each phrased as what must hold:

- every message the netlink core passed on got an answer, 0 or an errno (none unanswered);
- an unprivileged sender had no admin-only command accepted;
- afterwards the family still answers, the app is listed, and its snapshot computes exactly
  what the user-space engine computes on the plan's inputs;
- lf_test's queries saw no error while the messages went in;
- nothing in dmesg, and everything unloads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from guest.tools import (
    UNPRIVILEGED,
    CheckedReport,
    DriverAbort,
    check_dmesg,
    check_unloaded,
    dmesg_lines,
    insmod_test,
    read_stress,
    sh,
    write_debugfs,
)

APP_NAME = "lf_test"
STRESS_QUERIES_PER_CPU = 10**12      # stopped explicitly when the campaigns are done


@dataclass
class Report(CheckedReport):
    campaigns: dict = field(default_factory=dict)
    stress: dict = field(default_factory=dict)


def main(plan: dict, base: Path) -> Report:
    import numpy as np

    from userspace.netlink import LiteFlowNetlink

    report = Report()
    dmesg_before = len(dmesg_lines())
    started = time.monotonic()
    try:
        report.step = "load core, lf_test and a snapshot"
        sh("insmod", str(base / plan["core_module"]))
        insmod_test(plan, base)
        inputs = np.load(base / plan["inputs"])
        expected = np.load(base / plan["expected"])
        with LiteFlowNetlink() as nl:
            app_id = nl.app(APP_NAME).app_id
            nl.load_model(app_id, plan["snapshot_id"], (base / plan["blob"]).read_bytes())
        write_debugfs("stress", str(STRESS_QUERIES_PER_CPU))
        for role in ("root", "unprivileged"):
            report.step = f"fuzz as {role}"
            tally = _campaign(role, plan)
            report.campaigns[role] = tally
            report.check(f"as {role}: every message the netlink core passed on was answered",
                         tally["unanswered"] == 0, json.dumps(tally["unanswered_examples"]))
            if role == "unprivileged":
                report.check("as unprivileged: no admin-only command accepted", tally["privileged_accepted"] == 0,
                             json.dumps(tally["privileged_accepted_examples"]))
        report.step = "stop lf_test's queries"
        write_debugfs("stress", "0")
        report.stress = read_stress()
        report.check("lf_test's queries kept succeeding throughout", report.stress.get("queries", 0) > 0
                     and report.stress.get("errors", 1) == 0, json.dumps(report.stress))
        report.step = "the family afterwards"
        with LiteFlowNetlink() as nl:
            stats = nl.app(APP_NAME)
            report.check("the family still answers and lists the app", stats.app_id == app_id, str(stats))
            _, outputs = nl.evaluate(app_id, inputs)
        report.check("the snapshot still computes what the user-space engine computes",
                     np.array_equal(outputs, expected),
                     f"{int(np.sum(outputs != expected))} of {expected.size} outputs differ")
    except (DriverAbort, OSError, subprocess.SubprocessError) as exc:  # LiteFlowNetlinkError is an OSError
        report.check(f"step '{report.step}' completed", False, str(exc))
    finally:
        report.step = "unload everything"
        try:
            write_debugfs("stress", "0")
        except OSError:
            pass                     # lf_test was never loaded
        check_unloaded(report)
        report.timings_s["total"] = round(time.monotonic() - started, 3)
        check_dmesg(report, dmesg_before)
    return report


def _campaign(role: str, plan: dict) -> dict:
    """One campaign in its own process: as root, or with setpriv as nobody without capabilities."""
    argv = [sys.executable, "-m", "userspace.nlfuzz", "--count", str(plan["messages"]),
            "--seed", str(plan["seed"] + (0 if role == "root" else 1))]
    if role == "unprivileged":
        argv = [*UNPRIVILEGED, *argv, "--unprivileged"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=os.getcwd(), timeout=plan["timeout_s"],
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if done.returncode != 0:
        raise DriverAbort(f"the {role} campaign exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
