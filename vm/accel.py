"""Which accelerator QEMU may use: KVM only when a boot that reaches the kernel proves it.

On these machines /dev/kvm opens and firmware runs under KVM, yet a Linux guest stalls right after
"Probing EDD": opening /dev/kvm proves nothing. The probe boots the real kernel with no root
under ``-accel kvm`` with ``panic=-1 -no-reboot`` and watches the serial console for the panic
a rootless kernel ends in ("Kernel panic" / "VFS: Unable to mount root"), for ~15 s. Verdict
cached under ``cache_dir("accel")`` keyed by qemu version + host kernel + kernel image hash.
Everything else gets TCG. Timeouts scale with the verdict (``timeout_factor``).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common.cache import cache_dir, content_key
from common.files import file_sha256
from common.system import tool_version

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT_S = 15.0
PROBE_MARKERS = ("Kernel panic", "VFS: Unable to mount root")
# Guest-side waits are written for TCG; KVM is ~5x faster.
TIMEOUT_FACTORS = {"tcg": 1.0, "kvm": 0.2}
ACCELS = ("auto", "kvm", "tcg")


class AccelError(RuntimeError):
    """An accelerator that cannot be used was asked for explicitly."""


def timeout_factor(accel: str) -> float:
    return TIMEOUT_FACTORS[accel]


def qemu_version() -> str:
    return tool_version([QEMU, "--version"])


def choose_accel(requested: str, kernel: Path, kernel_sha256: str | None = None) -> str:
    """``kvm`` or ``tcg`` for a request of ``auto``/``kvm``/``tcg``.

    ``kvm`` explicitly asked for but failing the probe raises AccelError (no silent fallback);
    ``auto`` takes KVM only when the probe passed.
    """
    if requested not in ACCELS:
        raise AccelError(f"unknown accelerator {requested!r}; valid: {', '.join(ACCELS)}")
    if requested == "tcg":
        return "tcg"
    verdict = probe_kvm(kernel, kernel_sha256)
    if verdict["kvm"]:
        return "kvm"
    if requested == "kvm":
        raise AccelError(f"KVM does not work here: {verdict['reason']}")
    return "tcg"


def probe_kvm(kernel: Path, kernel_sha256: str | None = None, *, refresh: bool = False) -> dict:
    """The cached verdict {"kvm": bool, "reason": str, ...}; probes when there is none."""
    kernel = Path(kernel)
    digest = kernel_sha256 or file_sha256(kernel)
    key = content_key({"qemu": qemu_version(), "host_kernel": platform.release(), "kernel": digest})
    path = cache_dir("accel") / f"{key}.json"
    if path.exists() and not refresh:
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    verdict = _probe(kernel)
    verdict.update({"qemu": qemu_version(), "host_kernel": platform.release(), "kernel_sha256": digest,
                    "probed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(verdict, indent=1) + "\n")
    os.replace(tmp, path)
    return verdict


def _probe(kernel: Path, timeout: float = PROBE_TIMEOUT_S) -> dict:
    if not os.path.exists("/dev/kvm"):
        return {"kvm": False, "reason": "/dev/kvm does not exist", "seconds": 0.0}
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return {"kvm": False, "reason": f"/dev/kvm cannot be opened: {exc}", "seconds": 0.0}
    with tempfile.TemporaryDirectory(prefix="liteflow-kvm-probe-") as tmpdir:
        serial = Path(tmpdir) / "serial.log"
        argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "512", "-smp", "1",
                "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
                "-no-reboot", "-display", "none", "-monitor", "none", "-nodefaults",
                "-serial", f"file:{serial}"]
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        found = None
        try:
            while time.monotonic() - started < timeout:
                text = serial.read_text(errors="replace") if serial.exists() else ""
                found = next((m for m in PROBE_MARKERS if m in text), None)
                if found or proc.poll() is not None:
                    break
                time.sleep(0.25)
            text = serial.read_text(errors="replace") if serial.exists() else ""
            found = found or next((m for m in PROBE_MARKERS if m in text), None)
        finally:
            early = proc.poll()  # qemu ended by itself (None: still running, we stop it)
            _kill(proc)
        seconds = round(time.monotonic() - started, 1)
        if found:
            return {"kvm": True, "reason": f"kernel reached {found!r} under KVM in {seconds} s",
                    "seconds": seconds}
        err = (proc.stderr.read().decode(errors="replace").strip() if proc.stderr else "")[-300:]
        last = [line for line in text.splitlines() if line.strip()][-1:] or ["(no console output)"]
        if early is not None:
            why = f"qemu exited {early} without a kernel panic: {err or last[0][:200]}"
        else:
            why = (f"no kernel panic on the console within {timeout:.0f} s under KVM "
                   f"(stalled); last console line: {last[0][:200]}")
        return {"kvm": False, "reason": why, "seconds": seconds}


def _kill(proc: subprocess.Popen) -> None:
    """Stop the probe's qemu by its pid: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
