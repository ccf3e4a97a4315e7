"""Which kernels the testbed can build for and boot, and where their packages come from.

Kernel names (what a user types, e.g. ``invoke build --kernel debian-6.12``):

``debian-5.10``  Debian 11 *bullseye*'s kernel
``debian-6.1``   Debian 12 *bookworm*'s kernel (the default)
``debian-6.12``  Debian 13 *trixie*'s kernel
``local:DIR``    the user's own kernel, given as ``.deb`` packages in the folder DIR
``linux-4.15``   Linux 4.15.1, the paper's series, built from source (``vm.kernelsrc``)
``source:PATH``  a kernel built from the user's source tarball or tree at PATH
``debian-6.1-debug``  Debian 12's 6.1 source built with KASAN, lockdep and friends (finding bugs)

A Debian kernel is whatever its suite's ``linux-image-amd64`` / ``linux-headers-amd64``
metapackages point at when the root is created; the ABI (``6.1.0-NN``) is never written down
here. Point releases and security fixes move the metapackages into ``<suite>-updates`` and
``<suite>-security``, which debootstrap does not read, so every spec lists those extra suites and
the kernel is installed with apt after they are added.

From-source kernels (``linux-4.15``, ``source:PATH``, ``debian-6.1-debug``) are compiled by ``vm.kernelsrc`` in a cached
Debian root whose toolchain fits the kernel's age; their guest runs the default Debian userspace
(``suite``), booting the built kernel directly (drivers built in, no initrd).

``local:DIR`` is another way to a 4.15 kernel (Ubuntu's 4.15.0-173-generic) or any other kernel
the Debian archive does not carry. DIR holds the kernel's packages, e.g. for Ubuntu 18.04::

    linux-headers-4.15.0-173_4.15.0-173.182_all.deb           (the "common" headers)
    linux-headers-4.15.0-173-generic_4.15.0-173.182_amd64.deb
    linux-image-unsigned-4.15.0-173-generic_..._amd64.deb      (or linux-image-..., for booting)
    linux-modules-4.15.0-173-generic_..._amd64.deb             (for booting)

The packages take the same path as Debian's: they are installed with apt inside a Debian root,
which pulls their dependencies from that root's suite. The user picks the base suite with a
file ``DIR/suite`` holding one word, ``bullseye``, ``bookworm`` or ``trixie``; without the file
the base is ``bookworm``. Pick a suite whose libraries satisfy the packages' dependencies: Ubuntu
18.04's 4.15 headers need ``libssl1.1``, which bullseye has and bookworm does not, so a 4.15
folder wants ``echo bullseye > DIR/suite``. Package names are read from the file names
(``NAME_VERSION_ARCH.deb``, the archive's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_KERNEL = "debian-6.1"
LOCAL_PREFIX = "local:"
SOURCE_PREFIX = "source:"
# Named from-source kernels: name -> the upstream release it builds (the tarball comes from a mirror).
SOURCE_RELEASES: dict[str, str] = {"linux-4.15": "4.15.1"}
# The guest userspace of a from-source kernel: the default kernel's suite (Debian 12).
SOURCE_GUEST_SUITE = "bookworm"
SUITE_FILE = "suite"
DEFAULT_LOCAL_SUITE = "bookworm"

# Base suites we can build a root from, with the extra suites their kernels may live in.
SUITE_EXTRAS: dict[str, tuple[str, ...]] = {
    "bullseye": ("bullseye-updates", "bullseye-security"),
    "bookworm": ("bookworm-updates", "bookworm-security"),
    "trixie": ("trixie-updates", "trixie-security"),
}


class KernelNameError(ValueError):
    """A kernel name that names no kernel, or a ``local:`` folder that cannot be used."""


@dataclass(frozen=True)
class KernelSpec:
    """One target kernel: the Debian suite its root comes from and the packages that carry it.

    ``extra_suites`` are added to the root's apt sources before the kernel is installed
    (``*-security`` suites come from the security mirror). ``local_debs`` is the folder of a
    ``local:`` kernel (then the package names are those of the ``.deb`` files in it), else None.
    A from-source kernel has no packages: ``source_release`` names the upstream release a mirror
    serves (``linux-4.15``), ``source_path`` the user's tarball or tree (``source:PATH``),
    ``source_package`` a Debian package whose tarball it is (``debian-6.1-debug``: apt fetches and
    verifies it in the ``toolchain`` root). ``config_fragments`` go on top of x86_64_defconfig.
    """

    name: str
    suite: str
    extra_suites: tuple[str, ...] = ()
    image_package: str = "linux-image-amd64"
    headers_package: str = "linux-headers-amd64"
    local_debs: Path | None = None
    description: str = ""
    source_path: Path | None = None
    source_release: str | None = None
    source_package: str | None = None          # a Debian package carrying the kernel's source
    toolchain: str | None = None               # the build root that compiles it (None: vm.kernelsrc's)
    config_fragments: tuple[str, ...] = ("guest.config",)   # in vm/kernel-config/, in order

    @property
    def slug(self) -> str:
        """A file-name-safe form of the name (``debian-6.1``, ``local-<folder name>``, ``source-<name>``)."""
        if self.local_debs is not None:
            return f"local-{_safe(self.local_debs.name) or 'kernel'}"
        if self.source_path is not None:
            return f"source-{_safe(self.source_path.name) or 'kernel'}"
        return self.name

    @property
    def is_local(self) -> bool:
        return self.local_debs is not None

    @property
    def is_source(self) -> bool:
        """Built from source by vm.kernelsrc (no packages, no initrd)."""
        return self.source_path is not None or self.source_release is not None or self.source_package is not None

    def deb_files(self) -> list[Path]:
        """The ``.deb`` files of a local kernel, sorted; empty for a Debian kernel."""
        if self.local_debs is None:
            return []
        return sorted(self.local_debs.glob("*.deb"))

    def headers_debs(self) -> list[Path]:
        """The local kernel's header packages (all of them: the arch one and the common one)."""
        return [p for p in self.deb_files() if deb_package_name(p).startswith("linux-headers-")]


