"""A running Mininet network built from a topology spec (see guest.net.spec for the layout).

Hosts and Linux routers only, joined by plain veth pairs: no switch, so no OVS and no controller.
Shaping is done with tc directly (guest.net.shaping) rather than TCLink, because TCLink's netem
queue also counts packets that are only being delayed, so its queue is not the configured size.

`network(spec)` is the only way in: a context manager that always stops the network (and every
process started through it) on the way out. Nothing here uses `mn -c` or kills by name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from guest.net.shaping import Shape, change_commands, setup_commands
from guest.net.spec import Blueprint, LinkPlan, parse_topology
from guest.tools import DriverAbort


class Network:
    """Access to a built network by name: nodes, host addresses, links, their interfaces."""

    def __init__(self, blueprint: Blueprint, net) -> None:
        self.blueprint = blueprint
        self.net = net
        self.shapes = {link.name: link.shape for link in blueprint.links}
        self._interfaces: dict[tuple[str, str], str] = {}  # (link, node) → interface name
        self._processes: list[subprocess.Popen] = []

    # -- names -------------------------------------------------------------------------------

    def node(self, name: str):
        return self.net.get(name)

    def ip(self, host: str) -> str:
        return self.blueprint.address(host)

    def interface(self, link: str, node: str) -> str:
        return self._interfaces[(link, node)]

    def interfaces(self, node: str) -> list[str]:
        return [intf for (_, owner), intf in self._interfaces.items() if owner == node]

    @property
    def bottlenecks(self) -> list[str]:
        return list(self.blueprint.bottlenecks)

    def base_rtt_ms(self, src: str, dst: str) -> float:
        """Propagation RTT from the spec, lowest over the ECMP paths (links as built, not changed)."""
        return self.blueprint.base_rtt_ms(src, dst)[0]

    # -- commands in a node's namespace ------------------------------------------------------

    def run(self, node: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run argv in the node's namespace and wait; with `check`, failure raises DriverAbort."""
        proc = self.node(node).popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise DriverAbort(f"{node}: {' '.join(argv)} timed out after {timeout} s")
        done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and done.returncode != 0:
            raise DriverAbort(f"{node}: {' '.join(argv)} failed ({done.returncode}): {err.strip() or out.strip()}")
        return done

    def popen(self, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start argv in the node's namespace; it is stopped by pid when the network stops, if
        the caller has not reaped it by then."""
        proc = self.node(node).popen(argv, **kwargs)
        self._processes.append(proc)
        return proc

    def stop_processes(self) -> None:
        for proc in self._processes:
            stop_process(proc)
        self._processes.clear()

    # -- links -------------------------------------------------------------------------------

    def change_link(self, name: str, changes: dict) -> list[str]:
        """Change a link's rate/delay/queue/loss/reverse slots in place (tc ... change on each shaped end);
        returns the commands run."""
        link = self.blueprint.link(name)
        old = self.shapes[name]
        new = Shape(**{**old.__dict__, **changes})
        ran = []
        for node, scale in _shaped_ends(link):
            for argv in change_commands(self.interface(name, node), old, new, scale, reverse=node == link.b):
                self.run(node, *argv)
                ran.append(" ".join(argv))
        self.shapes[name] = new
        return ran

    def qdisc_stats(self, name: str) -> dict[str, dict]:
        """Per shaped end of a link (`node>peer`), the tc counters of its queue (pfifo) and of
        netem: sent packets, drops, overlimits, backlog."""
        link = self.blueprint.link(name)
        stats = {}
        for node, _ in _shaped_ends(link):
            peer = link.b if node == link.a else link.a
            out = self.run(node, "tc", "-s", "-j", "qdisc", "show", "dev", self.interface(name, node)).stdout
            stats[f"{node}>{peer}"] = {q["kind"]: {key: q.get(key) for key in
                                                  ("packets", "bytes", "drops", "overlimits", "backlog", "qlen")}
                                       for q in json.loads(out or "[]")}
        return stats

    def tx_bytes(self, name: str) -> dict[str, int]:
        """Bytes each end of a link has sent into it (`node>peer`), from the interface counters."""
        link = self.blueprint.link(name)
        counters = {}
        for node, peer in ((link.a, link.b), (link.b, link.a)):
            path = f"/sys/class/net/{self.interface(name, node)}/statistics/tx_bytes"
            counters[f"{node}>{peer}"] = int(self.run(node, "cat", path).stdout)
        return counters

    def link_counters(self, name: str) -> dict[str, tuple[int, int]]:
        """(bytes, packets) each end of a link has sent into it (`node>peer`), read from
        /proc/PID/net/dev of a process in the node's namespace: no process started, so it can be
        sampled often while traffic runs."""
        link = self.blueprint.link(name)
        counters = {}
        for node, peer in ((link.a, link.b), (link.b, link.a)):
            table = parse_net_dev(Path(f"/proc/{self.node(node).pid}/net/dev").read_text())
            counters[f"{node}>{peer}"] = table[self.interface(name, node)]
        return counters


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """{interface: (tx bytes, tx packets)} from the text of /proc/net/dev (two header lines, then
    `name: 8 receive fields 8 transmit fields`)."""
    table = {}
    for line in text.splitlines()[2:]:
        name, _, fields = line.partition(":")
        values = fields.split()
        if len(values) >= 10:
            table[name.strip()] = (int(values[8]), int(values[9]))
    return table


def _shaped_ends(link: LinkPlan) -> list[tuple[str, int]]:
    return [(node, scale) for node, scale in ((link.a, link.a_delay_scale), (link.b, link.b_delay_scale)) if scale]


def stop_process(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, by pid; no-op for a process already reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


def log(message: str) -> None:
    print(f"[net] {message}", file=sys.stderr, flush=True)


@contextmanager
def network(spec: dict | Blueprint) -> Iterator[Network]:
    """Build the network a spec describes, yield it, and always stop it."""
    # Mininet lives in the guest only (Debian's python3-mininet); the pure modules above must
    # stay importable without it.
    from mininet.net import Mininet
    from mininet.node import Host

    blueprint = spec if isinstance(spec, Blueprint) else parse_topology(spec)
    net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False, autoStaticArp=False)
    for name in blueprint.hosts + blueprint.routers:
        net.addHost(name, cls=Host, ip=None)
    built = Network(blueprint, net)
    counters: dict[str, int] = {}
    for link in blueprint.links:
        ends = []
        for node in (link.a, link.b):
            ends.append(f"{node}-eth{counters.get(node, 0)}")
            counters[node] = counters.get(node, 0) + 1
        net.addLink(link.a, link.b, intfName1=ends[0], intfName2=ends[1])
        built._interfaces[(link.name, link.a)] = ends[0]
        built._interfaces[(link.name, link.b)] = ends[1]
    try:
        net.build()
        _configure(built)
        log(f"{blueprint.kind} up: {len(blueprint.hosts)} hosts, {len(blueprint.routers)} routers, "
            f"{len(blueprint.links)} links")
        yield built
    finally:
        built.stop_processes()
        net.stop()


def _configure(built: Network) -> None:
    bp = built.blueprint
    for router in bp.routers:
        for key, value in {"net.ipv4.ip_forward": "1",
                           # ECMP replies may come back over another spine: no reverse-path check.
                           "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0",
                           **bp.sysctls}.items():
            built.run(router, "sysctl", "-qw", f"{key}={value}")
    offloads = [word for key, on in bp.offloads.items() for word in (key, "on" if on else "off")]
    for link in bp.links:
        for node, addr in ((link.a, link.a_addr), (link.b, link.b_addr)):
            dev = built.interface(link.name, node)
            built.run(node, "ip", "addr", "flush", "dev", dev)
            built.run(node, "ip", "addr", "add", addr, "dev", dev)
            built.run(node, "ip", "link", "set", dev, "up")
            built.run(node, "ethtool", "-K", dev, *offloads)
            if node in bp.routers:
                built.run(node, "sysctl", "-qw", f"net.ipv4.conf.{dev}.rp_filter=0")
        for node, scale in _shaped_ends(link):
            for argv in setup_commands(built.interface(link.name, node), link.shape, scale, reverse=node == link.b):
                built.run(node, *argv)
    for node, routes in bp.routes.items():
        for route in routes:
            if len(route.via) == 1:
                gateway, link = route.via[0]
                built.run(node, "ip", "route", "replace", route.dst, "via", gateway,
                          "dev", built.interface(link, node))
            else:
                hops = [word for gateway, link in route.via
                        for word in ("nexthop", "via", gateway, "dev", built.interface(link, node))]
                built.run(node, "ip", "route", "replace", route.dst, *hops)
