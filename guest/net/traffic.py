"""Bulk TCP flows with `iperf3 -J`, started at planned times, and what their JSON says.

One iperf3 server per flow (its own port, `-1` so it exits after that one test) in the receiver's
namespace, one client per flow in the sender's, with `-C` naming the congestion control. Output
goes to files, not pipes: a long run's JSON would fill a pipe and stall iperf3. Every process is
stopped by its pid.

Goodput is the receiver's count (end.sum_received), since bytes the sender wrote may still sit in
its socket buffer or be lost; RTT, retransmits and the per-interval series come from the sender's
stream (the client's view, which is where the kernel's tcp_info lives). A flow whose iperf3
failed is kept in the report with its error.

The parsing functions are pure (text/dicts in, dicts out) so they are tested without a guest.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from guest.net.cpu import cpu_use, read_proc_stat
from guest.net.topology import Network, log, stop_process

FIRST_PORT = 5201
# Under TCG an iperf3 client can need far longer than its -t to connect, finish and exchange
# results; past this slack it is considered hung and stopped.
CLIENT_SLACK_S = 30.0
SERVER_READY_TIMEOUT_S = 15.0
# 64 flows starting together over a queue of one BDP drop SYNs: a connection whose first two SYNs
# are lost gets its third at 3 s and its fourth at 7 s (Linux's 1-s initial RTO, doubled), so a
# 5-s limit failed a flow that would have run (one of 64, run 20261203-071526). 16 s allows four.
CONNECT_TIMEOUT_MS = 16000


@dataclass(frozen=True)
class FlowPlan:
    id: int
    src: str
    dst: str
    start_s: float
    duration_s: int  # iperf3's -t takes whole seconds
    cc: str
    port: int


def parse_iperf3(text: str) -> dict:
    """The numbers of one flow from an iperf3 -J client output; a dict with "error" (and no
    numbers) when iperf3 failed or the text is not its JSON."""
    if not text.strip():
        return {"error": "iperf3 printed nothing"}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"error": f"iperf3 output is not JSON ({exc.msg}): {text.strip()[:200]}"}
    if doc.get("error"):
        return {"error": f"iperf3: {doc['error']}"}
    end = doc.get("end") or {}
    received, sent = end.get("sum_received"), end.get("sum_sent")
    streams = end.get("streams") or []
    if not received or not sent or not streams:
        return {"error": "iperf3 JSON has no end summary (test did not complete)"}
    sender = streams[0].get("sender", {})
    rtt = {key: round(sender[f"{key}_rtt"] / 1000, 3) for key in ("mean", "min", "max") if f"{key}_rtt" in sender}
    return {
        "goodput_mbit": round(received["bits_per_second"] / 1e6, 3),
        "sender_mbit": round(sent["bits_per_second"] / 1e6, 3),
        "bytes_received": received["bytes"],
        "bytes_sent": sent["bytes"],
        "seconds": round(received["seconds"], 3),
        "retransmits": sent.get("retransmits"),
        "rtt_ms": rtt or None,
        "cc_used": end.get("sender_tcp_congestion"),
        "intervals": parse_intervals(doc.get("intervals") or []),
    }


def parse_intervals(intervals: list[dict]) -> list[dict]:
    """Per reporting interval (sender side): throughput, and the first stream's RTT, cwnd and
    retransmits as the kernel's tcp_info had them at the interval's end."""
    series = []
    for interval in intervals:
        total = interval["sum"]
        stream = (interval.get("streams") or [{}])[0]
        series.append({
            "start_s": round(total["start"], 3),
            "end_s": round(total["end"], 3),
            "mbit": round(total["bits_per_second"] / 1e6, 3),
            "retransmits": total.get("retransmits"),
            "rtt_ms": round(stream["rtt"] / 1000, 3) if "rtt" in stream else None,
            "cwnd_kbyte": round(stream["snd_cwnd"] / 1024, 1) if "snd_cwnd" in stream else None,
        })
    return series


def aggregate(flows: list[dict], interval_s: float) -> dict:
    """Sum of the flows' receiver goodput, Jain's fairness over them, retransmits, and the summed
    per-interval throughput on the traffic clock (flow start + interval midpoint, binned)."""
    done = [flow for flow in flows if "error" not in flow]
    rates = [flow["goodput_mbit"] for flow in done]
    fairness = (sum(rates) ** 2 / (len(rates) * sum(r * r for r in rates))) if rates and any(rates) else None
    bins: dict[int, float] = {}
    for flow in done:
        for point in flow["intervals"]:
            mid = flow["started_at_s"] + (point["start_s"] + point["end_s"]) / 2
            bins[int(mid // interval_s)] = bins.get(int(mid // interval_s), 0.0) + point["mbit"]
    return {
        "goodput_mbit": round(sum(rates), 3),
        "flows_ok": len(done),
        "flows_failed": len(flows) - len(done),
        "jain_fairness": round(fairness, 4) if fairness is not None else None,
        "retransmits": sum(flow["retransmits"] or 0 for flow in done),
        "series": [{"t_s": round((index + 0.5) * interval_s, 3), "mbit": round(value, 3)}
                   for index, value in sorted(bins.items())],
    }


class CounterSampler:
    """Reads `counters` every `every_s` on a thread, each reading stamped on the traffic clock:
    {key: [[t_s, bytes, packets], ...]}. What the bottleneck carried, second by second, on the
    same clock as the flows' starts, where the flows' own intervals run on each client's clock
    and count what the sender wrote, not what crossed the link.

    A reading is kept only if it took at most MAX_READ_S from its stamp: in a guest whose CPUs the
    traffic saturates (64 flows on a slow host) the thread can lose the CPU for seconds between
    taking the time and reading, and such a reading, stamped seconds early, made the link carry
    five times its rate. A quarter of a second (half the 0.5-s period the CC experiments sample
    at) bounds what a kept reading's stamp can be off by against windows of several seconds. The readings dropped are
    counted (`late`)."""

    MAX_READ_S = 0.25
    # The thread's nice value (Linux sets it per thread). It reads two small files twice a second,
    # so it costs the flows nothing, but at the default weight 128 iperf3 processes and a slow path
    # starved it of every reading for 23 s of a 64-flow job (run 20261203-200537). Unprivileged, it
    # keeps the default.
    NICE = -10

    def __init__(self, counters: Callable[[], dict[str, tuple[int, int]]], every_s: float) -> None:
        self.counters = counters
        self.every_s = every_s
        self.series: dict[str, list[list[float]]] = {}
        self.error: str | None = None
        self.late = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.NICE)
        except PermissionError:
            pass
        while True:
            try:
                before = time.monotonic()
                readings = self.counters()
                if time.monotonic() - before > self.MAX_READ_S:
                    self.late += 1
                else:
                    now = round(before - self._t0, 3)
                    for key, (nbytes, packets) in readings.items():
                        self.series.setdefault(key, []).append([now, nbytes, packets])
            except (OSError, KeyError, ValueError) as exc:   # a node gone: keep what was read
                self.error = str(exc)
                return
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> dict[str, list[list[float]]]:
        self._stop.set()
        self._thread.join()
        return self.series


def run_flows(network: Network, flows: list[FlowPlan], interval_s: float, workdir: Path,
              actions: list[tuple[float, Callable[[Callable[[], float]], None]]] = (),
              counters: Callable[[], dict[str, tuple[int, int]]] | None = None) -> dict:
    """Run the flows (and `actions` at their times, each called with the traffic clock) and return
    {"flows": [...], "cpu": {...}, "window_s": ..., "counters": ...}. Time 0 is when the first
    client may start. `counters` (e.g. a bottleneck's, Network.link_counters) is sampled twice an
    interval from time 0 until the last client is done."""
    workdir.mkdir(parents=True, exist_ok=True)
    servers = {flow.id: _start_server(network, flow, workdir) for flow in flows}
    _wait_listening(network, flows)
    events = sorted([(flow.start_s, 0, flow.id) for flow in flows] + [(at, 1, i) for i, (at, _) in enumerate(actions)])
    by_id = {flow.id: flow for flow in flows}
    clients = {flow.id: _spawn_client(network, flow, interval_s, workdir) for flow in flows}
    started_at = {}
    sampler = CounterSampler(counters, interval_s / 2) if counters else None
    cpu_before = read_proc_stat()
    t0 = time.monotonic()
    if sampler:
        sampler.start(t0)
    for at, is_action, key in events:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        if is_action:
            actions[key][1](lambda: time.monotonic() - t0)
        else:
            flow = by_id[key]
            started_at[key] = round(time.monotonic() - t0, 3)
            _release(clients[key])
    results = []
    for flow in flows:
        deadline = t0 + flow.start_s + flow.duration_s + CLIENT_SLACK_S
        client = clients[flow.id]
        timed_out = False
        try:
            client.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_process(client)
        parsed = parse_iperf3((workdir / f"flow{flow.id}.json").read_text())
        if timed_out:
            parsed = {"error": f"iperf3 client still running {CLIENT_SLACK_S:.0f} s after its end; stopped"}
        elif "error" not in parsed and client.returncode != 0:
            parsed = {"error": f"iperf3 client exited {client.returncode}"}
        if "error" in parsed:
            server_log = (workdir / f"server{flow.id}.log").read_text().strip()
            parsed["error"] += f" (server: {server_log[-300:]})" if server_log else ""
            log(f"flow {flow.id} {flow.src}→{flow.dst} failed: {parsed['error']}")
        results.append({**asdict(flow), "started_at_s": started_at[flow.id], **parsed})
    window_s = round(time.monotonic() - t0, 3)
    cpu = cpu_use(cpu_before, read_proc_stat())
    series = sampler.stop() if sampler else {}
    if sampler and sampler.error:
        log(f"link counters: sampling stopped early: {sampler.error}")
    if sampler and sampler.late:
        log(f"link counters: {sampler.late} readings dropped, each taking over {sampler.MAX_READ_S} s")
    for server in servers.values():
        stop_process(server)
    return {"flows": results, "cpu": {**cpu, "window_s": window_s}, "window_s": window_s, "counters": series}


def _start_server(network: Network, flow: FlowPlan, workdir: Path):
    out = open(workdir / f"server{flow.id}.log", "w")
    with out:
        return network.popen(flow.dst, ["iperf3", "-s", "-1", "-p", str(flow.port)], stdout=out, stderr=out)


def _wait_listening(network: Network, flows: list[FlowPlan]) -> None:
    pending = {(flow.dst, flow.port) for flow in flows}
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while pending and time.monotonic() < deadline:
        for dst in {dst for dst, _ in pending}:
            listening = network.run(dst, "ss", "-Hltn").stdout
            pending -= {(d, port) for d, port in pending if d == dst and f":{port} " in listening}
        if pending:
            time.sleep(0.2)
    if pending:
        # Clients of these flows will fail to connect and be reported with their error.
        log(f"iperf3 servers not listening after {SERVER_READY_TIMEOUT_S} s: {sorted(pending)}")


def _spawn_client(network: Network, flow: FlowPlan, interval_s: float, workdir: Path) -> subprocess.Popen:
    """Spawn the flow's client before time 0, held at a shell's `read` until _release. Starting a
    process in a node's namespace costs the TCG guest a quarter to half a second, and more once
    traffic loads it: started one after the other, 64 clients took 16-33 s to start, so most of a
    20-s run never had every flow running. Held, they all start within moments of their times.
    The shell execs iperf3, so the pid stays the client's; if the driver dies first, the read sees
    end of file and the shell exits without a flow."""
    out = open(workdir / f"flow{flow.id}.json", "w")
    err = open(workdir / f"flow{flow.id}.err", "w")
    argv = ["iperf3", "-c", network.ip(flow.dst), "-p", str(flow.port), "-t", str(flow.duration_s),
            "-i", f"{interval_s:g}", "-C", flow.cc, "-J", "--connect-timeout", str(CONNECT_TIMEOUT_MS)]
    with out, err:
        return network.popen(flow.src, ["sh", "-c", 'read -r go && exec "$@"', "sh", *argv],
                             stdin=subprocess.PIPE, stdout=out, stderr=err)


def _release(client: subprocess.Popen) -> None:
    """Let a held client exec its iperf3 now."""
    client.stdin.write(b"go\n")
    client.stdin.close()