_DEBIAN_KERNELS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (
        KernelSpec("debian-5.10", "bullseye", SUITE_EXTRAS["bullseye"],
                   description="Debian 11 (bullseye), Linux 5.10"),
        KernelSpec("debian-6.1", "bookworm", SUITE_EXTRAS["bookworm"],
                   description="Debian 12 (bookworm), Linux 6.1"),
        KernelSpec("debian-6.12", "trixie", SUITE_EXTRAS["trixie"],
                   description="Debian 13 (trixie), Linux 6.12"),
    )
}


_SOURCE_KERNELS: dict[str, KernelSpec] = {
    name: KernelSpec(name, SOURCE_GUEST_SUITE, SUITE_EXTRAS[SOURCE_GUEST_SUITE], image_package="",
                     headers_package="", source_release=release,
                     description=f"Linux {release} built from source, Debian 12 userspace")
    for name, release in SOURCE_RELEASES.items()
}


# Kernels for finding bugs, not for measuring: built from source with the debugging a kernel
# maintainer turns on (vm/kernel-config/debug.config). Not in the build matrix: one build takes
# tens of minutes and the guest runs several times slower.
_DEBUG_KERNELS: dict[str, KernelSpec] = {
    "debian-6.1-debug": KernelSpec(
        "debian-6.1-debug", SOURCE_GUEST_SUITE, SUITE_EXTRAS[SOURCE_GUEST_SUITE], image_package="",
        headers_package="", source_package="linux-source-6.1", toolchain="debian-6.1",
        config_fragments=("guest.config", "debug.config"),
        description="Debian 12's Linux 6.1 source with KASAN, lockdep, PROVE_RCU and atomic-sleep checks"),
}


def all_kernels() -> list[KernelSpec]:
    """The Debian kernels, oldest first (what their packages give; nothing is compiled)."""
    return list(_DEBIAN_KERNELS.values())


def matrix_kernels() -> list[KernelSpec]:
    """Every kernel `invoke build --kernel all` covers: the from-source ones first (oldest), then Debian's."""
    return [*_SOURCE_KERNELS.values(), *_DEBIAN_KERNELS.values()]


def valid_names() -> list[str]:
    return [*_SOURCE_KERNELS, *_DEBIAN_KERNELS, *_DEBUG_KERNELS, f"{LOCAL_PREFIX}DIR", f"{SOURCE_PREFIX}PATH"]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def deb_package_name(path: Path) -> str:
    """The package name of a ``.deb`` named by the archive convention ``NAME_VERSION_ARCH.deb``."""
    return path.name.split("_", 1)[0]


