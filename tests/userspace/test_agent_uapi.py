"""The upcall UAPI (user-space deployment baseline): the new commands and attributes parse from
lf_netlink.h with the right types, and UPCALL_BENCH / QUERY / ANSWER messages survive pyroute2's
encoding. Host-only: nothing touches the kernel."""

from userspace import uapi
from userspace.netlink import LiteFlowNetlink, UpcallBenchResult, _message_class


def test_upcall_commands_follow_the_existing_ones():
    u = uapi.load_uapi()
    for command in ("AGENT_REGISTER", "QUERY", "ANSWER", "UPCALL_BENCH"):
        assert command in u.commands
    # appended: the numbers of existing commands (and so old clients) are unchanged
    assert u.commands["SAMPLES"] == 8
    assert u.commands["AGENT_REGISTER"] > u.commands["SAMPLES"]
    assert sorted(u.commands.values()) == list(range(len(u.commands)))


def test_upcall_attributes_have_their_types():
    attrs = uapi.load_uapi().attributes
    assert attrs["QUERY_SEQ"][1] == "uint64"
    assert attrs["TIMEOUT_MS"][1] == "uint32"
    assert attrs["TIMEOUTS"][1] == "uint64"
    assert attrs["STALE_ANSWERS"][1] == "uint64"
    assert attrs["ERRORS"][1] == "uint64"          # shared with LIST_APPS
    assert attrs["IO_COUNT"][0] == 26               # existing numbers unchanged
    assert attrs["QUERY_SEQ"][0] == 27


def test_upcall_limits_are_read_from_the_header():
    limits = uapi.load_uapi().limits
    assert limits["UPCALL_MAX_ITERS"] >= 1000
    assert 0 < limits["UPCALL_TIMEOUT_MS"] <= limits["UPCALL_MAX_TIMEOUT_MS"]


def test_query_and_upcall_bench_reply_round_trip_through_pyroute2():
    cls = _message_class()
    u = uapi.load_uapi()
    query = cls()
    query["cmd"] = u.commands["QUERY"]
    query["version"] = u.version
    features = bytes(range(30))
    query["attrs"] = [("LF_ATTR_APP_ID", 3), ("LF_ATTR_QUERY_SEQ", 2**63 + 5), ("LF_ATTR_INPUTS", features)]
    query.encode()
    decoded = cls(query.data)
    decoded.decode()
    assert decoded.get_attr("LF_ATTR_QUERY_SEQ") == 2**63 + 5
    assert decoded.get_attr("LF_ATTR_INPUTS") == features

    reply = cls()
    reply["cmd"] = u.commands["UPCALL_BENCH"]
    reply["version"] = u.version
    reply["attrs"] = [("LF_ATTR_APP_ID", 3), ("LF_ATTR_ITERATIONS", 10), ("LF_ATTR_TOTAL_NS", 123456),
                      ("LF_ATTR_NS_PER_QUERY", 12345), ("LF_ATTR_ERRORS", 0), ("LF_ATTR_TIMEOUTS", 0),
                      ("LF_ATTR_STALE_ANSWERS", 1)]
    reply.encode()
    back = cls(reply.data)
    back.decode()
    assert back.get_attr("LF_ATTR_STALE_ANSWERS") == 1 and back.get_attr("LF_ATTR_NS_PER_QUERY") == 12345


def test_upcall_bench_sends_the_timeout_only_when_given():
    sent = []

    class Reply:
        def get_attr(self, name):
            return {"LF_ATTR_APP_ID": 4, "LF_ATTR_ITERATIONS": 10}.get(name, 0)

    nl = LiteFlowNetlink.__new__(LiteFlowNetlink)  # no socket: _request is replaced
    nl._request = lambda command, attrs, dump=False: sent.append((command, attrs)) or [Reply()]
    result = nl.upcall_bench(4, 10)
    nl.upcall_bench(4, 10, timeout_ms=250)
    assert isinstance(result, UpcallBenchResult) and result.iterations == 10
    assert sent == [("UPCALL_BENCH", {"APP_ID": 4, "ITERATIONS": 10}),
                    ("UPCALL_BENCH", {"APP_ID": 4, "ITERATIONS": 10, "TIMEOUT_MS": 250})]
