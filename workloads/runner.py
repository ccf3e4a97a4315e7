"""Running experiments: repetitions × jobs into the store, resumable, one guest session per kernel.

The loop is the same for every experiment: repetitions outside, jobs inside, so the schemes of
one repetition run side by side (machines are noisy; ratios within a repetition are the figures
to trust). Each finished job-repetition is stored at once; a run that dies keeps them, and the
next invocation resumes it when nothing that shapes the numbers changed, saying so, or starts
clean and says why (testbed.store.resumable_run).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.console import captured, say
from common.files import file_sha256
from testbed.session import GuestSession
from testbed import store
from testbed.store import Run, new_run, open_run, resumable_run
from workloads import registry
from workloads.contract import Context, Experiment, experiment_path, load_config

GUEST_FIELDS = ("qemu", "accelerator", "guest_kernel", "kernel_release", "image_manifest_sha256",
                "boot_seconds", "boot_attempts", "build_root")
# A resumed run must have run on the same guest as its first part.
SAME_GUEST_FIELDS = ("accelerator", "kernel_release", "image_manifest_sha256")


@dataclass
class Sessions:
    """One guest session per kernel for a whole bench, so the VM boots once."""

    accel: str = "auto"
    keep_vm: bool = False
    sessions: dict[str, GuestSession] = field(default_factory=dict)

    def get(self, kernel: str) -> GuestSession:
        if kernel not in self.sessions:
            self.sessions[kernel] = GuestSession(kernel, accel=self.accel, keep_vm=self.keep_vm)
        return self.sessions[kernel]

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


@contextmanager
def sessions(accel: str = "auto", keep_vm: bool = False) -> Iterator[Sessions]:
    pool = Sessions(accel, keep_vm)
    try:
        yield pool
    finally:
        pool.close()


def run_experiment(name: str, pool: Sessions, *, profile: str = "full", fresh: bool = False,
                   overrides: dict[str, Any] | None = None) -> Run:
    """Run (or resume) one experiment; returns its finished run. Raises on failure, keeping what finished."""
    experiment = registry.load(name)
    path = experiment_path(name)
    config = load_config(path, experiment.schema, profile, overrides)
    run = _open_run(experiment, path, profile, config, fresh)
    try:
        with captured(run.logs / "host.log"):
            _run_jobs(experiment, run, config, pool)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        run.finish(status)
        say(f"{name}: {status}; run {run.run_id} keeps its {run.finished_repetitions()} finished "
            f"job-repetition(s); `invoke bench {name}` resumes it")
        raise
    return run


def _open_run(experiment: Experiment, path, profile: str, config: dict, fresh: bool) -> Run:
    if not fresh:
        previous, why_not = resumable_run(experiment.name, profile, file_sha256(path), config)
        if previous is not None:
            say(f"{experiment.name}: resuming run {previous.run_id} ({previous.finished_repetitions()} "
                f"job-repetition(s) already done; `--fresh` starts clean)")
            previous.update_metadata(status="running", finished=None,
                                     resumed=[*previous.metadata["resumed"], _now()])
            return previous
        if why_not:
            say(f"{experiment.name}: starting clean: {why_not}")
    return new_run(experiment.name, experiment_file=path, profile=profile, config=config,
                   repetitions=config["repetitions"])


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def reanalyze(path: Path) -> Run:
    """Recompute a finished run's records and summary from its raw repetitions with this code.

    Analysis reads results only: when how a quantity is derived changes, the runs already made
    are brought up to date without running anything again. The run says which code analysed it
    (analysed_git_sha) next to which code measured it (git_sha).
    """
    run = open_run(path)
    experiment = registry.load(run.metadata["experiment"])
    config = run.metadata["config"]
    records: list[dict] = []
    for rep in range(config["repetitions"]):
        for job in experiment.jobs(config):
            raw = run.repetition(job.key, rep)
            if raw is not None:
                records += [{**record, "repetition": rep} for record in experiment.records(job, raw)]
    run.record("records", records)
    summary = experiment.summarize(config, records)
    run.record("summary", summary)
    if run.metadata.get("finished"):
        verdict = experiment.passed(summary)
        run.update_metadata(status="complete" if verdict is None else ("passed" if verdict else "failed"))
    git = store.git_state()
    run.record("analysed_git_sha", git["git_sha"] + ("-dirty" if git["git_dirty"] else ""))
    return run


def _run_jobs(experiment: Experiment, run: Run, config: dict, pool: Sessions) -> None:
    kernel = config.get("kernel", "debian-6.1")
    if experiment.uses_guest:
        described = pool.get(kernel).describe()
        if run.metadata.get("accelerator") is not None:
            changed = [k for k in SAME_GUEST_FIELDS if run.metadata.get(k) != described[k]]
            if changed:
                raise RuntimeError(f"run {run.run_id} began on another guest ({', '.join(changed)} differ); "
                                   f"rerun with --fresh")
        run.update_metadata(**described)
    ctx = Context(run=run, config=config, repetition=0, say=say, session_for=pool.get)
    jobs = experiment.jobs(config)
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{experiment.name}: job keys are not unique: {keys}")
    pending = [(rep, job) for rep in range(config["repetitions"]) for job in jobs
               if run.repetition(job.key, rep) is None]
    if pending:
        experiment.prepare(ctx)
    records: list[dict] = []
    total = config["repetitions"] * len(jobs)
    for rep in range(config["repetitions"]):
        for job in jobs:
            raw = run.repetition(job.key, rep)
            if raw is None:
                ctx.repetition = rep
                done = total - len(pending) + 1
                say(f"{experiment.name} [{done}/{total}] repetition {rep + 1}/{config['repetitions']}: {job.key}")
                raw = experiment.run_job(ctx, job)
                run.save_repetition(job.key, rep, raw)
                pending.pop(0)
            records += [{**record, "repetition": rep} for record in experiment.records(job, raw)]
            run.record("records", records)
    summary = experiment.summarize(config, records)
    run.record("summary", summary)
    verdict = experiment.passed(summary)
    run.finish("complete" if verdict is None else ("passed" if verdict else "failed"))
