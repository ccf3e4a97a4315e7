"""Topology specs (data from an experiment file) → a blueprint: nodes, links, addresses, routes.

Pure: no Mininet here, so the addressing and the validation are unit-testable on any machine.
guest.net.topology turns a blueprint into a running network.

Two kinds:

- `dumbbell`: senders s1..sN — r1 ==bottleneck== r2 — receivers d1..dM. Access links s_i–r1 and
  r2–d_j have `access` properties (default 1000 Mbit/s, 0 ms), the r1–r2 link has `bottleneck`.
  Every path s_i → d_j crosses two access links and the bottleneck, so the base RTT is
  2 × (bottleneck.delay_ms + 2 × access.delay_ms).
- `leaf_spine`: leaf1..leafL and spine1..spineS are Linux routers, every leaf linked to every
  spine (`link`, per leaf–spine pair `link_overrides`), hosts h1.. hang off the leaves
  (`hosts_per_leaf` each, `host_link`). Inter-leaf traffic is spread over the spines by ECMP
  (multipath routes hashed on L4 ports). Senders are the first leaf's hosts, receivers the last
  leaf's, so default flows cross the spines.

Delay placement: a link between two routers is shaped in both directions with its own delay. A
link between a host and a router is shaped only at the router's end, which carries the delay of
both directions (2 × delay_ms); the host's own egress qdisc is left to the scheme (BBR wants fq
there, a flow-scheduling scheme its own queues). The RTT is the same as with the delay split per
direction; what a host sends towards its router is not rate-limited on that first hop — a host
link's rate applies to the traffic the router sends to the host.

Addresses (all /24 towards hosts, /30 between routers; hosts use their router as default gateway):
dumbbell s_i 10.1.i.1, r1 10.1.i.254; d_j 10.2.j.1, r2 10.2.j.254; r1 10.0.0.1 – r2 10.0.0.2.
leaf_spine host k of leaf l: 10.l.k.1, leaf 10.l.k.254; leaf l – spine s: 172.16.l.(4s+1) – (4s+2).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from guest.net.shaping import Shape, check_keys, parse_shape, validate_shape_values

OFFLOAD_KEYS = ("tso", "gso", "gro")
# Full-size frames by default: a queue limit in packets (and per-packet pacing) only means what
# it says when a "packet" is one frame, not a 64 KB GSO/GRO aggregate.
DEFAULT_OFFLOADS = {"tso": False, "gso": False, "gro": False}
ACCESS_DEFAULTS = {"rate_mbit": 1000.0, "delay_ms": 0.0, "queue_packets": 1000, "loss_pct": 0.0}
LINK_DEFAULTS = {"delay_ms": 0.0, "queue_packets": 1000, "loss_pct": 0.0}
BOTTLENECK_DEFAULTS = {"delay_ms": 0.0, "loss_pct": 0.0}  # rate and queue must be said


@dataclass
class LinkPlan:
    """One point-to-point link. `a_delay_scale`/`b_delay_scale`: the delay multiple applied on
    egress of a's / b's interface, 0 meaning that end is not shaped."""

    name: str
    a: str
    b: str
    a_addr: str  # "ip/prefix"
    b_addr: str
    shape: Shape
    a_delay_scale: int = 1
    b_delay_scale: int = 1


@dataclass(frozen=True)
class Route:
    dst: str  # "net/prefix" or "default"
    via: tuple[tuple[str, str], ...]  # (gateway ip, link name) per next hop; >1 is ECMP


@dataclass
class Blueprint:
    kind: str
    hosts: list[str]
    routers: list[str]
    links: list[LinkPlan]
    routes: dict[str, list[Route]]
    senders: list[str]
    receivers: list[str]
    bottlenecks: list[str]
    offloads: dict[str, bool]
    sysctls: dict[str, str] = field(default_factory=dict)  # for every router

    def link(self, name: str) -> LinkPlan:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(f"no link named {name!r} (links: {', '.join(l.name for l in self.links)})")

    def address(self, node: str) -> str:
        """A host's address (its only interface), without prefix."""
        for link in self.links:
            if node in (link.a, link.b):
                return (link.a_addr if link.a == node else link.b_addr).split("/")[0]
        raise KeyError(f"no node named {node!r}")

    def paths(self, src: str, dst: str) -> list[list[str]]:
        """Every shortest path src → dst as a list of link names (the ECMP paths)."""
        adjacent: dict[str, list[tuple[str, str]]] = {}
        for link in self.links:
            adjacent.setdefault(link.a, []).append((link.b, link.name))
            adjacent.setdefault(link.b, []).append((link.a, link.name))
        if src not in adjacent or dst not in adjacent:
            raise KeyError(f"unknown node in path {src!r} → {dst!r}")
        depth = {src: 0}
        parents: dict[str, list[tuple[str, str]]] = {src: []}
        queue = deque([src])
        while queue:
            node = queue.popleft()
            for other, link in adjacent[node]:
                if other not in depth:
                    depth[other] = depth[node] + 1
                    parents[other] = []
                    queue.append(other)
                if depth[other] == depth[node] + 1:
                    parents[other].append((node, link))

        def walk(node: str) -> list[list[str]]:
            if node == src:
                return [[]]
            return [path + [link] for parent, link in parents[node] for path in walk(parent)]

        return walk(dst)

    def base_rtt_ms(self, src: str, dst: str) -> tuple[float, float]:
        """(lowest, highest) propagation RTT over the shortest paths: 2 × the one-way delays."""
        rtts = [2 * sum(self.link(name).shape.delay_ms for name in path) for path in self.paths(src, dst)]
        return min(rtts), max(rtts)


