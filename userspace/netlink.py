"""Client of the LiteFlow core's generic netlink family (plain sockets, pyroute2 message classes).

The slow path and the test harness talk to the kernel only through this class: stats, sampling,
evaluation of the active snapshot with the kernel's own arithmetic, hot weight loads and the
in-kernel micro-benchmark, and the round-trip benchmark of the user-space baseline (whose agent
is C: userspace/agent). Kernel errors come back as `LiteFlowNetlinkError` carrying the errno,
so callers can tell EPERM (unprivileged) from EINVAL (bad blob) from ENOENT (no snapshot).
"""

from __future__ import annotations

import errno
import struct
import time
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, genlmsg

from userspace.genl import GenlRequester, GenlRequestError, GenlSubscriber, resolve_family
from userspace.uapi import load_uapi


# Requests in a row whose every round trip timed out before upcall_bench gives up on the agent.
UPCALL_GIVE_UP_REQUESTS = 3

# enum lf_app_quant_mode (kernel/include/liteflow.h): LIST_APPS's QUANT_MODE.
QUANT_FIXED = 0     # every snapshot must use the app's declared quantization (else EPROTO)
QUANT_ANY = 1       # any quantization; the app reads the active one per query

_LF_QUANT = struct.Struct("=iii")   # struct lf_quant: zero_point, scale_multiplier, scale_shift


class LfQuant(NamedTuple):
    """struct lf_quant: real = (q - zero_point) * multiplier * 2^(shift - 31)."""

    zero_point: int
    multiplier: int
    shift: int

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "LfQuant | None":
        if raw is None:
            return None
        if len(raw) != _LF_QUANT.size:
            raise LiteFlowNetlinkError(errno.EPROTO, f"struct lf_quant of {len(raw)} bytes, not {_LF_QUANT.size}")
        return cls(*_LF_QUANT.unpack(raw))

    @classmethod
    def of(cls, quant) -> "LfQuant":
        """From anything with zero_point, multiplier and shift (userspace.snapshot.Quant)."""
        return cls(int(quant.zero_point), int(quant.multiplier), int(quant.shift))

    def pack(self) -> bytes:
        return _LF_QUANT.pack(*self)


class LiteFlowNetlinkError(OSError):
    """A LiteFlow netlink command failed in the kernel; `errno` says why."""


@cache
def _message_class() -> type:
    uapi = load_uapi()
    ordered = sorted(uapi.attributes.items(), key=lambda item: item[1][0])
    nla_map = tuple((f"LF_ATTR_{name}", nla_type) for name, (_, nla_type) in ordered)
    return type("lf_genlmsg", (genlmsg,), {"prefix": "LF_ATTR_", "nla_map": nla_map})


@dataclass(frozen=True)
class AppStats:
    app_id: int
    name: str
    input_size: int
    output_size: int
    queries: int
    errors: int
    active_id: int
    standby_id: int
    active_origin: str
    standby_origin: str
    samples_sent: int
    samples_dropped: int
    sample_every: int
    sample_batch: int
    swaps: int
    io_count: int
    max_macs: int = 0    # the app's cost budget per query (0: a core that has none)
    context_size: int = 0                      # bytes of app context per sample (0: none)
    flush_ms: int = 0                          # a partial sample batch's flush delay (0: sampling off)
    quant_mode: int = QUANT_ANY                # QUANT_FIXED or QUANT_ANY
    input_quant: LfQuant | None = None         # declared, QUANT_FIXED apps only
    output_quant: LfQuant | None = None
    active_input_quant: LfQuant | None = None  # the active snapshot's (None: no active snapshot)
    active_output_quant: LfQuant | None = None

    @property
    def quant_fixed(self) -> bool:
        return self.quant_mode == QUANT_FIXED


@dataclass(frozen=True)
class BenchResult:
    app_id: int
    snapshot_id: int
    iterations: int
    total_ns: int
    ns_per_query: int
    macs: int


@dataclass(frozen=True)
class UpcallBenchResult:
    """UPCALL_BENCH: round trips kernel -> user-space agent -> kernel (the user-space baseline)."""

    app_id: int
    iterations: int
    total_ns: int
    ns_per_query: int
    errors: int          # failed round trips (timeouts included)
    timeouts: int
    stale_answers: int   # answers whose query had already given up


@dataclass(frozen=True)
class SampleBatch:
    app_id: int
    snapshot_id: int
    inputs: np.ndarray  # int8 [k, input_size]
    outputs: np.ndarray  # int8 [k, output_size]
    dropped_total: int
    contexts: np.ndarray | None = None  # uint8 [k, context_size] for an app with context


