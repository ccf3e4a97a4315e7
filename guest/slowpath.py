"""The guest half of the slow-path experiment: the service follows a target that changes mid-run.

Runs inside the guest as root (`python -m guest.driver slowpath PLAN.json`), with the project's
code from the read-only share and the host-prepared files next to the plan (liteflow.ko,
lf_test.ko, core.Module.symvers, the initial snapshot's blob and Keras model, held-out inputs).

Steps: load the core and lf_test, hot-load the initial snapshot (trained on target A), start
the slow-path service (`python -m userspace.slowpath.serve`, the example adapter
`TargetTracking`), once it is ready start lf_test's stress threads (random int8 queries on every
vCPU) and wait until the service has run a few rounds on target A; then switch the target to B
and measure, with EVALUATE on the held-out inputs (the kernel's own arithmetic), the kernel's
active snapshot's error on target B until it falls below the bound. With `kill_mid_update`, the target then goes back to A and the
service is SIGKILLed a moment after it logs the start of an update: the kernel must go on serving
the last good snapshot (same id, same outputs as its blob, no failed query), and a restarted
service must pick up from it and make the kernel follow A. Prints one JSON report on stdout
(last line).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from guest.tools import dmesg_lines, kernel_trouble, read_stress, sh, unload_liteflow, write_debugfs
from userspace.netlink import LiteFlowNetlink
from userspace.slowpath.examples.target_tracking import INPUT_ENCODING, target
from userspace.slowpath.interface import Encoding

APP = "lf_test"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc, in seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written
    return out


def error_on(nl: LiteFlowNetlink, app_id: int, held_out: np.ndarray, encodings: dict[int, Encoding],
             name: str) -> tuple[int, float | None]:
    sid, out = nl.evaluate(app_id, held_out)
    enc = encodings.get(sid)
    if enc is None:
        return sid, None
    return sid, float(np.mean(np.abs(enc.to_real(out) - target(name, INPUT_ENCODING.to_real(held_out)))))


def wait_for_log(log_path: Path, proc: subprocess.Popen, base: Path, deadline: float,
                 reached: Callable[[list[dict]], bool]) -> list[dict]:
    """The service's log once `reached` holds for it; an error if the service exits or the
    deadline passes first."""
    while True:
        lines = read_log(log_path)
        if reached(lines):
            return lines
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode}): "
                               f"{(base / 'service.stderr').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not get there in time; its log ends {lines[-3:]}")
        time.sleep(2)


def start_service(argv: list[str], base: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(base / "service.stderr", "a"),
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})


def follow_target(nl: LiteFlowNetlink, app_id: int, held_out: np.ndarray, encodings: dict[int, Encoding],
                  name: str, bound: float, log_path: Path, proc: subprocess.Popen, timeout_s: float,
                  timeline: list) -> float | None:
    """Seconds until the kernel's active snapshot's error on target `name` is under the bound
    (None on timeout), recording the way there in `timeline`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        for line in read_log(log_path):
            if line.get("result") == "switched":
                encodings[line["new_id"]] = Encoding(**line["output_encoding"])
        sid, err = error_on(nl, app_id, held_out, encodings, name)
        t = round(time.monotonic() - started, 1)
        timeline.append({"t": t, "active_id": sid, f"error_{name}": None if err is None else round(err, 4)})
        if err is not None and err < bound:
            return t
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode})")
        time.sleep(2)
    return None


