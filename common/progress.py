"""Progress for long work (image builds, build roots, benchmark sweeps): one rich spinner per step.

Each step prints a line with its time when it ends, so a log of a slow build says where the time
went; when disabled nothing is printed (tests, nested calls).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


class Progress:
    def __init__(self, label: str = "", enabled: bool = True):
        self.label = f"{label}: " if label else ""
        self.enabled = enabled
        self.console = None
        if enabled:
            from rich.console import Console

            from common.console import terminal

            self.console = Console(file=terminal())

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        if self.console is None:
            yield
            return
        start = time.monotonic()
        with self.console.status(f"[bold]{self.label}{text}[/] …"):
            try:
                yield
            except BaseException:
                self.console.print(f"[red]✗[/] {self.label}{text} ({time.monotonic() - start:.0f} s)")
                raise
        self.console.print(f"[green]✓[/] {self.label}{text} ({time.monotonic() - start:.0f} s)")

    def note(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"  {self.label}{text}")

    def warn(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"[yellow]![/] {self.label}{text}")
        else:
            print(f"warning: {self.label}{text}", file=sys.stderr)

    def done(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"[bold green]{self.label}{text}")
