"""A fuzzer for LiteFlow's generic netlink family: malformed requests, each answered or accounted for.

Why a fuzzer of the project's own: the family is the one way into the kernel module that any local
user can reach, and its handlers parse attacker-chosen bytes in the kernel. A generic fuzzer
(syzkaller) would need a description of the family and a kernel built for it; this one reads the
family from `kernel/include/lf_netlink.h` (userspace.uapi) and runs in the testbed's guest.

Each message is one of these mutations of a request, chosen by a seeded RNG (`MUTATIONS`):

- `random_command`: any command number 0-255 with plausible attributes;
- `wrong_length`: a known command whose attributes have lengths their type cannot have;
- `wrong_type`: attributes of one type carrying another's payload, unknown and reserved numbers;
- `nested_garbage`: attributes flagged nested (NLA_F_NESTED) holding random or self-nested bytes;
- `extreme_values`: well-formed attributes with 0, all-ones and random 32/64-bit values;
- `oversized`: attributes that claim more bytes than the message has, or carry up to 200 KB;
- `truncated`: a well-formed request cut short, its netlink length fixed up or left stale;
- `random_bytes`: a netlink header followed by noise.

Every message asks for an acknowledgement. The netlink core drops a message whose own length
field is impossible (shorter than a header or longer than the datagram) without an answer, by
design, before any family sees it; such messages are counted as `dropped_by_netlink`. Every
other message must come back with an ACK or a dump's end, carrying 0 or a negative errno:
`unanswered` (nothing within the timeout) is a failure. For an unprivileged sender, no message
naming an admin-only command may be accepted (`privileged_accepted`): the generic netlink core
refuses it with EPERM, or earlier with EINVAL or EOPNOTSUPP.

    python -m userspace.nlfuzz --count 10000 --seed 1     # prints the tally as JSON
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from userspace.uapi import Uapi, load_uapi

NLMSG_HEADER = struct.Struct("=IHHII")     # length, type, flags, sequence, port id
GENL_HEADER = struct.Struct("=BBH")        # command, version, reserved
NLA_HEADER = struct.Struct("=HH")          # length, type
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 0x2, 0x3
NLA_F_NESTED = 0x8000
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NETLINK_GENERIC = 16
RECEIVE_BUFFER = 1 << 20
REPLY_TIMEOUT_S = 5.0        # BENCH stops after 100 ms, UPCALL_BENCH after 1 s: far above either
MAX_OVERSIZE_BYTES = 200_000
PRIVILEGED_FREE = ("LIST_APPS",)   # the only command without GENL_ADMIN_PERM

MUTATIONS = ("random_command", "wrong_length", "wrong_type", "nested_garbage", "extreme_values",
             "oversized", "truncated", "random_bytes")

_PAYLOAD_SIZES = {"uint32": 4, "uint64": 8}
_WRONG_LENGTHS = (0, 1, 2, 3, 5, 6, 7, 9, 12, 16)


@dataclass(frozen=True)
class FuzzMessage:
    """One datagram and what the kernel should do with it."""

    mutation: str
    command: int
    data: bytes

    @property
    def framed(self) -> bool:
        """Does the netlink core pass it on? Only if its length field fits the datagram."""
        if len(self.data) < NLMSG_HEADER.size:
            return False
        length = NLMSG_HEADER.unpack_from(self.data)[0]
        return NLMSG_HEADER.size <= length <= len(self.data)

    @property
    def whole_genl_header(self) -> bool:
        if not self.framed:
            return False
        length = NLMSG_HEADER.unpack_from(self.data)[0]
        return length >= NLMSG_HEADER.size + GENL_HEADER.size


def _attr(kind: int, payload: bytes, claimed: int | None = None) -> bytes:
    length = NLA_HEADER.size + len(payload) if claimed is None else claimed
    raw = NLA_HEADER.pack(length & 0xFFFF, kind & 0xFFFF) + payload
    return raw + b"\0" * (-len(raw) % 4)


class MessageFactory:
    """Seeded malformed requests for one family: the same seed gives the same messages."""

    def __init__(self, family_id: int, seed: int, uapi: Uapi | None = None):
        self.family_id = family_id
        self.uapi = uapi or load_uapi()
        self.rng = random.Random(seed)
        self.commands = sorted(n for n in self.uapi.commands.values() if n)
        self.attributes = sorted(self.uapi.attributes.values())
        self.max_attr = max(n for n, _ in self.attributes)
        self.sequence = 0

    # -- pieces

    def _payload(self, nla_type: str) -> bytes:
        r = self.rng
        if nla_type in _PAYLOAD_SIZES:
            return r.getrandbits(8 * _PAYLOAD_SIZES[nla_type]).to_bytes(_PAYLOAD_SIZES[nla_type], "little")
        if nla_type == "asciiz":
            return bytes(r.choice(b"abcdefghij_lf") for _ in range(r.randint(0, 40))) + b"\0"
        return r.randbytes(r.choice((0, 1, 30, 64, 300, 4096)))

    def _plausible_attrs(self, count: int) -> bytes:
        out = b""
        for _ in range(count):
            number, nla_type = self.rng.choice(self.attributes)
            out += _attr(number, self._payload(nla_type))
        return out

    def _message(self, mutation: str, command: int, body: bytes) -> FuzzMessage:
        self.sequence += 1
        flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_DUMP if self.rng.random() < 0.1 else 0)
        payload = GENL_HEADER.pack(command & 0xFF, self.uapi.version, 0) + body
        header = NLMSG_HEADER.pack(NLMSG_HEADER.size + len(payload), self.family_id, flags, self.sequence, 0)
        return FuzzMessage(mutation, command & 0xFF, header + payload)

    # -- mutations

    def random_command(self) -> FuzzMessage:
        return self._message("random_command", self.rng.randrange(256), self._plausible_attrs(self.rng.randint(0, 6)))

    def wrong_length(self) -> FuzzMessage:
        body = b""
        for _ in range(self.rng.randint(1, 5)):
            number, nla_type = self.rng.choice(self.attributes)
            size = self.rng.choice([s for s in _WRONG_LENGTHS if s != _PAYLOAD_SIZES.get(nla_type)])
            body += _attr(number, self.rng.randbytes(size))
        return self._message("wrong_length", self.rng.choice(self.commands), body)

    def wrong_type(self) -> FuzzMessage:
        r = self.rng
        body = b""
        for _ in range(r.randint(1, 5)):
            number = r.choice((0, self.max_attr + 1, r.randrange(self.max_attr + 2, 0x3FFF), r.choice(self.attributes)[0]))
            other = r.choice(("uint32", "uint64", "asciiz", "cdata"))
            payload = self._payload(other)
            if other == "asciiz" and r.random() < 0.5:
                payload = payload.rstrip(b"\0") + b"x"    # a string without its terminator
            body += _attr(number, payload)
        return self._message("wrong_type", r.choice(self.commands), body)

    def nested_garbage(self) -> FuzzMessage:
        r = self.rng

        def nest(depth: int) -> bytes:
            if depth == 0 or r.random() < 0.3:
                return r.randbytes(r.randint(0, 64))
            inner = b"".join(nest(depth - 1) for _ in range(r.randint(1, 3)))
            claimed = None if r.random() < 0.7 else r.randrange(0x10000)
            return _attr(r.choice(self.attributes)[0] | NLA_F_NESTED, inner, claimed)

        return self._message("nested_garbage", r.choice(self.commands), nest(r.randint(1, 6)))

    def extreme_values(self) -> FuzzMessage:
        r = self.rng
        body = b""
        for number, nla_type in r.sample(self.attributes, r.randint(1, 8)):
            if nla_type in _PAYLOAD_SIZES:
                bits = 8 * _PAYLOAD_SIZES[nla_type]
                value = r.choice((0, 1, (1 << bits) - 1, 1 << (bits - 1), r.getrandbits(bits)))
                body += _attr(number, value.to_bytes(bits // 8, "little"))
            else:
                body += _attr(number, self._payload(nla_type))
        return self._message("extreme_values", r.choice(self.commands), body)

    def oversized(self) -> FuzzMessage:
        r = self.rng
        number, nla_type = r.choice(self.attributes)
        if r.random() < 0.5:   # the attribute claims more than there is
            payload = self._payload(nla_type)
            body = _attr(number, payload, claimed=len(payload) + NLA_HEADER.size + r.randint(1, 0xFFFF - 64))
        else:                  # a genuinely huge attribute (its 16-bit length wraps above 64 KB)
            size = r.randint(60_000, MAX_OVERSIZE_BYTES)
            body = _attr(number, r.randbytes(size), claimed=(size + NLA_HEADER.size) & 0xFFFF)
        return self._message("oversized", r.choice(self.commands), body)

    def truncated(self) -> FuzzMessage:
        r = self.rng
        whole = self._message("truncated", r.choice(self.commands), self._plausible_attrs(r.randint(1, 6)))
        cut = r.randint(NLMSG_HEADER.size - 4, len(whole.data) - 1)
        data = whole.data[:cut]
        if len(data) >= NLMSG_HEADER.size and r.random() < 0.7:   # length fixed up: well framed
            data = struct.pack("=I", len(data)) + data[4:]
        return FuzzMessage("truncated", whole.command, data)

    def random_bytes(self) -> FuzzMessage:
        r = self.rng
        self.sequence += 1
        noise = r.randbytes(r.randint(0, 512))
        length = NLMSG_HEADER.size + len(noise) if r.random() < 0.8 else r.randrange(1 << 32)
        header = NLMSG_HEADER.pack(length, self.family_id, NLM_F_REQUEST | NLM_F_ACK, self.sequence, 0)
        command = noise[0] if noise else 0
        return FuzzMessage("random_bytes", command, header + noise)

    def next(self) -> FuzzMessage:
        return getattr(self, self.rng.choice(MUTATIONS))()


@dataclass
class Tally:
    """What happened to the messages of one campaign."""

    sent: int = 0
    dropped_by_netlink: int = 0
    accepted: int = 0
    refused: collections.Counter = field(default_factory=collections.Counter)   # errno name -> count
    unanswered: list = field(default_factory=list)         # (mutation, command, hex head) of each
    privileged_accepted: list = field(default_factory=list)
    by_mutation: collections.Counter = field(default_factory=collections.Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"sent": self.sent, "dropped_by_netlink": self.dropped_by_netlink, "accepted": self.accepted,
                "refused": dict(self.refused), "refused_total": sum(self.refused.values()),
                "unanswered": len(self.unanswered), "unanswered_examples": self.unanswered[:10],
                "privileged_accepted": len(self.privileged_accepted),
                "privileged_accepted_examples": self.privileged_accepted[:10],
                "by_mutation": dict(self.by_mutation), "seconds": round(self.seconds, 2)}


def _answer(sock: socket.socket, sequence: int, buffer: bytearray) -> int | None:
    """The errno (0 = accepted) of the answer to `sequence`, or None if none came in time."""
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            size = sock.recv_into(buffer)
        except TimeoutError:
            return None
        offset = 0
        while offset + NLMSG_HEADER.size <= size:
            length, kind, _, seq, _ = NLMSG_HEADER.unpack_from(buffer, offset)
            if length < NLMSG_HEADER.size:
                break
            if seq == sequence and kind in (NLMSG_ERROR, NLMSG_DONE):
                return -struct.unpack_from("=i", buffer, offset + NLMSG_HEADER.size)[0] if \
                    offset + NLMSG_HEADER.size + 4 <= size else 0
            offset += (length + 3) & ~3


def _request_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)    # refusals do not echo 200 KB requests back
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.bind((0, 0))
    return sock


def campaign(family_id: int, count: int, seed: int, *, privileged: bool, uapi: Uapi | None = None) -> Tally:
    """Send `count` malformed requests on one socket (a fresh one after every 1000, so an agent
    registration or a full buffer from one stretch does not colour the next) and tally the answers."""
    uapi = uapi or load_uapi()
    admin_only = {n for name, n in uapi.commands.items() if name not in PRIVILEGED_FREE and n}
    factory = MessageFactory(family_id, seed, uapi)
    tally, buffer = Tally(), bytearray(RECEIVE_BUFFER)
    started = time.monotonic()
    sock = None
    try:
        for index in range(count):
            if index % 1000 == 0:
                if sock is not None:
                    sock.close()
                sock = _request_socket()
            message = factory.next()
            tally.sent += 1
            tally.by_mutation[message.mutation] += 1
            sequence = factory.sequence
            try:
                sock.send(message.data)
            except OSError as exc:       # refused by the socket layer itself (e.g. EMSGSIZE)
                tally.refused[errno.errorcode.get(exc.errno, str(exc.errno))] += 1
                continue
            if not message.framed:
                tally.dropped_by_netlink += 1
                continue
            code = _answer(sock, sequence, buffer)
            if code is None:
                tally.unanswered.append((message.mutation, message.command, message.data[:32].hex()))
            elif code == 0:
                tally.accepted += 1
                if not privileged and message.whole_genl_header and message.command in admin_only:
                    tally.privileged_accepted.append((message.mutation, message.command, message.data[:32].hex()))
            else:
                tally.refused[errno.errorcode.get(code, str(code))] += 1
    finally:
        if sock is not None:
            sock.close()
    tally.seconds = time.monotonic() - started
    return tally


def main(argv: list[str] | None = None) -> int:
    from userspace.genl import resolve_family

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--unprivileged", action="store_true", help="expect EPERM for every admin-only command")
    args = parser.parse_args(argv)
    uapi = load_uapi()
    family_id, _ = resolve_family(uapi.family)
    tally = campaign(family_id, args.count, args.seed, privileged=not args.unprivileged, uapi=uapi)
    json.dump(tally.as_dict(), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
