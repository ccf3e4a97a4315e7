"""The one way a guest driver is run: `python -m guest.driver NAME PLAN.json`.

Every driver is a module `guest.NAME` with `main(plan: dict, work: Path)`: it gets the plan the
host wrote and the directory holding it (modules, blobs and arrays the plan names sit next to
it), and returns a JSON-able report, as a dict or as a dataclass (turned into a dict here). This entry point prints that report as the last line
of stdout, which the host reads; anything else a driver prints, and its stderr, go to the run's
logs. A driver that raises prints no report, so the host sees a crash, never a half-report.
Checks that fail are part of the report (`checks`, `ok`), not an exit code: exit 0 means "a
report was produced".
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

DRIVER_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def run_driver(name: str, plan_path: Path) -> dict:
    if not DRIVER_NAME.match(name) or name == "driver":
        raise SystemExit(f"not a driver name: {name!r}")
    module = importlib.import_module(f"guest.{name}")
    plan = json.loads(plan_path.read_text())
    report = module.main(plan, plan_path.parent)
    return asdict(report) if is_dataclass(report) else report


def _main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m guest.driver NAME PLAN.json", file=sys.stderr)
        return 2
    report = run_driver(argv[1], Path(argv[2]))
    sys.stdout.flush()
    print("\n" + json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
