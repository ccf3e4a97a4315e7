"""Experiment files: data, one per experiment, checked strictly so a typo is an error, not a default.

A researcher edits these files to change a sweep; a misspelt key silently falling back to a
default would produce a run that looks valid and measures the wrong thing, so every key is
checked against the experiment's schema and every error names the file and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"


class ExperimentError(ValueError):
    """An experiment file is missing, malformed, or names something unknown."""


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    required: bool = True
    item_schema: dict[str, "Field"] | None = None  # for lists of tables


def experiment_path(name: str) -> Path:
    path = EXPERIMENTS_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml")))
        raise ExperimentError(f"unknown experiment {name!r}; known: {known}")
    return path


def load_experiment(path: Path, schema: dict[str, Field]) -> dict[str, Any]:
    """Parse a TOML experiment file and check it against `schema` (unknown keys are errors)."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{path.name}: not valid TOML: {exc}") from exc
    check_table(data, schema, path.name)
    return data


def check_table(table: dict[str, Any], schema: dict[str, Field], where: str) -> None:
    """Check one table against its schema (also for sub-tables an experiment checks itself)."""
    for key in table:
        if key not in schema:
            raise ExperimentError(f"{where}: unknown key {key!r}; expected one of {', '.join(sorted(schema))}")
    for key, field in schema.items():
        if key not in table:
            if field.required:
                raise ExperimentError(f"{where}: missing key {key!r}")
            continue
        value = table[key]
        if isinstance(value, bool) and field.kind in (int, float, (int, float)):
            raise ExperimentError(f"{where}: {key!r} must be a number, not a boolean")
        if not isinstance(value, field.kind):
            expected = getattr(field.kind, "__name__", str(field.kind))
            raise ExperimentError(f"{where}: {key!r} must be {expected}, got {type(value).__name__}")
        if field.item_schema is not None:
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    raise ExperimentError(f"{where}: {key}[{index}] must be a table")
                check_table(item, field.item_schema, f"{where}: {key}[{index}]")
