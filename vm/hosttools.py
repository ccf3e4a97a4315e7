"""The host's system tools, installed on first use so a fresh Debian machine needs no manual step."""

from __future__ import annotations

from common.system import ensure_tools

# command (or a file the build needs) -> Debian package providing it
HOST_TOOLS: dict[str, str] = {
    "debootstrap": "debootstrap",
    "gcc": "gcc",
    "make": "make",
    "chroot": "coreutils",
    "mkfs.ext4": "e2fsprogs",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "ssh": "openssh-client",
    # the user-space deployment's C agent is also built on the host, by its tests
    "/usr/include/libnl3/netlink/netlink.h": "libnl-3-dev",
    "/usr/include/libnl3/netlink/genl/genl.h": "libnl-genl-3-dev",
}


def ensure_host_tools() -> list[str]:
    """Install whatever of HOST_TOOLS is missing (apt, as root) or stop with the command to run."""
    return ensure_tools(HOST_TOOLS)
