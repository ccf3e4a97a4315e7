"""Experiment "cc-interval": what cross-space communication costs congestion control.

The user-space deployment (lf_cc's "liteflow_user": the same features and action rule, the same
snapshot run by the user-space agent, adapted by the same slow path) at each communication
interval — every monitor interval, 1 ms, 10 ms, 100 ms — next to LiteFlow, for 1 and 16 flows.
Per job: goodput as a fraction of the link, p95 RTT, the guest's CPU, and the channel's counters
(posts, answers applied, answers late, posts never answered).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reports import plots
from workloads import cc_plan
from workloads.contract import Context, Experiment, Field, Job, RunView, group, spread

METRICS = ("link_fraction", "p95_rtt_ms", "guest_cpu_busy", "user_posts", "user_applied", "user_late",
           "user_timeouts")


def interval_label(interval_us: int) -> str:
    return "every MI" if interval_us == 0 else f"{interval_us / 1000:g} ms"


class CcInterval(Experiment):
    title = "Congestion control: goodput against the user-space deployment's communication interval"
    schema = {**cc_plan.COMMON_CC_SCHEMA, "flow_counts": Field(list, minimum=1),
              "intervals_us": Field(list, minimum=0)}

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        jobs = []
        for flows in config["flow_counts"]:
            for scheme in config["schemes"]:
                if scheme.startswith("user"):
                    jobs += [Job(f"{flows}-flows/{scheme}-{interval}us", {"flows": flows, "scheme": scheme,
                                                                        "interval_us": interval, "link": config["link"]})
                             for interval in config["intervals_us"]]
                else:
                    jobs.append(Job(f"{flows}-flows/{scheme}", {"flows": flows, "scheme": scheme, "interval_us": None,
                                                               "link": config["link"]}))
        return jobs

    def prepare(self, ctx: Context) -> None:
        cc_plan.prepare_cc(ctx)

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        plan = cc_plan.cc_plan(ctx, job.params["scheme"], job.params["flows"],
                               interval_us=job.params["interval_us"] or 0)
        return cc_plan.run_cc_job(ctx, job.key, plan)

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        record = cc_plan.common_record(job.key, raw, job.params["link"])
        interval = job.params["interval_us"]
        label = job.params["scheme"] if interval is None else f"{job.params['scheme']}, {interval_label(interval)}"
        return [{**record, "flows": job.params["flows"], "scheme": job.params["scheme"], "interval_us": interval,
                 "deployment": label}]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        cells = [{"flows": flows, "deployment": deployment, **{key: spread([r[key] for r in rows]) for key in METRICS},
                  "failed_runs": sum(1 for r in rows if not r["ok"])}
                 for (flows, deployment), rows in group(records, "flows", "deployment").items()]
        return {"link": config["link"], "cells": cells, "failed_runs": sum(c["failed_runs"] for c in cells)}

    def passed(self, summary: dict[str, Any]) -> bool | None:
        return None if summary["failed_runs"] == 0 else False

    def figures(self, view: RunView) -> list[Path]:
        cells = view.summary.get("cells", [])
        if not cells:
            return []
        flows = sorted({c["flows"] for c in cells})
        deployments = list(dict.fromkeys(c["deployment"] for c in cells))
        by = {(c["flows"], c["deployment"]): c for c in cells}
        fig, axes = plots.plt.subplots(1, 2, figsize=(11, 4))
        labels = [f"{n} flow{'s' if n > 1 else ''}" for n in flows]
        for ax, (key, ylabel) in zip(axes, (("link_fraction", "goodput / link rate"),
                                            ("guest_cpu_busy", "guest CPU busy (fraction)"))):
            plots.grouped_bars(labels, {d: [by[(n, d)][key] if (n, d) in by else None for n in flows]
                                        for d in deployments}, ylabel=f"{ylabel}\n(median, bars: min-max)", ax=ax)
        fig.suptitle(plots.title("Goodput against the communication interval", view), fontsize=9)
        return [plots.save(fig, view, "cc-interval.png")]

    def section(self, view: RunView) -> list[str]:
        lines = ["| flows | deployment | goodput / link | p95 RTT ms | guest CPU | posts | answers applied | late | "
                 "never answered |", "|---|---|---|---|---|---|---|---|---|"]
        for c in view.summary.get("cells", []):
            lines.append(f"| {c['flows']} | {c['deployment']} | {plots.cell(c['link_fraction'], '.2f')} | "
                         f"{plots.cell(c['p95_rtt_ms'], '.1f')} | {plots.cell(c['guest_cpu_busy'], '.2f')} | "
                         + " | ".join(plots.cell(c[k], '.0f') for k in ("user_posts", "user_applied", "user_late",
                                                                       "user_timeouts")) + " |")
        lines += ["", f"Medians over {view.metadata.get('repetitions')} repetitions, [min–max] in brackets. The "
                      "user-space deployment's agent runs the very snapshot the kernel runs, with the same engine."]
        return lines


EXPERIMENT = CcInterval()
