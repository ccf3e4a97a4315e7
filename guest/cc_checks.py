"""lf_cc in a real kernel: the checks of what a congestion control driven by LiteFlow must do.

Runs in the guest as root (`python -m guest.driver cc_checks PLAN.json`) with the core, lf_cc and
the blobs the host prepared next to the plan. TCP traffic runs over loopback with
TCP_CONGESTION "liteflow", so lf_cc's hooks run in the guest's real ACK path:

- with no snapshot yet, flows still move and every monitor interval is decided by the counted
  fallback;
- a snapshot of the wrong sizes is refused (EINVAL), one quantized differently from what lf_cc
  declared is refused (EPROTO), and neither changes the active snapshot;
- with the right snapshot, the network decides the intervals, and sampled decisions reach the
  samples group with their 44-byte context, whose fields describe the interval that followed;
- lf_cc cannot be removed while a socket uses it (the kernel's own rule for congestion-control
  modules), and can once the socket is closed;
- nothing of it leaves a warning in dmesg.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from guest.net.schemes import _liteflow as lf
from guest.tools import (
    CheckedReport,
    DriverAbort,
    check_dmesg,
    check_unloaded,
    dmesg_lines,
    loaded_modules,
    sh,
)

CONTEXT_FIELDS = ("mi_duration_us", "pacing_rate_Bps", "send_rate_Bps", "delivery_rate_Bps", "mean_rtt_us",
                  "min_mean_rtt_us", "segs_sent", "segs_delivered", "segs_lost", "mss_bytes", "mi_min_rtt_us")
CONTEXT_BYTES = 4 * len(CONTEXT_FIELDS)
CHUNK = b"\0" * 65536


@dataclass
class Report(CheckedReport):
    transfers: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    sample_contexts: list = field(default_factory=list)


class Sink:
    """A loopback TCP server that reads and discards, on a thread; counts what it received."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.received = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1 << 16):
                    self.received += len(data)

    def close(self) -> None:
        self.server.close()


def connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, lf.CONGESTION_CONTROL.encode())
    sock.connect(("127.0.0.1", port))
    used = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
    if used != lf.CONGESTION_CONTROL:
        raise DriverAbort(f"the socket runs {used!r}, not {lf.CONGESTION_CONTROL!r}")
    return sock


def transfer(sink: Sink, seconds: float) -> dict:
    """Send as fast as lf_cc lets for `seconds`; returns bytes sent and the rate."""
    sent = 0
    with connect(sink.port) as sock:
        sock.settimeout(0.2)      # a send blocks while lf_cc paces slowly: time is what counts
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                sent += sock.send(CHUNK)
            except TimeoutError:
                pass
    return {"bytes": sent, "seconds": seconds, "mbit_s": round(sent * 8 / seconds / 1e6, 2)}


def load_error(nl, app_id: int, snapshot_id: int, blob: bytes) -> int:
    """0 if the blob loads, its errno otherwise."""
    try:
        nl.load_model(app_id, snapshot_id, blob)
    except OSError as exc:
        return exc.errno
    return 0


