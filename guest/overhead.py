"""The guest half of the overhead measurement: in-kernel inference vs a user-space round trip.

Runs inside the guest as root (`python -m guest.driver overhead PLAN.json`), with the project's
code from the read-only share and the modules and blob the host prepared next to the plan. It
loads the core and lf_test with the plan's sizes, hot-loads the snapshot over netlink, times the
in-kernel fast path (LF_CMD_BENCH), builds and starts the C agent (userspace/agent) on the same
blob, times kernel -> agent -> kernel round trips (LF_CMD_UPCALL_BENCH), stops the agent by its
pid, checks that the kernel forgot it, unloads everything and prints one JSON report on stdout.

Only the standard library and pyroute2 (via userspace.netlink) are needed here.
"""

from __future__ import annotations

import errno
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from guest.agent import build_agent, start_agent, stop_agent
from guest.tools import CheckedReport, DriverAbort, dmesg_lines, kernel_trouble, sh, unload_liteflow
from userspace.netlink import LiteFlowNetlink, LiteFlowNetlinkError

APP_NAME = "lf_test"


@dataclass
class Report(CheckedReport):
    kernel: dict = field(default_factory=dict)      # LF_CMD_BENCH
    upcall: dict = field(default_factory=dict)      # LF_CMD_UPCALL_BENCH
    agent: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- the run


def main(plan: dict, base: Path) -> Report:
    report = Report()
    dmesg_before = len(dmesg_lines())
    started = time.monotonic()
    agent: subprocess.Popen | None = None
    try:
        report.step = "load core and lf_test"
        sh("insmod", str(base / plan["core_module"]))
        sh("insmod", str(base / plan["test_module"]), f"input_size={plan['input_size']}",
           f"output_size={plan['output_size']}")
        with LiteFlowNetlink() as nl:
            app_id = nl.app(APP_NAME).app_id
            report.step = "hot-load the snapshot"
            blob = base / plan["blob"]
            nl.load_model(app_id, plan["snapshot_id"], blob.read_bytes())
            report.check("snapshot active", nl.app(APP_NAME).active_id == plan["snapshot_id"])

            report.step = "in-kernel bench"
            kernel = nl.bench(app_id, plan["kernel_iterations"])
            report.kernel = asdict(kernel)

            report.step = "no agent yet"
            report.check("UPCALL_BENCH without an agent fails with ENOTCONN",
                         _upcall_errno(nl, app_id) == errno.ENOTCONN)

            report.step = "build the agent"
            t0 = time.monotonic()
            binary = build_agent(base / "agent")
            report.timings_s["agent_build"] = round(time.monotonic() - t0, 3)

            report.step = "start the agent"
            agent = start_agent(binary, app_id, blob)
            report.agent["pid"] = agent.pid

            report.step = "upcall warm-up"
            nl.upcall_bench(app_id, plan["warmup_iterations"], plan["timeout_ms"])
            report.step = "upcall bench"
            upcall = nl.upcall_bench(app_id, plan["upcall_iterations"], plan["timeout_ms"])
            report.upcall = asdict(upcall)
            report.check("every round trip answered", upcall.errors == 0 and upcall.timeouts == 0,
                         f"errors={upcall.errors} timeouts={upcall.timeouts} stale={upcall.stale_answers}")

            report.step = "stop the agent"
            report.agent.update(stop_agent(agent))
            agent = None
            report.check("agent stopped by SIGTERM exits 0", report.agent["exit"] == 0, report.agent["stderr"])
            report.check("the kernel forgot the agent when its socket closed",
                         _upcall_errno(nl, app_id) == errno.ENOTCONN)
    except (DriverAbort, LiteFlowNetlinkError, OSError, subprocess.SubprocessError) as exc:
        report.check(f"step '{report.step}' completed", False, str(exc))
    finally:
        if agent is not None:
            report.agent.update(stop_agent(agent))
        report.step = "unload everything"
        _unload(report)
        report.timings_s["total"] = round(time.monotonic() - started, 3)
        new = dmesg_lines()[dmesg_before:]
        report.dmesg_new = new
        trouble = kernel_trouble(new)
        report.check("dmesg clean (no WARNING/BUG/Oops/hung task)", not trouble, "\n".join(trouble[:20]))
    return report


def _upcall_errno(nl: LiteFlowNetlink, app_id: int) -> int:
    """The errno of a one-iteration UPCALL_BENCH (0 if it succeeded)."""
    try:
        nl.upcall_bench(app_id, 1, 1000)
    except LiteFlowNetlinkError as exc:
        return exc.errno
    return 0


def _unload(report: Report) -> None:
    failures = unload_liteflow()
    report.check("everything unloads cleanly", not failures, "; ".join(failures))