def resolve_kernel(name: str | None = None) -> KernelSpec:
    """The spec for a kernel name (None: the default, ``debian-6.1``).

    Raises KernelNameError, listing the valid names, for a name that is not one of them, and
    for a ``local:DIR`` whose folder is missing, holds no ``.deb`` or no ``linux-headers-*``
    package, or names an unknown base suite.
    """
    if name is None:
        name = DEFAULT_KERNEL
    name = name.strip()
    if name in _DEBIAN_KERNELS:
        return _DEBIAN_KERNELS[name]
    if name in _SOURCE_KERNELS:
        return _SOURCE_KERNELS[name]
    if name in _DEBUG_KERNELS:
        return _DEBUG_KERNELS[name]
    if name.startswith(LOCAL_PREFIX):
        return _resolve_local(name[len(LOCAL_PREFIX):])
    if name.startswith(SOURCE_PREFIX):
        return _resolve_source(name[len(SOURCE_PREFIX):])
    raise KernelNameError(
        f"unknown kernel {name!r}; valid kernels: {', '.join(valid_names())} "
        f"(DIR: a folder with the kernel image and headers .deb packages; PATH: a kernel source "
        f"tarball or tree)"
    )


def _resolve_source(path_text: str) -> KernelSpec:
    """``source:PATH``: a kernel source tarball (``.tar``, ``.tar.gz``, ``.tar.xz``…) or tree."""
    if not path_text:
        raise KernelNameError("source: needs a path, e.g. source:/path/to/linux-4.15.1.tar.xz")
    path = Path(path_text).expanduser().resolve()
    if path.is_dir():
        if not (path / "Makefile").is_file() or not (path / "Kconfig").is_file():
            raise KernelNameError(f"{path} is not a kernel source tree (no top-level Makefile and Kconfig)")
    elif not path.is_file():
        raise KernelNameError(f"kernel source {path} does not exist")
    elif ".tar" not in path.name and not path.name.endswith((".tgz", ".txz")):
        raise KernelNameError(f"kernel source {path} is neither a folder nor a .tar* tarball")
    return KernelSpec(
        name=f"{SOURCE_PREFIX}{path}",
        suite=SOURCE_GUEST_SUITE,
        extra_suites=SUITE_EXTRAS[SOURCE_GUEST_SUITE],
        image_package="",
        headers_package="",
        source_path=path,
        description=f"kernel built from {path}, Debian 12 userspace",
    )


def _resolve_local(dir_text: str) -> KernelSpec:
    if not dir_text:
        raise KernelNameError("local: needs a folder, e.g. local:/path/to/debs")
    folder = Path(dir_text).expanduser().resolve()
    if not folder.is_dir():
        raise KernelNameError(f"local kernel folder {folder} does not exist (or is not a folder)")
    debs = sorted(folder.glob("*.deb"))
    if not debs:
        raise KernelNameError(
            f"local kernel folder {folder} holds no .deb files; put the kernel's "
            f"linux-image-* and linux-headers-* packages there"
        )
    names = [deb_package_name(p) for p in debs]
    headers = [n for n in names if n.startswith("linux-headers-")]
    images = [n for n in names if n.startswith("linux-image-")]
    if not headers:
        raise KernelNameError(
            f"local kernel folder {folder} holds no linux-headers-*.deb (found: {', '.join(names)})"
        )
    suite = _local_suite(folder)
    # The arch-specific headers package is the one that is not the "-common"/arch-all one:
    # prefer a name ending like the image's flavour, else the longest (…-generic over …-173).
    headers_pkg = max(headers, key=lambda n: (not n.endswith("-common"), len(n)))
    image_pkg = max(images, key=len) if images else ""
    return KernelSpec(
        name=f"{LOCAL_PREFIX}{folder}",
        suite=suite,
        extra_suites=SUITE_EXTRAS[suite],
        image_package=image_pkg,
        headers_package=headers_pkg,
        local_debs=folder,
        description=f"local kernel packages in {folder} on Debian {suite}",
    )


def _local_suite(folder: Path) -> str:
    suite_file = folder / SUITE_FILE
    if not suite_file.exists():
        return DEFAULT_LOCAL_SUITE
    words = [
        line.split("#", 1)[0].strip()
        for line in suite_file.read_text().splitlines()
    ]
    words = [w for w in words if w]
    suite = words[0] if words else ""
    if suite not in SUITE_EXTRAS:
        raise KernelNameError(
            f"{suite_file} names base suite {suite!r}; valid: {', '.join(SUITE_EXTRAS)}"
        )
    return suite