def main(plan: dict, base: Path) -> Report:
    from userspace.netlink import LiteFlowNetlink

    report = Report()
    dmesg_before = len(dmesg_lines())
    sink = None
    try:
        report.step = "load the core and lf_cc"
        lf.load_modules(base)
        sink = Sink()

        report.step = "traffic without a snapshot"
        report.transfers["no_snapshot"] = transfer(sink, plan["transfer_s"])
        stats = report.stats["no_snapshot"] = lf.lf_cc_stats()
        report.check("without a snapshot the fallback decides every interval, and counts it",
                     stats["intervals"] > 0 and stats["fallback_no_snapshot"] == stats["intervals"]
                     and stats["decisions"] == 0 and report.transfers["no_snapshot"]["bytes"] > 0, str(stats))

        with LiteFlowNetlink() as nl:
            app = nl.app(lf.APP)
            report.step = "refuse bad snapshots"
            for name, expected in (("wrong_sizes", errno.EINVAL), ("wrong_quant", errno.EPROTO)):
                got = load_error(nl, app.app_id, plan[name]["snapshot_id"], (base / plan[name]["blob"]).read_bytes())
                report.check(f"a snapshot with {name.replace('_', ' ')} is refused with "
                             f"{errno.errorcode[expected]}", got == expected,
                             f"got {errno.errorcode.get(got, got)}")
            report.check("the refusals left no snapshot active", nl.app(lf.APP).active_id == 0,
                         str(nl.app(lf.APP).active_id))

            report.step = "load the right snapshot"
            got = load_error(nl, app.app_id, plan["right"]["snapshot_id"], (base / plan["right"]["blob"]).read_bytes())
            report.check("the committed network's snapshot loads", got == 0, errno.errorcode.get(got, str(got)))

            report.step = "traffic with the snapshot, sampled"
            nl.set_sampling(app.app_id, 1, plan["sample_batch"])
            nl.subscribe_samples()
            before = lf.lf_cc_stats()
            report.transfers["snapshot"] = transfer(sink, plan["transfer_s"])
            after = report.stats["snapshot"] = lf.lf_cc_stats()
            decided = after["decisions"] - before["decisions"]
            report.check("with a snapshot the network decides the intervals",
                         decided > 0 and after["fallback_no_snapshot"] == before["fallback_no_snapshot"]
                         and after["fallback_error"] == 0, f"{decided} decisions; {after}")
            batch = nl.next_sample_batch(timeout=plan["sample_wait_s"])
            contexts = getattr(batch, "contexts", None) if batch is not None else None
            report.check(f"sampled decisions arrive with a {CONTEXT_BYTES}-byte context each",
                         batch is not None and contexts is not None and len(contexts) == len(batch.inputs)
                         and len(contexts[0]) == CONTEXT_BYTES and batch.snapshot_id == plan["right"]["snapshot_id"],
                         "no batch" if batch is None else f"{len(batch.inputs)} pairs, contexts {contexts!r:.200}")
            if contexts is not None and len(contexts):
                layout = f"<{len(CONTEXT_FIELDS)}I"
                decoded = [dict(zip(CONTEXT_FIELDS, struct.unpack(layout, bytes(c)))) for c in contexts]
                report.sample_contexts = decoded[:5]
                sane = all(c["mi_duration_us"] > 0 and c["pacing_rate_Bps"] > 0 and c["mean_rtt_us"] > 0
                           and c["mean_rtt_us"] >= c["min_mean_rtt_us"] > 0 and c["mss_bytes"] > 0
                           and 0 < c["mi_min_rtt_us"] <= c["mean_rtt_us"]
                           for c in decoded)
                report.check("every context describes a measured interval "
                             "(duration, rate, RTT >= its minimum, least sample <= mean, MSS)",
                             sane, str(decoded[:3]))
            nl.set_sampling(app.app_id, 0, 1)

        report.step = "remove lf_cc while a socket uses it"
        held = connect(sink.port)
        busy = sh("rmmod", "lf_cc", check=False)
        report.check("lf_cc cannot be removed while a socket uses it", busy.returncode != 0
                     and "lf_cc" in loaded_modules(), busy.stderr.strip())
        held.close()
        gone = False
        for _ in range(20):       # the socket's last reference goes once its close completes
            if sh("rmmod", "lf_cc", check=False).returncode == 0:
                gone = True
                break
            time.sleep(0.5)
        report.check("lf_cc is removed once no socket uses it", gone)
    except (DriverAbort, OSError, KeyError) as exc:
        report.check(f"step '{report.step}' completed", False, f"{type(exc).__name__}: {exc}")
    finally:
        if sink is not None:
            sink.close()
        report.step = "unload everything"
        check_unloaded(report)
        check_dmesg(report, dmesg_before)
    return report
