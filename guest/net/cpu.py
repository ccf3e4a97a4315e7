"""Guest CPU use over a window, from two /proc/stat snapshots (pure parsing + diffing).

Busy is everything but idle and iowait; softirq is reported on its own because that is where
forwarding, tc shaping and TCP receive processing run, i.e. what the network itself costs.
"""

from __future__ import annotations

from pathlib import Path

# /proc/stat cpu columns (proc(5)); guest time is already counted in user/nice, so it is left out.
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_proc_stat(text: str) -> dict[str, dict[str, int]]:
    """{"cpu": {...}, "cpu0": {...}, ...} jiffies per field, from /proc/stat's text."""
    cpus = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0].startswith("cpu"):
            values = [int(word) for word in words[1:1 + len(FIELDS)]]
            values += [0] * (len(FIELDS) - len(values))  # old kernels have fewer columns
            cpus[words[0]] = dict(zip(FIELDS, values))
    if "cpu" not in cpus:
        raise ValueError("no aggregate 'cpu' line in /proc/stat text")
    return cpus


def read_proc_stat() -> dict[str, dict[str, int]]:
    return parse_proc_stat(Path("/proc/stat").read_text())


def _fractions(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    delta = {key: after[key] - before[key] for key in FIELDS}
    total = sum(delta.values())
    if total <= 0:
        return {"busy": 0.0, "softirq": 0.0}
    return {"busy": round((total - delta["idle"] - delta["iowait"]) / total, 4),
            "softirq": round(delta["softirq"] / total, 4)}


def cpu_use(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict:
    """Busy and softirq fractions overall and per CPU between two snapshots (0..1 each)."""
    overall = _fractions(before["cpu"], after["cpu"])
    per_cpu = {name: _fractions(before[name], after[name])
               for name in sorted((n for n in after if n != "cpu" and n in before), key=lambda n: int(n[3:]))}
    return {**overall, "per_cpu": per_cpu}
