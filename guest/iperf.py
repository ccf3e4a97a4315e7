"""Guest driver for bulk-flow experiments: a topology, a scheme, iperf3 flows, link changes.

`python -m guest.driver iperf PLAN.json`. Plan keys (see expand_flows and guest.net.spec):

    topology      a topology spec (dumbbell or leaf_spine)
    scheme        a scheme name (guest.net.schemes: cubic, bbr, ...)
    flows         [{src, dst, start_s = 0, duration_s}]        — or —
    flow_count, duration_s, flow_dst = "first" | "round_robin"  (senders round-robin)
    link_changes  [{at_s, link, rate_mbit?, delay_ms?, queue_packets?, loss_pct?}]  (optional)
    interval_s    iperf3 reporting interval, default 1
    scheme_options  a table the scheme's setup receives (files in the plan's folder it loads, the
                  slow path's settings), default {}
    faults        [{at_s, kind}] (optional): faults injected into the scheme during the traffic;
                  kind "kill_service" SIGKILLs a LiteFlow scheme's slow-path service,
                  "kill_agent" the user-space deployment's agent, "pause_agent" stops it for a second

The whole plan is validated before the network is built, so a typo costs no VM time. The report
is described in main(); a failed flow fails the run (ok false) and keeps its error.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from guest.net.linkchange import LinkChange, parse_link_changes, scheduled
from guest.net.schemes import Scheme, get_scheme
from guest.net.spec import Blueprint, parse_topology
from guest.net.traffic import FIRST_PORT, FlowPlan, aggregate, run_flows
from guest.tools import CheckedReport, DriverAbort, dmesg_lines, kernel_trouble

PLAN_KEYS = ("topology", "scheme", "flows", "flow_count", "duration_s", "flow_dst", "link_changes", "interval_s",
             "scheme_options", "faults")
FAULT_KINDS = {"kill_service": "kill_service",     # fault kind -> the scheme's method that injects it
               "kill_agent": "kill_agent", "pause_agent": "pause_agent"}
FLOW_KEYS = ("src", "dst", "start_s", "duration_s")
PING_SUMMARY = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
PING_REPLY = re.compile(r"^\[([\d.]+)\].* time=([\d.]+) ms", re.MULTILINE)
PROBE_INTERVAL_S = 0.1   # the delay probe: one ping every 100 ms through the bottleneck queue


@dataclass
class Report(CheckedReport):
    scheme: dict = field(default_factory=dict)
    topology: str = ""
    link: dict = field(default_factory=dict)
    base_rtt_ms: float | None = None
    ping_rtt_ms: dict = field(default_factory=dict)
    flows: list[dict] = field(default_factory=list)
    aggregate: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    link_changes: list[dict] = field(default_factory=list)
    queues: dict = field(default_factory=dict)
    link_bytes: dict = field(default_factory=dict)
    link_series: dict = field(default_factory=dict)   # {link: {"a>b": [[t_s, bytes, packets], ...]}}
    scheme_results: dict = field(default_factory=dict)
    traffic_started_unix: float | None = None
    probe_rtt: list = field(default_factory=list)     # [t_s on the traffic clock, rtt_ms] of the delay probe
    faults: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Experiment:
    """A plan once validated: everything main() needs before touching the network."""

    blueprint: Blueprint
    scheme: Scheme
    flows: list[FlowPlan]
    link_changes: list[LinkChange]
    interval_s: float
    scheme_options: dict
    faults: list[dict]


def _whole_seconds(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3600:
        raise ValueError(f"{where}: expected whole seconds in [1, 3600] (iperf3 -t), got {value!r}")
    return value


def expand_flows(plan: dict, blueprint: Blueprint, cc: str) -> list[FlowPlan]:
    """The flows a plan asks for: its explicit `flows`, or `flow_count` flows of `duration_s`
    from the senders in turn, to the first receiver or to the receivers in turn (`flow_dst`)."""
    if ("flows" in plan) == ("flow_count" in plan):
        raise ValueError("flows: give either flows or flow_count (with duration_s), not both or neither")
    if "flows" in plan:
        for key in ("duration_s", "flow_dst"):
            if key in plan:
                raise ValueError(f"{key}: only with flow_count (explicit flows carry their own)")
        if not isinstance(plan["flows"], list) or not plan["flows"]:
            raise ValueError("flows: expected a non-empty list of tables")
        flows = []
        for i, item in enumerate(plan["flows"]):
            where = f"flows[{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: expected a table")
            for key in item:
                if key not in FLOW_KEYS:
                    raise ValueError(f"{where}.{key}: unknown key (known: {', '.join(FLOW_KEYS)})")
            for key in ("src", "dst", "duration_s"):
                if key not in item:
                    raise ValueError(f"{where}.{key}: required")
            for key in ("src", "dst"):
                if item[key] not in blueprint.hosts:
                    raise ValueError(f"{where}.{key}: {item[key]!r} is not a host ({', '.join(blueprint.hosts)})")
            if item["src"] == item["dst"]:
                raise ValueError(f"{where}.dst: same host as src")
            start = item.get("start_s", 0)
            if isinstance(start, bool) or not isinstance(start, (int, float)) or start < 0:
                raise ValueError(f"{where}.start_s: expected seconds >= 0, got {start!r}")
            flows.append(FlowPlan(i, item["src"], item["dst"], float(start),
                                  _whole_seconds(f"{where}.duration_s", item["duration_s"]), cc, FIRST_PORT + i))
        return flows
    count = plan["flow_count"]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
        raise ValueError(f"flow_count: expected an integer in [1, 1000], got {count!r}")
    if "duration_s" not in plan:
        raise ValueError("duration_s: required with flow_count")
    duration = _whole_seconds("duration_s", plan["duration_s"])
    spread = plan.get("flow_dst", "first")
    if spread not in ("first", "round_robin"):
        raise ValueError(f"flow_dst: expected 'first' or 'round_robin', got {spread!r}")
    senders, receivers = blueprint.senders, blueprint.receivers
    return [FlowPlan(i, senders[i % len(senders)], receivers[i % len(receivers)] if spread == "round_robin"
                     else receivers[0], 0.0, duration, cc, FIRST_PORT + i) for i in range(count)]


def prepare(plan: dict) -> Experiment:
    """Validate the whole plan; a ValueError names the first bad key."""
    if not isinstance(plan, dict):
        raise ValueError("plan: expected a table")
    for key in plan:
        if key not in PLAN_KEYS:
            raise ValueError(f"{key}: unknown plan key (known: {', '.join(PLAN_KEYS)})")
    for key in ("topology", "scheme"):
        if key not in plan:
            raise ValueError(f"{key}: required")
    blueprint = parse_topology(plan["topology"])
    scheme = get_scheme(plan["scheme"])
    interval = plan.get("interval_s", 1)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.1 <= interval <= 60:
        raise ValueError(f"interval_s: expected seconds in [0.1, 60], got {interval!r}")
    options = plan.get("scheme_options", {})
    if not isinstance(options, dict):
        raise ValueError(f"scheme_options: expected a table, got {options!r}")
    return Experiment(blueprint, scheme, expand_flows(plan, blueprint, scheme.congestion_control),
                      parse_link_changes(plan.get("link_changes", []), blueprint), float(interval), options,
                      parse_faults(plan.get("faults", []), scheme))


def parse_faults(faults: object, scheme: Scheme) -> list[dict]:
    """[{at_s, kind}], each kind one the scheme can inject (it has the method FAULT_KINDS names)."""
    if not isinstance(faults, list):
        raise ValueError(f"faults: expected a list of tables, got {faults!r}")
    parsed = []
    for i, fault in enumerate(faults):
        where = f"faults[{i}]"
        if not isinstance(fault, dict) or set(fault) != {"at_s", "kind"}:
            raise ValueError(f"{where}: expected a table with exactly at_s and kind, got {fault!r}")
        if fault["kind"] not in FAULT_KINDS or not hasattr(scheme, FAULT_KINDS[fault["kind"]]):
            raise ValueError(f"{where}.kind: {fault['kind']!r} is not a fault scheme {scheme.name!r} can inject")
        at = fault["at_s"]
        if isinstance(at, bool) or not isinstance(at, (int, float)) or at < 0:
            raise ValueError(f"{where}.at_s: expected seconds >= 0, got {at!r}")
        parsed.append({"at_s": float(at), "kind": fault["kind"]})
    return parsed


def fault_actions(scheme: Scheme, faults: list[dict], records: list[dict]) -> list[tuple[float, object]]:
    """(time, action) pairs for run_flows that inject each fault and record when it happened."""
    def action(fault: dict):
        def inject(clock) -> None:
            record = {"at_s": fault["at_s"], "kind": fault["kind"], "applied_at_s": round(clock(), 3)}
            try:
                record.update(getattr(scheme, FAULT_KINDS[fault["kind"]])())
                record["ok"] = True
            except Exception as exc:  # recorded, checked after the traffic: the flows go on
                record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            records.append(record)
        return inject

    return [(fault["at_s"], action(fault)) for fault in faults]


def parse_probe(text: str, started_unix: float) -> list[list[float]]:
    """`ping -D` replies as [seconds since the traffic started, RTT in ms]."""
    return [[round(float(stamp) - started_unix, 3), float(rtt)] for stamp, rtt in PING_REPLY.findall(text)]


def parse_ping(text: str) -> dict | None:
    """min/avg/max/mdev in ms from ping's summary line; None when there is none (no reply)."""
    match = PING_SUMMARY.search(text)
    if not match:
        return None
    return dict(zip(("min", "avg", "max", "mdev"), (float(value) for value in match.groups())))


