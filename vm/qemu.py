"""The guest VM's lifecycle: ``up``, ``down``, ``status``.

One VM per name (default ``default``); its run dir ``cache_dir("vm")/<name>/`` holds:

    state.json      pid, ssh port, accelerator, kernel release, image, started (written after boot)
    overlay.qcow2   copy-on-write overlay on the image's disk.img (the base stays pristine)
    serial.log      the guest's serial console
    serial.previous.log  the console of the boot before, kept by ``up`` so a VM that died and was
                    booted again can still be looked at
    serial.hung.log the console of a boot that hung and was retried (see ``up``)
    qemu.pid        qemu's own pidfile

QEMU runs with ``-daemonize`` so it outlives the process that started it (``invoke vm.up`` then
``invoke vm.down`` later): it is reparented to init, never a zombie of ours. It is stopped by its
pid only (``poweroff`` over SSH, then SIGTERM, then SIGKILL). A pid that is gone (or is no longer
our qemu) is a dead VM and ``status`` says so, with the tail of the serial log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common.cache import cache_dir
from common.console import say
from common.files import atomic_write_json
from common.proc import CommandError, run
from vm.accel import QEMU, choose_accel, timeout_factor
from vm.guest import Guest, GuestError
from vm.image import SHARE_TAG, Image, load_image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MEMORY_MB = 3072
DEFAULT_CPUS = 2
# loglevel=4 as a stock Debian install (its "quiet"): info messages reach dmesg but not the
# emulated serial port, where every printk would otherwise be written out byte by byte inside
# the caller's syscall -- timing each hot update through the console, not LiteFlow.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 loglevel=4 net.ifnames=0 panic=-1"
# Measured under TCG: SSH answers ~55–65 s after qemu starts. Scaled by timeout_factor(accel).
BOOT_TIMEOUT_S = 240.0
BOOT_ATTEMPTS = 2
POWEROFF_TIMEOUT_S = 60.0
TERM_TIMEOUT_S = 10.0


class VmError(RuntimeError):
    """The VM could not be started, reached, or stopped; the message says why."""


@dataclass
class VmHandle:
    name: str
    pid: int
    ssh_port: int
    accel: str
    kernel_release: str
    image_path: str
    run_dir: str
    started: float
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: int = DEFAULT_CPUS
    boot_seconds: float | None = None
    boot_attempts: int = 1
    share: str | None = None   # the checkout shared read-only at /opt/liteflow: the code the guest runs

    @property
    def serial_log(self) -> Path:
        return Path(self.run_dir) / "serial.log"

    @property
    def image(self) -> Image:
        return load_image(Path(self.image_path))

    @property
    def timeout_factor(self) -> float:
        return timeout_factor(self.accel)

    def guest(self) -> Guest:
        """An SSH client for this VM (root, pinned host key of its image)."""
        return Guest.for_image(self.image, self.ssh_port)

    def alive(self) -> bool:
        return pid_alive(self.pid, Path(self.run_dir))

    def ssh_argv(self, *command: str) -> list[str]:
        """An OpenSSH command line into this VM (for an interactive ``vm.ssh``), host key pinned
        through a known_hosts file in the run dir that holds only the image's key."""
        image = self.image
        known = Path(self.run_dir) / "known_hosts"
        keytype, b64 = image.host_key_pub.read_text().split()[:2]
        known.write_text(f"[127.0.0.1]:{self.ssh_port} {keytype} {b64}\n")
        return ["ssh", "-i", str(image.ssh_key), "-p", str(self.ssh_port),
                "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "root@127.0.0.1", *command]


@dataclass
class VmStatus:
    name: str
    state: str  # "running", "dead", "stopped"
    handle: VmHandle | None
    detail: str = ""

    def __str__(self) -> str:
        if self.handle is None:
            return f"{self.name}: {self.state}"
        h = self.handle
        text = (f"{self.name}: {self.state} (pid {h.pid}, ssh 127.0.0.1:{h.ssh_port}, {h.accel}, "
                f"kernel {h.kernel_release}, run dir {h.run_dir})")
        return text + (f"\n{self.detail}" if self.detail else "")


# --------------------------------------------------------------------------- helpers


BOOT_FILES = ("overlay.qcow2", "state.json", "qemu.pid")   # one boot's; the consoles stay


def default_name() -> str:
    """The VM a checkout uses unless a caller names one: $LITEFLOW_VM_NAME, else ``default``.

    A session never measures on a VM that shares another checkout, so it stops such a VM
    first: two checkouts running at once on one cache must each name their own VM.
    """
    name = os.environ.get("LITEFLOW_VM_NAME", "default")
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise VmError(f"LITEFLOW_VM_NAME={name!r}: use letters, digits, '-' and '_'")
    return name


def run_dir(name: str | None = None) -> Path:
    return cache_dir("vm") / (name or default_name())


def _state_path(name: str) -> Path:
    return run_dir(name) / "state.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int, rundir: Path | None = None) -> bool:
    """True when `pid` runs and is our qemu (not a zombie, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if "qemu" not in cmdline:
        return False
    return rundir is None or str(rundir) in cmdline


def qemu_argv(image: Image, *, accel: str, memory_mb: int, cpus: int, ssh_port: int,
              rundir: Path, repo: Path | None) -> list[str]:
    """The full qemu command line (pure: unit-tested)."""
    cpu = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]
    argv = [
        QEMU, "-name", f"liteflow-{rundir.name}", *cpu,
        "-smp", str(cpus), "-m", str(memory_mb),
        "-kernel", str(image.kernel),
        *(["-initrd", str(image.initrd)] if image.initrd.is_file() else []),  # none: drivers built in
        "-append", KERNEL_CMDLINE,
        "-drive", f"file={rundir / 'overlay.qcow2'},if=virtio,format=qcow2",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
    ]
    if repo is not None:
        argv += ["-virtfs", f"local,path={repo},mount_tag={SHARE_TAG},security_model=none,readonly=on"]
    argv += [
        "-serial", f"file:{rundir / 'serial.log'}",
        "-display", "none", "-monitor", "none", "-no-reboot",
        "-pidfile", str(rundir / "qemu.pid"), "-daemonize",
    ]
    return argv


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no serial log)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def _load_state(name: str) -> VmHandle | None:
    path = _state_path(name)
    if not path.exists():
        return None
    try:
        return VmHandle(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def _save_state(handle: VmHandle) -> None:
    atomic_write_json(_state_path(handle.name), asdict(handle))


# --------------------------------------------------------------------------- lifecycle


class _BootHung(VmError):
    """The VM stayed alive but never answered SSH."""


def up(image: Image, accel: str = "auto", memory: int = DEFAULT_MEMORY_MB, cpus: int = DEFAULT_CPUS,
       *, name: str | None = None, repo: Path | None = REPO, wait: bool = True,
       boot_timeout: float | None = None, boot_attempts: int = BOOT_ATTEMPTS) -> VmHandle:
    """Boot `image` and (with `wait`) return once SSH answers. Raises VmError when it cannot.

    A VM of that name that is still running is an error (``down`` it first); a dead one's state
    is cleared. `repo` is shared read-only as 9p tag ``liteflow`` (None: no share).

    A guest that is alive but silent for the whole boot timeout is stopped and booted again, up to
    `boot_attempts` boots in all: under TCG a boot now and then hangs for good in early userspace
    (both vCPUs in soft lockup, RCU's kthread starved), and a second boot of the same image comes
    up. Its console is kept as ``serial.hung.log`` and the handle counts the boots. A guest that
    died is not booted again: that is a kernel or configuration error, not luck.
    """
    if boot_attempts < 1:
        raise ValueError(f"boot_attempts={boot_attempts}: at least one boot")
    name = name or default_name()
    current = status(name)
    if current.state == "running":
        raise VmError(f"VM {name!r} is already running (pid {current.handle.pid}); run down first")
    chosen = choose_accel(accel, image.kernel, image.manifest.get("sha256", {}).get("vmlinuz"))
    rundir = run_dir(name)
    previous_console = rundir / "serial.log"
    if previous_console.exists():
        previous_console.replace(rundir / "serial.previous.log")
    timeout = boot_timeout if boot_timeout is not None else BOOT_TIMEOUT_S * timeout_factor(chosen)
    for attempt in range(1, boot_attempts + 1):
        handle = _start(image, name, rundir, accel=chosen, memory=memory, cpus=cpus, repo=repo)
        if not wait:
            return handle
        try:
            _wait_for_boot(handle, timeout)
        except _BootHung as exc:
            (rundir / "serial.log").replace(rundir / "serial.hung.log")
            if attempt == boot_attempts:
                raise VmError(f"{exc} (boot {attempt} of {boot_attempts}; the console of the last "
                              f"is serial.hung.log)") from exc
            say(f"VM {name!r}: boot {attempt} hung (no SSH within {timeout:.0f} s); booting again")
            continue
        handle.boot_attempts = attempt
        _save_state(handle)
        return handle
    raise AssertionError("unreachable")


def _start(image: Image, name: str, rundir: Path, *, accel: str, memory: int, cpus: int,
           repo: Path | None) -> VmHandle:
    """A fresh overlay and a daemonized qemu; returns its handle (state saved) at once."""
    for leftover in BOOT_FILES:
        (rundir / leftover).unlink(missing_ok=True)
    rundir.mkdir(parents=True, exist_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image.disk, "-F", "raw",
         rundir / "overlay.qcow2"], step="qemu-img create overlay", timeout=60)

    last_error = ""
    for _attempt in range(3):  # a port taken between free_port() and qemu's bind: try another
        port = free_port()
        argv = qemu_argv(image, accel=accel, memory_mb=memory, cpus=cpus, ssh_port=port,
                         rundir=rundir, repo=repo)
        started = time.time()
        try:
            run(argv, step="qemu start", timeout=60)
            break
        except CommandError as exc:
            last_error = str(exc)
            if "hostfwd" not in exc.output and "host forwarding" not in exc.output:
                raise VmError(f"qemu did not start: {exc}") from exc
    else:
        raise VmError(f"qemu did not start (no free port?): {last_error}")
    try:
        pid = int((rundir / "qemu.pid").read_text().strip())
    except (FileNotFoundError, ValueError) as exc:  # qemu removes its pidfile when it exits
        raise VmError(f"qemu exited right after it daemonized ({exc})\n--- serial log (tail) ---\n"
                      f"{_tail(rundir / 'serial.log')}") from exc
    handle = VmHandle(name=name, pid=pid, ssh_port=port, accel=accel,
                      kernel_release=image.kernel_release, image_path=str(image.path),
                      run_dir=str(rundir), started=started, memory_mb=memory, cpus=cpus,
                      share=str(repo) if repo is not None else None)
    _save_state(handle)
    return handle


def _wait_for_boot(handle: VmHandle, timeout: float) -> None:
    """Until SSH answers; a VM that died is a VmError, one that stayed silent is stopped and
    raised as _BootHung."""
    guest = handle.guest()
    try:
        guest.wait_for_ssh(timeout, alive=handle.alive)
    except GuestError as exc:
        dead = not handle.alive()
        if not dead:
            _kill(handle.pid, Path(handle.run_dir))
        error = _BootHung if not dead else VmError
        raise error(f"VM {handle.name!r} ({handle.accel}) {'died' if dead else 'gave no SSH'} during boot: "
                    f"{exc}\n--- serial log (tail) ---\n{_tail(handle.serial_log)}") from exc
    finally:
        guest.close()
    handle.boot_seconds = round(time.time() - handle.started, 1)


def down(handle: VmHandle | str | None = None, *, timeout: float | None = None) -> bool:
    """Stop the VM (a handle or a name; default ``default``): poweroff over SSH, then SIGTERM,
    then SIGKILL, by pid. Removes the overlay and the state; keeps serial.log. Returns True when
    the guest powered off cleanly."""
    if handle is None or isinstance(handle, str):
        loaded = _load_state(handle or default_name())
        if loaded is None:
            return False
        handle = loaded
    rundir = Path(handle.run_dir)
    clean = False
    if handle.alive():
        wait = timeout if timeout is not None else POWEROFF_TIMEOUT_S * max(timeout_factor(handle.accel), 0.5)
        try:
            with handle.guest() as guest:
                # Detach so the SSH session returns before the guest tears its network down.
                guest.run("nohup sh -c 'sleep 0.5; poweroff' >/dev/null 2>&1 &", timeout=20,
                          step="poweroff")
        except GuestError:
            pass  # unreachable guest: the signals below stop it
        clean = _wait_gone(handle.pid, rundir, wait)
        if not clean:
            _kill(handle.pid, rundir)
    for leftover in BOOT_FILES:
        try:
            (rundir / leftover).unlink()
        except FileNotFoundError:
            pass
    return clean


def status(name: str | None = None) -> VmStatus:
    """``running`` (pid alive and our qemu), ``dead`` (state says running, pid gone), ``stopped``."""
    name = name or default_name()
    handle = _load_state(name)
    if handle is None:
        return VmStatus(name, "stopped", None)
    if handle.alive():
        return VmStatus(name, "running", handle)
    return VmStatus(name, "dead", handle,
                    f"qemu pid {handle.pid} is gone; serial log tail:\n{_tail(handle.serial_log)}")


def _wait_gone(pid: int, rundir: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, rundir):
            return True
        time.sleep(0.5)
    return not pid_alive(pid, rundir)


def _kill(pid: int, rundir: Path) -> None:
    """SIGTERM, then SIGKILL, to exactly this pid (checked to be our qemu first)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not pid_alive(pid, rundir):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, rundir, TERM_TIMEOUT_S):
            return
    if pid_alive(pid, rundir):
        raise VmError(f"qemu pid {pid} survived SIGKILL")
