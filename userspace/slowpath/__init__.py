"""LiteFlow's slow path: the user interface (`Adapter`) and the service that runs it.

    from userspace.slowpath import Adapter, Batch, Encoding
    python -m userspace.slowpath.serve --app NAME --adapter module:Class [--update hot|module] ...

See docs/adapters.md for how to write an adapter.
"""

from .interface import Adapter, Batch, Encoding

__all__ = ["Adapter", "Batch", "Encoding"]
