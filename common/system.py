"""Host prerequisites: system tools the tasks need, installed with apt when we may, else a clear stop."""

from __future__ import annotations

import os
import shutil
import subprocess

from common.proc import run


class MissingToolError(RuntimeError):
    """A system tool is missing and cannot be installed from here; the message holds the command to run."""


def ensure_tools(tools: dict[str, str]) -> list[str]:
    """Make sure every command in `tools` (command, or absolute path of a file such as a header,
    -> Debian package) exists; returns the packages installed.

    Installing needs root and apt; without them we stop with the exact command instead of failing
    later in the middle of a long job.
    """
    missing = sorted({pkg for cmd, pkg in tools.items() if not _have(cmd)})
    if not missing:
        return []
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise MissingToolError(f"missing system packages; run as root: {' '.join(command)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(command, step=f"installing {', '.join(missing)}", env=env, timeout=1800)
    except Exception:
        run(["apt-get", "update"], step="apt-get update", env=env, timeout=600)
        run(command, step=f"installing {', '.join(missing)}", env=env, timeout=1800)
    return missing


def _have(command: str) -> bool:
    if os.path.isabs(command):
        return os.path.exists(command)
    if shutil.which(command):
        return True
    # sbin tools (debootstrap, mkfs.ext4) are not on a non-root PATH.
    return any(os.access(os.path.join(d, command), os.X_OK) for d in ("/usr/sbin", "/sbin"))


def tool_version(argv: list[str]) -> str:
    """First line of a tool's version output (for run metadata)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
