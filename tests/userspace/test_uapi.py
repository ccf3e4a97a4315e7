import numpy as np
import pytest

from userspace import uapi
from userspace.netlink import _message_class


def test_header_parses_into_commands_attributes_and_limits():
    u = uapi.load_uapi()
    assert u.family == "liteflow" and u.samples_group == "samples"
    assert u.commands["UNSPEC"] == 0
    for command in ("LIST_APPS", "SET_SAMPLING", "EVALUATE", "LOAD_MODEL", "BENCH", "SAMPLES"):
        assert command in u.commands
    assert u.attributes["APP_ID"][1] == "uint32"
    assert u.attributes["SNAPSHOT_ID"][1] == "uint64"
    assert u.attributes["APP_NAME"][1] == "asciiz"
    assert u.attributes["BLOB"][1] == "cdata"
    numbers = sorted(number for number, _ in u.attributes.values())
    assert numbers == list(range(len(numbers)))
    assert u.limits["EVAL_MAX_VECTORS"] > 0


def test_attribute_without_type_is_an_error(tmp_path):
    text = uapi.HEADER.read_text().replace("LF_ATTR_APP_ID,\t\t\t/* u32 */", "LF_ATTR_APP_ID,")
    assert text != uapi.HEADER.read_text()
    header = tmp_path / "lf_netlink.h"
    header.write_text(text)
    with pytest.raises(uapi.UapiError, match="APP_ID has no type"):
        uapi.load_uapi(header)


def test_message_round_trip_through_pyroute2_encoding():
    cls = _message_class()
    msg = cls()
    msg["cmd"] = uapi.load_uapi().commands["EVALUATE"]
    msg["version"] = 1
    payload = np.arange(-4, 4, dtype=np.int8).tobytes()
    msg["attrs"] = [("LF_ATTR_APP_ID", 7), ("LF_ATTR_SNAPSHOT_ID", 2**40 + 3), ("LF_ATTR_INPUTS", payload)]
    msg.encode()
    decoded = cls(msg.data)
    decoded.decode()
    assert decoded.get_attr("LF_ATTR_APP_ID") == 7
    assert decoded.get_attr("LF_ATTR_SNAPSHOT_ID") == 2**40 + 3
    assert decoded.get_attr("LF_ATTR_INPUTS") == payload
