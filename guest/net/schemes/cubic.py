"""Cubic, the kernel's default congestion control, with the hosts' default queueing (none)."""

from __future__ import annotations

from guest.net.schemes import Scheme
from guest.net.schemes._kernelcc import ensure_congestion_control


class Cubic(Scheme):
    name = "cubic"

    @property
    def congestion_control(self) -> str:
        return "cubic"

    def setup(self, network, plan: dict) -> None:
        ensure_congestion_control("cubic")

    def teardown(self) -> None:
        """Nothing to undo: setup changed no state."""


SCHEME = Cubic
