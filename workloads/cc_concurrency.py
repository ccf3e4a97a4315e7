"""Experiment "cc-concurrency": goodput, delay, fairness and CPU against the number of flows.

LiteFlow (lf_cc's snapshot in the kernel, adapted online by the slow-path service), kernel-frozen
(the same snapshot, no adaptation), the two deployments the paper argues against (the network in
a user-space agent, adapted by the same slow path; the network trained in the kernel) and the
kernel's Cubic and BBR, side by side in one guest per repetition: 1, 4, 16 and 64 concurrent
iperf3 flows over one dumbbell bottleneck. Per job: aggregate goodput as a fraction of the link,
p95 of the RTT a delay probe measures through the bottleneck (a ping every 100 ms, after the
first 2 s), Jain's fairness over per-flow goodput, and the guest's CPU use (everything runs
in the one guest, so that is the datapath's cost plus the slow path's for LiteFlow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reports import plots
from workloads import cc_plan
from workloads.contract import Context, Experiment, Field, Job, RunView, group, spread

METRICS = ("link_fraction", "goodput_mbit", "p95_rtt_ms", "mean_rtt_ms", "jain_fairness", "guest_cpu_busy",
           "retransmits", "fallbacks", "updates")
SINGLE_FLOW_GOODPUT = 0.9     # of the link, the bar LiteFlow's single flow must reach
PRIOR_DEPLOYMENTS = ("user", "full")    # what the paper sets LiteFlow against
PAPER_GOODPUT_RATIO = 1.444             # +44.4% goodput (LiteFlow, SIGCOMM 2022, abstract)
PANELS = (("link_fraction", "goodput / link rate"), ("p95_rtt_ms", "p95 probe RTT (ms)"),
          ("jain_fairness", "Jain's fairness"), ("guest_cpu_busy", "guest CPU busy (fraction)"))


class CcConcurrency(Experiment):
    title = "Congestion control: goodput, delay, fairness and CPU vs concurrent flows"
    schema = {**cc_plan.COMMON_CC_SCHEMA, "flow_counts": Field(list, minimum=1)}

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        return [Job(f"{flows}-flows/{scheme}", {"flows": flows, "scheme": scheme, "link": config["link"]})
                for flows in config["flow_counts"] for scheme in config["schemes"]]

    def prepare(self, ctx: Context) -> None:
        if any(s in cc_plan.LF_SCHEMES for s in ctx.config["schemes"]):
            cc_plan.prepare_cc(ctx)

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        plan = cc_plan.cc_plan(ctx, job.params["scheme"], job.params["flows"])
        return cc_plan.run_cc_job(ctx, job.key, plan)

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        record = cc_plan.common_record(job.key, raw, job.params["link"])
        return [{**record, "flows": job.params["flows"], "scheme": job.params["scheme"]}]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        # a run with a failed check (a flow that did not complete, the bottleneck not read while every
        # flow ran) is counted, not averaged in
        cells = [{"flows": flows, "scheme": scheme,
                  **{key: spread([r[key] for r in rows if r["ok"]]) for key in METRICS},
                  "runs": len(rows), "failed_runs": sum(1 for r in rows if not r["ok"])}
                 for (flows, scheme), rows in group(records, "flows", "scheme").items()]
        single = {c["scheme"]: c for c in cells if c["flows"] == 1}
        return {"link": config["link"], "cells": cells, "failed_runs": sum(c["failed_runs"] for c in cells),
                "goodput_sources": sorted({r.get("goodput_source") or "sender intervals" for r in records}),
                "single_flow": {scheme: {"link_fraction": c["link_fraction"]["median"],
                                         "p95_rtt_ms": c["p95_rtt_ms"]["median"]} for scheme, c in single.items()},
                "versus": deployment_ratios(records, max(config["flow_counts"]))}

    def passed(self, summary: dict[str, Any]) -> bool | None:
        """A measurement, not a check: failed only when a cell has no good run at all."""
        return False if any(c["failed_runs"] == c.get("runs", c["failed_runs"] + 1) for c in summary["cells"]) else None

    def headline_values(self, view: RunView) -> dict[tuple[str, str], str]:
        versus = view.summary.get("versus") or {}
        parts = [f"x{plots.cell(versus[b], '.2f')} vs {b}" for b in PRIOR_DEPLOYMENTS
                 if (versus.get(b) or {}).get("median") is not None]
        return {("congestion control", "goodput"): f"{', '.join(parts)} at {versus['flows']} flows"} if parts else {}

    def figures(self, view: RunView) -> list[Path]:
        cells = view.summary.get("cells", [])
        if not cells:
            return []
        flows = sorted({c["flows"] for c in cells})
        schemes = list(dict.fromkeys(c["scheme"] for c in cells))
        by = {(c["flows"], c["scheme"]): c for c in cells}
        fig, axes = plots.plt.subplots(2, 2, figsize=(11, 7))
        labels = [f"{n} flow{'s' if n > 1 else ''}" for n in flows]
        for ax, (key, ylabel) in zip(axes.flat, PANELS):
            plots.grouped_bars(labels, {s: [by[(n, s)][key] if (n, s) in by else None for n in flows]
                                        for s in schemes}, ylabel=f"{ylabel}\n(median, bars: min-max)", ax=ax)
        axes[0][0].axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        link = view.summary.get("link", {})
        fig.suptitle(plots.title(f"Congestion control vs concurrent flows, {link.get('name', '')}", view), fontsize=9)
        return [plots.save(fig, view, "cc-concurrency.png")]

    def section(self, view: RunView) -> list[str]:
        link = view.summary.get("link", {})
        lines = [f"Bottleneck {link.get('rate_mbit')} Mbit/s, base RTT {link.get('rtt_ms')} ms, queue "
                 f"{link.get('queue_bdp')} BDP.", "",
                 "| flows | scheme | goodput / link | p95 RTT ms | Jain | guest CPU | retransmits | fallback MIs | "
                 "updates | failed runs |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in view.summary.get("cells", []):
            lines.append(f"| {c['flows']} | {c['scheme']} | {plots.cell(c['link_fraction'], '.2f')} | "
                         f"{plots.cell(c['p95_rtt_ms'], '.1f')} | {plots.cell(c['jain_fairness'], '.2f')} | "
                         f"{plots.cell(c['guest_cpu_busy'], '.2f')} | {plots.cell(c['retransmits'], '.0f')} | "
                         f"{plots.cell(c['fallbacks'], '.0f')} | {plots.cell(c['updates'], '.0f')} | "
                         f"{c['failed_runs']} |")
        lines += single_flow_verdict(view.summary)
        lines += versus_lines(view.summary)
        lines += ["", f"Medians over {view.metadata.get('repetitions')} repetitions, [min–max] in brackets. "
                      "LiteFlow and frozen run the same snapshot of the committed network; only LiteFlow's "
                      "slow path adapts it. Fallback MIs are monitor intervals lf_cc decided without a snapshot. "
                      f"{goodput_note(view.summary.get('goodput_sources', []))} RTT is a ping every 100 ms "
                      "through the bottleneck. A run with a failed check (a flow that did not complete, the "
                      "bottleneck not read while every flow ran) is counted, not averaged in."]
        return lines


def goodput_note(sources: list[str]) -> str:
    """How the run's goodput was read: runs before the bottleneck sampler read the senders."""
    notes = {"bottleneck": "payload the bottleneck carried while every flow ran (its bytes less "
                           f"{cc_plan.HEADER_BYTES} header bytes a packet, sampled twice an interval; at most "
                           "0.96 of the link with 1,448-byte segments)",
             "sender intervals": "the flows' per-second throughput summed while every flow ran (iperf3's "
                                 "sender-side intervals, which count writes into the socket: above 1.0 at 64 "
                                 "flows)"}
    return f"Goodput is the {' or '.join(notes.get(s, s) for s in sources)}." if sources else ""


