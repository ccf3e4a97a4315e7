"""Experiment "cc-adapt": goodput and delay over time when the link changes under the flows.

The bottleneck steps down in bandwidth, back up, then its RTT steps up, while the flows run.
LiteFlow (adapting), kernel-frozen (the same starting snapshot, never updated), Cubic and BBR
run the same schedule side by side in one guest per repetition. Per scheme and phase (between
two changes) the record keeps the goodput as a fraction of the link's rate *at that time* and the
delay probe's mean RTT (a ping every 100 ms through the bottleneck); per job the whole per-interval series and, for LiteFlow, when each
snapshot update happened (the slow-path service's log, on the traffic's clock), so the figure
marks them. The comparison that matters is LiteFlow against kernel-frozen after each change:
they differ only in the slow path.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from reports import plots
from workloads import cc_plan
from workloads.contract import Context, Experiment, Field, Job, RunView, group, spread

CHANGE_SCHEMA = {"at_s": Field(float, minimum=0.0), "name": Field(str),
                 "rate_mbit": Field(float, required=False, minimum=0.1),
                 "rtt_ms": Field(float, required=False, minimum=0.0),
                 "ack_slot_ms": Field(float, required=False, minimum=0.0)}
FAULT_SCHEMA = {"at_s": Field(float, minimum=0.0),
                "kind": Field(str, choices=("kill_service", "kill_agent", "pause_agent"))}
NETWORK_NOTES = {
    "cc": "the committed network, trained on the simulator's whole range of links",
    "cc-narrow": "the same training on the starting link only (30-50 Mbit/s, 15-25 ms, about one BDP "
                 "of queue, no changes): what the link turns into is new to it",
}
SETTLE_S = 2.0     # seconds after a change left out of its phase: the change itself, not the response
RECOVERED_FRACTION = 0.8   # a scheme has recovered from a change once its goodput, averaged over
RECOVERED_HOLD_S = 3.0     # ... this long, is this much of the new link rate


class CcAdapt(Experiment):
    title = "Congestion control: adapting to link changes over time"
    schema = {**cc_plan.COMMON_CC_SCHEMA, "flow_count": Field(int, minimum=1),
              "changes": Field(list, item_schema=CHANGE_SCHEMA),
              "faults": Field(list, required=False, item_schema=FAULT_SCHEMA)}

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        return [Job(scheme, {"scheme": scheme, "phases": phases(config)}) for scheme in config["schemes"]]

    def prepare(self, ctx: Context) -> None:
        if any(s in cc_plan.LF_SCHEMES for s in ctx.config["schemes"]):
            cc_plan.prepare_cc(ctx)

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        scheme = job.params["scheme"]
        faults = [f for f in ctx.config.get("faults", []) if fault_applies(f["kind"], scheme)]
        plan = cc_plan.cc_plan(ctx, scheme, ctx.config["flow_count"], link_changes(ctx.config), faults)
        return cc_plan.run_cc_job(ctx, job.key, plan)

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        record = cc_plan.common_record(job.key, raw, job.params["phases"][0])
        series = time_series(raw)
        started = raw.get("traffic_started_unix")
        results = raw.get("scheme_results") or {}
        record.update(scheme=job.params["scheme"], series=series,
                      update_times_s=[round(u["t_unix"] - started, 2) for u in results.get("updates") or []
                                      if started is not None],
                      fault_times_s=[f["applied_at_s"] for f in raw.get("faults") or []],
                      service_alive_at_end=results.get("service_alive"),
                      active_id_end=(results.get("core") or {}).get("active_id"),
                      decisions=(results.get("lf_cc") or {}).get("decisions"))
        for phase in job.params["phases"]:
            rows = [p for p in series if phase["from_s"] + SETTLE_S <= p["t_s"] < phase["to_s"]]
            mbit = [p["mbit"] for p in rows]
            rtts = [p["rtt_ms"] for p in rows if p["rtt_ms"] is not None]
            record[f"{phase['name']}_link_fraction"] = statistics.fmean(mbit) / phase["rate_mbit"] if mbit else None
            record[f"{phase['name']}_rtt_ms"] = statistics.fmean(rtts) if rtts else None
            recovered = recovery_s(series, phase)
            record[f"{phase['name']}_recovered"] = recovered is not None
            record[f"{phase['name']}_recovery_s"] = (recovered if recovered is not None
                                                     else phase["to_s"] - phase["from_s"])
        return [record]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        names = [p["name"] for p in phases(config)]
        cells = []
        for (scheme,), rows in group(records, "scheme").items():
            good = [r for r in rows if r["ok"]]      # a run with a failed check is counted, not averaged in
            cells.append({"scheme": scheme, "runs": len(rows), "failed_runs": len(rows) - len(good),
                          "updates": spread([len(r["update_times_s"]) for r in good]),
                          "stale_min_resets": spread([r.get("stale_min_resets") for r in good]),
                          **{f"{n}_{m}": spread([r.get(f"{n}_{m}") for r in good])
                             for n in names for m in ("link_fraction", "rtt_ms", "recovery_s")},
                          **{f"{n}_recovered_runs": sum(bool(r.get(f"{n}_recovered")) for r in good)
                             for n in names}})
        by = {c["scheme"]: c for c in cells}
        versus = {}
        if "liteflow" in by and "frozen" in by:
            for n in names:
                lf, fr = by["liteflow"], by["frozen"]
                versus[n] = {"goodput_ratio": _ratio(lf[f"{n}_link_fraction"], fr[f"{n}_link_fraction"]),
                             "rtt_ratio": _ratio(lf[f"{n}_rtt_ms"], fr[f"{n}_rtt_ms"]),
                             "recovery_s": {"liteflow": lf[f"{n}_recovery_s"]["median"],
                                            "frozen": fr[f"{n}_recovery_s"]["median"]}}
        return {"phases": phases(config), "network": cc_plan.network_name(config), "cells": cells,
                "liteflow_vs_frozen": versus,
                "failed_runs": sum(c["failed_runs"] for c in cells)}

    def passed(self, summary: dict[str, Any]) -> bool | None:
        """A measurement, not a check: failed only when a scheme has no good run at all."""
        return False if any(c["failed_runs"] == c.get("runs", c["failed_runs"] + 1) for c in summary["cells"]) else None

    def figures(self, view: RunView) -> list[Path]:
        records = view.records
        if not records:
            return []
        phase_list = view.summary.get("phases", [])
        fig, (top, bottom) = plots.plt.subplots(2, 1, figsize=(11, 7), sharex=True)
        for (scheme,), rows in group(records, "scheme").items():
            t, goodput = _median_series(rows, "mbit")
            line, = top.plot(t, goodput, label=scheme, linewidth=1.2)
            t_rtt, rtt = _median_series(rows, "rtt_ms")
            bottom.plot(t_rtt, rtt, color=line.get_color(), linewidth=1.2, label=scheme)
            updates = sorted(u for r in rows for u in r["update_times_s"])
            if updates:
                top.plot(updates, [0] * len(updates), marker="^", linestyle="none", color=line.get_color(),
                         label=f"{scheme} snapshot updates ({len(updates)} over {len(rows)} runs)")
        capacity_t = [p for ph in phase_list for p in (ph["from_s"], ph["to_s"])]
        capacity = [ph["rate_mbit"] for ph in phase_list for _ in (0, 1)]
        top.plot(capacity_t, capacity, color="grey", linestyle="--", linewidth=0.8, label="link rate")
        for ph in phase_list[1:]:
            for ax in (top, bottom):
                ax.axvline(ph["from_s"], color="grey", linewidth=0.6, linestyle=":")
            top.annotate(ph["name"], (ph["from_s"], top.get_ylim()[1]), fontsize=7, va="top")
        top.set_ylabel("aggregate goodput (Mbit/s)\nmedian over runs")
        bottom.set_ylabel("probe RTT (ms), per-second mean\nmedian over runs")
        bottom.set_xlabel("time since the flows started (s)")
        top.legend(fontsize=7, loc="upper right")
        fig.suptitle(plots.title("Congestion control under link changes", view), fontsize=9)
        return [plots.save(fig, view, "cc-adapt.png"), self._runs_figure(view, phase_list)]

    def _runs_figure(self, view: RunView, phase_list: list[dict[str, Any]]) -> Path:
        """Every run's goodput, one panel per scheme: the median hides whether a scheme recovered in
        every run or in half of them, which is what the comparison after the RTT step is about."""
        groups = group(view.records, "scheme")
        fig, axes = plots.plt.subplots(len(groups), 1, figsize=(11, 1.9 * len(groups) + 0.8), sharex=True,
                                       squeeze=False)
        for ax, ((scheme,), rows) in zip(axes[:, 0], groups.items()):
            for row in sorted(rows, key=lambda r: r.get("repetition", 0)):
                line, = ax.plot([p["t_s"] for p in row["series"]], [p["mbit"] for p in row["series"]],
                                linewidth=0.9, label=f"run {row.get('repetition', 0) + 1}"
                                + ("" if row.get("ok", True) else " (failed check)"))
                if row["update_times_s"]:
                    ax.plot(row["update_times_s"], [-2] * len(row["update_times_s"]), marker="|",
                            linestyle="none", color=line.get_color(), markersize=6)
            ax.plot([p for ph in phase_list for p in (ph["from_s"], ph["to_s"])],
                    [ph["rate_mbit"] for ph in phase_list for _ in (0, 1)],
                    color="grey", linestyle="--", linewidth=0.8)
            for ph in phase_list[1:]:
                ax.axvline(ph["from_s"], color="grey", linewidth=0.6, linestyle=":")
            ax.set_ylabel(f"{scheme}\nMbit/s", fontsize=8)
            ax.legend(fontsize=6, loc="upper right", ncol=5)
        axes[-1, 0].set_xlabel("time since the flows started (s); | marks a snapshot update of that run")
        fig.suptitle(plots.title("Congestion control under link changes, every run", view), fontsize=9)
        return plots.save(fig, view, "cc-adapt-runs.png")

    def section(self, view: RunView) -> list[str]:
        s = view.summary
        names = [p["name"] for p in s.get("phases", [])]
        network = s.get("network", cc_plan.DEFAULT_NETWORK)
        lines = [f"Starting network: `{network}` ({NETWORK_NOTES.get(network, '')}).", "",
                 "Phases: " + "; ".join(f"{p['name']} from {p['from_s']:.0f} s ({p['rate_mbit']} Mbit/s, "
                                         f"{p['rtt_ms']} ms{_slots(p)})" for p in s.get("phases", [])) + ".", "",
                 "| scheme | updates | " + " | ".join(f"{n} goodput/link | {n} RTT ms" for n in names) + " |",
                 "|---|---|" + "---|---|" * len(names)]
        for c in s.get("cells", []):
            lines.append(f"| {c['scheme']} | {plots.cell(c['updates'], '.0f')} | " + " | ".join(
                f"{plots.cell(c[f'{n}_link_fraction'], '.2f')} | {plots.cell(c[f'{n}_rtt_ms'], '.1f')}"
                for n in names) + " |")
        lines += ["", f"Seconds from each change until the goodput, averaged over {RECOVERED_HOLD_S:.0f} s, reached "
                      f"{RECOVERED_FRACTION:.0%} of the new link rate (a run that never did counts as the whole phase; runs that "
                      "did, out of all):", "",
                  "| scheme | " + " | ".join(names[1:]) + " |", "|---|" + "---|" * len(names[1:])]
        for c in s.get("cells", []):
            good = c["runs"] - c["failed_runs"]
            lines.append(f"| {c['scheme']} | " + " | ".join(
                f"{plots.cell(c.get(f'{n}_recovery_s') or {}, '.0f')} ({c.get(f'{n}_recovered_runs', 0)}/{good})"
                for n in names[1:]) + " |")
        for name, ratio in s.get("liteflow_vs_frozen", {}).items():
            recovery = ratio.get("recovery_s") or {}
            back = ("" if name == "start" or recovery.get("liteflow") is None else
                    f"; back at {RECOVERED_FRACTION:.0%} of the link after {recovery['liteflow']:.0f} s "
                    f"vs {_fmt(recovery.get('frozen'), '.0f')} s (medians)")
            lines.append(f"- {'from the start' if name == 'start' else f'after *{name}*'}: LiteFlow / frozen goodput {_fmt(ratio['goodput_ratio'])}, "
                         f"RTT {_fmt(ratio['rtt_ratio'])} (ratios of medians){back}")
        resets = [f"{c['scheme']} {plots.cell(c['stale_min_resets'], '.0f')}" for c in s.get("cells", [])
                  if (c.get("stale_min_resets") or {}).get("n")]
        if resets:
            lines.append(f"- lf_cc let go of a minimum RTT the path had outgrown (stale_min), per run: {', '.join(resets)}")
        lines += ["", f"Medians over {view.metadata.get('repetitions')} repetitions, [min–max] in brackets; the "
                      f"first {SETTLE_S:.0f} s after each change are left out of its phase."]
        return lines


def fault_applies(kind: str, scheme: str) -> bool:
    """A fault goes to the schemes that have what it breaks: a slow-path service, an agent."""
    if kind == "kill_service":
        return scheme in ("liteflow", "user")
    return scheme.startswith("user")


def phases(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The link's settings between changes: name, from_s, to_s, rate_mbit, rtt_ms, ack_slot_ms."""
    link = config["link"]
    current = {"name": "start", "from_s": 0.0, "rate_mbit": link["rate_mbit"], "rtt_ms": link["rtt_ms"],
               "ack_slot_ms": 0.0}
    out = []
    for change in sorted(config["changes"], key=lambda c: c["at_s"]):
        out.append({**current, "to_s": change["at_s"]})
        current = {"name": change["name"], "from_s": change["at_s"],
                   **{key: change.get(key, current[key]) for key in ("rate_mbit", "rtt_ms", "ack_slot_ms")}}
    out.append({**current, "to_s": float(config["duration_s"])})
    return out


