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


def _encoded(command: str, attrs: list) -> object:
    cls = _message_class()
    msg = cls()
    msg["cmd"] = uapi.load_uapi().commands[command]
    msg["version"] = 1
    msg["attrs"] = attrs
    msg.encode()
    decoded = cls(msg.data)
    decoded.decode()
    return decoded


def test_list_apps_reply_carries_context_flush_and_quantization():
    from userspace.netlink import QUANT_ANY, QUANT_FIXED, LfQuant, LiteFlowNetlink

    declared_in, declared_out = LfQuant(0, 1 << 30, -6), LfQuant(-3, 1717986918, -4)
    common = [("LF_ATTR_APP_ID", 5), ("LF_ATTR_APP_NAME", "lf_cc"), ("LF_ATTR_INPUT_SIZE", 30),
              ("LF_ATTR_OUTPUT_SIZE", 1), ("LF_ATTR_QUERIES", 0), ("LF_ATTR_ERRORS", 0),
              ("LF_ATTR_ACTIVE_ID", 7), ("LF_ATTR_STANDBY_ID", 0), ("LF_ATTR_ACTIVE_ORIGIN", "hot"),
              ("LF_ATTR_STANDBY_ORIGIN", ""), ("LF_ATTR_SAMPLES_SENT", 0), ("LF_ATTR_SAMPLES_DROPPED", 0),
              ("LF_ATTR_SAMPLE_EVERY", 1), ("LF_ATTR_SAMPLE_BATCH", 256), ("LF_ATTR_SWAPS", 1),
              ("LF_ATTR_IO_COUNT", 0), ("LF_ATTR_MAX_MACS", 4096)]
    fixed = LiteFlowNetlink._app_stats(_encoded("LIST_APPS", common + [
        ("LF_ATTR_CONTEXT_SIZE", 40), ("LF_ATTR_FLUSH_MS", 100), ("LF_ATTR_QUANT_MODE", QUANT_FIXED),
        ("LF_ATTR_INPUT_QUANT", declared_in.pack()), ("LF_ATTR_OUTPUT_QUANT", declared_out.pack()),
        ("LF_ATTR_ACTIVE_INPUT_QUANT", declared_in.pack()),
        ("LF_ATTR_ACTIVE_OUTPUT_QUANT", declared_out.pack())]))
    assert fixed.quant_fixed and fixed.context_size == 40 and fixed.flush_ms == 100
    assert (fixed.input_quant, fixed.output_quant) == (declared_in, declared_out)
    assert (fixed.active_input_quant, fixed.active_output_quant) == (declared_in, declared_out)
    # an ANY app: no declared quantization; a core without the new attributes reads the same
    for extra in ([("LF_ATTR_QUANT_MODE", QUANT_ANY), ("LF_ATTR_CONTEXT_SIZE", 0)], []):
        any_app = LiteFlowNetlink._app_stats(_encoded("LIST_APPS", common + extra))
        assert not any_app.quant_fixed and any_app.input_quant is None and any_app.context_size == 0


def test_samples_message_with_contexts_decodes_row_for_row():
    from userspace.netlink import LiteFlowNetlink

    k, n, ctx = 3, 4, 40
    rng = np.random.default_rng(1)
    inputs = rng.integers(-128, 128, (k, n), dtype=np.int8)
    contexts = rng.integers(0, 256, (k, ctx), dtype=np.uint8)
    msg = _encoded("SAMPLES", [("LF_ATTR_APP_ID", 5), ("LF_ATTR_SNAPSHOT_ID", 9), ("LF_ATTR_COUNT", k),
                               ("LF_ATTR_INPUTS", inputs.tobytes()), ("LF_ATTR_OUTPUTS", bytes(k)),
                               ("LF_ATTR_SAMPLES_DROPPED", 0), ("LF_ATTR_CONTEXT_SIZE", ctx),
                               ("LF_ATTR_CONTEXTS", contexts.tobytes())])

    class Subscribed:
        def receive(self, timeout):
            return [msg]

    client = LiteFlowNetlink.__new__(LiteFlowNetlink)
    client._uapi, client._samples = uapi.load_uapi(), Subscribed()
    (batch,) = client._read_batches(0)
    assert np.array_equal(batch.inputs, inputs) and batch.contexts.dtype == np.uint8
    assert np.array_equal(batch.contexts, contexts)


def test_the_new_limits_are_read_from_the_header():
    limits = uapi.load_uapi().limits
    assert limits["FLUSH_MS"] == 100 and limits["FLUSH_MAX_MS"] == 10000
    assert limits["SAMPLE_MAX_BYTES"] == 60 * 1024
