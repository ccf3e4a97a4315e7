"""Link shaping: what one direction of a link does to packets, as `tc` commands.

Every shaped direction gets the same three-level tree on the egress interface:

    netem (delay, loss; limit NETEM_LIMIT)  →  htb (rate)  →  pfifo (limit = queue_packets)

The delay comes *before* the rate limiter on purpose. Mininet's TCLink hangs netem *under* the
rate limiter with `limit = max_queue_size`, and netem's limit also counts the packets it is only
holding for their delay: a 20 ms link at 50 Mbit/s keeps ~80 full frames in flight inside netem,
so a "84-packet" queue there drops at a few packets of real backlog. Here netem (with a limit far
above anything in flight) only delays, and the bottleneck queue is the pfifo under htb: exactly
`queue_packets` packets wait for the rate limiter, the next one is tail-dropped.

htb's bucket is BURST_MS of the rate, not its one-tick default: under TCG the qdisc watchdog fires
late, and with a small bucket every late millisecond is link capacity lost (a 50 Mbit/s link gave
Cubic 44% of its rate with the default bucket, 81% with 20 ms).

A link's reverse direction (b's egress towards a: in the dumbbell every link's a-end faces the
senders, so that direction carries the ACKs) can deliver in slots (`reverse_slot_ms`, netem's
`slot 0 X`): packets wait for the next slot, which opens a uniform 0-X ms after the last, and leave
together, in order. That is a shared wireless uplink's medium access (Wi-Fi, LTE grants), and it
makes every RTT sample the senders take vary by up to X ms while the data and its queue are
untouched. netem's per-packet jitter would do neither: it reorders what it delays, and TCP's RTT
sample comes from the ACK that arrives first, so reordered ACKs mostly hide the noise (in a quick
cc-adapt run, ±18 ms of jitter on the ACK path left kernel-frozen at 0.92 of the link). Slots need
Linux 4.19 or later: on 4.15 the setting does not take effect (not verified there).

Because the tree is always the same, a link change is a `tc ... change` of the netem and htb
parameters in place (no qdisc is recreated, no packet in the queue is lost by the change).

Pure functions only: the commands are built here and run by guest.net.topology.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# netem only delays; it must never be the queue that drops. 100k frames is ~1.2 s of a
# 1 Gbit/s stream, far above any delay × rate this testbed shapes.
NETEM_LIMIT = 100_000
# HTB derives a class's DRR quantum from rate/r2q, which is absurdly large for Mbit/s rates and
# makes the kernel warn; a single leaf class does not care about its quantum, so fix it at 10 frames.
HTB_QUANTUM_BYTES = 15_140
# HTB's default bucket is one timer tick of bytes (rate/HZ + MTU, ~4 ms). Under TCG the qdisc
# watchdog fires tens of ms late, and every ms late beyond the bucket is capacity lost for good;
# a bucket of BURST_MS of bytes lets a late dequeue catch up instead.
BURST_MS = 20
# Shaping tree handles (see module docstring).
NETEM_HANDLE, HTB_HANDLE, FIFO_HANDLE = "1:", "2:", "3:"
HTB_CLASS = "2:1"

SHAPE_KEYS = ("rate_mbit", "delay_ms", "queue_packets", "loss_pct", "reverse_slot_ms")


@dataclass(frozen=True)
class Shape:
    """One link's nominal properties: rate (Mbit/s), one-way delay (ms), queue (packets), loss (%),
    and the longest gap between delivery slots (ms) of its reverse direction only (0: no slots)."""

    rate_mbit: float
    delay_ms: float = 0.0
    queue_packets: int = 1000
    loss_pct: float = 0.0
    reverse_slot_ms: float = 0.0

    def bdp_packets(self, rtt_ms: float, mtu: int = 1500) -> float:
        """Bandwidth-delay product in full frames: what a queue of "1 BDP" holds."""
        return self.rate_mbit * 1e6 * rtt_ms / 1e3 / 8 / mtu


def _number(where: str, key: str, value: object, low: float, high: float, *, integer: bool = False,
            low_open: bool = False) -> float:
    # bool is an int in Python; `true` in a TOML file is never a rate.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValueError(f"{where}.{key}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ValueError(f"{where}.{key}: {value!r} outside {bound}")
    return value


def check_keys(where: str, data: object, allowed: tuple[str, ...] | set[str]) -> dict:
    """A dict whose keys are all in `allowed`; else a ValueError naming the first stray key."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise ValueError(f"{where}.{key}: unknown key (known: {', '.join(sorted(allowed))})")
    return data