def deployment_ratios(records: list[dict[str, Any]], flows: int) -> dict[str, Any]:
    """LiteFlow's aggregate goodput over each prior deployment's at `flows` flows: one ratio per
    repetition (both ran in the same guest, one after the other), then their spread."""
    at = [r for r in records if r["flows"] == flows and r["goodput_mbit"]]
    by_rep = {(r["repetition"], r["scheme"]): r["goodput_mbit"] for r in at}
    out = {"flows": flows}
    for baseline in PRIOR_DEPLOYMENTS:
        ratios = [by_rep[(rep, "liteflow")] / by_rep[(rep, baseline)] for rep, scheme in by_rep
                  if scheme == "liteflow" and (rep, baseline) in by_rep]
        out[baseline] = spread(ratios)
    return out


def single_flow_verdict(summary: dict[str, Any]) -> list[str]:
    """The issue's bar for one flow: LiteFlow at >= 0.9 of the link with a p95 RTT under Cubic's."""
    single = summary.get("single_flow", {})
    liteflow, cubic = single.get("liteflow"), single.get("cubic")
    if not liteflow or not cubic or None in (liteflow["link_fraction"], liteflow["p95_rtt_ms"], cubic["p95_rtt_ms"]):
        return []
    goodput_ok = liteflow["link_fraction"] >= SINGLE_FLOW_GOODPUT
    rtt_ok = liteflow["p95_rtt_ms"] < cubic["p95_rtt_ms"]
    return ["", f"- one flow: LiteFlow's goodput is {liteflow['link_fraction']:.2f} of the link "
                f"({'meets' if goodput_ok else 'misses'} the {SINGLE_FLOW_GOODPUT} bar), its p95 RTT "
                f"{liteflow['p95_rtt_ms']:.1f} ms against Cubic's {cubic['p95_rtt_ms']:.1f} ms "
                f"({'below' if rtt_ok else 'not below'}); medians"]


def versus_lines(summary: dict[str, Any]) -> list[str]:
    versus = summary.get("versus") or {}
    lines = []
    for baseline in PRIOR_DEPLOYMENTS:
        ratio = versus.get(baseline) or {}
        if ratio.get("median") is None:
            continue
        lines.append(f"- at {versus['flows']} flows, LiteFlow's aggregate goodput over {baseline}'s: "
                     f"{plots.cell(ratio, '.2f')} (per-repetition ratios; the paper: {PAPER_GOODPUT_RATIO:.2f})")
    return [""] + lines if lines else []


EXPERIMENT = CcConcurrency()
