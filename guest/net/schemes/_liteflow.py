"""Shared by the schemes that run lf_cc, LiteFlow's congestion control ("liteflow" in the kernel).

Every such scheme loads the core and lf_cc the host built for this kernel, installs the committed
network's snapshot as a hot-loaded blob (the same weights for every scheme, so only the deployment
differs), and after the traffic reads what lf_cc counted (monitor intervals, decisions, fallbacks)
and what the core counted (queries, errors, swaps, samples). The adapting scheme adds LiteFlow's
slow-path service on top; the frozen one does not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from guest.cgroup import BACKGROUND_WEIGHT, CpuGroup
from guest.tools import DriverAbort, loaded_modules, sh, unload_modules

CONGESTION_CONTROL = "liteflow"
APP = "cc"
MODULES = ("liteflow", "lf_cc")
PARAMS = Path("/sys/module/lf_cc/parameters")
STATS = PARAMS / "stats"
# lf_cc's module parameters an experiment may set (its data file's [lf_cc] table), with the value
# every other experiment runs with: each is written at every load, so none outlives its scheme
LF_CC_PARAMS = {"stale_min": False}
SERVICE_STOP_S = 30
# The slow path is background work: on the guest's two vCPUs it would otherwise take turns with
# the very datapath it tunes (TensorFlow's training steps against the flows' packet processing).
SERVICE_NICE = 19
SERVICE_CGROUP = "liteflow-slowpath"    # where a [slowpath] cpu_limit puts the service


def load_modules(work: Path, params: dict | None = None) -> None:
    """insmod the core and lf_cc from the plan's folder (each only if not loaded already), and set
    lf_cc's experiment parameters (`params` over LF_CC_PARAMS)."""
    present = loaded_modules()
    for name in MODULES:
        if name not in present:
            sh("insmod", str(work / f"{name}.ko"))
    if CONGESTION_CONTROL not in Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split():
        raise DriverAbort("lf_cc is loaded but 'liteflow' is not an available congestion control")
    unknown = set(params or {}) - set(LF_CC_PARAMS)
    if unknown:
        raise DriverAbort(f"unknown lf_cc parameters: {sorted(unknown)}")
    for name, value in {**LF_CC_PARAMS, **(params or {})}.items():
        (PARAMS / name).write_text(f"{int(value) if isinstance(value, bool) else value}\n")


def install_snapshot(work: Path, options: dict, app: str = APP) -> dict:
    """Hot-load the initial snapshot into `app`; returns the app as LIST_APPS reports it afterwards."""
    from userspace.netlink import LiteFlowNetlink

    blob = (work / options["blob"]).read_bytes()
    name = app
    with LiteFlowNetlink() as nl:
        app = nl.app(name)
        nl.load_model(app.app_id, int(options["snapshot_id"]), blob)
        app = nl.app(name)
    if app.active_id != int(options["snapshot_id"]):
        raise DriverAbort(f"snapshot {options['snapshot_id']} is not active after loading (active {app.active_id})")
    return {"app_id": app.app_id, "initial_snapshot_id": app.active_id}


def app_id() -> int:
    """The cc app's id in the core's registry."""
    from userspace.netlink import LiteFlowNetlink

    with LiteFlowNetlink() as nl:
        return nl.app(APP).app_id


def lf_cc_stats() -> dict:
    """lf_cc's counters (monitor intervals, snapshot decisions, fallbacks, samples)."""
    if not STATS.exists():
        return {}
    return {key: int(value) for key, value in (line.split() for line in STATS.read_text().splitlines())}


def core_stats(name: str = APP) -> dict:
    """The core's view of the app: queries, errors, swaps, samples sent and dropped."""
    from userspace.netlink import LiteFlowNetlink

    try:
        with LiteFlowNetlink() as nl:
            app = nl.app(name)
    except (OSError, LookupError) as exc:
        return {"error": str(exc)}
    return {key: getattr(app, key) for key in ("queries", "errors", "swaps", "samples_sent", "samples_dropped",
                                               "active_id") if hasattr(app, key)}


