"""Link changes at planned times during the traffic (rate, delay, queue, loss, reverse-direction
slots of a named link).

A change is validated up front (before any network is built) and applied with `tc ... change` on
every shaped end of the link (guest.net.shaping), so queued packets survive it. Each application
is timestamped on the traffic clock, next to its planned time, since under TCG the two can drift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from guest.net.shaping import SHAPE_KEYS, check_keys, validate_shape_values
from guest.net.spec import Blueprint
from guest.net.topology import Network, log
from guest.tools import DriverAbort


@dataclass(frozen=True)
class LinkChange:
    at_s: float
    link: str
    changes: dict


def parse_link_changes(data: object, blueprint: Blueprint) -> list[LinkChange]:
    """Validated changes, sorted by time; a ValueError names the bad key or the unknown link."""
    if not isinstance(data, list):
        raise ValueError("link_changes: expected a list of tables")
    changes = []
    names = [link.name for link in blueprint.links]
    for i, item in enumerate(data):
        where = f"link_changes[{i}]"
        check_keys(where, item, ("at_s", "link", *SHAPE_KEYS))
        at = item.get("at_s")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or at < 0:
            raise ValueError(f"{where}.at_s: expected a time >= 0 in seconds, got {at!r}")
        if item.get("link") not in names:
            raise ValueError(f"{where}.link: {item.get('link')!r} is not a link (links: {', '.join(names)})")
        values = validate_shape_values(where, item)
        if not values:
            raise ValueError(f"{where}: changes nothing (give {', '.join(SHAPE_KEYS)})")
        changes.append(LinkChange(float(at), item["link"], values))
    return sorted(changes, key=lambda change: change.at_s)


def scheduled(network: Network, changes: list[LinkChange],
              records: list[dict]) -> list[tuple[float, Callable[[Callable[[], float]], None]]]:
    """(time, action) pairs for guest.net.traffic.run_flows, which calls each action with the
    traffic clock; the action appends its record ({at_s, applied_at_s, done_at_s, link, changes,
    commands, ok, error}) to `records`."""

    def action(change: LinkChange) -> Callable[[Callable[[], float]], None]:
        def apply(clock: Callable[[], float]) -> None:
            record = {"at_s": change.at_s, "applied_at_s": round(clock(), 3),
                      "link": change.link, "changes": change.changes}
            try:
                record["commands"] = network.change_link(change.link, change.changes)
                record["ok"] = True
            except DriverAbort as exc:
                record.update(ok=False, error=str(exc))
            record["done_at_s"] = round(clock(), 3)
            log(f"link change at {record['applied_at_s']} s: {change.link} {change.changes} "
                f"{'ok' if record['ok'] else record['error']}")
            records.append(record)
        return apply

    return [(change.at_s, action(change)) for change in changes]
