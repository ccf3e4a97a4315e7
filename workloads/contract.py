"""The experiment contract: one data file plus one module per experiment, nothing else.

An experiment is `workloads/experiments/<name>.toml` (the data a researcher edits) and
`workloads/<name with _ for ->.py` (the code), whose `EXPERIMENT` object implements `Experiment`:

- `schema`: the keys of its data file besides the common ones (`description`, `repetitions`,
  `kernel`, `quick`), checked strictly so a typo is an error naming the key, not a default;
- `jobs(config)`: the units of work of one repetition (e.g. one per scheme × flow count);
- `run_job(ctx, job)`: runs one job once, on the host or through `ctx.session` in the guest, and
  returns its raw output (JSON-able), which the store keeps per job and repetition;
- `records(job, raw)`: how a repetition's raw output becomes flat records;
- `summarize(config, records)`: the summary, with the median and spread over repetitions;
- `figures(view)` and `section(view)`: its figures and report section, from a recorded run only.

Every data file carries a `[quick]` table whose keys override the full profile: that is what CI
runs (`invoke bench --quick`). `workloads.registry` finds experiments by their data files, so
adding one touches its data file, its module and, if it needs one, its guest driver.
"""

from __future__ import annotations

import statistics
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from testbed.session import GuestSession
    from testbed.store import Run

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"
PROFILES = ("full", "quick")


class ExperimentError(ValueError):
    """An experiment file is missing, malformed, or names something unknown."""


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    required: bool = True
    item_schema: dict[str, "Field"] | None = None   # for lists of tables
    table_schema: dict[str, "Field"] | None = None  # for a sub-table
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None


COMMON_SCHEMA: dict[str, Field] = {
    "description": Field(str),
    "repetitions": Field(int, minimum=1),
    "kernel": Field(str, required=False),
    "quick": Field(dict),
}


def experiment_path(name: str) -> Path:
    path = EXPERIMENTS_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml")))
        raise ExperimentError(f"unknown experiment {name!r}; known: {known}")
    return path


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{path.name}: not valid TOML: {exc}") from exc


def load_config(path: Path, schema: dict[str, Field], profile: str = "full",
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The experiment's configuration for a profile, checked against COMMON_SCHEMA + `schema`.

    The full profile is the file's top level; `quick` overlays its `[quick]` table (sub-tables
    merged key by key). `overrides` (tests, `invoke smoke --inject`) are checked the same way.
    """
    if profile not in PROFILES:
        raise ExperimentError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    data = read_toml(path)
    full_schema = {**COMMON_SCHEMA, **schema}
    check_table(data, full_schema, path.name)
    optional = {k: _optional(f) for k, f in full_schema.items() if k not in ("quick", "description")}
    quick = data.pop("quick")
    check_table(quick, optional, f"{path.name}: [quick]")
    config = merge(data, quick) if profile == "quick" else data
    if overrides:
        check_table(overrides, optional, f"{path.name}: overrides")
        config = merge(config, overrides)
    return config


def _optional(field_: Field) -> Field:
    table = {k: _optional(f) for k, f in field_.table_schema.items()} if field_.table_schema else None
    return Field(field_.kind, False, field_.item_schema, table, field_.choices, field_.minimum)


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def check_table(table: dict[str, Any], schema: dict[str, Field], where: str) -> None:
    """Check one table against its schema: unknown keys, missing keys, types, choices, minimums."""
    for key in table:
        if key not in schema:
            raise ExperimentError(f"{where}: unknown key {key!r}; expected one of {', '.join(sorted(schema))}")
    for key, spec in schema.items():
        if key not in table:
            if spec.required:
                raise ExperimentError(f"{where}: missing key {key!r}")
            continue
        check_value(table[key], spec, f"{where}: {key!r}", where, key)


def check_value(value: Any, spec: Field, label: str, where: str, key: str) -> None:
    if isinstance(value, bool) and spec.kind in (int, float, (int, float)):
        raise ExperimentError(f"{label} must be a number, not a boolean")
    if not isinstance(value, spec.kind):
        expected = getattr(spec.kind, "__name__", str(spec.kind))
        raise ExperimentError(f"{label} must be {expected}, got {type(value).__name__}")
    if spec.choices is not None:
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item not in spec.choices:
                raise ExperimentError(f"{label}: {item!r} is not one of {', '.join(map(str, spec.choices))}")
    if spec.minimum is not None:
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item < spec.minimum:
                raise ExperimentError(f"{label} must be >= {spec.minimum}, got {item}")
    if spec.table_schema is not None:
        check_table(value, spec.table_schema, f"{where}: [{key}]")
    if spec.item_schema is not None:
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise ExperimentError(f"{where}: {key}[{index}] must be a table")
            check_table(item, spec.item_schema, f"{where}: {key}[{index}]")


# ---------------------------------------------------------------------------- jobs and runs


@dataclass(frozen=True)
class Job:
    """One unit of work of a repetition; `key` names it in the store (unique within the run)."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a job gets to work with: its run, config, repetition, the guest session, a console."""

    run: "Run"
    config: dict[str, Any]
    repetition: int
    say: Callable[[str], None]
    session_for: Callable[[str], "GuestSession"]
    state: dict[str, Any] = field(default_factory=dict)   # what prepare() made, for every job

    @property
    def session(self) -> "GuestSession":
        """The guest session of the experiment's kernel (one VM shared by a whole bench)."""
        return self.session_for(self.config.get("kernel", "debian-6.1"))


