"""Where large, reusable artefacts live.

Build roots, wheels, guest images and the accelerator verdict are expensive to make and
independent of any one checkout, so they live under the user's cache directory (XDG), keyed by
content: a fresh clone reuses them and nothing large is written inside the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

APP_DIR_NAME = "liteflow-testbed"


def cache_root() -> Path:
    """The project's cache directory: $LITEFLOW_CACHE, else $XDG_CACHE_HOME/liteflow-testbed."""
    override = os.environ.get("LITEFLOW_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / APP_DIR_NAME


def cache_dir(kind: str) -> Path:
    """A sub-directory of the cache for one kind of artefact, created on demand."""
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(inputs: dict) -> str:
    """A short stable hash of a JSON-serialisable description of everything an artefact depends on."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def clean(kind: str | None = None) -> list[Path]:
    """Remove one kind of cached artefact (or the whole cache); returns what was removed."""
    target = cache_root() / kind if kind else cache_root()
    if not target.exists():
        return []
    shutil.rmtree(target)
    return [target]
