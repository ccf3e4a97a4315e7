"""The guest half of the core's congestion-control API tests: what lf_cc relies on, checked with lf_test.

Runs inside the guest as root (`python -m guest.driver core_cc PLAN.json`) with the modules and blobs
the host prepared next to the plan. Each check is phrased as the behaviour the core must have:

- an app that declares a fixed quantization (lf_test quant_fixed=1) is never served a snapshot
  quantized otherwise: a hot load is refused with EPROTO and the core's extack reason, a snapshot
  module fails insmod with EPROTO, the active snapshot stays; the right quantization loads both ways;
- an app with context (lf_test context_size=40) reports pairs itself (debugfs "record":
  lf_query_model_ex + lf_record_sample with bottom halves off), and the "samples" group carries
  them with their contexts byte for byte; its plain queries are never sampled;
- a partial batch (batch 256, a few reports on one quiet CPU) arrives within FLUSH_MS and slack;
- SET_SAMPLING refuses FLUSH_MS out of range with ERANGE;
- rmmod of lf_test while a flush is pending is clean (and so is dmesg, checked at the end).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guest.tools import (
    LF_TEST_DEBUGFS,
    CheckedReport,
    DriverAbort,
    check_dmesg,
    check_unloaded,
    dmesg_lines,
    insmod_test,
    liteflow_modules,
    loaded_modules,
    sh,
    unload_modules,
)
from userspace.netlink import (
    QUANT_ANY,
    QUANT_FIXED,
    LfQuant,
    LiteFlowNetlink,
    LiteFlowNetlinkError,
)

APP_NAME = "lf_test"
EXTACK_QUANT = "snapshot quantization differs from the app's"
CPU = 0     # records come from one CPU, so they land in one per-CPU batch, in order


@dataclass
class Report(CheckedReport):
    flush_latency_s: float = 0.0
    flush_ms: int = 0


def main(plan: dict, base: Path) -> Report:
    report = Report()
    dmesg_before = len(dmesg_lines())
    started = time.monotonic()
    os.sched_setaffinity(0, {CPU})
    try:
        report.step = "load the core"
        sh("insmod", str(base / plan["core_module"]))
        _check_fixed_quantization(plan, base, report)
        _check_contexts(plan, base, report)
        _check_partial_flush(plan, base, report)
        _check_rmmod_with_pending_flush(plan, base, report)
    except (DriverAbort, OSError) as exc:  # LiteFlowNetlinkError is an OSError
        report.check(f"step '{report.step}' completed", False, f"{type(exc).__name__}: {exc}")
    finally:
        report.step = "unload everything"
        check_unloaded(report)
        report.timings_s["total"] = round(time.monotonic() - started, 3)
        check_dmesg(report, dmesg_before)
    return report


# ---------------------------------------------------------------------------- helpers


def _reload_test(plan: dict, base: Path, *extra: str) -> None:
    """lf_test afresh (its snapshot modules go too: rmmod'ing the app unpins them)."""
    failures = unload_modules([m for m in liteflow_modules() if m != "liteflow"])
    if failures:
        raise DriverAbort("; ".join(failures))
    if "liteflow" not in loaded_modules():
        sh("insmod", str(base / plan["core_module"]))
    insmod_test(plan, base, *extra)


def _quant_params(declared: dict) -> list[str]:
    i, o = declared["input"], declared["output"]
    return ["quant_fixed=1", f"in_zp={i[0]}", f"in_mult={i[1]}", f"in_shift={i[2]}",
            f"out_zp={o[0]}", f"out_mult={o[1]}", f"out_shift={o[2]}"]


def _load_outcome(call) -> tuple[str, str]:
    """("accepted", "") or the errno's symbol and the message (with the kernel's extack reason)."""
    try:
        call()
    except LiteFlowNetlinkError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno)), str(exc)
    return "accepted", ""


def _insmod_outcome(path: Path, app_id: int) -> tuple[str, str]:
    done = sh("insmod", str(path), f"app_id={app_id}", check=False)
    if done.returncode == 0:
        return "accepted", ""
    message = done.stderr.strip()
    for code, name in errno.errorcode.items():
        if os.strerror(code) in message:
            return name, message
    return "unknown", message


def _record(plan: dict, inputs: np.ndarray, contexts: np.ndarray) -> None:
    """One report per row through lf_test's record file, each one write() as the file wants."""
    fd = os.open(LF_TEST_DEBUGFS / "record", os.O_WRONLY)
    try:
        for x, c in zip(inputs, contexts):
            os.write(fd, x.astype(np.int8).tobytes() + c.astype(np.uint8).tobytes())
    finally:
        os.close(fd)


