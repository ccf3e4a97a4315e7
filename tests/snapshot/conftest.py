"""Shared fixtures for the snapshot toolchain tests."""

from __future__ import annotations

import pytest

from userspace.snapshot.random_model import random_spec
from userspace.snapshot.spec import SnapshotSpec


@pytest.fixture
def spec() -> SnapshotSpec:
    return random_spec(1, [30, 32, 16, 1])
