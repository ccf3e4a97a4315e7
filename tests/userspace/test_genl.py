"""The plain-socket request path, against the kernel's own generic netlink controller (nlctrl).

nlctrl exists on every Linux kernel and answers unprivileged read requests, so these tests use
the host's real netlink without loading anything into its kernel.
"""

from __future__ import annotations

import errno
import os
import socket

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.generic import CTRL_CMD_GETFAMILY, GENL_ID_CTRL, ctrlmsg

from userspace.genl import NLMSG_HEADER, GenlRequester, GenlRequestError, GenlSubscriber, resolve_family


@pytest.fixture
def nlctrl():
    requester = GenlRequester(GENL_ID_CTRL, ctrlmsg)
    yield requester
    requester.close()


def get_family(name: str | None = None) -> ctrlmsg:
    msg = ctrlmsg()
    msg["cmd"], msg["version"] = CTRL_CMD_GETFAMILY, 1
    msg["attrs"] = [("CTRL_ATTR_FAMILY_NAME", name)] if name else []
    return msg


def test_a_request_returns_its_decoded_reply(nlctrl):
    (reply,) = nlctrl.request(get_family("nlctrl"), NLM_F_REQUEST | NLM_F_ACK)
    assert reply.get_attr("CTRL_ATTR_FAMILY_ID") == GENL_ID_CTRL
    assert reply.get_attr("CTRL_ATTR_FAMILY_NAME") == "nlctrl"


def test_a_dump_collects_every_part_until_done(nlctrl):
    replies = nlctrl.request(get_family(), NLM_F_REQUEST | NLM_F_DUMP)
    names = {reply.get_attr("CTRL_ATTR_FAMILY_NAME") for reply in replies}
    assert "nlctrl" in names and len(names) == len(replies) > 1


def test_a_refusal_carries_errno(nlctrl):
    with pytest.raises(GenlRequestError) as refused:
        nlctrl.request(get_family("no-such-family"), NLM_F_REQUEST | NLM_F_ACK)
    assert refused.value.errno == errno.ENOENT


def test_a_refusal_carries_the_kernels_extended_ack_message(nlctrl):
    with pytest.raises(GenlRequestError) as refused:
        nlctrl.request(get_family("x" * 60), NLM_F_REQUEST | NLM_F_ACK)   # over GENL_NAMSIZ
    assert refused.value.errno == errno.EINVAL
    assert refused.value.reason and "policy" in refused.value.reason
    assert refused.value.reason in str(refused.value)


def test_replies_left_by_an_abandoned_request_are_not_taken_for_the_next(nlctrl):
    stale = get_family("nlctrl")
    header = stale["header"]
    header["type"], header["flags"], header["sequence_number"], header["pid"] = (
        GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, 7, 0)
    stale.encode()
    nlctrl._sock.send(stale.data)            # sent, never read: its reply and ACK wait in the socket
    with pytest.raises(GenlRequestError) as refused:
        nlctrl.request(get_family("no-such-family"), NLM_F_REQUEST | NLM_F_ACK)
    assert refused.value.errno == errno.ENOENT   # not the stale request's success


def test_a_truncated_message_is_refused_not_misread(nlctrl):
    bogus = NLMSG_HEADER.pack(64, 16, 0, 1, 0)     # claims 64 bytes, carries 16
    with pytest.raises(GenlRequestError) as refused:
        nlctrl._collect(memoryview(bogus), 1, [])
    assert refused.value.errno == errno.EPROTO


def test_resolve_family_gives_the_id_and_the_multicast_groups():
    family_id, groups = resolve_family("nlctrl")
    assert family_id == GENL_ID_CTRL
    assert "notify" in groups and groups["notify"] > 0


def test_resolving_an_absent_family_is_enoent():
    with pytest.raises(GenlRequestError) as absent:
        resolve_family("no-such-family")
    assert absent.value.errno == errno.ENOENT


def test_a_subscriber_times_out_empty_handed_and_has_room_for_bursts():
    _, groups = resolve_family("nlctrl")
    subscriber = GenlSubscriber(groups["notify"], ctrlmsg, buffer_bytes=4 * 1024 * 1024)
    try:
        assert subscriber.receive(0.05) == []
        granted = subscriber._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert granted >= 4 * 1024 * 1024 or os.geteuid() != 0   # the kernel doubles what it grants
    finally:
        subscriber.close()


class ScriptedSocket:
    """Stands in for the kernel's side of a subscribed socket: datagrams or errors, in order."""

    def __init__(self, script):
        self.script = list(script)

    def settimeout(self, timeout):
        pass

    def recv_into(self, buffer, size, flags):
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        buffer[: len(item)] = item
        return len(item)


def family_message(name: str, sequence: int = 0) -> bytes:
    msg = get_family(name)
    header = msg["header"]
    header["type"], header["flags"], header["sequence_number"], header["pid"] = GENL_ID_CTRL, 0, sequence, 0
    msg.encode()
    return bytes(msg.data)


def test_a_subscriber_decodes_every_message_of_a_datagram_and_survives_an_overflow():
    _, groups = resolve_family("nlctrl")
    subscriber = GenlSubscriber(groups["notify"], ctrlmsg)
    real = subscriber._sock
    try:
        subscriber._sock = ScriptedSocket([
            family_message("first") + family_message("second"),
            OSError(errno.ENOBUFS, "No buffer space available"),
            family_message("after-the-overflow"),
        ])
        assert [m.get_attr("CTRL_ATTR_FAMILY_NAME") for m in subscriber.receive(1)] == ["first", "second"]
        with pytest.raises(OSError) as overflow:
            subscriber.receive(1)
        assert overflow.value.errno == errno.ENOBUFS
        assert [m.get_attr("CTRL_ATTR_FAMILY_NAME") for m in subscriber.receive(1)] == ["after-the-overflow"]
    finally:
        real.close()