@dataclass(frozen=True)
class RunView:
    """A recorded run, as analysis sees it: metadata, records, summary, raw repetitions."""

    path: Path
    metadata: dict[str, Any]
    results: dict[str, Any]

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.results.get("records", [])

    @property
    def summary(self) -> dict[str, Any]:
        return self.results.get("summary", {})

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"


class Experiment:
    """Base of every experiment module's EXPERIMENT (see the module docstring)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    schema: ClassVar[dict[str, Field]] = {}
    uses_guest: ClassVar[bool] = True

    def prepare(self, ctx: Context) -> None:
        """Host-side work shared by every job of a run (models, blobs, modules), into ctx.state."""

    def jobs(self, config: dict[str, Any]) -> list[Job]:
        raise NotImplementedError

    def run_job(self, ctx: Context, job: Job) -> dict[str, Any]:
        raise NotImplementedError

    def records(self, job: Job, raw: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"job": job.key, **{k: v for k, v in raw.items() if isinstance(v, (int, float, str, bool))}}]

    def summarize(self, config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        return {}

    def passed(self, summary: dict[str, Any]) -> bool | None:
        """For experiments that are checks (the smoke): did every check pass? None: not a check."""
        return None

    def figures(self, view: RunView) -> list[Path]:
        return []

    def section(self, view: RunView) -> list[str]:
        return []

    def headline_values(self, view: RunView) -> dict[tuple[str, str], str]:
        """Our value per paper headline (function, metric), as in reports.report.PAPER_HEADLINES."""
        return {}


# ---------------------------------------------------------------------------- statistics


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Median and spread (min, max, quartiles) of one quantity over repetitions.

    Machines are noisy (one run of the overhead ratio gave 21x, another 52x), so a figure is a
    median with its spread, never one number alone.
    """
    present = sorted(float(v) for v in values if v is not None)
    if not present:
        return {"n": 0, "median": None, "min": None, "max": None, "q1": None, "q3": None}
    quartiles = statistics.quantiles(present, n=4, method="inclusive") if len(present) > 1 else [present[0]] * 3
    return {"n": len(present), "median": statistics.median(present), "min": present[0], "max": present[-1],
            "q1": quartiles[0], "q3": quartiles[2]}


def group(records: list[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    """Records grouped by the values of `keys`, in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(record.get(k) for k in keys), []).append(record)
    return groups
