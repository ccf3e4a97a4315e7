"""Experiment "iperf": Cubic and BBR over a dumbbell, goodput and RTT inflation with spread.

Per repetition, one job per link setting × flow count × scheme, all in one guest so the schemes
of a repetition run side by side on the same machine state. Each job builds the topology from
data in the guest (guest/net, Mininet hosts and Linux routers, tc shaping at the bottleneck),
sets up the scheme (guest/net/schemes), measures the base RTT with ping, runs iperf3 -J flows
and reports per-flow and aggregate numbers (guest/iperf.py). Goodput is reported as a fraction
of the bottleneck's rate; RTT inflation is the flows' mean smoothed RTT (the kernel's, via
iperf3) over the configured base RTT, so 1.0 means no queueing delay.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from reports import plots
from workloads.contract import Context, Experiment, Field, Job, RunView, group, spread

MTU_BYTES = 1500
LINK_SCHEMA = {"name": Field(str), "rate_mbit": Field(float, minimum=0.1), "rtt_ms": Field(float, minimum=0.0),
               "queue_bdp": Field(float, minimum=0.01), "loss_pct": Field(float, required=False, minimum=0.0)}
OFFLOAD_SCHEMA = {key: Field(bool) for key in ("tso", "gso", "gro")}
SETUP_TIMEOUT_S = 300    # under TCG: guest Python start, Mininet, scheme, ping, teardown


class Iperf(Experiment):
    title = "iperf: Cubic and BBR over a dumbbell"
    schema = {
        "schemes": Field(list, choices=("cubic", "bbr")),
        "flow_counts": Field(list, minimum=1),
        "duration_s": Field(int, minimum=1),
        "interval_s": Field(int, minimum=1),
        "offloads": Field(dict, table_schema=OFFLOAD_SCHEMA),
        "links": Field(list, item_schema=LINK_SCHEMA),
    }

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        return [Job(f"{link['name']}/{flows}-flows/{scheme}", {"link": link, "flows": flows, "scheme": scheme})
                for link in config["links"] for flows in config["flow_counts"] for scheme in config["schemes"]]

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        session = ctx.session
        plan = iperf_plan(job.params["link"], job.params["flows"], job.params["scheme"], ctx.config)
        plan_dir = session.plan_dir(ctx.run, f"{job.key.replace('/', '_')}-{ctx.repetition}")
        return session.run_driver(ctx.run, "iperf", plan, plan_dir, step=f"iperf {job.key}",
                                  timeout_s=SETUP_TIMEOUT_S + 3 * ctx.config["duration_s"]).report

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        link = job.params["link"]
        flows = [f for f in raw.get("flows", []) if "error" not in f]
        rtts = [f["rtt_ms"]["mean"] for f in flows if f.get("rtt_ms")]
        mean_rtt = statistics.fmean(rtts) if rtts else None
        aggregate = raw.get("aggregate", {})
        return [{"job": job.key, "link": link["name"], "flows": job.params["flows"], "scheme": job.params["scheme"],
                 "ok": bool(raw.get("ok")), "failed_checks": [c["name"] for c in raw.get("checks", []) if not c["ok"]],
                 "goodput_mbit": aggregate.get("goodput_mbit"),
                 "link_fraction": (aggregate["goodput_mbit"] / link["rate_mbit"]
                                   if aggregate.get("goodput_mbit") is not None else None),
                 "mean_rtt_ms": mean_rtt, "base_rtt_ms": link["rtt_ms"],
                 "ping_rtt_ms": (raw.get("ping_rtt_ms") or {}).get("avg"),
                 "rtt_inflation": mean_rtt / link["rtt_ms"] if mean_rtt and link["rtt_ms"] else None,
                 "retransmits": aggregate.get("retransmits"), "jain_fairness": aggregate.get("jain_fairness"),
                 "guest_cpu_busy": (raw.get("cpu") or {}).get("busy"),
                 "flows_failed": aggregate.get("flows_failed")}]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        cells = []
        for (link, flows, scheme), rows in group(records, "link", "flows", "scheme").items():
            cells.append({"link": link, "flows": flows, "scheme": scheme,
                          **{key: spread([r[key] for r in rows]) for key in (
                              "link_fraction", "goodput_mbit", "rtt_inflation", "mean_rtt_ms", "retransmits",
                              "jain_fairness", "guest_cpu_busy")},
                          "failed_runs": sum(1 for r in rows if not r["ok"])})
        return {"cells": cells, "failed_runs": sum(c["failed_runs"] for c in cells)}

    def passed(self, summary: dict[str, Any]) -> bool | None:
        return None if summary["failed_runs"] == 0 else False

    def figures(self, view: RunView) -> list[Path]:
        cells = view.summary.get("cells", [])
        if not cells:
            return []
        links = list(dict.fromkeys(c["link"] for c in cells))
        fig, axes = plots.plt.subplots(2, len(links), figsize=(5 * len(links), 7), squeeze=False)
        for column, link in enumerate(links):
            mine = [c for c in cells if c["link"] == link]
            flows = list(dict.fromkeys(c["flows"] for c in mine))
            schemes = list(dict.fromkeys(c["scheme"] for c in mine))
            by = {(c["flows"], c["scheme"]): c for c in mine}
            labels = [f"{n} flow{'s' if n > 1 else ''}" for n in flows]
            for row, (key, ylabel) in enumerate((("link_fraction", "goodput / link rate"),
                                                 ("rtt_inflation", "mean RTT / base RTT"))):
                ax = axes[row][column]
                plots.grouped_bars(labels, {s: [by[(n, s)][key] for n in flows] for s in schemes},
                                   ylabel=f"{ylabel} (median, bars: min-max)", ax=ax)
                ax.set_title(link, fontsize=9)
            axes[0][column].axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        fig.suptitle(plots.title("Cubic vs BBR over a dumbbell", view), fontsize=9)
        return [plots.save(fig, view, "iperf.png")]

    def section(self, view: RunView) -> list[str]:
        lines = ["| link | flows | scheme | goodput / link | goodput Mbit/s | RTT inflation | retransmits | "
                 "guest CPU busy |", "|---|---|---|---|---|---|---|---|"]
        for c in view.summary.get("cells", []):
            lines.append(f"| {c['link']} | {c['flows']} | {c['scheme']} | {plots.cell(c['link_fraction'], '.2f')} | "
                         f"{plots.cell(c['goodput_mbit'], '.1f')} | {plots.cell(c['rtt_inflation'], '.2f')} | "
                         f"{plots.cell(c['retransmits'], '.0f')} | {plots.cell(c['guest_cpu_busy'], '.2f')} |")
        lines += ["", f"Medians over {view.metadata.get('repetitions')} repetitions, [min–max] in brackets; the "
                      f"guest runs under {view.metadata.get('accelerator')}, where emulation, not the link, can be "
                      f"the bottleneck: read the CPU column before the goodput."]
        return lines


def iperf_plan(link: dict[str, Any], flows: int, scheme: str, config: dict[str, Any]) -> dict[str, Any]:
    """The guest driver's plan for one job: a dumbbell whose bottleneck carries the base RTT."""
    bdp_packets = link["rate_mbit"] * 1e6 * link["rtt_ms"] / 1e3 / (8 * MTU_BYTES)
    bottleneck = {"rate_mbit": link["rate_mbit"], "delay_ms": link["rtt_ms"] / 2,
                  "queue_packets": max(2, round(link["queue_bdp"] * bdp_packets)),
                  "loss_pct": link.get("loss_pct", 0.0)}
    return {"topology": {"kind": "dumbbell", "senders": flows, "receivers": 1, "bottleneck": bottleneck,
                         "access": {"rate_mbit": 1000.0, "delay_ms": 0.0}, "offloads": config["offloads"]},
            "scheme": scheme, "flow_count": flows, "duration_s": config["duration_s"],
            "interval_s": config["interval_s"]}


EXPERIMENT = Iperf()
