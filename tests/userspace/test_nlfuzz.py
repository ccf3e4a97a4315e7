"""The netlink fuzzer's messages and answer parsing, on the host (the campaign itself runs in the
guest: the `fuzz` experiment)."""

from __future__ import annotations

import collections
import errno
import struct

from userspace import nlfuzz
from userspace.uapi import load_uapi

FAMILY_ID = 0x1234


def _messages(seed: int, count: int) -> list[nlfuzz.FuzzMessage]:
    factory = nlfuzz.MessageFactory(FAMILY_ID, seed)
    return [factory.next() for _ in range(count)]


def test_the_same_seed_sends_the_same_bytes():
    assert [m.data for m in _messages(3, 300)] == [m.data for m in _messages(3, 300)]
    assert [m.data for m in _messages(3, 300)] != [m.data for m in _messages(4, 300)]


def test_every_mutation_is_sent_and_most_reach_the_family():
    messages = _messages(1, 2000)
    kinds = collections.Counter(m.mutation for m in messages)
    assert set(kinds) == set(nlfuzz.MUTATIONS) and min(kinds.values()) > 150
    framed = [m for m in messages if m.framed]
    assert 0.8 * len(messages) < len(framed) < len(messages)   # some bad lengths, never all
    for m in framed:
        length, family, flags, sequence, _ = nlfuzz.NLMSG_HEADER.unpack_from(m.data)
        assert family == FAMILY_ID and flags & nlfuzz.NLM_F_ACK and sequence > 0


def test_mutations_break_what_they_say():
    uapi = load_uapi()
    sizes = {number: {"uint32": 4, "uint64": 8}.get(kind) for number, kind in uapi.attributes.values()}
    factory = nlfuzz.MessageFactory(FAMILY_ID, 9)
    for _ in range(200):
        message = factory.wrong_length()
        offset = nlfuzz.NLMSG_HEADER.size + nlfuzz.GENL_HEADER.size
        while offset < len(message.data):
            length, kind = nlfuzz.NLA_HEADER.unpack_from(message.data, offset)
            assert length - nlfuzz.NLA_HEADER.size != sizes.get(kind), "a right length in wrong_length"
            offset += (length + 3) & ~3
    huge = [factory.oversized() for _ in range(60)]
    assert any(len(m.data) > 65_535 for m in huge)          # past the 16-bit attribute length
    cut = [factory.truncated() for _ in range(200)]
    assert any(m.framed for m in cut) and any(not m.framed for m in cut)
    assert {m.command for m in (factory.random_command() for _ in range(3000))} > set(uapi.commands.values())


class _FakeSocket:
    """recv_into from a list of datagrams, then a timeout."""

    def __init__(self, datagrams: list[bytes]):
        self.datagrams = list(datagrams)

    def settimeout(self, _seconds: float) -> None:
        pass

    def recv_into(self, buffer: bytearray) -> int:
        if not self.datagrams:
            raise TimeoutError
        data = self.datagrams.pop(0)
        buffer[: len(data)] = data
        return len(data)


def _netlink(kind: int, sequence: int, payload: bytes) -> bytes:
    return nlfuzz.NLMSG_HEADER.pack(nlfuzz.NLMSG_HEADER.size + len(payload), kind, 0, sequence, 0) + payload


def test_the_answer_to_a_request_is_its_own_ack_or_dump_end():
    buffer = bytearray(4096)
    ack = lambda seq, code: _netlink(nlfuzz.NLMSG_ERROR, seq, struct.pack("=i", code) + b"\0" * 16)  # noqa: E731
    stale_then_reply = [ack(6, -errno.EINVAL), _netlink(FAMILY_ID, 7, b"\1\1\0\0") + ack(7, 0)]
    assert nlfuzz._answer(_FakeSocket(stale_then_reply), 7, buffer) == 0
    assert nlfuzz._answer(_FakeSocket([ack(8, -errno.EPERM)]), 8, buffer) == errno.EPERM
    dump = [_netlink(FAMILY_ID, 9, b"\1\1\0\0"), _netlink(nlfuzz.NLMSG_DONE, 9, struct.pack("=i", 0))]
    assert nlfuzz._answer(_FakeSocket(dump), 9, buffer) == 0
    assert nlfuzz._answer(_FakeSocket([ack(1, 0)]), 2, buffer) is None     # never answered
