"""The client's side of the hardened core (issue 12): the kernel bounds each BENCH and UPCALL_BENCH
request and takes blobs over one attribute in chunks, so the client must loop, sum and split
correctly. Host-only: `_request` is replaced by a fake kernel."""

from __future__ import annotations

import pytest

from userspace import uapi
from userspace.netlink import LiteFlowNetlink, LiteFlowNetlinkError


class Reply:
    def __init__(self, **attrs: int):
        self.attrs = {f"LF_ATTR_{key}": value for key, value in attrs.items()}

    def get_attr(self, name: str):
        return self.attrs.get(name, 0)


def client(fake) -> LiteFlowNetlink:
    nl = LiteFlowNetlink.__new__(LiteFlowNetlink)  # no socket
    nl._uapi = uapi.load_uapi()
    nl._request = fake
    return nl


def test_new_attributes_are_appended_with_their_types():
    attrs = uapi.load_uapi().attributes
    assert attrs["STALE_ANSWERS"][0] == 30         # existing numbers unchanged
    assert attrs["BLOB_SIZE"] == (31, "uint32")
    assert attrs["BLOB_OFFSET"] == (32, "uint32")
    assert attrs["MAX_MACS"] == (33, "uint64")


def test_bench_loops_over_bounded_requests_and_sums():
    asked = []

    def kernel(command, attrs, dump=False):
        asked.append(attrs["ITERATIONS"])
        ran = min(attrs["ITERATIONS"], 300)           # the kernel's time bound cuts each request
        return [Reply(APP_ID=1, SNAPSHOT_ID=7, ITERATIONS=ran, TOTAL_NS=ran * 10, MACS=5)]

    result = client(kernel).bench(1, 1000)
    assert asked == [1000, 700, 400, 100]
    assert (result.iterations, result.total_ns, result.ns_per_query, result.snapshot_id) == (1000, 10000, 10, 7)


def test_bench_refuses_a_reply_that_ran_nothing():
    def kernel(command, attrs, dump=False):
        return [Reply(ITERATIONS=0)]

    with pytest.raises(LiteFlowNetlinkError):
        client(kernel).bench(1, 10)


def test_upcall_bench_gives_up_on_an_agent_that_never_answers():
    def kernel(command, attrs, dump=False):
        return [Reply(ITERATIONS=2, TOTAL_NS=2_000_000_000, ERRORS=2, TIMEOUTS=2)]

    nl = client(kernel)
    result = nl.upcall_bench(1, 1000, timeout_ms=1000)
    assert result.iterations == 1000 and result.errors == 1000 and result.timeouts == 6


def test_small_blob_goes_in_one_request_large_in_ordered_chunks():
    sent = []

    def kernel(command, attrs, dump=False):
        sent.append(attrs)
        return [Reply(TOTAL_NS=5)] if "BLOB_SIZE" not in attrs or \
            attrs["BLOB_OFFSET"] + len(attrs["BLOB"]) == attrs["BLOB_SIZE"] else []

    nl = client(kernel)
    assert nl.load_model(1, 9, b"x" * 100) == 5
    assert "BLOB_SIZE" not in sent[0]
    sent.clear()
    blob = bytes(range(256)) * 400                     # 102,400 bytes: two chunks
    assert nl.load_model(1, 9, blob) == 5
    assert [a["BLOB_OFFSET"] for a in sent] == [0, uapi.load_uapi().limits["BINARY_MAX"]]
    assert b"".join(a["BLOB"] for a in sent) == blob
    assert all(a["BLOB_SIZE"] == len(blob) and a["SNAPSHOT_ID"] == 9 for a in sent)


def test_a_blob_over_the_engines_limit_is_refused_before_sending():
    nl = client(lambda *a, **k: pytest.fail("sent"))
    with pytest.raises(LiteFlowNetlinkError) as info:
        nl.load_model(1, 9, b"x" * (uapi.load_uapi().limits["BLOB_MAX"] + 1))
    assert info.value.errno == 7  # E2BIG
