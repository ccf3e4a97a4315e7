"""Keeping third-party chatter out of the console and in the run's logs.

TensorFlow and its converter write to the process's stdout and stderr, from Python ("Saved
artifact at ...", endpoint listings) and from C++ (`fully_quantize: 0, ...`), between the lines
a user wants. While `captured(log)` is active, file descriptors 1 and 2 and sys.stdout/stderr all
go to the log; what the harness itself says goes through `say()` and progress spinners, which
write to the terminal saved when the capture began.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_terminal: list[TextIO] = []


def terminal() -> TextIO:
    """Where the harness's own messages go: the real terminal, even under capture."""
    return _terminal[-1] if _terminal else sys.stderr


def say(text: str) -> None:
    stream = _terminal[-1] if _terminal else sys.stdout
    print(text, file=stream, flush=True)


@contextlib.contextmanager
def captured(log: Path) -> Iterator[None]:
    """Send fds 1/2 and sys.stdout/stderr to `log` (appended) for the block."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    saved_streams = (sys.stdout, sys.stderr)
    term = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log, "a", buffering=1) as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        sys.stdout = sys.stderr = sink
        _terminal.append(term)
        try:
            yield
        finally:
            _terminal.pop()
            sink.flush()
            sys.stdout, sys.stderr = saved_streams
            _release_sink(sink, saved_streams[1])
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            term.close()


def _release_sink(sink: TextIO, stderr: TextIO) -> None:
    """Point log handlers created under the capture back at stderr before the sink closes.

    TensorFlow creates its logger's handler on first use, bound to whatever sys.stderr was then:
    the first run's log. The next run's TensorFlow warning would then be written to that closed
    file and come out as a "Logging error" traceback in place of the warning. logging keeps no
    public list of handlers; its private one is the only way to reach those that no logger holds
    (absl wraps its own).
    """
    for reference in list(logging._handlerList):  # noqa: SLF001
        handler = reference()
        if isinstance(handler, logging.StreamHandler) and handler.stream is sink:
            handler.setStream(stderr)
