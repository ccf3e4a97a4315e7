"""Cached Debian roots that hold a target kernel's headers and gcc, and module builds inside them.

Debian's ``linux-headers-*`` Makefiles include the ``-common`` headers by absolute path, so an
out-of-tree module is built where the headers are installed: in a Debian root made with
debootstrap, entered with ``chroot`` (``chroot ROOT make -C /usr/src/linux-headers-REL
M=/build/... modules``). That is also the guest's toolchain: same headers, same gcc.

Cache layout, under ``common.cache.cache_dir("buildroots")``::

    <slug>-<key>/root/            the Debian root (chroot)
    <slug>-<key>/buildroot.json   the stamp: written last, so its presence means "complete"
    <slug>-<key>.lock             flock held while the entry is built
    .tmp-<slug>-<key>-<pid>/      an entry being built; renamed to <slug>-<key> when done

``<key>`` is ``content_key`` of the recipe's inputs (suite, extra suites, mirrors, packages,
recipe version, and for a ``local:`` kernel the sha256 of its .deb files). A Debian kernel's ABI
is whatever the metapackage pointed at when the root was made; the root keeps it until the cache
entry is removed (``common.cache.clean("buildroots")``), so builds are repeatable.

A failed or interrupted build removes its ``.tmp-*`` folder; a killed one leaves it, never taken
for complete, and the next run removes it (after unmounting anything a killed debootstrap left
mounted inside it). ``build_cache_entry`` keeps these rules for the kernel builds too. No bind
mounts are made by this module: debootstrap and apt work in the root without them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

from common.cache import cache_dir, content_key
from common.files import atomic_write_bytes, atomic_write_json, file_sha256, flocked, try_flock
from common.progress import Progress
from common.proc import CommandError, run
from common.system import ensure_tools

from vm.kernels import KernelSpec

T = TypeVar("T")

RECIPE_VERSION = 1
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# From the main suite, by debootstrap (these never depend on the kernel ABI).
BOOTSTRAP_PACKAGES = ("gcc", "make", "libc6-dev", "kmod")
STAMP_NAME = "buildroot.json"
TMP_PREFIX = ".tmp-"
CHROOT_BUILD_DIR = "/build"

STEP_TIMEOUT_S = 1800
MAKE_TIMEOUT_S = 900

CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LC_ALL": "C",
    "LANG": "C",
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
}
_PASSED_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")

_KBUILD_OUTPUTS = ("*.o", "*.ko", "*.mod", "*.mod.c", "*.mod.o", ".*.cmd", "*.cmd",
                   "Module.symvers", "modules.order", ".tmp_versions", ".git", "__pycache__")


class BuildRootError(RuntimeError):
    """A build root cannot be made or used (missing host tool, not root, odd headers layout)."""


class BuildWarningsError(CommandError):
    """A strict module build produced compiler warnings."""

    def __init__(self, step: str, argv: Sequence[str], warnings: Sequence["CompilerWarning"], output: str):
        listed = "\n".join(w.text for w in warnings)
        super().__init__(step, argv, 0, listed)
        self.args = (f"{step}: {len(warnings)} compiler warning(s) in a strict build:\n{listed}",)
        self.warnings = list(warnings)
        self.full_output = output


# --------------------------------------------------------------------------------------------
# The root


@dataclass
class BuildRoot:
    """A complete Debian root for one kernel.

    ``path`` is the root on the host; ``headers_dir`` is the headers folder as seen inside the
    root (``/usr/src/linux-headers-<release>``); ``kernel_release`` is read from it.
    ``gcc_version`` is the root's ``gcc -dumpfullversion``; ``kernel_cc`` is the compiler the
    kernel was built with (``CONFIG_CC_VERSION_TEXT``, empty before 5.8).
    """

    path: Path
    kernel_release: str
    headers_dir: str
    gcc_version: str
    spec: KernelSpec
    key: str
    kernel_cc: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    build_seconds: float = 0.0

    @property
    def entry_dir(self) -> Path:
        return self.path.parent

    def host_path(self, inside: str | PurePosixPath) -> Path:
        """The host path of a path inside the root."""
        rel = PurePosixPath(inside).relative_to("/") if str(inside).startswith("/") else PurePosixPath(inside)
        return self.path / rel

    def chroot_run(self, argv: Sequence[str | Path], step: str, *, timeout: float | None = STEP_TIMEOUT_S) -> str:
        """Run a command inside the root (clean environment, C locale); return its output."""
        return _chroot(self.path, argv, step, timeout=timeout)


def _chroot_env() -> dict[str, str]:
    env = dict(CHROOT_ENV)
    env.update({k: os.environ[k] for k in _PASSED_ENV if k in os.environ})
    return env


def _chroot(root: Path, argv: Sequence[str | Path], step: str, *, timeout: float | None = STEP_TIMEOUT_S) -> str:
    return run(["chroot", root, *argv], step, env=_chroot_env(), timeout=timeout)


def build_packages(spec: KernelSpec) -> list[str]:
    """What apt installs into the root after the extra suites are added (besides the bootstrap set)."""
    if spec.is_local:
        return [p.name for p in spec.headers_debs()]
    return [spec.headers_package]


def recipe_inputs(
    spec: KernelSpec, mirror: str = DEBIAN_MIRROR, security_mirror: str = SECURITY_MIRROR
) -> dict:
    """Everything a root depends on: its cache key is ``content_key`` of this."""
    inputs = {
        "recipe": RECIPE_VERSION,
        "suite": spec.suite,
        "extra_suites": list(spec.extra_suites),
        "mirror": mirror,
        "security_mirror": security_mirror,
        "bootstrap_packages": list(BOOTSTRAP_PACKAGES),
        "packages": build_packages(spec),
    }
    if spec.is_local:
        inputs["local_debs"] = {p.name: file_sha256(p) for p in spec.headers_debs()}
    return inputs


def root_key(spec: KernelSpec, mirror: str = DEBIAN_MIRROR, security_mirror: str = SECURITY_MIRROR) -> str:
    return content_key(recipe_inputs(spec, mirror, security_mirror))


def apt_sources(spec: KernelSpec, mirror: str = DEBIAN_MIRROR, security_mirror: str = SECURITY_MIRROR) -> str:
    """The root's /etc/apt/sources.list: the main suite plus the spec's extra suites."""
    lines = [f"deb {mirror} {spec.suite} main"]
    for suite in spec.extra_suites:
        url = security_mirror if suite.endswith("-security") else mirror
        lines.append(f"deb {url} {suite} main")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Making a root


def ensure_build_root(
    spec: KernelSpec,
    progress: bool = True,
    *,
    mirror: str = DEBIAN_MIRROR,
    security_mirror: str = SECURITY_MIRROR,
) -> BuildRoot:
    """The cached root for `spec`, built first if there is no complete one.

    Safe to run concurrently (one builder per entry; others wait on its lock) and to interrupt
    (nothing half-built is ever taken for complete). Needs root (debootstrap, chroot).
    """
    if spec.is_source:  # compiled, not packaged: its root is the kernel build's (vm.kernelsrc)
        from vm.kernelsrc import build_root_for  # noqa: PLC0415 (kernelsrc imports this module)

        return build_root_for(spec, progress=progress)
    base = cache_dir("buildroots")
    key = root_key(spec, mirror, security_mirror)
    entry = base / f"{spec.slug}-{key}"
    show = Progress(spec.name, enabled=progress)

    def populate(tmp: Path) -> dict:
        start = time.monotonic()
        info = _populate_root(spec, tmp / "root", show, mirror=mirror, security_mirror=security_mirror)
        seconds = round(time.monotonic() - start, 1)
        show.note(f"kernel {info.get('kernel_release')}, gcc {info.get('gcc_version')}, in {seconds:.0f} s → {entry / 'root'}")
        return {
            "kernel": spec.name,
            "key": key,
            "inputs": recipe_inputs(spec, mirror, security_mirror),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": seconds,
            **info,
        }

    return build_cache_entry(entry, lambda path: _load_complete(path, spec, key), populate, show)


def build_cache_entry(entry: Path, load: Callable[[Path], T | None], populate: Callable[[Path], dict],
                      show: Progress, stamp_name: str = STAMP_NAME) -> T:
    """The complete cache entry `entry` as `load` reads it, built by `populate` first if needed.

    Why one function for every cached build (roots, kernels): the guarantees are subtle and must
    not drift apart. One builder per entry (others wait on its lock, then find it done); the
    build happens in ``.tmp-<entry>-<pid>`` and `populate(tmp)` returns the stamp, which is
    written last, so an entry exists only once complete; a stale or stampless folder is removed,
    never trusted. If `populate` raises, its folder is removed and nothing is cached.
    """
    done = load(entry)
    if done is not None:
        return done
    base = entry.parent
    with flocked(base / f"{entry.name}.lock", lambda: show.note(f"waiting for another process building {entry.name}")):
        _remove_stale_tmp(base, own_entry=entry.name)
        done = load(entry)  # another process may have finished it meanwhile
        if done is not None:
            return done
        if entry.exists():  # a final folder without a stamp: not ours to trust
            _remove_tree(entry)
        tmp = base / f"{TMP_PREFIX}{entry.name}-{os.getpid()}"
        if tmp.exists():
            _remove_tree(tmp)
        tmp.mkdir()
        try:
            stamp = populate(tmp)
        except BaseException:
            with contextlib.suppress(Exception):  # else the next builder removes it as stale
                _remove_tree(tmp)
            raise
        atomic_write_json(tmp / stamp_name, stamp)  # last write: from here on the entry is complete
        os.rename(tmp, entry)
        built = load(entry)
        if built is None:  # pragma: no cover - the stamp was just written
            raise BuildRootError(f"cache entry {entry} has no valid stamp after building")
        return built


def find_build_root(spec: KernelSpec, *, mirror: str = DEBIAN_MIRROR, security_mirror: str = SECURITY_MIRROR) -> BuildRoot | None:
    """The cached complete root for `spec`, or None (never builds)."""
    if spec.is_source:
        from vm.kernelsrc import find_build_root_for  # noqa: PLC0415

        return find_build_root_for(spec)
    key = root_key(spec, mirror, security_mirror)
    return _load_complete(cache_dir("buildroots") / f"{spec.slug}-{key}", spec, key)


def _load_complete(entry: Path, spec: KernelSpec, key: str) -> BuildRoot | None:
    stamp_path = entry / STAMP_NAME
    if not stamp_path.is_file():
        return None
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("key") != key or not (entry / "root").is_dir():
        return None
    return BuildRoot(
        path=entry / "root",
        kernel_release=stamp["kernel_release"],
        headers_dir=stamp["headers_dir"],
        gcc_version=stamp["gcc_version"],
        spec=spec,
        key=key,
        kernel_cc=stamp.get("kernel_cc", ""),
        packages=stamp.get("packages", {}),
        build_seconds=stamp.get("build_seconds", 0.0),
    )


def _populate_root(
    spec: KernelSpec, root: Path, show: Progress, *, mirror: str, security_mirror: str
) -> dict:
    """Create the Debian root at `root` and return the facts for the stamp.

    Separate from the caching logic so tests can replace it with a fake builder.
    """
    _check_host(show)
    with show.step(f"debootstrap {spec.suite} (minbase)"):
        argv = ["debootstrap", "--variant=minbase", "--components=main",
                f"--include={','.join(BOOTSTRAP_PACKAGES)}", spec.suite, root, mirror]
        env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        try:
            run(argv, f"debootstrap of {spec.suite} for kernel {spec.name}", env=env, timeout=STEP_TIMEOUT_S)
        except CommandError as exc:
            log = root / "debootstrap" / "debootstrap.log"
            if log.is_file():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                exc.args = (f"{exc.args[0]}\n--- debootstrap.log (tail) ---\n{tail}",)
            raise

    (root / "etc/apt/sources.list").write_text(apt_sources(spec, mirror, security_mirror))
    (root / "etc/apt/apt.conf.d/90liteflow").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Retries "3";\n'
    )
    policy = root / "usr/sbin/policy-rc.d"  # never start services in the root
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)

    with show.step(f"apt update ({', '.join((spec.suite, *spec.extra_suites))})"):
        _chroot(root, ["apt-get", "-q", "update"], f"apt-get update in the {spec.suite} root")
    with show.step("apt upgrade (updates and security fixes)"):
        _chroot(root, ["apt-get", "-q", "-y", "dist-upgrade"], f"apt-get dist-upgrade in the {spec.suite} root")

    if spec.is_local:
        debs_inside = "/tmp/liteflow-debs"
        (root / debs_inside.lstrip("/")).mkdir(parents=True, exist_ok=True)
        targets = []
        for deb in spec.headers_debs():
            shutil.copy2(deb, root / debs_inside.lstrip("/") / deb.name)
            targets.append(f"{debs_inside}/{deb.name}")
        what = ", ".join(p.name for p in spec.headers_debs())
    else:
        debs_inside = None
        targets = [spec.headers_package]
        what = spec.headers_package
    with show.step(f"install kernel headers ({what})"):
        _chroot(root, ["apt-get", "-q", "-y", "install", *targets],
                f"installing {what} in the {spec.suite} root for kernel {spec.name}")
    _chroot(root, ["apt-get", "clean"], "apt-get clean")
    if debs_inside:
        shutil.rmtree(root / debs_inside.lstrip("/"), ignore_errors=True)

    with show.step("inspect headers and compiler"):
        headers_dir, release = find_headers(root)
        gcc = _chroot(root, ["gcc", "-dumpfullversion"], "gcc -dumpfullversion").strip()
        packages = dict(
            line.split("\t", 1)
            for line in _chroot(root, ["dpkg-query", "-W", "-f", "${Package}\t${Version}\n"],
                                "dpkg-query").splitlines()
            if "\t" in line
        )
        (root / CHROOT_BUILD_DIR.lstrip("/")).mkdir(exist_ok=True)
    return {
        "kernel_release": release,
        "headers_dir": headers_dir,
        "gcc_version": gcc,
        "kernel_cc": kernel_cc_text(root / headers_dir.lstrip("/")),
        "packages": packages,
    }


def find_headers(root: Path) -> tuple[str, str]:
    """The one kernel's build headers inside `root`: (inside path, kernel release).

    The arch/flavour headers folder (``linux-headers-6.1.0-27-amd64``, ``…-4.15.0-173-generic``)
    is the ``/usr/src/linux-headers-*`` folder that holds ``Module.symvers``; the ``-common``
    one does not. The release is its name without the prefix, cross-checked with
    ``UTS_RELEASE`` in ``include/generated/utsrelease.h`` (what ``uname -r`` and a module's
    vermagic say). Not ``include/config/kernel.release``: Debian's holds the upstream version
    (``6.1.192`` in ``linux-headers-6.1.0-56-amd64``).
    """
    src = root / "usr/src"
    found = sorted(
        d for d in src.glob("linux-headers-*") if d.is_dir() and (d / "Module.symvers").is_file()
    )
    if len(found) != 1:
        listed = ", ".join(d.name for d in src.glob("linux-headers-*")) or "none"
        raise BuildRootError(
            f"expected exactly one kernel headers folder with Module.symvers in {src}, found "
            f"{len(found)} (folders: {listed})"
        )
    folder = found[0]
    release = folder.name[len("linux-headers-"):]
    uts = folder / "include/generated/utsrelease.h"
    if uts.is_file():
        match = re.search(r'#define\s+UTS_RELEASE\s+"([^"]*)"', uts.read_text(errors="replace"))
        if match and match.group(1) != release:
            raise BuildRootError(
                f"{folder} says kernel release {match.group(1)!r} (utsrelease.h), its name says {release!r}"
            )
    return f"/usr/src/{folder.name}", release


def kernel_cc_text(headers: Path) -> str:
    """CONFIG_CC_VERSION_TEXT from the headers' config (the kernel's own compiler), or ''."""
    for name in ("include/config/auto.conf", ".config"):
        path = headers / name
        if path.is_file():
            match = re.search(r'^CONFIG_CC_VERSION_TEXT="(.*)"$', path.read_text(errors="replace"), re.M)
            if match:
                return match.group(1)
    return ""


def _check_host(show: Progress) -> None:
    """debootstrap and chroot present (installed with apt when we are root), and we are root."""
    ensure_tools({"debootstrap": "debootstrap", "chroot": "coreutils"})  # else: the exact apt command
    if os.geteuid() != 0:
        raise BuildRootError(
            "making a build root needs root (debootstrap and chroot); run as root, e.g. with sudo"
        )


# --------------------------------------------------------------------------------------------
# Locks, stale folders, safe removal


def _remove_stale_tmp(base: Path, own_entry: str) -> list[Path]:
    """Remove ``.tmp-*`` folders no live builder owns; returns what was removed.

    A temp folder belongs to entry E when named ``.tmp-E-<pid>``. Ours (E = own_entry) is stale
    since we hold E's lock; another entry's is stale when its lock can be taken right now.
    """
    removed = []
    for tmp in sorted(base.glob(f"{TMP_PREFIX}*")):
        if not tmp.is_dir():
            continue
        entry_name = tmp.name[len(TMP_PREFIX):].rsplit("-", 1)[0]
        if entry_name == own_entry:
            _remove_tree(tmp)
            removed.append(tmp)
            continue
        with try_flock(base / f"{entry_name}.lock") as ours:
            # not ours: being built right now; ours: its builder may have renamed it meanwhile
            if ours and tmp.is_dir():
                _remove_tree(tmp)
                removed.append(tmp)
    return removed


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    points = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix) or point == prefix.rstrip("/"):
                    points.append(point)
    except OSError:
        pass
    return points


def _remove_tree(path: Path) -> None:
    """rmtree that first unmounts whatever a killed debootstrap left mounted inside (e.g. proc)."""
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    left = _mounts_under(path)
    if left:
        raise BuildRootError(f"refusing to delete {path}: still mounted inside: {', '.join(left)}")
    shutil.rmtree(path)


# --------------------------------------------------------------------------------------------
# Building modules in a root


@dataclass(frozen=True)
class CompilerWarning:
    """One ``warning:`` line of a build (gcc, modpost, kbuild), with its location when given."""

    text: str
    file: str = ""
    line: int = 0
    column: int = 0
    message: str = ""
    option: str = ""  # e.g. "-Wunused-variable"


_WARNING_RE = re.compile(r"\bwarning:", re.IGNORECASE)
_LOCATED_RE = re.compile(
    r"^(?P<file>[^:\s][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)?\s*warning:\s*(?P<msg>.*?)\s*$",
    re.IGNORECASE,
)
_OPTION_RE = re.compile(r"\[(-W[^\]]+)\]\s*$")


def parse_warnings(output: str) -> list[CompilerWarning]:
    """The warnings in a build log: every line containing ``warning:`` (any case), once each.

    ``file:line:col: warning: msg [-Wopt]`` lines (gcc) are split into their parts; others
    (``WARNING: modpost: …`` for an undefined symbol, kbuild's "compiler differs") are kept as
    text. A header warning repeated for every file that includes it is reported once.
    """
    seen: set[str] = set()
    found = []
    for raw in output.splitlines():
        line = raw.rstrip()
        if not _WARNING_RE.search(line) or line in seen:
            continue
        seen.add(line)
        match = _LOCATED_RE.match(line.strip())
        if match:
            msg = match.group("msg")
            opt = _OPTION_RE.search(msg)
            found.append(CompilerWarning(
                text=line.strip(),
                file=match.group("file"),
                line=int(match.group("line")),
                column=int(match.group("col") or 0),
                message=_OPTION_RE.sub("", msg).strip(),
                option=opt.group(1) if opt else "",
            ))
        else:
            found.append(CompilerWarning(text=line.strip(), message=line.strip()))
    return found


@dataclass
class BuiltModule:
    """A compiled ``.ko`` copied out of the root.

    ``warnings`` are those of the make run of the module's folder; ``symvers`` is that folder's
    Module.symvers, copied out next to the module (later builds — e.g. snapshot modules in the
    guest — need it to link against the core's exports).
    """

    name: str
    path: Path
    kernel_release: str
    vermagic: str
    subdir: str
    warnings: list[CompilerWarning] = field(default_factory=list)
    symvers: Path | None = None


def build_modules(
    root: BuildRoot,
    source_dir: Path,
    subdirs: Sequence[str] | None = None,
    *,
    out_dir: Path,
    strict: bool = False,
    jobs: int | None = None,
    make_vars: Mapping[str, str] | None = None,
    keep_build_dir: bool = False,
) -> list[BuiltModule]:
    """Build the Kbuild folders `subdirs` of `source_dir` (in order) against `root`'s kernel.

    The whole `source_dir` is copied to ``ROOT/build/<unique>`` (so relative includes such as
    ``$(src)/../include`` work), then for each subdir: ``chroot ROOT make -C <headers>
    M=/build/<unique>/<subdir> modules``, with ``KBUILD_EXTRA_SYMBOLS`` naming the
    Module.symvers of every folder built before it (core before the modules that use its
    exports). ``subdirs=None`` builds `source_dir` itself as one folder.

    Each ``.ko`` is copied to ``out_dir/<name>.ko`` (with ``<subdir>.Module.symvers`` and the
    full log in ``out_dir/build.log``); its vermagic must start with the root's release. A
    failed make raises CommandError naming the folder and kernel; compiler warnings are listed
    on each result, and with ``strict=True`` any warning raises BuildWarningsError.
    """
    source_dir = Path(source_dir).resolve()
    if not source_dir.is_dir():
        raise BuildRootError(f"module source folder {source_dir} does not exist")
    dirs = [str(PurePosixPath(s)) for s in (subdirs or ["."])]
    for sub in dirs:
        if sub.startswith("/") or ".." in PurePosixPath(sub).parts:
            raise BuildRootError(f"module folder {sub!r} must be relative and inside {source_dir}")
        if not (source_dir / sub).is_dir():
            raise BuildRootError(f"module folder {source_dir / sub} does not exist")

    unique = f"{_safe(source_dir.name)}-{os.getpid()}-{secrets.token_hex(4)}"
    inside_base = f"{CHROOT_BUILD_DIR}/{unique}"
    host_base = root.host_path(inside_base)
    host_base.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source_dir, host_base, ignore=shutil.ignore_patterns(*_KBUILD_OUTPUTS))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def to_host_paths(text: str) -> str:  # messages point at the user's files, not the copy
        return text.replace(f"{inside_base}/", f"{source_dir}/")

    kernel = f"{root.spec.name} ({root.kernel_release})"
    built: list[BuiltModule] = []
    symvers_inside: list[str] = []
    logs: list[str] = []
    try:
        for sub in dirs:
            inside = inside_base if sub == "." else f"{inside_base}/{sub}"
            argv = ["make", "-C", root.headers_dir, f"M={inside}", f"-j{jobs or os.cpu_count() or 1}"]
            if symvers_inside:
                argv.append(f"KBUILD_EXTRA_SYMBOLS={' '.join(symvers_inside)}")
            argv += [f"{k}={v}" for k, v in (make_vars or {}).items()]
            argv.append("modules")
            step = f"building module folder {sub!r} of {source_dir} for kernel {kernel}"
            try:
                output = root.chroot_run(argv, step, timeout=MAKE_TIMEOUT_S)
            except CommandError as exc:
                logs.append(f"$ {' '.join(argv)}\n{exc.output}")
                raise CommandError(step, ["chroot", str(root.path), *argv], exc.returncode,
                                   to_host_paths(exc.output)) from None
            output = to_host_paths(output)
            logs.append(f"$ {' '.join(argv)}\n{output}")
            warnings = parse_warnings(output)
            if strict and warnings:
                raise BuildWarningsError(step, ["chroot", str(root.path), *argv], warnings, output)

            host_sub = host_base if sub == "." else host_base / sub
            symvers_out = None
            if (host_sub / "Module.symvers").is_file():
                symvers_inside.append(f"{inside}/Module.symvers")
                symvers_out = out_dir / f"{_safe(sub if sub != '.' else source_dir.name)}.Module.symvers"
                atomic_write_bytes(symvers_out, (host_sub / "Module.symvers").read_bytes())
            kos = _module_files(host_sub, [host_base / d for d in dirs if d != sub and d != "."])
            if not kos:
                raise CommandError(step, ["chroot", str(root.path), *argv], 0,
                                   f"make succeeded but produced no .ko in {sub!r}\n{output}")
            for ko in kos:
                info = read_modinfo(ko)
                vermagic = (info.get("vermagic") or [""])[0]
                if vermagic.split(" ", 1)[0] != root.kernel_release:
                    raise BuildRootError(
                        f"{ko.name} has vermagic {vermagic!r}, not for kernel {root.kernel_release}"
                    )
                dest = out_dir / ko.name
                atomic_write_bytes(dest, ko.read_bytes())
                built.append(BuiltModule(
                    name=ko.stem, path=dest, kernel_release=root.kernel_release, vermagic=vermagic,
                    subdir=sub, warnings=warnings, symvers=symvers_out,
                ))
    finally:
        (out_dir / "build.log").write_text("\n".join(logs))
        if not keep_build_dir:
            shutil.rmtree(host_base, ignore_errors=True)
    return built


def _module_files(folder: Path, exclude: Sequence[Path]) -> list[Path]:
    """The .ko files a make in `folder` produced (per modules.order when present)."""
    candidates = [
        p for p in sorted(folder.rglob("*.ko"))
        if not any(p.is_relative_to(ex) for ex in exclude if ex != folder and ex.is_relative_to(folder))
    ]
    order = folder / "modules.order"
    if order.is_file():
        wanted = []
        for line in order.read_text().split():
            name = PurePosixPath(line).name
            wanted.append(name[:-2] + ".ko" if name.endswith(".o") else name)
        by_name = {p.name: p for p in candidates}
        listed = [by_name[n] for n in wanted if n in by_name]
        if listed:
            return listed
    return candidates


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "src"


# --------------------------------------------------------------------------------------------
# .modinfo without modinfo (the host need not have kmod)


def read_modinfo(path: Path) -> dict[str, list[str]]:
    """The ``key=value`` entries of a module's ``.modinfo`` ELF section (like ``modinfo -F``)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    elf_class, endian = data[4], data[5]
    order = "<" if endian == 1 else ">"
    if elf_class == 2:  # ELF64
        shoff, = struct.unpack_from(order + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", data, 0x3A)
        sh_fmt, name_off, off_off, size_off = order + "IIQQQQIIQQ", 0, 4, 5
    elif elf_class == 1:  # ELF32
        shoff, = struct.unpack_from(order + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", data, 0x2E)
        sh_fmt, name_off, off_off, size_off = order + "IIIIIIIIII", 0, 4, 5
    else:
        raise ValueError(f"{path}: unknown ELF class {elf_class}")

    def section(i: int) -> tuple:
        return struct.unpack_from(sh_fmt, data, shoff + i * shentsize)

    strtab = section(shstrndx)
    str_start = strtab[off_off]
    info: dict[str, list[str]] = {}
    for i in range(shnum):
        sh = section(i)
        end = data.index(b"\0", str_start + sh[name_off])
        if data[str_start + sh[name_off]:end] != b".modinfo":
            continue
        blob = data[sh[off_off]:sh[off_off] + sh[size_off]]
        for item in blob.split(b"\0"):
            if b"=" in item:
                key, value = item.decode(errors="replace").split("=", 1)
                info.setdefault(key, []).append(value)
        return info
    raise ValueError(f"{path} has no .modinfo section (not a kernel module?)")


def root_summary(root: BuildRoot) -> dict:
    """A small JSON-able description of a root, for result manifests."""
    return {
        "kernel": root.spec.name,
        "kernel_release": root.kernel_release,
        "headers_dir": root.headers_dir,
        "gcc_version": root.gcc_version,
        "kernel_cc": root.kernel_cc,
        "key": root.key,
        "packages": {k: v for k, v in root.packages.items() if k.startswith(("linux-", "gcc", "make", "libc6"))},
    }


__all__ = [
    "BuildRoot", "BuildRootError", "BuildWarningsError", "BuiltModule", "CompilerWarning",
    "apt_sources", "build_modules", "ensure_build_root", "find_build_root", "find_headers",
    "parse_warnings", "read_modinfo", "recipe_inputs", "root_key", "root_summary",
]
