"""The results store: one directory per run, written so that a crash loses nothing finished.

Every number in a report must be traceable to a run, so each run directory carries the
provenance next to the data: `metadata.json` (git sha and dirty flag, host, experiment file and
its hash, and whatever the caller adds: accelerator, kernel, image manifest hash) and
`results.json`. Files are written atomically (temp file + rename), so a reader never sees half a
file and a crashed run keeps every result that was recorded before the crash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def results_root() -> Path:
    """`results/` at the repo root, or $LITEFLOW_RESULTS (tests point it at a temp dir)."""
    return Path(os.environ.get("LITEFLOW_RESULTS", REPO_ROOT / "results"))


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes (a dirty run is flagged, not refused)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    sha = git("rev-parse", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if sha else None
    return {"git_sha": sha, "git_dirty": dirty}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Run:
    """A run directory being filled; `record` adds results one at a time, each persisted at once."""

    path: Path
    metadata: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    def record(self, key: str, value: Any) -> None:
        """Add one result and rewrite results.json atomically, so finished parts survive a crash."""
        self.results[key] = value
        atomic_write_json(self.path / "results.json", self.results)

    def update_metadata(self, **fields: Any) -> None:
        self.metadata.update(fields)
        atomic_write_json(self.path / "metadata.json", self.metadata)

    def finish(self, status: str = "complete") -> None:
        self.update_metadata(status=status, finished=_now_iso())


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run(experiment: str, experiment_file: Path | None = None, **extra: Any) -> Run:
    """Create `results/<run-id>/` with its metadata; the run id sorts by time and names the experiment."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{experiment}-{secrets.token_hex(3)}"
    path = results_root() / run_id
    (path / "logs").mkdir(parents=True)
    (path / "figures").mkdir()
    metadata: dict[str, Any] = {
        "run_id": run_id,
        "experiment": experiment,
        "started": _now_iso(),
        "status": "running",
        "host": {
            "machine": platform.machine(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpu": _cpu_model(),
        },
        **git_state(),
        **extra,
    }
    if experiment_file is not None:
        resolved = experiment_file.resolve()
        metadata["experiment_file"] = (
            str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(resolved)
        )
        metadata["experiment_file_sha256"] = file_sha256(experiment_file)
    run = Run(path=path, metadata=metadata)
    atomic_write_json(path / "metadata.json", metadata)
    atomic_write_json(path / "results.json", {})
    return run


def load_run(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a run's metadata and results (analysis reads results only, never re-runs)."""
    metadata = json.loads((path / "metadata.json").read_text())
    results = json.loads((path / "results.json").read_text())
    return metadata, results


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
