"""The C agent (userspace/agent) builds warning-free against libnl and fails clearly on a bad blob
or a missing family. Host-only: the agent never gets as far as registering here, because the
liteflow family is never loaded on this machine (modules are loaded only in the guest)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from userspace.snapshot.blob import write_blob
from userspace.snapshot.random_model import random_spec

AGENT = Path(__file__).resolve().parents[2] / "userspace" / "agent"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    # invoke test installs gcc, make and the libnl headers (vm/hosttools.py); missing ones are a failure
    assert shutil.which("gcc") and shutil.which("make"), "gcc and make are needed"
    assert Path("/usr/include/libnl3/netlink/genl/genl.h").is_file(), "libnl-3-dev and libnl-genl-3-dev are needed"
    out = tmp_path_factory.mktemp("agent")
    done = subprocess.run(["make", "-C", str(AGENT), f"OUT={out}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stderr
    return out / "lf_agent"


def run_agent(agent, *args, timeout=30):
    return subprocess.run([str(agent), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_engine_is_built_with_the_kernel_engine_flags():
    flags = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(AGENT), "-n", "OUT=/nonexistent"],
                           capture_output=True, text=True).stdout
    engine_line = next(line for line in flags.splitlines() if "lf_engine.c" in line)
    assert "-mgeneral-regs-only" in engine_line and "-fno-tree-vectorize" in engine_line
    assert "-shared" not in engine_line


def test_usage(agent):
    assert run_agent(agent).returncode == 1
    assert run_agent(agent, "zero", "x").returncode == 1
    assert "usage" in run_agent(agent, 0, "x").stderr


def test_missing_and_malformed_blob(agent, tmp_path):
    missing = run_agent(agent, 1, tmp_path / "nope.blob")
    assert missing.returncode == 2 and "No such file" in missing.stderr
    junk = tmp_path / "junk.blob"
    junk.write_bytes(b"\0" * 64)
    bad = run_agent(agent, 1, junk)
    assert bad.returncode == 2 and "malformed blob" in bad.stderr


def test_corrupt_blob_names_the_crc(agent, tmp_path):
    blob = bytearray(write_blob(random_spec(1, [30, 32, 16, 1])))
    blob[-1] ^= 0xFF
    path = tmp_path / "corrupt.blob"
    path.write_bytes(bytes(blob))
    done = run_agent(agent, 1, path)
    assert done.returncode == 2 and "crc32" in done.stderr


def test_good_blob_then_missing_family(agent, tmp_path):
    path = tmp_path / "good.blob"
    path.write_bytes(write_blob(random_spec(2, [30, 32, 16, 1])))
    done = run_agent(agent, 1, path)
    assert done.returncode == 3, done.stderr
    assert 'family "liteflow" not found' in done.stderr and "liteflow.ko" in done.stderr