def recovery_s(series: list[dict[str, Any]], phase: dict[str, Any]) -> float | None:
    """Seconds from the phase's start until the goodput, averaged over RECOVERED_HOLD_S, first
    reached RECOVERED_FRACTION of the link rate, or None if it never did within the phase.

    Why a time and not only the phase's mean: after the RTT step every delay-based scheme starves
    until lf_cc's 10-s minimum RTT lets go of the old base, and then has to climb back; the mean
    over the phase blurs the two, the time says when the scheme was back. Averaged over a window because a paced flow's per-second goodput
    alternates around its rate (31 and 42 Mbit/s on a 40-Mbit/s link), and one good second among
    starved ones is not recovery. Each interval's point is stamped with its midpoint.
    """
    points = [p for p in series if phase["from_s"] <= p["t_s"] < phase["to_s"]]
    if len(points) < 2:
        return None
    interval = points[1]["t_s"] - points[0]["t_s"]
    need = max(1, round(RECOVERED_HOLD_S / interval))
    floor_mbit = RECOVERED_FRACTION * phase["rate_mbit"]
    for i in range(len(points) - need + 1):
        if statistics.fmean(p["mbit"] for p in points[i:i + need]) >= floor_mbit:
            return round(max(0.0, points[i]["t_s"] - interval / 2 - phase["from_s"]), 3)
    return None


