"""kernel-frozen: LiteFlow with adaptation off — lf_cc and the same initial snapshot, no service.

The control for every adaptation result: whatever LiteFlow gains over this scheme is the slow
path's doing, since the kernel side, the weights it starts from and the arithmetic are the same.
"""

from __future__ import annotations

from guest.net.schemes import Scheme
from guest.net.schemes import _liteflow as lf


class Frozen(Scheme):
    name = "frozen"

    def __init__(self) -> None:
        self.setup_info: dict = {}

    @property
    def congestion_control(self) -> str:
        return lf.CONGESTION_CONTROL

    def setup(self, network, plan: dict) -> None:
        lf.load_modules(plan["work"], plan["options"].get("lf_cc"))
        self.setup_info = lf.install_snapshot(plan["work"], plan["options"])

    def results(self) -> dict:
        return {"lf_cc": lf.lf_cc_stats(), "core": lf.core_stats(), "updates": []}

    def teardown(self) -> None:
        lf.unload()

    def describe(self) -> dict:
        return {**super().describe(), **self.setup_info, "adapting": False}


SCHEME = Frozen