class LiteFlowNetlink:
    """The `liteflow` family's client: a request socket, and a samples socket once subscribed;
    use as a context manager."""

    def __init__(self) -> None:
        self._uapi = load_uapi()
        self._msg = _message_class()
        try:
            family_id, self._groups = resolve_family(self._uapi.family)
        except GenlRequestError as exc:
            if exc.errno != errno.ENOENT:
                raise LiteFlowNetlinkError(exc.errno, f"looking up {self._uapi.family!r}: {exc.strerror}") from exc
            raise LiteFlowNetlinkError(
                errno.ENOENT, f"generic netlink family {self._uapi.family!r} not found: is liteflow.ko loaded?"
            ) from exc
        self._requests = GenlRequester(family_id, self._msg)
        self._samples: GenlSubscriber | None = None

    def __enter__(self) -> "LiteFlowNetlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._requests.close()
        if self._samples is not None:
            self._samples.close()

    # -- requests -----------------------------------------------------------------------------

    def _request(self, command: str, attrs: dict[str, object], dump: bool = False) -> list:
        msg = self._msg()
        msg["cmd"] = self._uapi.commands[command]
        msg["version"] = self._uapi.version
        msg["attrs"] = [(f"LF_ATTR_{key}", value) for key, value in attrs.items()]
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        try:
            replies = self._requests.request(msg, flags)
        except GenlRequestError as exc:
            raise LiteFlowNetlinkError(exc.errno, f"{command}: {exc.strerror}") from exc
        return [r for r in replies if r.get("cmd") == self._uapi.commands[command]]

    def list_apps(self) -> list[AppStats]:
        return [self._app_stats(reply) for reply in self._request("LIST_APPS", {}, dump=True)]

    def app(self, name: str) -> AppStats:
        for stats in self.list_apps():
            if stats.name == name:
                return stats
        raise LiteFlowNetlinkError(errno.ENOENT, f"no LiteFlow app named {name!r}")

    def set_sampling(self, app_id: int, every: int, batch: int, flush_ms: int | None = None) -> None:
        """Sample every Nth query (or report, for an app with context) per CPU, `batch` pairs a
        message; a partial batch goes out `flush_ms` after its first pair (kernel default
        LF_NL_FLUSH_MS; 1..LF_NL_FLUSH_MAX_MS, else ERANGE). every=0 turns sampling off."""
        attrs: dict[str, object] = {"APP_ID": app_id, "SAMPLE_EVERY": every, "SAMPLE_BATCH": batch}
        if flush_ms is not None:
            attrs["FLUSH_MS"] = flush_ms
        self._request("SET_SAMPLING", attrs)

    def evaluate(self, app_id: int, inputs: np.ndarray) -> tuple[int, np.ndarray]:
        """Run the kernel's active snapshot on `inputs` (int8 [k, n]); returns (snapshot id, outputs)."""
        inputs = np.ascontiguousarray(inputs, dtype=np.int8)
        if inputs.ndim != 2:
            raise ValueError("inputs must be a 2-D int8 array [k, input_size]")
        limit = self._uapi.limits["EVAL_MAX_VECTORS"]
        snapshot_id, outputs = 0, []
        for start in range(0, len(inputs), limit):
            chunk = inputs[start : start + limit]
            (reply,) = self._request("EVALUATE", {"APP_ID": app_id, "INPUTS": chunk.tobytes()})
            snapshot_id = reply.get_attr("LF_ATTR_SNAPSHOT_ID")
            count = reply.get_attr("LF_ATTR_COUNT")
            raw = np.frombuffer(reply.get_attr("LF_ATTR_OUTPUTS"), dtype=np.int8)
            outputs.append(raw.reshape(count, -1))
        return snapshot_id, np.concatenate(outputs)

    def load_model(self, app_id: int, snapshot_id: int, blob: bytes) -> int | None:
        """Hot update: the kernel parses and validates `blob`, installs it in standby and switches.

        Returns the nanoseconds the kernel spent on it by its own clock (None if its reply was
        lost: the ACK alone says the switch happened). A netlink attribute carries at most
        LF_NL_BINARY_MAX bytes, so a larger blob (up to LF_NL_BLOB_MAX, the engine's own limit)
        goes in ordered chunks; the kernel loads it with the last one, whose time is returned.
        EEXIST: the id is already loaded; EFBIG: over the app's cost budget.
        """
        chunk_max = self._uapi.limits["BINARY_MAX"]
        if len(blob) <= chunk_max:
            replies = self._request("LOAD_MODEL", {"APP_ID": app_id, "SNAPSHOT_ID": snapshot_id, "BLOB": blob})
            return replies[0].get_attr("LF_ATTR_TOTAL_NS") if replies else None
        if len(blob) > self._uapi.limits["BLOB_MAX"]:
            raise LiteFlowNetlinkError(errno.E2BIG, f"LOAD_MODEL: blob of {len(blob)} bytes exceeds the engine's "
                                                    f"{self._uapi.limits['BLOB_MAX']}-byte limit")
        replies = []
        for offset in range(0, len(blob), chunk_max):
            replies = self._request("LOAD_MODEL", {"APP_ID": app_id, "SNAPSHOT_ID": snapshot_id,
                                                   "BLOB_SIZE": len(blob), "BLOB_OFFSET": offset,
                                                   "BLOB": blob[offset : offset + chunk_max]})
        return replies[0].get_attr("LF_ATTR_TOTAL_NS") if replies else None

    def swap(self, app_id: int) -> None:
        self._request("SWAP", {"APP_ID": app_id})

    def bench(self, app_id: int, iterations: int) -> BenchResult:
        """Run the active snapshot `iterations` times in the kernel. The kernel bounds each BENCH
        request (LF_NL_BENCH_MAX_NS: a handler holds generic netlink's lock), so this loops over
        requests and sums; a snapshot swapped mid-run shows as the last request's id."""
        done = total_ns = 0
        reply = None
        while done < iterations:
            ask = min(iterations - done, load_uapi().limits["BENCH_MAX_ITERS"])
            (reply,) = self._request("BENCH", {"APP_ID": app_id, "ITERATIONS": ask})
            ran = reply.get_attr("LF_ATTR_ITERATIONS")
            if not 0 < ran <= ask:
                raise LiteFlowNetlinkError(errno.EPROTO, f"BENCH: the kernel ran {ran} of {ask} iterations")
            done += ran
            total_ns += reply.get_attr("LF_ATTR_TOTAL_NS")
        if reply is None:
            raise ValueError("iterations must be positive")
        return BenchResult(
            app_id=reply.get_attr("LF_ATTR_APP_ID"),
            snapshot_id=reply.get_attr("LF_ATTR_SNAPSHOT_ID"),
            iterations=done,
            total_ns=total_ns,
            ns_per_query=total_ns // done,
            macs=reply.get_attr("LF_ATTR_MACS"),
        )

    def upcall_bench(self, app_id: int, iterations: int, timeout_ms: int | None = None) -> UpcallBenchResult:
        """Time `iterations` kernel -> agent -> kernel round trips through the app's registered
        user-space agent (ENOTCONN when none). Blocks for the whole run, as a loop of requests the
        kernel bounds in time (LF_NL_UPCALL_MAX_NS); `timeout_ms` bounds each round trip (kernel
        default LF_NL_UPCALL_TIMEOUT_MS). The kernel gives up on a silent agent after a few
        timeouts in a row within a request; across requests this loop does, counting the rest as
        errors, so a dead agent costs seconds, not iterations times the timeout."""
        done = total_ns = errors = timeouts = stale = timed_out_requests = 0
        while done < iterations:
            attrs: dict[str, object] = {"APP_ID": app_id,
                                        "ITERATIONS": min(iterations - done, load_uapi().limits["UPCALL_MAX_ITERS"])}
            if timeout_ms is not None:
                attrs["TIMEOUT_MS"] = timeout_ms
            (reply,) = self._request("UPCALL_BENCH", attrs)
            ran = reply.get_attr("LF_ATTR_ITERATIONS")
            if ran <= 0:
                raise LiteFlowNetlinkError(errno.EPROTO, "UPCALL_BENCH: the kernel accounted for no round trip")
            done += ran
            total_ns += reply.get_attr("LF_ATTR_TOTAL_NS")
            errors += reply.get_attr("LF_ATTR_ERRORS")
            req_timeouts = reply.get_attr("LF_ATTR_TIMEOUTS")
            timeouts += req_timeouts
            stale += reply.get_attr("LF_ATTR_STALE_ANSWERS")
            timed_out_requests = timed_out_requests + 1 if req_timeouts and req_timeouts == ran else 0
            if timed_out_requests >= UPCALL_GIVE_UP_REQUESTS and done < iterations:
                errors += iterations - done
                done = iterations
        return UpcallBenchResult(
            app_id=app_id,
            iterations=done,
            total_ns=total_ns,
            ns_per_query=total_ns // max(done, 1),
            errors=errors,
            timeouts=timeouts,
            stale_answers=stale,
        )

    # -- samples ------------------------------------------------------------------------------

    def subscribe_samples(self) -> None:
        """Join the samples multicast group, on a socket of its own so that requests and
        sample batches never wait behind each other."""
        if self._samples is None:
            self._samples = GenlSubscriber(self._groups[self._uapi.samples_group], self._msg)

    def next_sample_batch(self, timeout: float) -> SampleBatch | None:
        """The next sample batch, or None if none arrives within `timeout` seconds. An overflow
        of the socket (the kernel dropped batches) raises ENOBUFS once; reading goes on after."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            for batch in self._read_batches(remaining):
                return batch
        return None

    def _subscribed(self) -> GenlSubscriber:
        if self._samples is None:
            raise LiteFlowNetlinkError(errno.ENOTCONN, "not subscribed to samples: call subscribe_samples()")
        return self._samples

    def _read_batches(self, timeout: float | None) -> list[SampleBatch]:
        samples_cmd = self._uapi.commands["SAMPLES"]
        batches = []
        for msg in self._subscribed().receive(timeout):
            if msg.get("cmd") != samples_cmd:
                continue
            count = msg.get_attr("LF_ATTR_COUNT")
            raw_contexts = msg.get_attr("LF_ATTR_CONTEXTS")
            contexts = (np.frombuffer(raw_contexts, dtype=np.uint8).reshape(count, -1)
                        if raw_contexts is not None and msg.get_attr("LF_ATTR_CONTEXT_SIZE") else None)
            batches.append(SampleBatch(
                app_id=msg.get_attr("LF_ATTR_APP_ID"),
                snapshot_id=msg.get_attr("LF_ATTR_SNAPSHOT_ID"),
                inputs=np.frombuffer(msg.get_attr("LF_ATTR_INPUTS"), dtype=np.int8).reshape(count, -1),
                outputs=np.frombuffer(msg.get_attr("LF_ATTR_OUTPUTS"), dtype=np.int8).reshape(count, -1),
                dropped_total=msg.get_attr("LF_ATTR_SAMPLES_DROPPED"),
                contexts=contexts,
            ))
        return batches

    @staticmethod
    def _app_stats(reply) -> AppStats:
        get = reply.get_attr
        return AppStats(
            app_id=get("LF_ATTR_APP_ID"),
            name=get("LF_ATTR_APP_NAME"),
            input_size=get("LF_ATTR_INPUT_SIZE"),
            output_size=get("LF_ATTR_OUTPUT_SIZE"),
            queries=get("LF_ATTR_QUERIES"),
            errors=get("LF_ATTR_ERRORS"),
            active_id=get("LF_ATTR_ACTIVE_ID"),
            standby_id=get("LF_ATTR_STANDBY_ID"),
            active_origin=get("LF_ATTR_ACTIVE_ORIGIN") or "",
            standby_origin=get("LF_ATTR_STANDBY_ORIGIN") or "",
            samples_sent=get("LF_ATTR_SAMPLES_SENT"),
            samples_dropped=get("LF_ATTR_SAMPLES_DROPPED"),
            sample_every=get("LF_ATTR_SAMPLE_EVERY"),
            sample_batch=get("LF_ATTR_SAMPLE_BATCH"),
            swaps=get("LF_ATTR_SWAPS"),
            io_count=get("LF_ATTR_IO_COUNT"),
            max_macs=get("LF_ATTR_MAX_MACS") or 0,
            context_size=get("LF_ATTR_CONTEXT_SIZE") or 0,
            flush_ms=get("LF_ATTR_FLUSH_MS") or 0,
            quant_mode=QUANT_ANY if get("LF_ATTR_QUANT_MODE") is None else get("LF_ATTR_QUANT_MODE"),
            input_quant=LfQuant.from_bytes(get("LF_ATTR_INPUT_QUANT")),
            output_quant=LfQuant.from_bytes(get("LF_ATTR_OUTPUT_QUANT")),
            active_input_quant=LfQuant.from_bytes(get("LF_ATTR_ACTIVE_INPUT_QUANT")),
            active_output_quant=LfQuant.from_bytes(get("LF_ATTR_ACTIVE_OUTPUT_QUANT")),
        )
