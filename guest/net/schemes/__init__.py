"""Schemes under test, one module each, chosen by name: `get_scheme("bbr")`.

A scheme is whatever makes the senders' datapath behave as the experiment compares: a kernel
congestion control, a LiteFlow module with its slow-path service, a user-space agent. Each module
`guest.net.schemes.<name>` defines `SCHEME`, a Scheme subclass. The driver calls `setup` once the
network is up and before any traffic, gives flows `congestion_control` as iperf3's `-C`, and calls
`teardown` before the network stops, also when something failed in between (so teardown must
cope with a half-done setup). A scheme that starts processes keeps their Popen objects and stops
them by pid in teardown.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from abc import ABC, abstractmethod

SCHEME_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Scheme(ABC):
    """The contract every scheme wrapper implements."""

    name: str = ""

    @property
    @abstractmethod
    def congestion_control(self) -> str:
        """The TCP congestion control flows use (iperf3 -C); must be in the guest kernel's
        net.ipv4.tcp_available_congestion_control after setup."""

    @abstractmethod
    def setup(self, network, plan: dict) -> None:
        """Prepare the datapath on a built network (guest.net.topology.Network). `plan` holds
        `flows` (expanded, each has src, dst), `work` (the plan's folder, where the host put the
        modules and blobs the scheme needs) and `options` (the plan's scheme_options)."""

    @abstractmethod
    def teardown(self) -> None:
        """Undo setup and stop what it started; safe after a failed or partial setup."""

    def describe(self) -> dict:
        """What the report says about this scheme (name, cc, and whatever setup chose)."""
        return {"name": self.name, "congestion_control": self.congestion_control}

    def results(self) -> dict:
        """What the scheme measured itself, read after the traffic and before teardown (counters,
        the updates a slow path made with their times)."""
        return {}

    def checks(self) -> list[tuple[str, bool, str]]:
        """The scheme's own checks of the job, (name, ok, detail) each, asked after teardown: what
        must have held for its numbers to mean anything (e.g. a user-space agent still serving)."""
        return []


def known_schemes() -> list[str]:
    return sorted(module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_"))


def get_scheme(name: object) -> Scheme:
    """A fresh instance of the named scheme; a ValueError lists the known ones otherwise."""
    known = known_schemes()
    if not isinstance(name, str) or not SCHEME_NAME.match(name) or name not in known:
        raise ValueError(f"scheme: unknown scheme {name!r} (known: {', '.join(known)})")
    module = importlib.import_module(f"{__name__}.{name}")
    scheme_class = getattr(module, "SCHEME", None)
    if not (isinstance(scheme_class, type) and issubclass(scheme_class, Scheme)):
        raise TypeError(f"{module.__name__} defines no SCHEME (a guest.net.schemes.Scheme subclass)")
    return scheme_class()