def main(plan: dict, work: Path) -> dict:
    """Run the plan; returns Report as a dict: ok, checks, step, timings_s, dmesg_new, scheme,
    topology, link (bottlenecks as built), base_rtt_ms (from the spec), ping_rtt_ms, flows,
    aggregate, cpu, link_changes, queues (tc counters at the bottlenecks), link_bytes (bytes sent
    each way over every router–router link), link_series (a single bottleneck's bytes and packets
    sent each way, sampled on the traffic clock)."""
    from guest.net.topology import network

    experiment = prepare(plan)
    report = Report(topology=experiment.blueprint.kind)
    bp = experiment.blueprint
    first = experiment.flows[0]
    report.base_rtt_ms = bp.base_rtt_ms(first.src, first.dst)[0]
    report.link = {"bottlenecks": {name: {**asdict(bp.link(name).shape),
                                          "bdp_packets": round(bp.link(name).shape.bdp_packets(report.base_rtt_ms), 1)}
                                   for name in bp.bottlenecks}}
    dmesg_before = len(dmesg_lines())
    started = time.monotonic()
    report.step = "build network"
    try:
        with network(bp) as net:
            report.timings_s["network_up"] = round(time.monotonic() - started, 2)
            _run(net, experiment, report, work)
    except DriverAbort as exc:
        report.check(f"step '{report.step}' completed", False, str(exc))
    report.timings_s["total"] = round(time.monotonic() - started, 2)
    report.dmesg_new = dmesg_lines()[dmesg_before:]
    trouble = kernel_trouble(report.dmesg_new)
    report.check("no kernel warnings", not trouble, "\n".join(trouble[:5]))
    result = asdict(report)
    result["ok"] = report.passed
    return result


