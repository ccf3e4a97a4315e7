"""BBR (v1, the kernel's tcp_bbr) with the fq qdisc on the senders' egress.

BBR is rate-based: it needs its packets paced. Since 4.13 TCP can pace by itself (a per-socket
hrtimer, used when the qdisc is not fq), but BBR's authors still deploy and recommend it with fq,
which paces from the socket's rate (and, since 4.20, from TCP's departure timestamps) with one
timer per qdisc instead of one per socket. Under TCG, where every timer and context switch is
emulated, that is the cheaper and more precise choice, and it is the configuration BBR's results
are published with. The hosts' egress qdisc is free for it: links are shaped at routers
(guest.net.spec), never on a host's own interface.
"""

from __future__ import annotations

from guest.net.schemes import Scheme
from guest.net.schemes._kernelcc import ensure_congestion_control
from guest.tools import DriverAbort


class Bbr(Scheme):
    name = "bbr"

    def __init__(self) -> None:
        self._network = None
        self._fq: list[tuple[str, str]] = []  # (host, interface) where fq was installed

    @property
    def congestion_control(self) -> str:
        return "bbr"

    def setup(self, network, plan: dict) -> None:
        ensure_congestion_control("bbr")
        self._network = network
        for host in sorted({flow["src"] for flow in plan["flows"]}):
            for dev in network.interfaces(host):
                network.run(host, "tc", "qdisc", "replace", "dev", dev, "root", "fq")
                self._fq.append((host, dev))

    def teardown(self) -> None:
        # Back to the veth default (noqueue), so a reused network does not keep pacing.
        for host, dev in self._fq:
            try:
                self._network.run(host, "tc", "qdisc", "del", "dev", dev, "root")
            except DriverAbort:
                pass  # the interface may already be gone with a network torn down under us
        self._fq.clear()

    def describe(self) -> dict:
        return {**super().describe(), "sender_qdisc": "fq", "fq_on": [f"{h}:{d}" for h, d in self._fq]}


SCHEME = Bbr