def _count(where: str, key: str, value: object, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"{where}.{key}: expected an integer in [1, {high}], got {value!r}")
    return value


def _offloads(data: object) -> dict[str, bool]:
    check_keys("topology.offloads", data, OFFLOAD_KEYS)
    for key, value in data.items():
        if not isinstance(value, bool):
            raise ValueError(f"topology.offloads.{key}: expected true/false, got {value!r}")
    return {**DEFAULT_OFFLOADS, **data}


def parse_topology(spec: object) -> Blueprint:
    """Validate a topology spec and lay it out; a ValueError names the offending key."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError("topology.kind: required (dumbbell or leaf_spine)")
    kind = spec["kind"]
    if kind == "dumbbell":
        return _dumbbell(spec)
    if kind == "leaf_spine":
        return _leaf_spine(spec)
    raise ValueError(f"topology.kind: unknown kind {kind!r} (known: dumbbell, leaf_spine)")


def _dumbbell(spec: dict) -> Blueprint:
    check_keys("topology", spec, ("kind", "senders", "receivers", "bottleneck", "access", "offloads"))
    if "senders" not in spec:
        raise ValueError("topology.senders: required")
    if "bottleneck" not in spec:
        raise ValueError("topology.bottleneck: required")
    senders = _count("topology", "senders", spec["senders"], 254)
    receivers = _count("topology", "receivers", spec.get("receivers", 1), 254)
    bottleneck = parse_shape("topology.bottleneck", spec["bottleneck"], BOTTLENECK_DEFAULTS)
    access = parse_shape("topology.access", spec.get("access", {}), ACCESS_DEFAULTS)
    offloads = _offloads(spec.get("offloads", {}))

    s_names = [f"s{i}" for i in range(1, senders + 1)]
    d_names = [f"d{j}" for j in range(1, receivers + 1)]
    links = [LinkPlan(f"{s}-r1", s, "r1", f"10.1.{i}.1/24", f"10.1.{i}.254/24", access, 0, 2)
             for i, s in enumerate(s_names, 1)]
    links.append(LinkPlan("bottleneck", "r1", "r2", "10.0.0.1/30", "10.0.0.2/30", bottleneck))
    links += [LinkPlan(f"r2-{d}", "r2", d, f"10.2.{j}.254/24", f"10.2.{j}.1/24", access, 2, 0)
              for j, d in enumerate(d_names, 1)]
    routes = {s: [Route("default", ((f"10.1.{i}.254", f"{s}-r1"),))] for i, s in enumerate(s_names, 1)}
    routes |= {d: [Route("default", ((f"10.2.{j}.254", f"r2-{d}"),))] for j, d in enumerate(d_names, 1)}
    routes["r1"] = [Route("10.2.0.0/16", (("10.0.0.2", "bottleneck"),))]
    routes["r2"] = [Route("10.1.0.0/16", (("10.0.0.1", "bottleneck"),))]
    return Blueprint("dumbbell", s_names + d_names, ["r1", "r2"], links, routes, s_names, d_names,
                     ["bottleneck"], offloads)


def _leaf_spine(spec: dict) -> Blueprint:
    check_keys("topology", spec, ("kind", "leaves", "spines", "hosts_per_leaf", "link", "host_link",
                                  "link_overrides", "offloads"))
    for key in ("leaves", "spines", "hosts_per_leaf", "link"):
        if key not in spec:
            raise ValueError(f"topology.{key}: required")
    n_leaves = _count("topology", "leaves", spec["leaves"], 200)
    n_spines = _count("topology", "spines", spec["spines"], 60)
    per_leaf = _count("topology", "hosts_per_leaf", spec["hosts_per_leaf"], 200)
    if n_leaves < 2:
        raise ValueError("topology.leaves: at least 2, or no traffic crosses a spine")
    fabric = parse_shape("topology.link", spec["link"], LINK_DEFAULTS)
    host_shape = parse_shape("topology.host_link", spec.get("host_link", {}), ACCESS_DEFAULTS)
    offloads = _offloads(spec.get("offloads", {}))
    overrides = _overrides(spec.get("link_overrides", []), n_leaves, n_spines)

    leaves = [f"leaf{l}" for l in range(1, n_leaves + 1)]
    spines = [f"spine{s}" for s in range(1, n_spines + 1)]
    links: list[LinkPlan] = []
    routes: dict[str, list[Route]] = {}
    hosts_of: dict[int, list[str]] = {}
    for l in range(1, n_leaves + 1):
        for k in range(1, per_leaf + 1):
            host = f"h{(l - 1) * per_leaf + k}"
            hosts_of.setdefault(l, []).append(host)
            name = f"{host}-leaf{l}"
            links.append(LinkPlan(name, host, f"leaf{l}", f"10.{l}.{k}.1/24", f"10.{l}.{k}.254/24", host_shape, 0, 2))
            routes[host] = [Route("default", ((f"10.{l}.{k}.254", name),))]
    for l in range(1, n_leaves + 1):
        for s in range(1, n_spines + 1):
            shape = Shape(**{**fabric.__dict__, **overrides.get((l, s), {})})
            links.append(LinkPlan(f"leaf{l}-spine{s}", f"leaf{l}", f"spine{s}", f"172.16.{l}.{4 * s + 1}/30",
                                  f"172.16.{l}.{4 * s + 2}/30", shape))
    for l in range(1, n_leaves + 1):
        routes[f"leaf{l}"] = [Route(f"10.{m}.0.0/16", tuple((f"172.16.{l}.{4 * s + 2}", f"leaf{l}-spine{s}")
                                                            for s in range(1, n_spines + 1)))
                              for m in range(1, n_leaves + 1) if m != l]
    for s in range(1, n_spines + 1):
        routes[f"spine{s}"] = [Route(f"10.{m}.0.0/16", ((f"172.16.{m}.{4 * s + 1}", f"leaf{m}-spine{s}"),))
                               for m in range(1, n_leaves + 1)]
    hosts = [h for l in sorted(hosts_of) for h in hosts_of[l]]
    return Blueprint("leaf_spine", hosts, leaves + spines, links, routes, hosts_of[1], hosts_of[n_leaves],
                     [link.name for link in links if link.name.startswith("leaf")], offloads,
                     # Hash on the 5-tuple, or every flow between two hosts takes the same spine.
                     {"net.ipv4.fib_multipath_hash_policy": "1"})


def _overrides(data: object, n_leaves: int, n_spines: int) -> dict[tuple[int, int], dict]:
    if not isinstance(data, list):
        raise ValueError("topology.link_overrides: expected a list of tables")
    overrides: dict[tuple[int, int], dict] = {}
    for i, item in enumerate(data):
        where = f"topology.link_overrides[{i}]"
        check_keys(where, item, ("leaf", "spine", "rate_mbit", "delay_ms", "queue_packets", "loss_pct"))
        for key, high in (("leaf", n_leaves), ("spine", n_spines)):
            if key not in item:
                raise ValueError(f"{where}.{key}: required")
            _count(where, key, item[key], high)
        values = validate_shape_values(where, item)
        if not values:
            raise ValueError(f"{where}: changes nothing (give rate_mbit, delay_ms, queue_packets or loss_pct)")
        overrides[(item["leaf"], item["spine"])] = values
    return overrides
