"""`python -m userspace.slowpath.serve`: run the slow-path service for one app (as root, in the guest).

    python -m userspace.slowpath.serve --app lf_test \
        --adapter userspace.slowpath.examples.target_tracking:TargetTracking \
        [--adapter-config cfg.json] [--update hot|module] [--threshold X] [--duration S] [--log FILE]

Stops after --duration seconds, or on SIGTERM/SIGINT at the end of the current round (the kernel
keeps whatever snapshot is active; a kill at any moment leaves it on the last good one).
Exit status: 0 after a normal stop, 2 on bad arguments, 1 when the service could not start.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from .service import DecisionLog, Service, ServiceConfig, load_adapter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m userspace.slowpath.serve", description=__doc__.splitlines()[0])
    p.add_argument("--app", required=True, help="LiteFlow app name (LIST_APPS)")
    p.add_argument("--adapter", required=True, help="module:Class, a subclass of userspace.slowpath.Adapter")
    p.add_argument("--adapter-config", type=Path, help="JSON object passed to the adapter as keyword arguments")
    p.add_argument("--update", choices=("hot", "module", "agent"), default="hot",
                   help="how a new snapshot reaches the datapath: LOAD_MODEL, a compiled module, or the "
                        "user-space agent (--agent-blob, --agent-pid; the kernel gets it too, for EVALUATE)")
    p.add_argument("--agent-blob", type=Path, help="--update agent: the blob file the agent serves")
    p.add_argument("--agent-pid", type=int, help="--update agent: the agent to SIGHUP after rewriting it")
    p.add_argument("--threshold", type=float, default=0.05, help="fidelity loss above which to update")
    p.add_argument("--window", type=int, default=3, help="rounds the stability metric must stay in the band")
    p.add_argument("--band", type=float, default=0.25, help="relative band of the stability metric")
    p.add_argument("--band-floor", type=float, default=1e-3,
                   help="the band is relative to max(|mean metric|, this)")
    p.add_argument("--duration", type=float, help="seconds to run (default: until SIGTERM)")
    p.add_argument("--log", type=Path, help="JSON-lines decision log (also echoed to stderr)")
    p.add_argument("--sample-every", type=int, default=64)
    p.add_argument("--sample-batch", type=int, default=128)
    p.add_argument("--flush-ms", type=int, default=None,
                   help="a partial sample batch is sent this long after its first pair (kernel default 100)")
    p.add_argument("--queue-batches", type=int, default=64)
    p.add_argument("--round-wait", type=float, default=5.0, help="max seconds a round waits for samples")
    p.add_argument("--min-round-samples", type=int, default=1)
    p.add_argument("--round-interval", type=float, default=0.0,
                   help="seconds between the starts of two rounds at least; samples collect meanwhile "
                        "(default 0: a round as soon as samples come)")
    p.add_argument("--active-blob", type=Path, help="blob of the snapshot active at start (its output scale)")
    p.add_argument("--work-dir", type=Path, default=ServiceConfig.work_dir)
    p.add_argument("--symvers", type=Path, help="the core's Module.symvers (needed by --update module)")
    p.add_argument("--include-dir", type=Path, default=ServiceConfig.include_dir)
    p.add_argument("--kernel-build-dir", type=Path, help="default /lib/modules/$(uname -r)/build")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = DecisionLog(args.log)
    config = ServiceConfig(
        app=args.app, update=args.update, threshold=args.threshold, window=args.window, band=args.band, band_floor=args.band_floor,
        sample_every=args.sample_every, sample_batch=args.sample_batch, flush_ms=args.flush_ms,
        queue_batches=args.queue_batches,
        round_wait_s=args.round_wait, min_round_samples=args.min_round_samples,
        round_interval_s=args.round_interval, work_dir=args.work_dir,
        include_dir=args.include_dir, symvers=args.symvers, kernel_build_dir=args.kernel_build_dir,
        active_blob=args.active_blob, duration_s=args.duration, agent_blob=args.agent_blob,
        agent_pid=args.agent_pid)
    from userspace.netlink import LiteFlowNetlink

    t0 = time.monotonic()
    kwargs = json.loads(args.adapter_config.read_text()) if args.adapter_config else {}
    try:
        adapter = load_adapter(args.adapter, kwargs)
        adapter.warm_up()
    except Exception as exc:  # noqa: BLE001
        import traceback

        log.write("fatal", where="load adapter", error=f"{type(exc).__name__}: {exc}",
                  traceback=traceback.format_exc())
        return 1
    kernel = LiteFlowNetlink()
    try:
        service = Service(kernel, adapter, config, log, sample_source=LiteFlowNetlink)  # made in the reader thread
        signal.signal(signal.SIGTERM, lambda *_: service.stop())
        signal.signal(signal.SIGINT, lambda *_: service.stop())
        log.write("ready", startup_s=round(time.monotonic() - t0, 3))
        service.run(args.duration)
    finally:
        kernel.close()
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
