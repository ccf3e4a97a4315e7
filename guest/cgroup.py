"""A CPU limit for background work in the guest, as a cgroup v2 group with `cpu.max`.

The slow path is background work that shares the guest's two vCPUs with the datapath it tunes.
`nice` only orders the two while both want a vCPU; under TCG every busy vCPU is also a busy host
core, and with the slow path's TensorFlow keeping one vCPU at 100 % the host has no core left
for the emulator's own work (timers, the other vCPU's interrupts), so the flows slow down even
though the scheduler always prefers them (docs/cc.md, "One flow on a slower host"). A bandwidth
limit (`cpu.max`) caps what the slow path takes at all, whatever else is running.

A limit needs the cpu controller on at the root, and that makes each top-level group one
scheduling entity: at the default weight the slow path's group would share the vCPUs with all of
user.slice (the flows, the user-space agent) as an equal while under its limit. So it gets the
lowest weight, background work as nice 19 made it before there was a group.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
BACKGROUND_WEIGHT = 1        # cpu.weight's minimum (default 100): runs when the others idle


class CpuGroup:
    """A cgroup under the root with a `cpu.weight` and, if `cpus` is given, at most that many
    CPUs' worth of time per period."""

    def __init__(self, name: str, weight: int, cpus: float | None = None, root: Path = ROOT) -> None:
        if cpus is not None and not cpus > 0:
            raise ValueError(f"a CPU limit must be > 0 CPUs, not {cpus!r}")
        if not 1 <= weight <= 10_000:
            raise ValueError(f"cpu.weight is 1-10000, not {weight!r}")
        self.weight = weight
        self.cpus = cpus
        self.root = root
        self.path = root / name

    def create(self) -> None:
        """Make the group (again: a leftover of a crashed run is emptied by its processes' death)
        with its weight and limit; raises OSError where the kernel has no cgroup v2 CPU controller."""
        if "cpu" not in (self.root / "cgroup.controllers").read_text().split():
            raise OSError(f"{self.root} has no cpu controller: no CPU limit possible")
        if "cpu" not in (self.root / "cgroup.subtree_control").read_text().split():
            (self.root / "cgroup.subtree_control").write_text("+cpu\n")
        self.path.mkdir(exist_ok=True)
        quota = "max" if self.cpus is None else str(round(self.cpus * PERIOD_US))
        (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
        (self.path / "cpu.weight").write_text(f"{self.weight}\n")

    def add(self, pid: int) -> None:
        """Move process `pid`, all its threads, into the group."""
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def stats(self) -> dict:
        """CPU seconds the group used and was held back, from its cpu.stat."""
        fields = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        return {"cpus": self.cpus, "weight": self.weight, "usage_s": int(fields["usage_usec"]) / 1e6,
                "throttled_s": int(fields.get("throttled_usec", 0)) / 1e6,
                "periods": int(fields.get("nr_periods", 0)), "throttled_periods": int(fields.get("nr_throttled", 0))}

    def remove(self) -> None:
        """Remove the group once its processes are gone."""
        if self.path.exists():
            self.path.rmdir()