def unload() -> list[str]:
    """Take lf_cc out (sockets that used it are gone once the network is down); the core stays for
    the next scheme of the same guest session."""
    return unload_modules(["lf_cc"])


class Service:
    """LiteFlow's slow-path service adapting the cc app, started and stopped by pid."""

    def __init__(self, work: Path, options: dict, update: tuple[str, ...] = ("--update", "hot")):
        self.work = work
        self.options = options
        self.update = update
        self.log_path = work / "service.jsonl"
        self.stderr_path = work / "service.stderr"
        self.proc: subprocess.Popen | None = None
        self.started_unix: float | None = None
        limit = options.get("cpu_limit")
        self.cpu_limit = CpuGroup(SERVICE_CGROUP, BACKGROUND_WEIGHT, float(limit)) if limit else None
        self.cpu_stats: dict | None = None

    def start(self) -> float:
        """Start the service and wait until it is ready to serve; returns its start-up seconds."""
        opts = self.options
        config = self.work / "cc-adapter.json"
        config.write_text(json.dumps({"initial_model": str(self.work / opts["model"]), **opts.get("adapter", {})}))
        service_dir = self.work / "service"
        service_dir.mkdir(exist_ok=True)
        argv = ["nice", "-n", str(SERVICE_NICE), sys.executable, "-m", "userspace.slowpath.serve", "--app", APP,
                "--adapter", opts.get("adapter_class", "userspace.cc.adapter:CCAdapter"),
                "--adapter-config", str(config), *self.update,
                "--threshold", str(opts["threshold"]), "--window", str(opts["window"]),
                "--band-floor", str(opts.get("band_floor", 1e-3)),
                "--log", str(self.log_path), "--active-blob", str(self.work / opts["blob"]),
                "--work-dir", str(service_dir), "--round-wait", str(opts.get("round_wait_s", 2)),
                "--round-interval", str(opts.get("round_interval_s", 0)),
                "--sample-every", str(opts["sample_every"]), "--sample-batch", str(opts["sample_batch"])]
        if self.cpu_limit is not None:
            self.cpu_limit.create()
        self.started_unix = time.time()
        started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(self.stderr_path, "a"),
                                     env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
        deadline = started + float(opts.get("startup_timeout_s", 600))
        while not any(line.get("event") == "ready" for line in self.log()):
            if self.proc.poll() is not None:
                raise DriverAbort(f"the slow-path service exited ({self.proc.returncode}): "
                                  f"{self.stderr_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise DriverAbort("the slow-path service was not ready in time")
            time.sleep(1)
        if self.cpu_limit is not None:
            # from ready on, not before: start-up happens before any flow and is not charged to
            # them, and under the limit TensorFlow's import and warm-up took 120-180 s, not 60-90
            self.cpu_limit.add(self.proc.pid)
        return round(time.monotonic() - started, 1)

    def log(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        lines = []
        for text in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                pass  # the line being written
        return lines

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, the fault a crashed service is: the kernel must keep its last good snapshot."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._release_cpu_limit()

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SERVICE_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
        self._release_cpu_limit()

    def cpu(self) -> dict | None:
        """The service's CPU use under its limit (None without one): what the limit held back."""
        if self.cpu_limit is None or self.proc is None:
            return None
        return self.cpu_stats or self.cpu_limit.stats()

    def _release_cpu_limit(self) -> None:
        """Keep what the service's group used and was held back, then remove the group."""
        if self.cpu_limit is not None and self.cpu_stats is None and self.proc is not None:
            self.cpu_stats = self.cpu_limit.stats()
            self.cpu_limit.remove()

    def updates(self) -> list[dict]:
        """Every snapshot switch the service made: unix time, new snapshot id, fidelity loss."""
        return [{"t_unix": line["t"], "new_id": line.get("new_id"), "fidelity_loss": line.get("fidelity_loss")}
                for line in self.log() if line.get("result") == "switched"]

    def rejected(self) -> list[dict]:
        return [{"t_unix": line["t"], "step": line.get("rejected_step"), "reason": line.get("reason")}
                for line in self.log() if line.get("result") == "rejected"]
