"""What every guest-side driver needs: commands that fail loudly, lf_test's debugfs, dmesg checks.

Imported only inside the guest (the drivers run from the read-only share with the guest's venv),
so it uses nothing but the standard library. `python -m guest.tools unload` is how the host clears
LiteFlow's modules from a guest (before a run, after a failed one, and for `invoke unload`): it
prints what it removed and exits 1 if anything stayed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

LF_TEST_DEBUGFS = Path("/sys/kernel/debug/liteflow_test")
SNAPSHOT_PREFIX = "lf_snap_"
# dmesg lines that mean the kernel is unhappy, whatever the module under test claims.
# A process as an unprivileged local user: nobody, no groups, no capabilities (what the core
# must refuse its admin commands and its samples to).
UNPRIVILEGED = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]
KERNEL_TROUBLE = re.compile(
    r"WARNING:|BUG:|Oops|scheduling while atomic|lockdep|possible circular locking|"
    r"possible recursive locking|inconsistent lock state|rcu_sched self-detected stall|"
    r"rcu: INFO|general protection fault|kernel NULL pointer|Call Trace|UBSAN:|blocked for more than",
)


@dataclass
class CheckedReport:
    """What every driver reports: named checks, the step it reached, timings, new dmesg lines."""

    checks: list[dict] = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    dmesg_new: list[str] = field(default_factory=list)
    step: str = "start"

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})
        return bool(ok)

    @property
    def passed(self) -> bool:
        return all(check["ok"] for check in self.checks)


class DriverAbort(RuntimeError):
    """A step failed in a way that makes the following steps meaningless."""


def sh(*argv: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a command; with `check`, a non-zero exit raises DriverAbort with its output."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise DriverAbort(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done


def dmesg_lines() -> list[str]:
    return sh("dmesg").stdout.splitlines()


def kernel_trouble(lines: list[str]) -> list[str]:
    return [line for line in lines if KERNEL_TROUBLE.search(line)]


def loaded_modules() -> set[str]:
    return {line.split()[0] for line in Path("/proc/modules").read_text().splitlines()}


def liteflow_modules() -> list[str]:
    """LiteFlow's modules in the order they must go: apps (every module using the core that is not
    a snapshot) first, since an app's exit unpins its active snapshot; then snapshots; the core last."""
    users: dict[str, list[str]] = {}
    for line in Path("/proc/modules").read_text().splitlines():
        fields = line.split()
        users[fields[0]] = [u for u in fields[3].strip(",").split(",") if u and u != "-"]
    if "liteflow" not in users:
        return sorted(m for m in users if m.startswith(SNAPSHOT_PREFIX))
    snapshots = sorted(m for m in users if m.startswith(SNAPSHOT_PREFIX))
    apps = sorted(m for m in users["liteflow"] if not m.startswith(SNAPSHOT_PREFIX))
    return [*apps, *snapshots, "liteflow"]


def unload_liteflow() -> list[str]:
    """Remove every LiteFlow module (see liteflow_modules for the order). Returns rmmod's complaint
    for each one that stayed; the one unload every guest driver, the scrub and `invoke unload` use."""
    return unload_modules(liteflow_modules())


def unload_modules(names: list[str]) -> list[str]:
    """rmmod each of `names` that is loaded, in that order; returns a complaint per failure."""
    failures = []
    for name in names:
        if name not in loaded_modules():
            continue
        done = sh("rmmod", name, check=False)
        if done.returncode != 0:
            failures.append(f"rmmod {name}: {done.stderr.strip()}")
    return failures


def read_stress() -> dict[str, int]:
    """lf_test's stress counters: running, queries, errors."""
    text = (LF_TEST_DEBUGFS / "stress").read_text()
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", text)}


def write_debugfs(name: str, value: str) -> None:
    (LF_TEST_DEBUGFS / name).write_text(value)


KMEMLEAK = Path("/sys/kernel/debug/kmemleak")


def kmemleak_available() -> bool:
    """A kernel built with kmemleak (the debug kernel): its verdict replaces slab arithmetic."""
    return KMEMLEAK.exists()


def kmemleak_clear() -> None:
    """Forget the suspects found so far, so the next report holds only what comes after."""
    KMEMLEAK.write_text("clear")


def kmemleak_suspects() -> list[str]:
    """Scan twice (kmemleak's own advice against transient false positives) and return each
    unreferenced object it reports, with its allocation backtrace."""
    for _ in range(2):
        KMEMLEAK.write_text("scan")
    report = KMEMLEAK.read_text()
    return [f"unreferenced object{entry}".rstrip() for entry in report.split("unreferenced object")[1:]]


def _main(argv: list[str]) -> int:
    if argv[1:] != ["unload"]:
        print("usage: python -m guest.tools unload", file=sys.stderr)
        return 2
    present = liteflow_modules()
    failures = unload_liteflow()
    still = loaded_modules()
    print(" ".join(m for m in present if m not in still))
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))


def check_unloaded(report: CheckedReport) -> None:
    """Unload every LiteFlow module and check that none stayed: the end of every driver."""
    failures = unload_liteflow()
    leftovers = liteflow_modules()
    report.check("everything unloads cleanly", not failures and not leftovers,
                 "; ".join(failures) + (f" still loaded: {leftovers}" if leftovers else ""))


def check_dmesg(report: CheckedReport, dmesg_before: int) -> None:
    """Keep what the kernel logged since line `dmesg_before` and check it holds no trouble."""
    report.dmesg_new = dmesg_lines()[dmesg_before:]
    trouble = kernel_trouble(report.dmesg_new)
    report.check("dmesg clean (no WARNING/BUG/Oops/atomic sleep/lockdep)", not trouble, "\n".join(trouble[:20]))


def insmod_test(plan: dict, base: Path, *extra: str) -> None:
    """insmod lf_test with the plan's sizes (and `extra` parameters)."""
    sh("insmod", str(base / plan["test_module"]), f"input_size={plan['input_size']}",
       f"output_size={plan['output_size']}", *extra)
