"""Running external commands with errors that say what failed."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path


class CommandError(RuntimeError):
    """An external command failed; carries the step name and the tail of its output."""

    def __init__(self, step: str, argv: Sequence[str], returncode: int, output: str):
        tail = "\n".join(output.strip().splitlines()[-30:])
        super().__init__(f"{step} failed (exit {returncode}): {shlex.join(argv)}\n{tail}")
        self.step = step
        self.returncode = returncode
        self.output = output


def run(
    argv: Sequence[str | Path],
    step: str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    input_text: str | None = None,
) -> str:
    """Run argv, return its combined stdout/stderr; raise CommandError naming `step` on failure."""
    args = [str(a) for a in argv]
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            input=input_text,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
        raise CommandError(f"{step} (timed out after {timeout:.0f} s)", args, -1, out) from exc
    if done.returncode != 0:
        raise CommandError(step, args, done.returncode, done.stdout)
    return done.stdout
