"""The results store: one directory per run, written so that a crash loses nothing finished.

Every number in a report must be traceable to a run, so each run directory carries its
provenance next to the data:

    results/<run-id>/metadata.json   one schema for every experiment (METADATA_KEYS)
    results/<run-id>/raw/<job>/<repetition>.json   each repetition's raw output, as it finished
    results/<run-id>/results.json    records (one per job and repetition) and the summary
    results/<run-id>/logs/           guest drivers' stderr, dmesg, service logs
    results/<run-id>/figures/        written by reports/, from the files above only

Files are written atomically (temp file + rename): a reader never sees half a file, and a run
that dies keeps every repetition that finished. A run can be resumed only by a later invocation
with the same experiment file, profile and code (see `resumable_run`), so finished and new
repetitions never mix silently.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.files import atomic_write_json, file_sha256

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every run's metadata has exactly these keys (None where they do not apply, e.g. no guest).
METADATA_KEYS = (
    "run_id", "experiment", "profile", "status", "started", "finished", "resumed",
    "git_sha", "git_dirty", "host",
    "experiment_file", "experiment_file_sha256", "config", "repetitions",
    "qemu", "accelerator", "guest_kernel", "kernel_release", "image_manifest_sha256", "boot_seconds",
    "boot_attempts", "build_root",
)
FINISHED_OK = ("complete", "passed")


def results_root() -> Path:
    """`results/` at the repo root, or $LITEFLOW_RESULTS (tests point it at a temp dir)."""
    return Path(os.environ.get("LITEFLOW_RESULTS", REPO_ROOT / "results"))


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes (a dirty run is flagged, not refused)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    sha = git("rev-parse", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if sha else None
    return {"git_sha": sha, "git_dirty": dirty}


@dataclass
class Run:
    """A run directory being filled; every write is persisted at once."""

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

    def save_repetition(self, job: str, repetition: int, raw: Any) -> None:
        atomic_write_json(self._raw_path(job, repetition), raw)

    def repetition(self, job: str, repetition: int) -> Any | None:
        """A finished repetition's raw output, or None if it never finished."""
        path = self._raw_path(job, repetition)
        return json.loads(path.read_text()) if path.is_file() else None

    def finished_repetitions(self) -> int:
        return sum(1 for _ in (self.path / "raw").glob("*/*.json"))

    def _raw_path(self, job: str, repetition: int) -> Path:
        return self.path / "raw" / _safe_name(job) / f"{repetition}.json"

    def update_metadata(self, **fields: Any) -> None:
        unknown = set(fields) - set(METADATA_KEYS)
        if unknown:
            raise KeyError(f"not metadata keys: {', '.join(sorted(unknown))}")
        self.metadata.update(fields)
        atomic_write_json(self.path / "metadata.json", self.metadata)

    def finish(self, status: str = "complete") -> None:
        self.update_metadata(status=status, finished=_now_iso())


def _safe_name(job: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in job)


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def new_run(experiment: str, *, experiment_file: Path | None = None, profile: str = "full",
            config: dict | None = None, repetitions: int | None = None) -> Run:
    """Create `results/<run-id>/` with its metadata; the run id sorts by time and names the experiment."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{experiment}-{secrets.token_hex(3)}"
    path = results_root() / run_id
    (path / "logs").mkdir(parents=True)
    (path / "figures").mkdir()
    metadata: dict[str, Any] = dict.fromkeys(METADATA_KEYS)
    metadata.update(
        run_id=run_id, experiment=experiment, profile=profile, status="running", started=_now_iso(),
        resumed=[], host=_host(), config=config, repetitions=repetitions, **git_state(),
    )
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


def open_run(path: Path) -> Run:
    metadata, results = load_run(path)
    return Run(path=path, metadata=metadata, results=results)


def load_run(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a run's metadata and results (analysis reads results only, never re-runs)."""
    metadata = json.loads((path / "metadata.json").read_text())
    results = json.loads((path / "results.json").read_text())
    return metadata, results


def all_runs(root: Path | None = None) -> list[Path]:
    """Every run directory, oldest first (by start time, to the microsecond)."""
    root = root or results_root()
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / "metadata.json").is_file()]
    return sorted(runs, key=lambda p: (load_run(p)[0].get("started") or "", p.name))


def resumable_run(experiment: str, profile: str, experiment_sha256: str,
                  config: dict | None = None) -> tuple[Run | None, str]:
    """The latest unfinished run of this experiment that can be resumed, and why or why not.

    Resuming is only safe when nothing that shapes the numbers changed: same experiment file
    (sha256), same profile, same resolved configuration (overrides included), same commit with a
    clean tree. Otherwise the caller starts clean and says why, so finished and new repetitions
    never mix silently.
    """
    candidates = [p for p in all_runs() if load_run(p)[0].get("experiment") == experiment]
    if not candidates:
        return None, ""
    metadata = load_run(candidates[-1])[0]
    if metadata.get("status") in FINISHED_OK:
        return None, ""
    git = git_state()
    reasons = []
    if metadata.get("profile") != profile:
        reasons.append(f"profile {metadata.get('profile')} != {profile}")
    if metadata.get("experiment_file_sha256") != experiment_sha256:
        reasons.append("the experiment file changed")
    elif config is not None and metadata.get("config") != config:
        reasons.append("its configuration differs (overrides)")
    if metadata.get("git_sha") != git["git_sha"]:
        reasons.append("the code changed (another commit)")
    if metadata.get("git_dirty") or git["git_dirty"]:
        reasons.append("the tree has uncommitted changes")
    if reasons:
        return None, f"the last {experiment} run {metadata['run_id']} did not finish, but " + "; ".join(reasons)
    return open_run(candidates[-1]), ""


def _host() -> dict[str, str]:
    return {"machine": platform.machine(), "kernel": platform.release(),
            "python": platform.python_version(), "cpu": _cpu_model()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