def _query(inputs: np.ndarray) -> None:
    fd = os.open(LF_TEST_DEBUGFS / "query", os.O_WRONLY)
    try:
        for x in inputs:
            os.write(fd, x.astype(np.int8).tobytes())
    finally:
        os.close(fd)


def _collect(nl: LiteFlowNetlink, app_id: int, want: int, timeout_s: float) -> list:
    """Sample batches of `app_id` until `want` pairs arrived or `timeout_s` passed."""
    batches, got = [], 0
    deadline = time.monotonic() + timeout_s
    while got < want and (left := deadline - time.monotonic()) > 0:
        batch = nl.next_sample_batch(left)
        if batch is not None and batch.app_id == app_id:
            batches.append(batch)
            got += len(batch.inputs)
    return batches


# ---------------------------------------------------------------------------- checks


def _check_fixed_quantization(plan: dict, base: Path, report: Report) -> None:
    report.step = "a FIXED app refuses other quantizations"
    declared = plan["declared"]
    insmod_test(plan, base, *_quant_params(declared))
    right, wrong = plan["right"], plan["wrong"]
    with LiteFlowNetlink() as nl:
        stats = nl.app(APP_NAME)
        report.check("LIST_APPS reports the declared quantization of a FIXED app",
                     stats.quant_mode == QUANT_FIXED and stats.input_quant == LfQuant(*declared["input"])
                     and stats.output_quant == LfQuant(*declared["output"]) and stats.context_size == 0,
                     f"{stats}")
        got, message = _load_outcome(lambda: nl.load_model(stats.app_id, right["snapshot_id"],
                                                           (base / right["blob"]).read_bytes()))
        report.check("hot load with the app's quantization accepted", got == "accepted", f"got {got} {message}")
        got, message = _load_outcome(lambda: nl.load_model(stats.app_id, wrong["snapshot_id"],
                                                           (base / wrong["blob"]).read_bytes()))
        report.check("hot load with another quantization refused with EPROTO and the core's reason",
                     got == "EPROTO" and EXTACK_QUANT in message, f"got {got} {message}")
        after = nl.app(APP_NAME)
        report.check("the active snapshot stays after the refused hot load",
                     after.active_id == right["snapshot_id"] and after.standby_id == 0
                     and after.active_input_quant == LfQuant(*declared["input"])
                     and after.active_output_quant == LfQuant(*declared["output"]),
                     f"active={after.active_id:#x} standby={after.standby_id:#x}")
        got, message = _insmod_outcome(base / plan["wrong_module"], stats.app_id)
        report.check("snapshot module with another quantization fails insmod with EPROTO", got == "EPROTO",
                     f"got {got} {message}")
        report.check("the core says which quantizations differ",
                     any("refused" in line and "quantizes input" in line for line in dmesg_lines()[-20:]),
                     "no pr_warn naming both")
        got, message = _insmod_outcome(base / plan["right_module"], stats.app_id)
        report.check("snapshot module with the app's quantization loads", got == "accepted", f"got {got} {message}")
        after = nl.app(APP_NAME)
        report.check("the module's snapshot is active", after.active_id == plan["right_module_id"]
                     and after.active_origin == plan["right_module"].removesuffix(".ko"),
                     f"active={after.active_id:#x} origin={after.active_origin}")


def _check_contexts(plan: dict, base: Path, report: Report) -> None:
    report.step = "contexts travel with their pairs"
    ctx = plan["context_size"]
    _reload_test(plan, base, f"context_size={ctx}")
    rng = np.random.default_rng(7)
    n = plan["context_reports"]
    inputs = rng.integers(-128, 128, (n, plan["input_size"]), dtype=np.int8)
    contexts = rng.integers(0, 256, (n, ctx), dtype=np.uint8)
    with LiteFlowNetlink() as nl:
        app = nl.app(APP_NAME)
        report.check("LIST_APPS reports an ANY app's context size",
                     app.quant_mode == QUANT_ANY and app.context_size == ctx and app.input_quant is None,
                     f"{app}")
        nl.load_model(app.app_id, plan["right"]["snapshot_id"], (base / plan["right"]["blob"]).read_bytes())
        nl.subscribe_samples()
        nl.set_sampling(app.app_id, 1, n)           # one full batch, no flush timer needed
        report.check("FLUSH_MS defaults to LF_NL_FLUSH_MS", nl.app(APP_NAME).flush_ms == plan["default_flush_ms"],
                     f"{nl.app(APP_NAME).flush_ms}")
        _query(inputs)                              # an app with context: queries are not sampled
        _record(plan, inputs, contexts)
        batches = _collect(nl, app.app_id, n, plan["sample_timeout_s"])
        got = sum(len(b.inputs) for b in batches)
        if not report.check(f"{n} reported pairs arrive on the samples group", got == n and batches,
                            f"{got} pairs in {len(batches)} batches"):
            return
        _, expected = nl.evaluate(app.app_id, inputs)
        seen_in = np.concatenate([b.inputs for b in batches])
        seen_ctx = np.concatenate([b.contexts for b in batches if b.contexts is not None]) \
            if all(b.contexts is not None for b in batches) else None
        report.check("contexts arrive byte-exact, row for row with their pairs",
                     seen_ctx is not None and np.array_equal(seen_ctx, contexts) and np.array_equal(seen_in, inputs),
                     f"contexts {None if seen_ctx is None else seen_ctx.shape}")
        report.check("outputs are what the active snapshot computed",
                     np.array_equal(np.concatenate([b.outputs for b in batches]), expected)
                     and all(b.snapshot_id == plan["right"]["snapshot_id"] for b in batches), "")
        stray = _collect(nl, app.app_id, 1, 1.0)
        report.check("plain queries of an app with context are not sampled", not stray,
                     f"{sum(len(b.inputs) for b in stray)} extra pairs")
        nl.set_sampling(app.app_id, 0, 1)


