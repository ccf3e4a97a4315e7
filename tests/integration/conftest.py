"""What the guest integration tests share: one pool of guest sessions whose VM stays up between tests.

Booting the TCG guest costs 35-60 s and CI has a budget, so the tests run on one VM per kernel,
as `invoke bench` runs every experiment on one VM. Sharing does not let one test's leftovers reach
the next: every driver run starts by unloading the LiteFlow modules an earlier one left
(testbed.session.GuestSession.run_driver), and a VM that died is booted again on next use.

The tests that need another kernel (which stops the shared VM) and the fresh-clone test (which
must boot its own) run after the others, so the shared VM boots once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vm.qemu import down
from workloads.runner import Sessions

HERE = Path(__file__).parent
OTHER_KERNEL_TESTS = ("test_samples_group_private_on_a_kernel_with_the_older_guard",)
FRESH_CLONE_MODULE = "test_fresh_clone.py"


def _rank(item: pytest.Item) -> int:
    if Path(item.path).name == FRESH_CLONE_MODULE:
        return 2
    return 1 if item.name in OTHER_KERNEL_TESTS else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the other-kernel tests, then the fresh clone's, to the end of this directory's tests."""
    positions = [i for i, item in enumerate(items) if HERE in Path(item.path).parents]
    for position, item in zip(positions, sorted((items[i] for i in positions), key=_rank)):
        items[position] = item


@pytest.fixture(scope="session")
def guest_pool() -> Iterator[Sessions]:
    pool = Sessions(keep_vm=True)
    yield pool
    pool.close()
    down()