def _run(net, experiment: Experiment, report: Report, work: Path) -> None:
    bp, scheme = experiment.blueprint, experiment.scheme
    mark = time.monotonic()
    report.step = "scheme setup"
    try:
        scheme.setup(net, {"flows": [asdict(flow) for flow in experiment.flows], "work": work,
                           "options": experiment.scheme_options})
        report.scheme = scheme.describe()
        report.timings_s["scheme_setup"] = round(time.monotonic() - mark, 2)

        report.step = "ping"
        first = experiment.flows[0]
        # One ping first so ARP on every hop is resolved and does not inflate the measured RTT.
        net.run(first.src, "ping", "-c", "1", "-W", "5", net.ip(first.dst), check=False)
        ping = net.run(first.src, "ping", "-c", "5", "-i", "0.2", "-W", "2", net.ip(first.dst), check=False)
        summary = parse_ping(ping.stdout)
        report.ping_rtt_ms = {"src": first.src, "dst": first.dst, **(summary or {})}
        report.check("ping before traffic", summary is not None, ping.stdout.strip()[-200:])

        report.step = "traffic"
        bytes_before = {name: net.tx_bytes(name) for name in _fabric_links(bp)}
        mark = time.monotonic()
        actions = scheduled(net, experiment.link_changes, report.link_changes)
        actions += fault_actions(scheme, experiment.faults, report.faults)
        # The delay probe: pings along the first flow's path see the bottleneck queue whatever the
        # scheme, where iperf3's per-interval srtt is one sample per second of the flows' own view.
        from guest.net.topology import stop_process

        probe_log = work / "probe.txt"
        span_s = max(f.start_s + f.duration_s for f in experiment.flows)
        with probe_log.open("w") as out:
            probe = net.popen(first.src, ["ping", "-D", "-n", "-i", f"{PROBE_INTERVAL_S:g}", "-w", f"{span_s:g}",
                                          net.ip(first.dst)], stdout=out, stderr=out)
        report.traffic_started_unix = round(time.time(), 3)
        try:
            bottleneck = bp.bottlenecks[0] if len(bp.bottlenecks) == 1 else None
            traffic = run_flows(net, experiment.flows, experiment.interval_s, work / "iperf3", actions,
                                counters=(lambda: net.link_counters(bottleneck)) if bottleneck else None)
        finally:
            stop_process(probe)
        report.probe_rtt = parse_probe(probe_log.read_text(), report.traffic_started_unix)
        report.timings_s["traffic"] = round(time.monotonic() - mark, 2)
        report.flows, report.cpu = traffic["flows"], traffic["cpu"]
        if bottleneck:
            report.link_series = {bottleneck: traffic["counters"]}

        report.step = "collect"
        report.queues = {name: net.qdisc_stats(name) for name in bp.bottlenecks}
        report.scheme_results = scheme.results()
        report.link_bytes = {name: {way: after - bytes_before[name][way] for way, after in net.tx_bytes(name).items()}
                             for name in bytes_before}
    finally:
        scheme.teardown()

    report.aggregate = aggregate(report.flows, experiment.interval_s)
    if len(bp.bottlenecks) == 1:
        rate = bp.link(bp.bottlenecks[0]).shape.rate_mbit
        report.aggregate["link_fraction"] = round(report.aggregate["goodput_mbit"] / rate, 4)
    failed = [f"flow {flow['id']} {flow['src']}→{flow['dst']}: {flow['error']}" for flow in report.flows if "error" in flow]
    report.check("every flow completed", not failed, "\n".join(failed))
    wrong_cc = [flow["id"] for flow in report.flows if "error" not in flow and flow["cc_used"] != flow["cc"]]
    report.check("flows ran the scheme's congestion control", not wrong_cc, f"flows {wrong_cc}")
    failed_faults = [f"{fault['kind']}: {fault.get('error')}" for fault in report.faults if not fault["ok"]]
    report.check("every fault injected", not failed_faults and len(report.faults) == len(experiment.faults),
                 "\n".join(failed_faults))
    unapplied = [change for change in report.link_changes if not change["ok"]]
    report.check("every link change applied", not unapplied and len(report.link_changes) == len(experiment.link_changes),
                 "\n".join(change.get("error", "") for change in unapplied))
    for name, ok, detail in scheme.checks():
        report.check(name, ok, detail)
    report.step = "done"
    print(f"[iperf] {scheme.name}: {report.aggregate['goodput_mbit']} Mbit/s over {len(report.flows)} flows",
          file=sys.stderr)


def _fabric_links(bp: Blueprint) -> list[str]:
    """Links between two routers: where a path choice (ECMP) or the bottleneck shows in bytes."""
    routers = set(bp.routers)
    return [link.name for link in bp.links if link.a in routers and link.b in routers]
