"""kernel-full: the same network inferred *and trained* in the kernel.

Flows use "liteflow_full", lf_cc's third congestion control: the same monitor intervals,
features and action rule, the same starting snapshot (loaded into app "cc_full") and the same
adaptation as LiteFlow's slow path, but done by lf_cc itself on the ACK path: each decision is
labelled by the teacher into a replay, owed minibatches are trained at most full_budget samples
per ACK, and a work item requantizes the network into cc_full's snapshot every few steps. The
master weights start from the committed network (/sys/kernel/debug/lf_cc/full_weights).
"""

from __future__ import annotations

from pathlib import Path

from guest.net.schemes import Scheme
from guest.net.schemes import _liteflow as lf
from guest.tools import DriverAbort

APP = "cc_full"
WEIGHTS = Path("/sys/kernel/debug/lf_cc/full_weights")


class Full(Scheme):
    name = "full"

    def __init__(self) -> None:
        self.setup_info: dict = {}

    @property
    def congestion_control(self) -> str:
        return "liteflow_full"

    def setup(self, network, plan: dict) -> None:
        work, options = plan["work"], plan["options"]
        lf.load_modules(work, options.get("lf_cc"))
        self.setup_info = lf.install_snapshot(work, options, app=APP)
        weights = (work / options["full_weights"]).read_bytes()
        try:
            with WEIGHTS.open("wb", buffering=0) as f:
                f.write(weights)
        except OSError as exc:
            raise DriverAbort(f"lf_cc refused kernel-full's master weights: {exc}") from exc

    def results(self) -> dict:
        return {"lf_cc": lf.lf_cc_stats(), "core": lf.core_stats(APP)}

    def teardown(self) -> None:
        lf.unload()

    def describe(self) -> dict:
        return {**super().describe(), **self.setup_info, "adapting": True, "where": "kernel"}


SCHEME = Full
