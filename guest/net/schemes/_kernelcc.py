"""Shared by the schemes that are a congestion control the kernel already has (cubic, bbr)."""

from __future__ import annotations

from pathlib import Path

from guest.tools import DriverAbort, sh

AVAILABLE = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")


def available_congestion_controls() -> list[str]:
    return AVAILABLE.read_text().split()


def ensure_congestion_control(name: str) -> None:
    """Make `name` available, loading its module (tcp_<name>) when it is not built in."""
    if name in available_congestion_controls():
        return
    sh("modprobe", f"tcp_{name}")
    if name not in available_congestion_controls():
        raise DriverAbort(f"congestion control {name!r} not available after modprobe tcp_{name}: "
                          f"{' '.join(available_congestion_controls())}")
