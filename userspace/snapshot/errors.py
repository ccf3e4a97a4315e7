"""The one error type the snapshot toolchain raises for models it cannot turn into a snapshot."""

from __future__ import annotations


class SnapshotError(ValueError):
    """A model cannot become a kernel snapshot; the message names the layer and the reason.

    Raised before any conversion or compilation starts, so a caller (the slow-path service)
    can refuse an update cheaply and keep the active snapshot.
    """
