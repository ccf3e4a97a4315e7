"""LiteFlow: lf_cc's snapshot in the kernel, adapted online by the slow-path service.

The service samples lf_cc's decisions with their outcomes (the sample context), tunes the
network in user space with the CC adapter (userspace/cc/adapter.py) and hot-swaps a new snapshot
in when its evaluation says the kernel's copy has drifted (fidelity loss over the threshold).
The service starts, and is ready, before any flow: TensorFlow's start-up is not charged to the
flows. Its updates are reported with their times so a run can mark them on its figures.
"""

from __future__ import annotations

import time

from guest.net.schemes import Scheme
from guest.net.schemes import _liteflow as lf


class LiteFlow(Scheme):
    name = "liteflow"

    def __init__(self) -> None:
        self.service: lf.Service | None = None
        self.setup_info: dict = {}
        self.faults: list[dict] = []

    @property
    def congestion_control(self) -> str:
        return lf.CONGESTION_CONTROL

    def setup(self, network, plan: dict) -> None:
        work, options = plan["work"], plan["options"]
        lf.load_modules(work, options.get("lf_cc"))
        self.setup_info = lf.install_snapshot(work, options)
        self.service = lf.Service(work, options)
        self.setup_info["service_startup_s"] = self.service.start()
        self.setup_info["service_started_unix"] = self.service.started_unix

    def kill_service(self) -> dict:
        """The fault: SIGKILL the service mid-run; the kernel keeps serving its last snapshot."""
        before = lf.core_stats()
        decisions_before = lf.lf_cc_stats().get("decisions")
        self.service.kill()
        fault = {"t_unix": round(time.time(), 3), "fault": "service killed", "active_id_before": before.get("active_id"),
                 "decisions_before": decisions_before}
        self.faults.append(fault)
        return fault

    def results(self) -> dict:
        service = self.service
        return {"lf_cc": lf.lf_cc_stats(), "core": lf.core_stats(),
                "updates": service.updates() if service else [], "rejected": service.rejected() if service else [],
                "service_alive": bool(service and service.alive()), "service_cpu": service.cpu() if service else None,
                "faults": self.faults}

    def teardown(self) -> None:
        if self.service is not None:
            self.service.stop()
        lf.unload()

    def describe(self) -> dict:
        return {**super().describe(), **self.setup_info, "adapting": True}


SCHEME = LiteFlow