def validate_shape_values(where: str, data: dict) -> dict:
    """The shape keys present in `data`, each range-checked (no defaults filled in)."""
    checked: dict = {}
    if "rate_mbit" in data:
        checked["rate_mbit"] = float(_number(where, "rate_mbit", data["rate_mbit"], 0, 100_000, low_open=True))
    if "delay_ms" in data:
        checked["delay_ms"] = float(_number(where, "delay_ms", data["delay_ms"], 0, 5_000))
    if "queue_packets" in data:
        checked["queue_packets"] = int(_number(where, "queue_packets", data["queue_packets"], 1, 1_000_000, integer=True))
    if "loss_pct" in data:
        checked["loss_pct"] = float(_number(where, "loss_pct", data["loss_pct"], 0, 100, ))
        if checked["loss_pct"] >= 100:
            raise ValueError(f"{where}.loss_pct: {data['loss_pct']!r} would drop everything")
    if "reverse_slot_ms" in data:
        checked["reverse_slot_ms"] = float(_number(where, "reverse_slot_ms", data["reverse_slot_ms"], 0, 1_000))
    return checked


def parse_shape(where: str, data: object, defaults: dict | None = None) -> Shape:
    """A Shape from a spec table; keys missing from both `data` and `defaults` are required."""
    check_keys(where, data, SHAPE_KEYS)
    values = {**(defaults or {}), **validate_shape_values(where, data)}
    if "rate_mbit" not in values:
        raise ValueError(f"{where}.rate_mbit: required")
    if "queue_packets" not in values:
        raise ValueError(f"{where}.queue_packets: required")
    return Shape(**values)


def with_changes(shape: Shape, changes: dict) -> Shape:
    """`shape` with some of its values replaced (already validated)."""
    return replace(shape, **changes)


def _fmt(value: float) -> str:
    # tc parses "50mbit" and "50.5mbit" alike; drop a useless ".0" so commands read naturally.
    return f"{value:g}"


def _netem_args(shape: Shape, delay_scale: int, slots: bool = False) -> list[str]:
    """netem's parameters; with `slots`, the slot gap even when it is 0 ("slot 0ms 0ms" is how a
    change turns slots off: netem keeps its slot settings when a change does not mention them)."""
    slot = ["slot", "0ms", f"{_fmt(shape.reverse_slot_ms)}ms"] if slots else []
    return ["netem", "delay", f"{_fmt(shape.delay_ms * delay_scale)}ms", "loss", f"{_fmt(shape.loss_pct)}%",
            "limit", str(NETEM_LIMIT), *slot]


def _htb_class_args(shape: Shape) -> list[str]:
    rate = f"{_fmt(shape.rate_mbit)}mbit"
    burst = f"{max(int(shape.rate_mbit * 1e6 / 8 * BURST_MS / 1e3), 2 * 1514)}b"
    return ["htb", "rate", rate, "ceil", rate, "burst", burst, "cburst", burst, "quantum", str(HTB_QUANTUM_BYTES)]


def setup_commands(dev: str, shape: Shape, delay_scale: int = 1, reverse: bool = False) -> list[list[str]]:
    """tc commands that shape egress of `dev`; `delay_scale` multiplies the delay (a direction
    that also carries its reverse direction's delay uses 2, see guest.net.spec); `reverse` says
    `dev` sends in the link's b→a direction, the one its reverse_slot_ms applies to."""
    return [
        ["tc", "qdisc", "replace", "dev", dev, "root", "handle", NETEM_HANDLE,
         *_netem_args(shape, delay_scale, slots=reverse and shape.reverse_slot_ms > 0)],
        ["tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", HTB_HANDLE, "htb", "default", "1"],
        ["tc", "class", "add", "dev", dev, "parent", HTB_HANDLE, "classid", HTB_CLASS, *_htb_class_args(shape)],
        ["tc", "qdisc", "add", "dev", dev, "parent", HTB_CLASS, "handle", FIFO_HANDLE, "pfifo",
         "limit", str(shape.queue_packets)],
    ]


def change_commands(dev: str, old: Shape, new: Shape, delay_scale: int = 1,
                    reverse: bool = False) -> list[list[str]]:
    """tc commands that move a tree built by setup_commands from `old` to `new` in place; only
    the qdiscs whose parameters differ are touched."""
    commands = []
    slots = reverse and max(old.reverse_slot_ms, new.reverse_slot_ms) > 0
    if _netem_args(old, delay_scale, slots) != _netem_args(new, delay_scale, slots):
        commands.append(["tc", "qdisc", "change", "dev", dev, "root", "handle", NETEM_HANDLE,
                         *_netem_args(new, delay_scale, slots)])
    if old.rate_mbit != new.rate_mbit:
        commands.append(["tc", "class", "change", "dev", dev, "parent", HTB_HANDLE, "classid", HTB_CLASS,
                         *_htb_class_args(new)])
    if old.queue_packets != new.queue_packets:
        commands.append(["tc", "qdisc", "change", "dev", dev, "parent", HTB_CLASS, "handle", FIFO_HANDLE,
                         "pfifo", "limit", str(new.queue_packets)])
    return commands
