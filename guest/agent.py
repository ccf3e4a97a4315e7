"""The user-space deployment's agent (userspace/agent/lf_agent.c) in the guest: built from the
read-only share into a work folder, started and stopped by pid. The overhead experiment times its
round trips; the congestion-control scheme "user" lets it decide flows' rates.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

from guest.tools import DriverAbort, sh

REPO = Path(__file__).resolve().parent.parent
AGENT_SRC = REPO / "userspace" / "agent"
AGENT_READY_TIMEOUT_S = 60.0     # TCG: exec + blob + family resolve take well under a second
AGENT_STOP_TIMEOUT_S = 30.0
AGENT_BUILD_TIMEOUT_S = 600.0


def build_agent(out_dir: Path) -> Path:
    """Compile userspace/agent into out_dir (the share is read-only); returns the binary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sh("make", "-s", "-C", str(AGENT_SRC), f"OUT={out_dir}", timeout=AGENT_BUILD_TIMEOUT_S)
    return out_dir / "lf_agent"


def start_agent(binary: Path, app_id: int, blob: Path) -> subprocess.Popen:
    """Start the agent and wait for its "ready" line (it has registered by then)."""
    proc = subprocess.Popen([str(binary), str(app_id), str(blob)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + AGENT_READY_TIMEOUT_S
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            break
        line = proc.stdout.readline()
        if line.startswith("lf_agent: ready"):
            return proc
        if not line:  # EOF: it exited
            break
    stop_agent(proc)
    raise DriverAbort(f"agent did not become ready (exit {proc.returncode}): {proc.stderr.read().strip()}")


def stop_agent(proc: subprocess.Popen) -> dict:
    """SIGTERM by pid, then SIGKILL by pid; returns its exit status and its stderr summary."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(AGENT_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(AGENT_STOP_TIMEOUT_S)
    stderr = proc.stderr.read() if proc.stderr else ""
    return {"pid": proc.pid, "exit": proc.returncode, "stderr": stderr.strip()[-2000:]}