def kill_mid_update(nl: LiteFlowNetlink, app_id: int, held_out: np.ndarray, blobs: dict[int, bytes],
                    log_path: Path, proc: subprocess.Popen, plan: dict) -> dict:
    """SIGKILL the service a moment after it starts an update; the kernel must go on serving the
    snapshot that was active, exactly, with no failed query."""
    from userspace.snapshot import Engine

    started_unix = time.time()
    deadline = time.monotonic() + plan["recover_timeout_s"]
    begin = None
    while begin is None:
        begun = [l for l in read_log(log_path) if l["event"] == "update-begin" and l["t"] >= started_unix]
        begin = begun[0] if begun else None
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode}) before an update began")
        if time.monotonic() > deadline:
            raise RuntimeError("the service began no update after the target changed back")
        time.sleep(0.5)
    time.sleep(plan["kill_delay_s"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_unix = time.time()
    finished = [l for l in read_log(log_path) if l.get("result") in ("switched", "rejected")
                and l["t"] >= begin["t"]]
    stress_before = read_stress()
    time.sleep(2)
    stress_after = read_stress()
    sid, out = nl.evaluate(app_id, held_out)
    expected = blobs.get(begin["active_id"])
    serving_last_good = (sid == begin["active_id"] and expected is not None
                         and np.array_equal(out, Engine.from_blob(expected).infer(held_out)))
    return {"update_began_active_id": begin["active_id"], "seconds_into_update": round(killed_unix - begin["t"], 1),
            "mid_update": not finished, "active_after_kill": sid, "serving_last_good": bool(serving_last_good),
            "queries_after_kill": stress_after["queries"] - stress_before["queries"],
            "stress_errors": stress_after["errors"]}


def main(plan: dict, base: Path) -> dict:
    work = base / "service"
    work.mkdir(exist_ok=True)
    log_path = base / "service.jsonl"
    control = base / "target"
    report: dict = {"ok": False, "step": "start", "timeline": []}
    held_out = np.load(base / plan["held_out"])
    dmesg_before = len(dmesg_lines())
    proc = None
    started = time.monotonic()
    try:
        report["step"] = "load core and lf_test"
        sh("insmod", str(base / "liteflow.ko"))
        sh("insmod", str(base / "lf_test.ko"), "input_size=30", "output_size=1")
        with LiteFlowNetlink() as nl:
            app_id = nl.app(APP).app_id
            report["step"] = "install the initial snapshot (target A)"
            blob = (base / plan["initial_blob"]).read_bytes()
            nl.load_model(app_id, plan["initial_id"], blob)
            from userspace.snapshot import read_blob

            encodings = {plan["initial_id"]: Encoding.of(read_blob(blob).output_quant)}
            report["initial_error"] = {n: error_on(nl, app_id, held_out, encodings, n)[1] for n in "AB"}

            report["step"] = "start the service"
            control.write_text("A")
            adapter_cfg = base / "adapter.json"
            adapter_cfg.write_text(json.dumps({"initial_model": str(base / plan["initial_model"]),
                                               "control_file": str(control), **plan["adapter"]}))
            argv = [sys.executable, "-m", "userspace.slowpath.serve", "--app", APP,
                    "--adapter", "userspace.slowpath.examples.target_tracking:TargetTracking",
                    "--adapter-config", str(adapter_cfg), "--update", plan["update"],
                    "--threshold", str(plan["threshold"]), "--band-floor", str(plan["band_floor"]),
                    "--window", str(plan["window"]), "--log", str(log_path),
                    "--active-blob", str(base / plan["initial_blob"]), "--work-dir", str(work),
                    "--symvers", str(base / "core.Module.symvers"), "--round-wait", "2",
                    "--sample-every", str(plan["sample_every"]), "--sample-batch", "128"]
            t_service = time.monotonic()
            proc = start_service(argv, base)
            report["service_pid"] = proc.pid

            deadline = time.monotonic() + plan["startup_timeout_s"]
            report["step"] = "service start-up"
            wait_for_log(log_path, proc, base, deadline, lambda lines: any(l["event"] == "ready" for l in lines))
            # The stress starts once the service is ready, before its first round: every snapshot
            # swap happens under it, but TensorFlow's import and tracing (which swap nothing) do
            # not compete with it on the two vCPUs, where under it they took 140 s.
            report["step"] = "start stress"
            write_debugfs("stress", str(10**12))

            report["step"] = "service warm-up on target A"
            lines = wait_for_log(log_path, proc, base, deadline, lambda lines: sum(
                1 for l in lines if l["event"] == "round" and l.get("samples")) >= plan["warmup_rounds"])
            ready = [l for l in lines if l["event"] == "ready"]
            report["service_startup_s"] = ready[0]["startup_s"] if ready else None
            report["warmup_s"] = round(time.monotonic() - t_service, 1)
            report["updates_on_A"] = sum(1 for l in lines if l.get("action") == "update")

            report["step"] = "switch the target to B and wait for the kernel to follow"
            control.write_text("B")
            t_switch = time.monotonic()
            cpu_at_switch = cpu_seconds(proc.pid)
            recovered_at = follow_target(nl, app_id, held_out, encodings, "B", plan["bound"], log_path, proc,
                                         plan["recover_timeout_s"], report["timeline"])
            report["time_to_recover_s"] = recovered_at
            report["final_error"] = {n: error_on(nl, app_id, held_out, encodings, n)[1] for n in "AB"}

            adapting_wall_s = time.monotonic() - t_switch
            adapting_cpu_s = cpu_seconds(proc.pid) - cpu_at_switch
            report["service_cpu"] = {"cpu_s": round(adapting_cpu_s, 2), "wall_s": round(adapting_wall_s, 2),
                                     "cores": round(adapting_cpu_s / adapting_wall_s, 3)}

            if plan["kill_mid_update"] and recovered_at is not None:
                report["step"] = "target back to A; SIGKILL the service mid-update"
                control.write_text("A")
                blobs = {plan["initial_id"]: blob, **saved_blobs(work)}
                report["kill"] = kill_mid_update(nl, app_id, held_out, blobs, log_path, proc, plan)
                proc = None
                report["step"] = "restart the service; the kernel follows target A"
                proc = start_service(argv, base)
                report["kill"]["time_to_recover_after_restart_s"] = follow_target(
                    nl, app_id, held_out, encodings, "A", plan["bound"], log_path, proc,
                    plan["startup_timeout_s"] + plan["recover_timeout_s"], report.setdefault("kill_timeline", []))

            report["step"] = "stop the service"
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=plan["stop_timeout_s"])
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            report["service_exit"] = proc.returncode
            proc = None

            report["step"] = "stop stress and read counters"
            write_debugfs("stress", "0")
            report["stress"] = read_stress()
            stats = nl.app(APP)
            report["core"] = {"queries": stats.queries, "errors": stats.errors, "swaps": stats.swaps,
                              "samples_sent": stats.samples_sent, "samples_dropped": stats.samples_dropped,
                              "active_id": stats.active_id, "active_origin": stats.active_origin}
        lines = read_log(log_path)
        switched = [l for l in lines if l.get("result") == "switched"]
        report["updates"] = len(switched)
        report["rejected"] = [l.get("reason") for l in lines if l.get("result") == "rejected"]
        report["adapter_errors"] = sum(1 for l in lines if l["event"] == "adapter-error")
        report["update_steps_s"] = [l["update_steps_s"] for l in switched]
        stop = [l for l in lines if l["event"] == "stop"]
        report["service_counters"] = stop[-1] if stop else None
        report["rounds"] = [{k: l.get(k) for k in ("t", "round", "samples", "stability_metric", "stable",
                                                   "fidelity_loss", "action", "steps_s")}
                            for l in lines if l["event"] == "round"][-60:]
        report["failed_queries"] = report["stress"]["errors"] + report["core"]["errors"]
        report["ok"] = (recovered_at is not None and report["updates"] >= 1 and report["failed_queries"] == 0
                        and (not plan["kill_mid_update"] or kill_survived(report.get("kill"))))
        report["step"] = "done"
    except Exception as exc:  # noqa: BLE001 - reported, then cleaned up
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        try:
            write_debugfs("stress", "0")
        except OSError:
            pass
        report["service_stderr_tail"] = (base / "service.stderr").read_text()[-3000:] \
            if (base / "service.stderr").exists() else ""
        unload_liteflow()
        new = dmesg_lines()[dmesg_before:]
        report["dmesg_trouble"] = kernel_trouble(new)[:20]
        if report["dmesg_trouble"]:
            report["ok"] = False
        report["total_s"] = round(time.monotonic() - started, 1)
    return report


def saved_blobs(work: Path) -> dict[int, bytes]:
    """The blobs the service saved of every snapshot it made live, by snapshot id."""
    return {int(path.stem, 16): path.read_bytes() for path in (work / "snapshots").glob("*.blob")}


def kill_survived(kill: dict | None) -> bool:
    return bool(kill and kill["mid_update"] and kill["serving_last_good"] and kill["stress_errors"] == 0
                and kill["queries_after_kill"] > 0 and kill.get("time_to_recover_after_restart_s") is not None)
