"""Clients are spawned before time 0 and held until released (guest.net.traffic), so 64 flows in
the TCG guest start together instead of one process start after the other. Checked with a fake
iperf3 on the host: it runs only once released, as the spawned pid, and never if the driver goes
away first."""

import os
import subprocess
import time

from guest.net.traffic import CONNECT_TIMEOUT_MS, FlowPlan, _release, _spawn_client

FAKE_IPERF3 = '#!/bin/sh\necho "$$ $*"\n'


class LocalNetwork:
    """Runs a node's commands here, with the fake iperf3 first on PATH."""

    def __init__(self, bin_dir):
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def ip(self, host: str) -> str:
        return "10.2.1.1"

    def popen(self, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(argv, env=self.env, **kwargs)


def _setup(tmp_path):
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "iperf3"
    fake.write_text(FAKE_IPERF3)
    fake.chmod(0o755)
    return LocalNetwork(tmp_path / "bin"), FlowPlan(7, "s1", "d1", 0.0, 20, "cubic", 5208)


def test_a_held_client_runs_iperf3_only_once_released_and_as_the_spawned_pid(tmp_path):
    network, flow = _setup(tmp_path)
    client = _spawn_client(network, flow, 1.0, tmp_path)
    time.sleep(0.3)
    assert client.poll() is None and (tmp_path / "flow7.json").read_text() == ""
    _release(client)
    assert client.wait(timeout=10) == 0
    pid, *args = (tmp_path / "flow7.json").read_text().split()
    assert int(pid) == client.pid
    assert args == ["-c", "10.2.1.1", "-p", "5208", "-t", "20", "-i", "1", "-C", "cubic", "-J",
                    "--connect-timeout", str(CONNECT_TIMEOUT_MS)]


def test_a_client_never_released_exits_without_a_flow(tmp_path):
    network, flow = _setup(tmp_path)
    client = _spawn_client(network, flow, 1.0, tmp_path)
    client.stdin.close()                      # the driver went away
    assert client.wait(timeout=10) != 0
    assert (tmp_path / "flow7.json").read_text() == ""
