"""What the congestion-control experiments share: the link, the snapshot every lf_cc scheme starts
from, and the guest plan of one job.

Every lf_cc scheme (LiteFlow adapting, kernel-frozen, and the deployments of the next issue)
starts from the same snapshot of a committed network (userspace/cc/model, or the data file's
`network`), quantized on the host with the input range pinned so its quantization is the one
lf_cc declares: only the deployment differs between them. The plan reuses the guest's iperf driver (guest/iperf.py): a
dumbbell whose bottleneck carries the whole base RTT, iperf3 -J bulk flows, link changes and
faults at given times, and the scheme's own counters.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from userspace.cc.train import NETWORKS
from workloads.contract import Context, Field

MTU_BYTES = 1500
# what a full-sized data packet carries besides payload on the bottleneck's counters: Ethernet (14),
# IPv4 (20), TCP (20) and its timestamp option (12)
HEADER_BYTES = 66
# payload is at most 0.96 of a full link; above 1.05 of it the counters' readings were mis-stamped
# (guest/net/traffic.CounterSampler) and the job fails rather than report a link faster than itself
LINK_READING_SLACK = 1.05
# lf_cc with the committed network's snapshot: LiteFlow (adapting) and kernel-frozen in the kernel;
# the user-space deployment adapting like LiteFlow ("user") or not ("user_frozen"); the network
# trained in the kernel ("full")
LF_SCHEMES = ("liteflow", "frozen", "user", "user_frozen", "full")
ADAPTING = ("liteflow", "user")
KERNEL_SCHEMES = ("cubic", "bbr")
SCHEMES = (*LF_SCHEMES, *KERNEL_SCHEMES)
# lf_cc's counters of the user-space deployment's channel
USER_COUNTERS = ("user_posts", "user_post_errors", "user_answers", "user_applied", "user_late", "user_timeouts")
SETUP_TIMEOUT_S = 300       # under TCG: guest Python, Mininet, modules, ping, teardown
SERVICE_TIMEOUT_S = 600     # under TCG: the slow-path service imports TensorFlow (~80 s) and loads the model

LINK_SCHEMA = {"name": Field(str), "rate_mbit": Field(float, minimum=0.1), "rtt_ms": Field(float, minimum=0.0),
               "queue_bdp": Field(float, minimum=0.01)}
OFFLOAD_SCHEMA = {key: Field(bool) for key in ("tso", "gso", "gro")}
LF_CC_SCHEMA = {"stale_min": Field(bool, required=False)}
SLOWPATH_SCHEMA = {"threshold": Field(float, minimum=0.0), "window": Field(int, minimum=1),
                   "sample_every": Field(int, minimum=1), "sample_batch": Field(int, minimum=1),
                   "round_wait_s": Field(float, minimum=0.1),
                   "round_interval_s": Field(float, minimum=0.0, required=False),
                   # the service's CPU limit in CPUs (guest/cgroup.py); unset: no limit beyond nice
                   "cpu_limit": Field(float, minimum=0.05, required=False), "adapter": Field(dict)}
COMMON_CC_SCHEMA = {
    "schemes": Field(list, choices=SCHEMES),
    "duration_s": Field(int, minimum=1),
    "interval_s": Field(float, minimum=0.1),
    "offloads": Field(dict, table_schema=OFFLOAD_SCHEMA),
    "link": Field(dict, table_schema=LINK_SCHEMA),
    "slowpath": Field(dict, table_schema=SLOWPATH_SCHEMA),
    # the committed network every lf_cc scheme starts from (userspace/cc/train.NETWORKS)
    "network": Field(str, required=False, choices=tuple(NETWORKS)),
    # lf_cc's module parameters for every lf_cc scheme alike (guest/net/schemes/_liteflow.LF_CC_PARAMS)
    "lf_cc": Field(dict, required=False, table_schema=LF_CC_SCHEMA),
}
DEFAULT_NETWORK = "cc"


def network_name(config: dict[str, Any]) -> str:
    """The experiment's starting network: its data file's `network`, else the default one."""
    return config.get("network", DEFAULT_NETWORK)


def model_path(network: str = DEFAULT_NETWORK) -> Path:
    """The committed network (`invoke train NETWORK` writes it, with its calibration states)."""
    from userspace.cc.train import MODEL_FILE, network_dir

    return network_dir(network) / MODEL_FILE


def cc_blob(network: str = DEFAULT_NETWORK) -> bytes:
    """The hot-update blob of the committed network's snapshot, quantized as training evaluated it
    (input pinned at lf_cc's scale 1/16, checked: the kernel would refuse anything else)."""
    from userspace.cc.train import committed_snapshot, network_dir
    from userspace.snapshot import write_blob

    return write_blob(committed_snapshot(network_dir(network)).spec)


def prepare_cc(ctx: Context) -> None:
    """Modules for this kernel and the initial snapshot, once per run, into ctx.state["prepared"]."""
    from userspace.cc.full import master_weights_file
    from userspace.snapshot import new_snapshot_id

    session = ctx.session
    prepared = session.plan_dir(ctx.run, "prepared")
    session.build_modules(prepared)
    network = network_name(ctx.config)
    model = model_path(network)
    (prepared / "cc.blob").write_bytes(cc_blob(network))
    master_weights_file(prepared / "full_weights.bin", model)
    shutil.copy(model, prepared / f"cc{model.suffix}")
    ctx.state["prepared"] = prepared
    ctx.state["scheme_files"] = {"blob": "cc.blob", "model": f"cc{model.suffix}", "snapshot_id": new_snapshot_id(),
                                 "full_weights": "full_weights.bin"}


def scheme_options(ctx: Context, scheme: str, interval_us: int = 0) -> dict[str, Any]:
    """What the guest scheme needs: the snapshot's files, the slow path's settings (LiteFlow), the
    communication interval (the user-space deployment; 0 = every monitor interval)."""
    if scheme not in LF_SCHEMES:
        return {}
    options = dict(ctx.state["scheme_files"])
    if ctx.config.get("lf_cc"):
        options["lf_cc"] = dict(ctx.config["lf_cc"])
    if scheme in ADAPTING:
        options.update(ctx.config["slowpath"], startup_timeout_s=SERVICE_TIMEOUT_S)
    if scheme.startswith("user"):
        options.update(interval_us=interval_us, adapt=scheme in ADAPTING)
    return options


def guest_scheme(scheme: str) -> str:
    """The guest's wrapper for an experiment's scheme (both user-space deployments are 'user')."""
    return "user" if scheme.startswith("user") else scheme


# Sender hosts of a dumbbell at most; more flows take the senders in turn. Each sender is a
# Mininet host the guest builds before the job (under TCG about 3.5 s apiece: 64 of them took
# 220 s of a 64-flow job, run 20261203-161609). Their access links (1 Gbit/s, no delay) are
# never the bottleneck, so a host carrying four flows changes nothing the link sees.
MAX_SENDERS = 16


def cc_plan(ctx: Context, scheme: str, flows: int, link_changes: list[dict] = (),
            faults: list[dict] = (), interval_us: int = 0) -> dict[str, Any]:
    """The guest driver's plan for one job."""
    config, link = ctx.config, ctx.config["link"]
    bdp_packets = link["rate_mbit"] * 1e6 * link["rtt_ms"] / 1e3 / (8 * MTU_BYTES)
    bottleneck = {"rate_mbit": link["rate_mbit"], "delay_ms": link["rtt_ms"] / 2,
                  "queue_packets": max(2, round(link["queue_bdp"] * bdp_packets)), "loss_pct": 0.0}
    return {"topology": {"kind": "dumbbell", "senders": min(flows, MAX_SENDERS), "receivers": 1, "bottleneck": bottleneck,
                         "access": {"rate_mbit": 1000.0, "delay_ms": 0.0}, "offloads": config["offloads"]},
            "scheme": guest_scheme(scheme), "flow_count": flows, "duration_s": config["duration_s"],
            "interval_s": config["interval_s"], "scheme_options": scheme_options(ctx, scheme, interval_us),
            "link_changes": list(link_changes), "faults": list(faults)}


def run_cc_job(ctx: Context, name: str, plan: dict[str, Any]) -> dict[str, Any]:
    session = ctx.session
    options = plan["scheme_options"]
    files = sorted(ctx.state["prepared"].iterdir()) if options else []
    plan_dir = session.plan_dir(ctx.run, f"{name.replace('/', '_')}-{ctx.repetition}", files)
    adapting = "threshold" in options
    timeout = SETUP_TIMEOUT_S + 3 * ctx.config["duration_s"] + (SERVICE_TIMEOUT_S if adapting else 0)
    return session.run_driver(ctx.run, "iperf", plan, plan_dir, step=f"{plan['scheme']} {name}",
                              timeout_s=timeout, fetch=("service.jsonl",) if adapting else ()).report


PROBE_SKIP_S = 2.0    # the delay probe's first seconds are the flows' start-up, not their steady state


def srtt_samples_ms(raw: dict[str, Any]) -> list[float]:
    """Every flow's smoothed RTT at every reporting interval (the kernel's, through iperf3)."""
    return [point["rtt_ms"] for flow in raw.get("flows", []) if "error" not in flow
            for point in flow.get("intervals", []) if point.get("rtt_ms")]


def probe_samples_ms(raw: dict[str, Any]) -> list[float]:
    """The delay probe's RTTs (a ping every 100 ms through the bottleneck, whatever the scheme)."""
    return [rtt for t, rtt in raw.get("probe_rtt", []) if t >= PROBE_SKIP_S]


def concurrent_window_s(raw: dict[str, Any]) -> tuple[float, float] | None:
    """The seconds on the traffic clock when every flow ran: from the last flow's start to the
    first flow's end, a second trimmed at each side (a flow's start-up and its last write)."""
    flows = [flow for flow in raw.get("flows", []) if "error" not in flow]
    if not flows:
        return None
    return (max(flow["started_at_s"] for flow in flows) + 1.0,
            min(flow["started_at_s"] + flow["duration_s"] for flow in flows) - 1.0)


def bottleneck_goodput_mbit(raw: dict[str, Any], start_s: float, end_s: float) -> float | None:
    """Payload the bottleneck carried between the two samples of its counters that bound
    [start_s, end_s] most tightly from inside: bytes less HEADER_BYTES a packet, over the time
    between the samples. The data direction is the one that carried more."""
    series = next(iter((raw.get("link_series") or {}).values()), None)
    if not series:
        return None
    samples = max(series.values(), key=lambda points: points[-1][1] - points[0][1] if points else 0)
    inside = [point for point in samples if start_s <= point[0] <= end_s]
    if len(inside) < 2:
        return None
    (t0, bytes0, packets0), (t1, bytes1, packets1) = inside[0], inside[-1]
    payload = (bytes1 - bytes0) - HEADER_BYTES * (packets1 - packets0)
    return payload * 8 / (t1 - t0) / 1e6


def concurrent_goodput_mbit(raw: dict[str, Any]) -> tuple[float | None, str | None]:
    """Aggregate goodput while every flow ran, and where it was read.

    From the bottleneck's counters when the run sampled them: what crossed the link, on the same
    clock as the flows' starts. Otherwise (runs before the sampler) from the flows' own per-second
    intervals, summed per second. Those count what each sender wrote into its socket, on its
    client's clock: at 64 flows in the TCG guest the clients start over some 16 s, the window is
    two seconds long and holds the newest flows' first writes, so it read 1.03-1.19 of the link.
    Summing each flow's own average instead overstates it more (1.2-1.3). So a run that sampled
    the counters is read from them or not at all: when the guest's CPUs starved the sampler of
    every reading inside the window (64 flows, LiteFlow, run 20261203-200537: none for 23 s), the
    goodput is None, not the senders' 1.35 of the link."""
    window = concurrent_window_s(raw)
    if window is None:
        return None, None
    if any(raw.get("link_series") or {}):
        return bottleneck_goodput_mbit(raw, *window), "bottleneck"
    values = [point["mbit"] for point in (raw.get("aggregate") or {}).get("series", [])
              if window[0] <= point["t_s"] <= window[1]]
    return (statistics.fmean(values), "sender intervals") if values else (None, None)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def common_record(job_key: str, raw: dict[str, Any], link: dict[str, Any]) -> dict[str, Any]:
    """What every CC job reports, from the guest's raw report."""
    aggregate = raw.get("aggregate", {})
    rtts = probe_samples_ms(raw)
    srtts = srtt_samples_ms(raw)
    results = raw.get("scheme_results") or {}
    lf_cc = results.get("lf_cc") or {}
    goodput, goodput_source = concurrent_goodput_mbit(raw)
    service_cpu = results.get("service_cpu") or {}
    failed = [c["name"] for c in raw.get("checks", []) if not c["ok"]]
    if goodput_source == "bottleneck" and goodput is None:
        failed.append("the bottleneck's counters were not read twice while every flow ran")
    elif goodput_source == "bottleneck" and goodput > link["rate_mbit"] * LINK_READING_SLACK:
        failed.append(f"the bottleneck read {goodput:.1f} Mbit/s, above its {link['rate_mbit']:g}-Mbit/s rate")
    return {"job": job_key, "ok": bool(raw.get("ok")) and not failed,
            "failed_checks": failed,
            "goodput_mbit": goodput, "link_fraction": goodput / link["rate_mbit"] if goodput is not None else None,
            "goodput_source": goodput_source,
            "summed_flow_goodput_mbit": aggregate.get("goodput_mbit"),
            "p95_rtt_ms": percentile(rtts, 95), "mean_rtt_ms": statistics.fmean(rtts) if rtts else None,
            "p95_srtt_ms": percentile(srtts, 95),
            "jain_fairness": aggregate.get("jain_fairness"), "retransmits": aggregate.get("retransmits"),
            "guest_cpu_busy": (raw.get("cpu") or {}).get("busy"),
            "mi_count": lf_cc.get("intervals"), "decisions": lf_cc.get("decisions"),
            "fallbacks": (lf_cc.get("fallback_no_snapshot", 0) + lf_cc.get("fallback_error", 0)) if lf_cc else None,
            "stale_min_resets": lf_cc.get("stale_min_resets"),
            "updates": len(results.get("updates") or []) if "updates" in results else None,
            # a CPU-limited slow path: what it used and what the limit held back, from ready on
            "service_cpu_s": service_cpu.get("usage_s"), "service_throttled_s": service_cpu.get("throttled_s"),
            **{key: lf_cc.get(key) for key in USER_COUNTERS}}