def link_changes(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The changes as the guest's link-change schedule: rate, delay (half the RTT each way), and
    the ACK path's delivery slots (the bottleneck's reverse direction, r2 towards r1)."""
    out = []
    for change in config["changes"]:
        item = {"at_s": change["at_s"], "link": "bottleneck"}
        if "rate_mbit" in change:
            item["rate_mbit"] = change["rate_mbit"]
        if "rtt_ms" in change:
            item["delay_ms"] = change["rtt_ms"] / 2
        if "ack_slot_ms" in change:
            item["reverse_slot_ms"] = change["ack_slot_ms"]
        out.append(item)
    return out


def time_series(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Per interval: aggregate goodput and the delay probe's mean RTT (a ping every 100 ms through
    the bottleneck)."""
    goodput = (raw.get("aggregate") or {}).get("series", [])
    if not goodput:
        return []
    interval = goodput[1]["t_s"] - goodput[0]["t_s"] if len(goodput) > 1 else 2 * goodput[0]["t_s"]
    rtts: dict[int, list[float]] = {}
    for t, rtt in raw.get("probe_rtt", []):
        rtts.setdefault(int(t // interval), []).append(rtt)
    return [{"t_s": point["t_s"], "mbit": point["mbit"],
             "rtt_ms": round(statistics.fmean(rtts[i]), 3) if rtts.get(i) else None}
            for i, point in enumerate(goodput)]


def _slots(phase: dict[str, Any]) -> str:
    return f", ACKs in slots up to {phase['ack_slot_ms']:g} ms apart" if phase.get("ack_slot_ms") else ""


def _median_series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    by_t: dict[float, list[float]] = {}
    for row in rows:
        for point in row["series"]:
            if point.get(key) is not None:
                by_t.setdefault(point["t_s"], []).append(point[key])
    times = sorted(by_t)
    return times, [statistics.median(by_t[t]) for t in times]


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if a.get("median") is None or not b.get("median"):
        return None
    return a["median"] / b["median"]


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


EXPERIMENT = CcAdapt()
