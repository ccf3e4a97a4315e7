"""Guest half of the overhead experiment's update latency: both ways LiteFlow swaps a snapshot.

With the core and lf_test loaded and a snapshot active, each update installs a new snapshot the
way the slow path does it, with the service's own updaters and step timer (module updates first,
each followed by a hot load, then hot loads up to their count):

- hot: the weight blob sent with LOAD_MODEL (the core parses, validates and switches), split
  into the kernel's share, by its own clock, and the client's;
- module: C generated from the spec (Jinja2 templates), built with make against the running
  kernel's headers, insmod (whose init registers the snapshot and switches), after which the
  module left in standby is removed (timed apart: it is not on the update's critical path).

After every switch the kernel's active snapshot id is checked, so a timing is only kept for an
update that really happened.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from guest.tools import sh, unload_liteflow
from userspace.netlink import LiteFlowNetlink
from userspace.slowpath.service import (Candidate, HotUpdater, ModuleUpdater, ServiceConfig, StepTimer,
                                        remove_standby_module)
from userspace.snapshot import read_blob

INCLUDE_DIR = Path(__file__).resolve().parent.parent / "kernel" / "include"
APP = "lf_test"


def one_update(nl: LiteFlowNetlink, updater, app_id: int, cand: Candidate) -> dict:
    timer = StepTimer()
    started = time.monotonic()
    updater.prepare(cand, timer)
    updater.switch(cand, timer)
    total = time.monotonic() - started
    active = nl.app(APP).active_id
    if active != cand.snapshot_id:
        raise RuntimeError(f"{updater.kind} update of {cand.snapshot_id:#x} left {active:#x} active")
    if updater.kind == "hot" and "load_kernel" not in timer.seconds:
        raise RuntimeError("LOAD_MODEL's reply carried no kernel time: the core and this client disagree")
    return {"total_s": round(total, 4), "steps_s": timer.seconds}


def main(plan: dict, base: Path) -> dict:
    blobs = [(base / name).read_bytes() for name in plan["blobs"]]
    report: dict = {"hot": [], "module": [], "standby_rmmod_s": []}
    sh("insmod", str(base / "liteflow.ko"))
    try:
        sh("insmod", str(base / "lf_test.ko"), "input_size=30", "output_size=1")
        with LiteFlowNetlink() as nl, tempfile.TemporaryDirectory() as work:
            app_id = nl.app(APP).app_id
            nl.load_model(app_id, 1, blobs[0])
            config = ServiceConfig(app=APP, work_dir=Path(work),
                                   include_dir=INCLUDE_DIR, symvers=base / "core.Module.symvers")
            updaters = {"hot": HotUpdater(nl, app_id), "module": ModuleUpdater(nl, APP, app_id, config)}
            snapshot_id = 1

            def update(kind: str) -> None:
                nonlocal snapshot_id
                snapshot_id += 1
                blob = blobs[snapshot_id % len(blobs)]
                cand = Candidate(snapshot_id=snapshot_id, spec=read_blob(blob), blob=blob)
                report[kind].append(one_update(nl, updaters[kind], app_id, cand))

            for _ in range(plan["module_updates"]):
                update("module")
                # the next hot load displaces the module into standby: remove it, timed apart
                update("hot")
                t0 = time.monotonic()
                if remove_standby_module(nl, APP):
                    report["standby_rmmod_s"].append(round(time.monotonic() - t0, 4))
            while len(report["hot"]) < plan["hot_updates"]:
                update("hot")
    finally:
        unload_liteflow()
    return report

