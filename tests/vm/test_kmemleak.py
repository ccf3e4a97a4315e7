"""The debug kernel's leak check, seen to fail: a module that leaks must be reported.

The stress on the debug kernel (`invoke stress --kernel debian-6.1-debug`) passes "nothing
leaked" when `guest.tools.kmemleak_suspects` returns nothing after 10,000 swaps. That helper has
only ever returned nothing, which a broken scan (a wrong path, a report read before the scan
ended, a parser that never matches) would do too. Here a fixture module (fixtures/lf_leak) drops
the only pointers to the objects it allocated, and the same helper must name them.

kmemleak has false negatives by design (a stale copy of a pointer on a stack it scans keeps the
object "referenced"), so the fixture leaks LF_LEAK_OBJECTS objects at one call depth and the test
asks for most of them, not all: a scan that is broken reports none.

Like the 4.15 tests, this runs only where the debug kernel is already built (about 11 minutes on
2 cores, and its source is a Debian package fetched by apt): CI skips it and says so; a maintainer
runs `invoke smoke --kernel debian-6.1-debug` once (it builds the kernel and its image), then this test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

KERNEL = "debian-6.1-debug"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lf_leak"
KMEMLEAK_MIN_AGE_S = 5      # kmemleak reports no object younger than this (MSECS_MIN_AGE)

def _fixture_define(name: str) -> int:
    """A #define of the fixture's source, read rather than repeated here."""
    match = re.search(rf"^#define\s+{name}\s+(\d+)", (FIXTURE / "lf_leak.c").read_text(), re.MULTILINE)
    assert match, f"{name} not found in the fixture"
    return int(match.group(1))


LF_LEAK_OBJECTS = _fixture_define("LF_LEAK_OBJECTS")
LF_LEAK_BYTES = _fixture_define("LF_LEAK_BYTES")    # these objects, not a neighbour's
SUSPECTS_SCRIPT = ("import json; from guest.tools import kmemleak_available, kmemleak_suspects; "
                   "print(json.dumps({'available': kmemleak_available(), 'suspects': kmemleak_suspects()}))")


@pytest.mark.vm
@pytest.mark.kernelbuild
def test_kmemleak_names_a_module_that_leaks(tmp_path, cached_kernel):
    cached_kernel(KERNEL, f"`invoke smoke --kernel {KERNEL}` builds it once (about 11 min on 2 cores)")
    from testbed.session import GUEST_ENV, GUEST_PYTHON, GUEST_SHARE, GuestSession
    from vm.buildroot import build_modules

    with GuestSession(KERNEL, vm_name="kmemleak-check") as session:
        (module,) = build_modules(session.root, FIXTURE, out_dir=tmp_path, strict=True)
        suspects_command = f"cd {GUEST_SHARE} && {GUEST_ENV} {GUEST_PYTHON} -c \"{SUSPECTS_SCRIPT}\""
        with session.handle.guest() as guest:
            guest.put(module.path, "/root/lf_leak.ko", step="copy the leaking module in")
            guest.run("echo clear > /sys/kernel/debug/kmemleak", timeout=session.scaled(60),
                      step="forget what kmemleak found since boot")
            def scan(step: str) -> dict:
                result = guest.run(suspects_command, timeout=session.scaled(600), step=step)
                return json.loads(result.stdout.strip().splitlines()[-1])

            before = scan("scan before the leak")
            guest.run("insmod /root/lf_leak.ko", timeout=session.scaled(60), step="load the leaking module")
            try:
                guest.run(f"sleep {2 * KMEMLEAK_MIN_AGE_S}", timeout=session.scaled(60), step="let the object age")
                after = scan("scan after the leak")
            finally:
                guest.run("rmmod lf_leak", timeout=session.scaled(60), step="unload the leaking module",
                          check=False)

    assert before["available"] and after["available"], "the debug kernel has no /sys/kernel/debug/kmemleak"
    assert not [s for s in before["suspects"] if "lf_leak" in s]
    leaks = [s for s in after["suspects"] if "lf_leak" in s]
    assert LF_LEAK_OBJECTS // 2 <= len(leaks) <= LF_LEAK_OBJECTS, after["suspects"][:3]
    assert all(f"size {LF_LEAK_BYTES}" in leak for leak in leaks), leaks[0]
