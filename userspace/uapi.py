"""LiteFlow's generic netlink UAPI, read from the kernel header so there is one source of truth.

`kernel/include/lf_netlink.h` defines the commands, the attributes (each with its type in a
trailing comment) and the limits. Transcribing them by hand into Python would let the two drift
apart silently; parsing the header makes a mismatch impossible and a malformed header an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HEADER = Path(__file__).resolve().parent.parent / "kernel" / "include" / "lf_netlink.h"

# attribute comment prefix -> pyroute2 nla type
_NLA_TYPES = {"u32": "uint32", "u64": "uint64", "string": "asciiz", "nul-terminated": "asciiz",
              "binary": "cdata", "padding": "none"}


class UapiError(RuntimeError):
    """The UAPI header could not be read as expected."""


@dataclass(frozen=True)
class Uapi:
    family: str
    version: int
    samples_group: str
    commands: dict[str, int]
    attributes: dict[str, tuple[int, str]]  # name -> (number, nla type)
    limits: dict[str, int]


def _enum_body(text: str, name: str) -> str:
    match = re.search(r"enum\s+" + name + r"\s*\{(.*?)\};", text, re.S)
    if not match:
        raise UapiError(f"{HEADER.name}: enum {name} not found")
    return match.group(1)


@cache
def load_uapi(header: Path = HEADER) -> Uapi:
    text = header.read_text()
    stripped = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    commands = {}
    for index, name in enumerate(re.findall(r"\b(LF_CMD_\w+)\s*,", _enum_body(stripped, "lf_cmd"))):
        commands[name.removeprefix("LF_CMD_")] = index
    attributes = {}
    for index, (name, comment) in enumerate(
        re.findall(r"\b(LF_ATTR_\w+)\s*,[ \t]*(?:/\*\s*(.*?)\s*\*/)?", _enum_body(text, "lf_attr"), re.S)
    ):
        short = name.removeprefix("LF_ATTR_")
        if not comment:
            if short != "UNSPEC":
                raise UapiError(f"{header.name}: LF_ATTR_{short} has no type comment")
            attributes[short] = (index, "none")
            continue
        first = re.match(r"[a-z0-9-]+", comment.lower())
        if not first or first.group(0) not in _NLA_TYPES:
            raise UapiError(f"{header.name}: LF_ATTR_{short}: unknown type in comment {comment!r}")
        attributes[short] = (index, _NLA_TYPES[first.group(0)])
    defines = dict(re.findall(r"#define\s+(LF_\w+)\s+(.+?)\s*(?:/\*.*)?$", text, re.M))

    def define(name: str) -> str:
        if name not in defines:
            raise UapiError(f"{header.name}: #define {name} not found")
        return defines[name]

    limits = {}
    for name, value in defines.items():
        if name.startswith("LF_NL_"):
            limits[name.removeprefix("LF_NL_")] = int(eval(value, {"__builtins__": {}}))  # arithmetic only
    return Uapi(
        family=define("LF_GENL_NAME").strip('"'),
        version=int(define("LF_GENL_VERSION")),
        samples_group=define("LF_GENL_MCGRP_SAMPLES").strip('"'),
        commands=commands,
        attributes=attributes,
        limits=limits,
    )