def _check_partial_flush(plan: dict, base: Path, report: Report) -> None:
    report.step = "a partial batch is flushed after FLUSH_MS"
    flush_ms, n, ctx = plan["flush_ms"], plan["flush_reports"], plan["context_size"]
    report.flush_ms = flush_ms
    rng = np.random.default_rng(8)
    inputs = rng.integers(-128, 128, (n, plan["input_size"]), dtype=np.int8)
    contexts = rng.integers(0, 256, (n, ctx), dtype=np.uint8)
    with LiteFlowNetlink() as nl:
        app_id = nl.app(APP_NAME).app_id
        for bad in (0, plan["flush_max_ms"] + 1):
            got, message = _load_outcome(lambda: nl.set_sampling(app_id, 1, 256, flush_ms=bad))
            report.check(f"FLUSH_MS={bad} refused with ERANGE", got == "ERANGE" and "FLUSH_MS" in message,
                         f"got {got} {message}")
        nl.subscribe_samples()
        nl.set_sampling(app_id, 1, plan["batch"], flush_ms=flush_ms)
        report.check("LIST_APPS reports FLUSH_MS", nl.app(APP_NAME).flush_ms == flush_ms, "")
        t0 = time.monotonic()
        _record(plan, inputs, contexts)
        batches = _collect(nl, app_id, n, flush_ms / 1000 + plan["flush_slack_s"] + 5)
        took = time.monotonic() - t0
        report.flush_latency_s = round(took, 3)
        got = sum(len(b.inputs) for b in batches)
        bound = flush_ms / 1000 + plan["flush_slack_s"]
        report.check(f"{n} pairs of a {plan['batch']}-pair batch arrive within FLUSH_MS + {plan['flush_slack_s']} s",
                     got == n and took < bound, f"{got} pairs after {took:.3f} s (bound {bound:.3f} s)")
        report.check("the partial batch waited for its flush delay (not sent at once)",
                     took >= 0.5 * flush_ms / 1000, f"{took:.3f} s")
        if batches:
            report.check("the flushed pairs carry their contexts",
                         all(b.contexts is not None for b in batches)
                         and np.array_equal(np.concatenate([b.contexts for b in batches]), contexts), "")
        nl.set_sampling(app_id, 0, 1)


def _check_rmmod_with_pending_flush(plan: dict, base: Path, report: Report) -> None:
    report.step = "rmmod while a flush is pending"
    ctx = plan["context_size"]
    rng = np.random.default_rng(9)
    inputs = rng.integers(-128, 128, (3, plan["input_size"]), dtype=np.int8)
    contexts = rng.integers(0, 256, (3, ctx), dtype=np.uint8)
    with LiteFlowNetlink() as nl:
        app_id = nl.app(APP_NAME).app_id
        nl.subscribe_samples()
        nl.set_sampling(app_id, 1, plan["batch"], flush_ms=plan["flush_max_ms"])
        _record(plan, inputs, contexts)
        done = sh("rmmod", "lf_test", check=False)
        report.check("rmmod lf_test with a flush pending succeeds", done.returncode == 0, done.stderr.strip())
        names = [a.name for a in nl.list_apps()]
        report.check("the app is gone", APP_NAME not in names, f"{names}")
    # the core's own teardown path with nothing left, then it comes back for the final unload
    done = sh("rmmod", "liteflow", check=False)
    report.check("the core unloads after it", done.returncode == 0, done.stderr.strip())
