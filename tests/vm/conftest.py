"""Fixtures for the guest tests."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from common.cache import cache_dir
from vm.kernels import resolve_kernel
from vm.kernelsrc import KernelBuild, KernelSourceError, find_kernel


@pytest.fixture
def cached_kernel() -> Callable[[str, str], KernelBuild]:
    """`cached_kernel(name, how_to_build)`: the from-source kernel `name` as this machine already
    built it, or a skip that says why (not root, never built here, its source not available).

    For the kernels CI does not build (4.15, the debug kernel): the tests that need them run
    where a maintainer built them once, and say so everywhere else. The cache is looked at before
    the source is located, because locating the debug kernel's source means apt fetching a
    140 MB package only to skip.
    """

    def get(name: str, how_to_build: str) -> KernelBuild:
        if os.geteuid() != 0:
            pytest.skip("building in the kernel's root and booting the guest need root")
        spec = resolve_kernel(name)
        kernels = cache_dir("kernels")
        if not any(p.is_dir() for p in kernels.glob(f"{spec.slug}-*")):
            pytest.skip(f"{name} is not built on this machine (no {spec.slug}-* in {kernels}); {how_to_build}")
        try:
            built = find_kernel(spec)
        except KernelSourceError as exc:
            pytest.skip(f"{name}: source not available here ({str(exc).splitlines()[0]})")
        if built is None:
            pytest.skip(f"{name} is built in {kernels} only from another source or config than the current "
                        f"one; {how_to_build}")
        return built

    return get
