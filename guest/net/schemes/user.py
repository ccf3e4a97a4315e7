"""The user-space deployment: the same snapshot, run by a user-space agent lf_cc talks to.

Flows use "liteflow_user", lf_cc's second congestion control: the same monitor intervals,
features and action rule as LiteFlow, but the decision comes from userspace/agent/lf_agent.c,
which runs the same integer engine on the same blob. lf_cc posts the features asynchronously
(every MI, or every `interval_us` of the scheme options) and applies the newest answer at the
next ACK; the rate in force stays until then. lf_cc counts posts, answers, late answers and
posts never answered (/sys/module/lf_cc/parameters/stats).

With `adapt` in the options, LiteFlow's slow-path service runs next to the agent with the same
adapter and settings as LiteFlow's, and its updates go to the agent (`--update agent`: the blob
file the agent serves is replaced and the agent told with SIGHUP): deployment against
deployment, adaptation included.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from guest.agent import build_agent, start_agent, stop_agent
from guest.net.schemes import Scheme
from guest.net.schemes import _liteflow as lf

PAUSE_S = 1.0     # pause_agent: ten times lf_cc's default answer timeout (100 ms)


class User(Scheme):
    name = "user"

    def __init__(self) -> None:
        self.agent = None
        self.service: lf.Service | None = None
        self.agent_exit: dict = {}
        self.agent_alive_at_end: bool | None = None
        self.setup_info: dict = {}
        self.faults: list[dict] = []

    @property
    def congestion_control(self) -> str:
        return "liteflow_user"

    def setup(self, network, plan: dict) -> None:
        work, options = plan["work"], plan["options"]
        lf.load_modules(work, options.get("lf_cc"))
        interval_us = int(options.get("interval_us", 0))
        (lf.PARAMS / "user_interval_us").write_text(f"{interval_us}\n")
        (lf.PARAMS / "user_timeout_ms").write_text(f"{int(options.get('timeout_ms', 100))}\n")
        app = lf.app_id()
        served = work / "agent.blob"          # the file the slow path rewrites; the plan's stays
        served.write_bytes((work / options["blob"]).read_bytes())
        self.agent = start_agent(build_agent(work / "agent"), app, served)
        self.setup_info = {"app_id": app, "interval_us": interval_us, "agent_pid": self.agent.pid,
                           "adapting": bool(options.get("adapt"))}
        if options.get("adapt"):
            lf.install_snapshot(work, options)    # the reference the slow path's fidelity check reads
            self.service = lf.Service(work, options, ("--update", "agent", "--agent-blob", str(served),
                                                      "--agent-pid", str(self.agent.pid)))
            self.setup_info["service_startup_s"] = self.service.start()

    def kill_agent(self) -> dict:
        """The fault: SIGKILL the agent mid-run; flows keep their last rate, lf_cc counts timeouts."""
        before = lf.lf_cc_stats()
        self.agent.kill()
        self.agent.wait()
        fault = {"t_unix": round(time.time(), 3), "fault": "agent killed",
                 "user_applied_before": before.get("user_applied")}
        self.faults.append(fault)
        return fault

    def kill_service(self) -> dict:
        """The slow path's death: the agent keeps answering with the last blob it was given."""
        if self.service is None:
            raise RuntimeError("this user-space deployment does not adapt: no service to kill")
        self.service.kill()
        fault = {"t_unix": round(time.time(), 3), "fault": "service killed"}
        self.faults.append(fault)
        return fault

    def pause_agent(self) -> dict:
        """The fault: SIGSTOP the agent for PAUSE_S, then SIGCONT. The datapath must not wait: the
        flows keep their rate, posts in the pause time out, and the answers the agent sends once
        it resumes come late (both counted by lf_cc)."""
        before = lf.lf_cc_stats()
        os.kill(self.agent.pid, signal.SIGSTOP)
        threading.Timer(PAUSE_S, os.kill, (self.agent.pid, signal.SIGCONT)).start()
        fault = {"t_unix": round(time.time(), 3), "fault": f"agent paused {PAUSE_S} s",
                 "user_late_before": before.get("user_late"), "user_timeouts_before": before.get("user_timeouts")}
        self.faults.append(fault)
        return fault

    def results(self) -> dict:
        self.agent_alive_at_end = bool(self.agent and self.agent.poll() is None)
        return {"lf_cc": lf.lf_cc_stats(), "agent_alive": self.agent_alive_at_end,
                "updates": self.service.updates() if self.service else [],
                "service_cpu": self.service.cpu() if self.service else None, "faults": self.faults}

    def checks(self) -> list[tuple[str, bool, str]]:
        """The agent is this deployment's fast path: unless a fault killed it, it must have served
        to the end (an agent that quits leaves every flow at its last rate)."""
        if self.agent_alive_at_end is None or any(fault["fault"] == "agent killed" for fault in self.faults):
            return []
        return [("the agent served to the end", self.agent_alive_at_end,
                 f"agent exit {self.agent_exit.get('exit')}: {self.agent_exit.get('stderr', '')}")]

    def teardown(self) -> None:
        if self.service is not None:
            self.service.stop()
        if self.agent is not None:
            self.agent_exit = stop_agent(self.agent)
        lf.unload()

    def describe(self) -> dict:
        return {**super().describe(), **self.setup_info, "agent_exit": self.agent_exit}


SCHEME = User
