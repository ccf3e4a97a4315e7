"""Integration: boot the real debian-6.1 image under TCG, SSH in with the pinned host key, shut down.

Slow (~1–2 min under TCG, plus a provision from nothing the first time). Needs root.
"""

import os
import subprocess
import time

import pytest

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (qemu, image cache)"),
]


@pytest.fixture(scope="module")
def image():
    from vm.image import provision

    return provision("debian-6.1", quiet=True)


def test_boot_ssh_pinned_key_and_shutdown(image, tmp_path):
    from vm import qemu
    from vm.guest import Guest, HostKeyError

    name = f"pytest-{os.getpid()}"
    handle = qemu.up(image, accel="tcg", name=name)
    try:
        assert handle.accel == "tcg" and qemu.status(name).state == "running"
        with handle.guest() as guest:
            assert guest.run("uname -r", timeout=60).stdout.strip() == image.kernel_release
            # the pinned key is the one in use: the guest's own host key matches the image's .pub
            offered = guest.run("cat /etc/ssh/ssh_host_ed25519_key.pub", timeout=30).stdout.split()[1]
            assert offered == image.host_key_pub.read_text().split()[1]
            # the project's code is not in the image; it arrives by the read-only 9p share
            guest.run("mountpoint -q /opt/liteflow && test -f /opt/liteflow/pyproject.toml", timeout=30,
                      step="9p share mounted")
            guest.run("! touch /opt/liteflow/.ro-probe 2>/dev/null", timeout=30, step="9p share read-only")
        # any other host key is rejected: no trust on first use
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        impostor = Guest("127.0.0.1", handle.ssh_port, "root", image.ssh_key, other.with_suffix(".pub"))
        with pytest.raises(HostKeyError):
            impostor.run("true", timeout=30)
        pid = handle.pid
        assert qemu.down(handle) is True  # clean poweroff
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not qemu.pid_alive(pid)
        assert qemu.status(name).state == "stopped"
    finally:
        if qemu.status(name).state == "running":
            qemu.down(handle, timeout=5)
