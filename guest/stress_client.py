"""A netlink client that runs against the core while `guest/stress.py` swaps snapshots.

    python -m guest.stress_client privileged|unprivileged PLAN.json STOP_FILE

The unprivileged client cannot read root's plan folder: its PLAN is a copy holding only
`input_size`, next to STOP_FILE in a folder anyone can read. It loops until STOP_FILE exists, then prints one JSON line: requests made, answers by kind, and
every unexpected answer. Privileged: LIST_APPS, EVALUATE (the answer must be the user-space
engine's outputs for the snapshot that gave it, whichever of the plan's snapshots that was) and
SET_SAMPLING on and off with the samples drained. Unprivileged: LIST_APPS must work, EVALUATE
and SET_SAMPLING must be refused with EPERM.
"""

from __future__ import annotations

import collections
import errno
import json
import sys
import time
from pathlib import Path

import numpy as np

from userspace.netlink import LiteFlowNetlink, LiteFlowNetlinkError

APP_NAME = "lf_test"
SAMPLE_EVERY, SAMPLE_BATCH = 64, 16
DRAIN_TIMEOUT_S = 0.01
DRAIN_BUDGET_S = 0.5


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in ("privileged", "unprivileged"):
        print(__doc__, file=sys.stderr)
        return 2
    role, plan_path, stop_file = argv[1], Path(argv[2]), Path(argv[3])
    plan = json.loads(plan_path.read_text())
    if role == "privileged":
        base = plan_path.parent
        inputs = np.load(base / plan["fixed_inputs"])
        expected = {int(k): np.load(base / v) for k, v in plan["expected_outputs"].items()}
        model_of = {s["snapshot_id"]: s["model"] for s in [plan["first_snapshot"], *plan["swaps"]]}
    counts: collections.Counter = collections.Counter()
    unexpected: list[str] = []
    with LiteFlowNetlink() as nl:
        app_id = nl.app(APP_NAME).app_id
        if role == "privileged":
            nl.subscribe_samples()
        round_ = 0
        while not stop_file.exists():
            round_ += 1
            counts["list"] += nl.app(APP_NAME).app_id == app_id
            if role == "privileged":
                _privileged_round(nl, app_id, round_, inputs, expected, model_of, counts, unexpected)
            else:
                _unprivileged_round(nl, app_id, plan["input_size"], counts, unexpected)
            if len(unexpected) > 50:
                break
    requests = counts["list"] + counts["evaluate"] + counts["sampling"] + counts["refused"]
    print(json.dumps({"role": role, "requests": requests, "counts": dict(counts), "unexpected": unexpected}))
    return 0


def _privileged_round(nl: LiteFlowNetlink, app_id: int, round_: int, inputs: np.ndarray,
                      expected: dict[int, np.ndarray], model_of: dict[int, int],
                      counts: collections.Counter, unexpected: list[str]) -> None:
    evaluated_id, outputs = nl.evaluate(app_id, inputs)
    counts["evaluate"] += 1
    if evaluated_id not in model_of:
        unexpected.append(f"EVALUATE answered by unknown snapshot {evaluated_id:#x}")
    elif not np.array_equal(outputs, expected[model_of[evaluated_id]]):
        unexpected.append(f"EVALUATE by {evaluated_id:#x}: outputs differ from the engine's")
    nl.set_sampling(app_id, every=SAMPLE_EVERY if round_ % 2 else 0, batch=SAMPLE_BATCH)
    counts["sampling"] += 1
    # lf_test's queries on every vCPU can produce batches faster than Python drains them: drain
    # for a bounded time, so the loop gets back to its stop file; what is left is read next round.
    deadline = time.monotonic() + DRAIN_BUDGET_S
    while time.monotonic() < deadline:
        try:
            batch = nl.next_sample_batch(DRAIN_TIMEOUT_S)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:   # a full socket is the subscriber's problem, said once
                raise
            counts["samples_overflow"] += 1
            continue
        if batch is None:
            break
        counts["sample_batches"] += 1


def _unprivileged_round(nl: LiteFlowNetlink, app_id: int, input_size: int, counts: collections.Counter,
                        unexpected: list[str]) -> None:
    for name, call in (("EVALUATE", lambda: nl.evaluate(app_id, np.zeros((1, input_size), np.int8))),
                       ("SET_SAMPLING", lambda: nl.set_sampling(app_id, every=1, batch=1))):
        try:
            call()
            unexpected.append(f"{name} accepted from an unprivileged user")
        except LiteFlowNetlinkError as exc:
            if exc.errno == errno.EPERM:
                counts["refused"] += 1
            else:
                unexpected.append(f"{name}: {errno.errorcode.get(exc.errno, exc.errno)} instead of EPERM")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
