"""Unit tests of the VM lifecycle (qemu command line, state, dead-VM detection, kill by pid),
the accelerator choice and the SSH client's key handling — no real VM here."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from vm import accel, qemu
from vm.guest import Guest, read_host_key
from vm.image import Image


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_image(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    for name in ("disk.img", "vmlinuz", "initrd.img"):
        (d / name).write_bytes(b"")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "ssh_host_ed25519_key")],
                   check=True)
    manifest = {"kernel_name": "debian-6.1", "kernel_release": "6.1.0-99-amd64", "suite": "bookworm",
                "sha256": {"vmlinuz": "0" * 64}}
    (d / "manifest.json").write_text(json.dumps(manifest))
    (d / "stamp").write_text("ok")
    return Image(d, "debian-6.1", "6.1.0-99-amd64", "bookworm", manifest)


def test_qemu_argv_tcg(fake_image, tmp_path):
    rd = tmp_path / "run"
    argv = qemu.qemu_argv(fake_image, accel="tcg", memory_mb=3072, cpus=2, ssh_port=2222,
                          rundir=rd, repo=Path("/repo"))
    line = " ".join(argv)
    assert "-accel tcg -cpu max" in line and "-smp 2 -m 3072" in line
    assert f"-kernel {fake_image.kernel} -initrd {fake_image.initrd}" in line
    assert argv[argv.index("-append") + 1] == "root=/dev/vda rw console=ttyS0 loglevel=4 net.ifnames=0 panic=-1"
    assert f"file={rd / 'overlay.qcow2'},if=virtio,format=qcow2" in argv
    assert "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22" in argv
    assert "local,path=/repo,mount_tag=liteflow,security_model=none,readonly=on" in argv
    assert f"file:{rd / 'serial.log'}" in argv
    for flag in ("-no-reboot", "-daemonize", "-pidfile"):
        assert flag in argv
    assert argv[argv.index("-display") + 1] == "none"
    assert str(fake_image.disk) not in line  # the base image is only reached through the overlay


def test_qemu_argv_kvm_and_no_share(fake_image, tmp_path):
    argv = qemu.qemu_argv(fake_image, accel="kvm", memory_mb=1024, cpus=1, ssh_port=1,
                          rundir=tmp_path, repo=None)
    assert "-accel kvm -cpu host" in " ".join(argv) and "-virtfs" not in argv


def test_status_stopped_dead_running(fake_image, tmp_path):
    assert qemu.status().state == "stopped"
    rd = qemu.run_dir("default")
    rd.mkdir(parents=True)
    (rd / "serial.log").write_text("[ 1.0] Kernel panic - not syncing\n")
    # A process that looks like our qemu: "qemu" and the run dir on its command line.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "qemu", str(rd)])
    try:
        handle = qemu.VmHandle(name="default", pid=proc.pid, ssh_port=qemu.free_port(), accel="tcg",
                               kernel_release="6.1.0-99-amd64", image_path=str(fake_image.path),
                               run_dir=str(rd), started=0.0)
        qemu._save_state(handle)
        st = qemu.status()
        assert st.state == "running" and st.handle.pid == proc.pid
        # down: SSH is unreachable (nothing listens) so it falls back to SIGTERM by pid
        assert qemu.down(timeout=1) is False
        assert proc.wait(5) is not None
        assert qemu.status().state == "stopped"
        assert (rd / "serial.log").exists() and not (rd / "state.json").exists()
        # a state whose pid is gone is a dead VM, reported with the serial tail
        qemu._save_state(handle)
        st = qemu.status()
        assert st.state == "dead" and "Kernel panic" in st.detail
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pid_alive_rejects_other_processes(tmp_path):
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert not qemu.pid_alive(proc.pid)  # not a qemu
    finally:
        proc.kill()
        proc.wait()
    assert not qemu.pid_alive(proc.pid)


def test_up_refuses_a_running_vm(fake_image, monkeypatch):
    h = qemu.VmHandle("default", 1, 2, "tcg", "r", str(fake_image.path), "/x", 0.0)
    monkeypatch.setattr(qemu, "status", lambda name="default": qemu.VmStatus(name, "running", h))
    with pytest.raises(qemu.VmError, match="already running"):
        qemu.up(fake_image)


def test_accel_choice_and_cached_verdict(tmp_path, monkeypatch):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    probes = []
    monkeypatch.setattr(accel, "_probe", lambda k: probes.append(k) or
                        {"kvm": False, "reason": "stalled after Probing EDD"})
    monkeypatch.setattr(accel, "qemu_version", lambda: "QEMU emulator version 7.2.22")
    assert accel.choose_accel("tcg", kernel) == "tcg" and probes == []
    assert accel.choose_accel("auto", kernel) == "tcg"
    assert accel.choose_accel("auto", kernel) == "tcg"
    assert len(probes) == 1  # verdict cached
    with pytest.raises(accel.AccelError, match="Probing EDD"):
        accel.choose_accel("kvm", kernel)
    kernel.write_bytes(b"another kernel")  # new kernel image: new probe
    accel.choose_accel("auto", kernel)
    assert len(probes) == 2
    with pytest.raises(accel.AccelError):
        accel.choose_accel("hvf", kernel)
    assert accel.timeout_factor("tcg") == 1.0 and accel.timeout_factor("kvm") < 1.0


def test_accel_auto_takes_kvm_when_probe_passes(tmp_path, monkeypatch):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    monkeypatch.setattr(accel, "_probe", lambda k: {"kvm": True, "reason": "Kernel panic in 2 s"})
    assert accel.choose_accel("auto", kernel) == "kvm"


def test_host_key_pinned_and_reject_policy(tmp_path):
    pub = tmp_path / "ssh_host_ed25519_key.pub"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ssh_host_ed25519_key")],
                   check=True)
    key = read_host_key(pub)
    assert key.get_name() == "ssh-ed25519"
    assert read_host_key(pub.read_text().strip()).get_base64() == key.get_base64()
    g = Guest("127.0.0.1", 2222, "root", tmp_path / "id", pub)
    conn = g._new_connection()
    assert isinstance(conn.client._policy, paramiko.RejectPolicy)
    known = conn.client.get_host_keys().lookup("[127.0.0.1]:2222")
    assert list(known.keys()) == ["ssh-ed25519"] and known["ssh-ed25519"].get_base64() == key.get_base64()
    assert len(conn.client.get_host_keys()) == 1


def test_ssh_argv_pins_the_image_key(fake_image, tmp_path):
    rd = tmp_path / "run"
    rd.mkdir()
    h = qemu.VmHandle("default", 1, 40022, "tcg", "r", str(fake_image.path), str(rd), 0.0)
    argv = h.ssh_argv("uname", "-r")
    assert "StrictHostKeyChecking=yes" in argv and argv[-3:] == ["root@127.0.0.1", "uname", "-r"]
    known = (rd / "known_hosts").read_text().split()
    assert known[0] == "[127.0.0.1]:40022" and known[2] == fake_image.host_key_pub.read_text().split()[1]


def test_up_keeps_the_dead_boots_console_and_says_when_qemu_exits_at_once(fake_image, monkeypatch):
    """A VM that died is booted again by the harness: its console must survive the new boot, and a
    qemu that exits right after daemonizing (its pidfile gone with it) is a VmError, not a crash."""
    rd = qemu.run_dir("default")
    rd.mkdir(parents=True)
    (rd / "serial.log").write_text("[ 9.0] Out of memory: Killed process 612 (python3)\n")
    (rd / "qemu.pid").write_text("12345\n")

    def qemu_that_exits(argv, **_kwargs):
        if argv[0] == "qemu-img":
            return
        (rd / "serial.log").write_text("qemu: could not load kernel\n")

    monkeypatch.setattr(qemu, "run", qemu_that_exits)
    monkeypatch.setattr(qemu, "choose_accel", lambda *_args: "tcg")
    with pytest.raises(qemu.VmError, match="exited right after it daemonized(.|\n)*could not load kernel"):
        qemu.up(fake_image, repo=None)
    assert "Out of memory" in (rd / "serial.previous.log").read_text()
    assert not (rd / "qemu.pid").exists()


class _FakeBoots:
    """qemu stand-ins for `up`: each start writes a pid and a console; the guest of boot k answers
    SSH only if k is in `answering`, and `died` boots are gone by the time SSH is tried."""

    def __init__(self, rundir: Path, answering: set[int], died: frozenset[int] = frozenset()):
        self.rundir, self.answering, self.died = rundir, answering, died
        self.boots = 0
        self.alive: set[int] = set()
        self.killed: list[int] = []

    def run(self, argv, **_kwargs):
        if argv[0] == "qemu-img":
            return
        self.boots += 1
        pid = 1000 + self.boots
        (self.rundir / "qemu.pid").write_text(f"{pid}\n")
        (self.rundir / "serial.log").write_text(f"boot {self.boots}: watchdog: BUG: soft lockup\n")
        if self.boots not in self.died:
            self.alive.add(pid)

    def guest(self, handle):
        boot = handle.pid - 1000
        fakes = self

        class FakeGuest:
            def wait_for_ssh(self, timeout, alive=None):
                if boot not in fakes.answering:
                    raise qemu.GuestError("wait for ssh", f"no SSH answer within {timeout:.0f} s")
                return 1.0

            def close(self):
                pass

        return FakeGuest()

    def kill(self, pid, _rundir):
        self.killed.append(pid)
        self.alive.discard(pid)


@pytest.fixture
def fake_boots(monkeypatch):
    def install(answering: set[int], died: frozenset[int] = frozenset()) -> _FakeBoots:
        rd = qemu.run_dir("default")
        rd.mkdir(parents=True)
        fakes = _FakeBoots(rd, answering, died)
        monkeypatch.setattr(qemu, "run", fakes.run)
        monkeypatch.setattr(qemu, "choose_accel", lambda *_args: "tcg")
        monkeypatch.setattr(qemu, "pid_alive", lambda pid, _rundir=None: pid in fakes.alive)
        monkeypatch.setattr(qemu, "_kill", fakes.kill)
        monkeypatch.setattr(qemu.VmHandle, "guest", lambda handle: fakes.guest(handle))
        return fakes
    return install


def test_up_boots_again_when_the_first_boot_hangs(fake_image, fake_boots):
    """A TCG boot that hangs (alive, no SSH) is stopped by pid and the image booted again; the
    hung boot's console stays for a post-mortem and the handle says it took two boots."""
    fakes = fake_boots(answering={2})
    handle = qemu.up(fake_image, repo=None, boot_timeout=1)
    assert fakes.boots == 2 and fakes.killed == [1001]
    assert handle.pid == 1002 and handle.boot_attempts == 2
    assert json.loads((qemu.run_dir("default") / "state.json").read_text())["boot_attempts"] == 2
    assert "boot 1:" in (qemu.run_dir("default") / "serial.hung.log").read_text()
    assert "boot 2:" in handle.serial_log.read_text()


def test_up_gives_up_after_its_attempts_and_never_retries_a_dead_vm(fake_image, fake_boots):
    fakes = fake_boots(answering=set())
    with pytest.raises(qemu.VmError, match=r"gave no SSH during boot(.|\n)*boot 2 of 2"):
        qemu.up(fake_image, repo=None, boot_timeout=1)
    assert fakes.boots == 2 and fakes.killed == [1001, 1002] and not fakes.alive

    shutil.rmtree(qemu.run_dir("default"))
    fakes = fake_boots(answering={2}, died=frozenset({1}))
    with pytest.raises(qemu.VmError, match="died during boot"):
        qemu.up(fake_image, repo=None, boot_timeout=1)
    assert fakes.boots == 1
