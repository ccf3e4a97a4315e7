"""Kernels built from source: the paper's Linux 4.15 (``linux-4.15``) or the user's (``source:PATH``).

No reachable registry carries a 4.15 kernel, so the testbed compiles one. The build runs in a
Debian root whose toolchain fits the kernel's age (bullseye: gcc 10, binutils 2.35, make 4.3 for
every series below 5.15), with:

* the guest configuration from ``vm/kernel-config/guest.config`` on top of ``x86_64_defconfig``
  (drivers built in, so the guest boots without an initrd);
* the series' compatibility patches, ``vm/kernel-patches/<major.minor>/*.patch`` in name order,
  each citing the upstream commit it backports;
* the series' make flags (``MAKE_FLAGS``), for fixes that are not worth a patch.

Cache layout, under ``common.cache.cache_dir("kernels")``::

    <slug>-<key>/root/                   the toolchain root; the built tree (ready for out-of-tree
                                         modules) is its /usr/src/linux-headers-<release>
    <slug>-<key>/bzImage                 the kernel
    <slug>-<key>/modules/lib/modules/…   ``make modules_install`` output
    <slug>-<key>/config                  the final .config
    <slug>-<key>/build.log               the whole build's output
    <slug>-<key>/kernel.json             the stamp, written last
    logs/<slug>-<key>-failed.log         the log of the last failed build (kept on purpose)
    sources/<file>                       tarballs fetched from a mirror (checksum verified)

``<key>`` is ``content_key`` of the source's sha256, the config fragment, the patches, the make
flags and the toolchain root's own key (``build_inputs``): change any of them and the kernel is
rebuilt. An entry is built in ``.tmp-<slug>-<key>-<pid>`` and renamed when complete; a failure
removes it, keeps the log and names the failing step.

Where the tarball comes from (``linux-4.15``): ``$LITEFLOW_KERNEL_MIRROR``, a URL laid out like
kernel.org (``<mirror>/v4.x/linux-4.15.1.tar.xz``) or a local folder holding the tarball;
kernel.org by default. The expected sha256 is ``$LITEFLOW_KERNEL_SHA256`` when set, else the
checksum recorded here for kernel.org's tarball. A tarball whose sha256 differs is refused before
anything is extracted or built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.cache import cache_dir, content_key
from common.files import file_sha256
from common.progress import Progress
from common.proc import CommandError
from vm.kernels import KernelNameError, KernelSpec, resolve_kernel

RECIPE_VERSION = 2
HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE / "kernel-config"
CONFIG_FRAGMENT = CONFIG_DIR / "guest.config"
PATCH_DIR = HERE / "kernel-patches"

MIRROR_ENV = "LITEFLOW_KERNEL_MIRROR"
SHA256_ENV = "LITEFLOW_KERNEL_SHA256"
DEFAULT_MIRROR = "https://cdn.kernel.org/pub/linux/kernel"
# sha256 of kernel.org's release tarballs, from its sha256sums.asc (verify that file's signature
# before recording a value). Not recorded for 4.15.1: kernel.org is not reachable where this was
# written, and the project's test copy is trimmed, so its checksum is a different one. Until a
# maintainer records it, building from kernel.org needs $LITEFLOW_KERNEL_SHA256.
KERNEL_ORG_SHA256: dict[str, str] = {}

# The root that holds the toolchain: bullseye's (gcc 10.2, binutils 2.35, make 4.3), reached
# through the debian-5.10 build root; plus what a kernel build needs beyond a module build.
TOOLCHAIN_KERNEL = "debian-5.10"
BUILD_PACKAGES = ("bc", "bison", "flex", "libelf-dev", "libssl-dev", "perl", "patch", "xz-utils", "cpio")
# Host-tool flags per series. 4.15's dtc (a host tool) defines yylloc twice, which gcc 10's
# -fno-common default turns into a link error; upstream removed the duplicate in e33a814e772c
# ("scripts/dtc: Remove redundant YYLOC global declaration", v5.7), but 4.15 builds dtc from a
# shipped, generated lexer, so -fcommon is the smaller fix. The rest is 4.15's own HOSTCFLAGS.
MAKE_FLAGS: dict[str, dict[str, str]] = {
    "4.15": {
        "HOSTCFLAGS": "-Wall -Wmissing-prototypes -Wstrict-prototypes -O2 -fomit-frame-pointer "
                      "-std=gnu89 -fcommon",
    },
}

BUILD_TIMEOUT_S = 3 * 3600
STEP_TIMEOUT_S = 1800
STAMP_NAME = "kernel.json"
SRC_INSIDE = "/usr/src"


class KernelSourceError(KernelNameError):
    """The kernel source cannot be had or trusted (missing, unreadable, checksum differs).

    A KernelNameError: the name resolves, but to nothing usable, and the tasks already report
    those as a one-line error instead of a traceback.
    """


class KernelBuildError(RuntimeError):
    """A step of a kernel build failed; ``step`` names it and ``log`` is the kept build log."""

    def __init__(self, step: str, log: Path, detail: str):
        super().__init__(f"kernel build failed at step '{step}' (log: {log})\n{detail}")
        self.step = step
        self.log = log
        self.detail = detail


# --------------------------------------------------------------------------------------------
# The source


@dataclass(frozen=True)
class KernelSource:
    """A verified source: a tarball or a tree, its sha256 and the kernel version it holds."""

    path: Path
    sha256: str
    version: str  # "4.15.1"

    @property
    def is_tree(self) -> bool:
        return self.path.is_dir()

    @property
    def series(self) -> str:
        """``major.minor``: what patches and make flags are chosen by."""
        return ".".join(self.version.split(".")[:2])


def mirror() -> str:
    """The source mirror: ``$LITEFLOW_KERNEL_MIRROR`` or kernel.org."""
    return os.environ.get(MIRROR_ENV, "").strip() or DEFAULT_MIRROR


def expected_sha256(release: str, mirror_url: str) -> str:
    """The sha256 a release tarball must have: ``$LITEFLOW_KERNEL_SHA256``, else kernel.org's.

    Raises KernelSourceError when neither is known: an unverified tarball is never built.
    """
    override = os.environ.get(SHA256_ENV, "").strip().lower()
    if override:
        if not re.fullmatch(r"[0-9a-f]{64}", override):
            raise KernelSourceError(f"${SHA256_ENV} is not a sha256 (64 hex digits): {override!r}")
        return override
    if mirror_url.rstrip("/") == DEFAULT_MIRROR and release in KERNEL_ORG_SHA256:
        return KERNEL_ORG_SHA256[release]
    raise KernelSourceError(
        f"no checksum known for linux-{release}.tar.xz from {mirror_url}: set ${SHA256_ENV} to its "
        f"sha256 (kernel.org publishes them in sha256sums.asc beside the tarball; check its signature)"
    )


def tarball_name(release: str) -> str:
    return f"linux-{release}.tar.xz"


def locate_source(spec: KernelSpec) -> KernelSource:
    """The spec's source, verified: a mirror's release tarball (fetched, sha256 checked first)
    or the user's tarball or tree (``source:PATH``, whose sha256 is simply computed)."""
    if spec.source_release:
        return _release_source(spec.source_release)
    if spec.source_package:
        return _package_source(spec)
    if spec.source_path is None:
        raise KernelSourceError(f"{spec.name} is not a from-source kernel")
    path = spec.source_path
    if path.is_dir():
        return KernelSource(path, tree_sha256(path), _tree_version(path))
    if not path.is_file():
        raise KernelSourceError(f"kernel source {path} does not exist")
    return KernelSource(path, file_sha256(path), _tarball_version(path))


def _release_source(release: str) -> KernelSource:
    url_or_dir = mirror()
    want = expected_sha256(release, url_or_dir)
    name = tarball_name(release)
    if "://" in url_or_dir:
        path = _fetch(f"{url_or_dir.rstrip('/')}/v{release.split('.')[0]}.x/{name}", name, want)
    else:
        folder = Path(url_or_dir).expanduser()
        candidates = [folder / name, folder / f"v{release.split('.')[0]}.x" / name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise KernelSourceError(f"mirror folder {folder} has no {name} (looked at "
                                    f"{', '.join(str(c) for c in candidates)})")
    got = file_sha256(path)
    if got != want:
        raise KernelSourceError(
            f"checksum mismatch for {path}: sha256 {got}, expected {want}; refusing to build it"
        )
    return KernelSource(path, got, release)


def _package_source(spec: KernelSpec) -> KernelSource:
    """The tarball inside Debian's ``spec.source_package`` (e.g. linux-source-6.1: Debian's patched
    tree), fetched by apt in the spec's toolchain root, so the archive's signature vouches for it.
    Kept in the cache per package version; a new point release in the archive is a new source."""
    from vm import buildroot as br  # noqa: PLC0415

    root = br.ensure_build_root(toolchain_spec(spec), progress=False)
    package = spec.source_package
    assert package is not None
    br._chroot(root.path, ["apt-get", "-q", "update"], f"apt-get update for {package}")
    shown = br._chroot(root.path, ["apt-cache", "show", "--no-all-versions", package], f"apt-cache show {package}")
    version = re.search(r"^Version: (\S+)$", shown, re.M)
    if version is None:
        raise KernelSourceError(f"the {root.spec.suite} archive has no package {package}")
    dest = cache_dir("kernels") / "sources" / f"{package}_{_safe_version(version.group(1))}.tar.xz"
    if not dest.is_file():
        work = f"/tmp/liteflow-source-{os.getpid()}"
        host_work = root.path / work.lstrip("/")
        host_work.mkdir(parents=True)
        try:
            br._chroot(root.path, ["sh", "-c", f'cd {work} && apt-get -q download {package}={version.group(1)}'],
                       f"apt-get download {package}")
            (deb,) = host_work.glob("*.deb")
            br._chroot(root.path, ["dpkg-deb", "-x", f"{work}/{deb.name}", f"{work}/x"], f"unpack {deb.name}")
            tarballs = list((host_work / "x" / "usr" / "src").glob("linux-source-*.tar.xz"))
            if len(tarballs) != 1:
                raise KernelSourceError(f"{deb.name} holds no single usr/src/linux-source-*.tar.xz")
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(dest.name + ".part")
            shutil.copyfile(tarballs[0], partial)
            os.rename(partial, dest)
        finally:
            shutil.rmtree(host_work, ignore_errors=True)
    return KernelSource(dest, file_sha256(dest), _tarball_version(dest))


def _safe_version(version: str) -> str:
    return re.sub(r"[^0-9A-Za-z.+~-]", "_", version)


def _fetch(url: str, name: str, want: str) -> Path:
    """Download to the cache (``sources/``); kept only when its sha256 is the expected one."""
    dest = cache_dir("kernels") / "sources" / name
    if dest.is_file() and file_sha256(dest) == want:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise KernelSourceError(f"cannot download {url}: {exc}; set ${MIRROR_ENV} to a mirror "
                                f"(URL or local folder) that has {name}") from exc
    got = file_sha256(part)
    if got != want:
        part.unlink(missing_ok=True)
        raise KernelSourceError(
            f"checksum mismatch for {url}: sha256 {got}, expected {want}; refusing to build it"
        )
    os.replace(part, dest)
    return dest


_VERSION_KEYS = ("VERSION", "PATCHLEVEL", "SUBLEVEL")


def makefile_version(text: str) -> str:
    """``VERSION.PATCHLEVEL.SUBLEVEL`` from a kernel's top-level Makefile."""
    found = {}
    for key in _VERSION_KEYS:
        match = re.search(rf"^{key}\s*=\s*(\d+)\s*$", text, re.M)
        if not match:
            raise KernelSourceError(f"the kernel Makefile sets no {key}")
        found[key] = match.group(1)
    return ".".join(found[k] for k in _VERSION_KEYS)


def _tree_version(tree: Path) -> str:
    return makefile_version((tree / "Makefile").read_text(errors="replace"))


def _tarball_version(path: Path) -> str:
    """Read the top-level Makefile out of the tarball (it comes early in release tarballs)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = member.name.strip("/").split("/")
                if member.isfile() and len(parts) == 2 and parts[1] == "Makefile":
                    data = tar.extractfile(member)
                    if data is not None:
                        return makefile_version(data.read().decode(errors="replace"))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise KernelSourceError(f"cannot read kernel tarball {path}: {exc}") from exc
    raise KernelSourceError(f"{path} has no <dir>/Makefile: not a kernel source tarball")


def tree_sha256(tree: Path) -> str:
    """sha256 over every file of a source tree (path, mode bit x, content), .git left out."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(tree).as_posix()
            if path.is_symlink():
                digest.update(f"L {rel} {os.readlink(path)}\n".encode())
            elif path.is_file():
                digest.update(f"F {rel} {os.access(path, os.X_OK):d} {file_sha256(path)}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# What a build depends on


def patches_for(series: str) -> list[Path]:
    """The series' patch files, in the order they are applied."""
    folder = PATCH_DIR / series
    return sorted(folder.glob("*.patch")) if folder.is_dir() else []


def make_flags_for(series: str) -> dict[str, str]:
    return dict(MAKE_FLAGS.get(series, {}))


def toolchain_spec(spec: KernelSpec | None = None) -> KernelSpec:
    """The build root whose toolchain compiles `spec` (bullseye's unless the spec names one)."""
    return resolve_kernel((spec.toolchain if spec is not None else None) or TOOLCHAIN_KERNEL)


def config_fragments(spec: KernelSpec | None = None) -> list[Path]:
    """The config fragments of `spec`, in the order they are merged (guest.config first)."""
    names = spec.config_fragments if spec is not None else (CONFIG_FRAGMENT.name,)
    return [CONFIG_FRAGMENT if name == CONFIG_FRAGMENT.name else CONFIG_DIR / name for name in names]


def config_text(spec: KernelSpec | None = None) -> str:
    """Every fragment of `spec`, concatenated: what is merged and then checked."""
    return "\n".join(path.read_text() for path in config_fragments(spec))


def build_inputs(source: KernelSource, *, toolchain_key: str | None = None,
                 spec: KernelSpec | None = None) -> dict:
    """Everything a built kernel depends on; its cache key is ``content_key`` of this."""
    toolchain = toolchain_spec(spec)
    if toolchain_key is None:
        from vm.buildroot import root_key  # noqa: PLC0415 (buildroot imports this module lazily)

        toolchain_key = root_key(toolchain)
    inputs = {
        "recipe": RECIPE_VERSION,
        "source_sha256": source.sha256,
        "version": source.version,
        "config": file_sha256(CONFIG_FRAGMENT),
        "patches": {p.name: file_sha256(p) for p in patches_for(source.series)},
        "make_flags": make_flags_for(source.series),
        "toolchain": {"root": toolchain.name, "root_key": toolchain_key,
                      "packages": list(BUILD_PACKAGES)},
    }
    extra = [path for path in config_fragments(spec) if path != CONFIG_FRAGMENT]
    if extra:   # only then, so that a guest.config-only kernel keeps its key
        inputs["extra_config"] = {path.name: file_sha256(path) for path in extra}
    return inputs


def kernel_key(source: KernelSource, *, toolchain_key: str | None = None, spec: KernelSpec | None = None) -> str:
    return content_key(build_inputs(source, toolchain_key=toolchain_key, spec=spec))


# --------------------------------------------------------------------------------------------
# The built kernel


@dataclass(frozen=True)
class KernelBuild:
    """A complete cached kernel build (see the module docstring for the layout)."""

    entry: Path
    spec_name: str
    release: str
    key: str
    gcc_version: str
    build_seconds: float
    stamp: dict

    @property
    def root(self) -> Path:
        return self.entry / "root"

    @property
    def bzimage(self) -> Path:
        return self.entry / "bzImage"

    @property
    def modules_dir(self) -> Path:
        """``lib/modules/<release>`` of the build, to copy into a guest's root."""
        return self.entry / "modules" / "lib" / "modules" / self.release

    @property
    def headers_dir(self) -> str:
        """The built tree inside ``root`` (what ``make -C`` of an out-of-tree module points at)."""
        return f"{SRC_INSIDE}/linux-headers-{self.release}"

    @property
    def config(self) -> Path:
        return self.entry / "config"


def entry_name(spec: KernelSpec, key: str) -> str:
    return f"{spec.slug}-{key}"


def find_kernel(spec: KernelSpec) -> KernelBuild | None:
    """The cached build of `spec`, or None; never builds (but verifies the source's checksum)."""
    source = locate_source(spec)
    key = kernel_key(source, spec=spec)
    return _load(cache_dir("kernels") / entry_name(spec, key), spec, key)


def ensure_kernel(spec: KernelSpec, progress: bool = True) -> KernelBuild:
    """The built kernel for `spec`, from the cache or built now (about 11 minutes on 2 cores).

    The source's checksum is checked before anything else happens. Safe to run concurrently and
    to interrupt: an entry exists only once complete. Needs root (chroot).
    """
    from vm import buildroot as br  # noqa: PLC0415 (buildroot dispatches here lazily)

    show = Progress(spec.name, enabled=progress)
    source = locate_source(spec)  # raises on a checksum mismatch: nothing has been built yet
    toolchain = toolchain_spec(spec)
    key = kernel_key(source, toolchain_key=br.root_key(toolchain), spec=spec)
    entry = cache_dir("kernels") / entry_name(spec, key)

    def populate(tmp: Path) -> dict:
        tool_root = br.ensure_build_root(toolchain, progress=progress)
        log = tmp / "build.log"
        builder = _Builder(spec, source, tmp, log, show)
        start = time.monotonic()
        try:
            facts = builder.run(tool_root.path)
        except Exception as exc:
            kept = entry.parent / "logs" / f"{entry.name}-failed.log"
            kept.parent.mkdir(exist_ok=True)
            if log.is_file():
                shutil.copyfile(log, kept)
            if isinstance(exc, KernelBuildError):
                raise KernelBuildError(exc.step, kept, exc.detail) from None
            raise KernelBuildError(builder.step, kept, str(exc)) from exc
        seconds = round(time.monotonic() - start, 1)
        show.note(f"kernel {facts.get('kernel_release', spec.name)} built in {seconds / 60:.1f} min → {entry}")
        return {
            "kernel": spec.name,
            "key": key,
            "inputs": build_inputs(source, toolchain_key=br.root_key(toolchain), spec=spec),
            "source": str(source.path),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": seconds,
            "step_seconds": builder.step_seconds,
            **facts,
        }

    return br.build_cache_entry(entry, lambda path: _load(path, spec, key), populate, show, STAMP_NAME)


def _load(entry: Path, spec: KernelSpec, key: str) -> KernelBuild | None:
    stamp_path = entry / STAMP_NAME
    if not stamp_path.is_file():
        return None
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("key") != key or not (entry / "root").is_dir() or not (entry / "bzImage").is_file():
        return None
    if not (entry / "modules/lib/modules" / str(stamp.get("kernel_release"))).is_dir():
        return None                 # its release misread (6.1 before syncconfig): rebuild it
    return KernelBuild(entry=entry, spec_name=spec.name, release=stamp["kernel_release"], key=key,
                       gcc_version=stamp.get("gcc_version", ""),
                       build_seconds=stamp.get("build_seconds", 0.0), stamp=stamp)


def build_root_for(spec: KernelSpec, progress: bool = True):
    """A ``vm.buildroot.BuildRoot`` over the built tree, so module builds work as for Debian's."""
    built = ensure_kernel(spec, progress=progress)
    return _as_build_root(spec, built)


def find_build_root_for(spec: KernelSpec):
    """As build_root_for, but None instead of building."""
    built = find_kernel(spec)
    return None if built is None else _as_build_root(spec, built)


def _as_build_root(spec: KernelSpec, built: KernelBuild):
    from vm.buildroot import BuildRoot  # noqa: PLC0415

    return BuildRoot(path=built.root, kernel_release=built.release, headers_dir=built.headers_dir,
                     gcc_version=built.gcc_version, spec=spec, key=built.key,
                     kernel_cc=built.stamp.get("kernel_cc", ""),
                     packages=built.stamp.get("packages", {}), build_seconds=built.build_seconds)


# --------------------------------------------------------------------------------------------
# The build itself


class _Builder:
    """The steps of one build into ``tmp``; ``step`` always names the step running now."""

    def __init__(self, spec: KernelSpec, source: KernelSource, tmp: Path, log: Path, show):
        self.spec = spec
        self.source = source
        self.tmp = tmp
        self.root = tmp / "root"
        self.log = log
        self.show = show
        self.step = "prepare"
        self.step_seconds: dict[str, float] = {}

    # -- running things

    def _write_log(self, text: str) -> None:
        with self.log.open("a") as fh:
            fh.write(text)

    def chroot(self, argv: Sequence[str], *, cwd: str | None = None, timeout: float = STEP_TIMEOUT_S,
               follow: bool = False) -> str:
        """Run argv in the root, its output appended to the log; raise KernelBuildError on failure.

        With ``follow``, the spinner shows the make's latest line (long builds stay visibly alive).
        """
        from vm import buildroot as br  # noqa: PLC0415

        inner = list(argv) if cwd is None else ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, *argv]
        full = ["chroot", str(self.root), *inner]
        self._write_log(f"\n$ {' '.join(argv)}{f'  (in {cwd})' if cwd else ''}\n")
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        with subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", env=br._chroot_env()) as proc, self.log.open("a") as out:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                lines.append(line)
                if len(lines) > 400:
                    del lines[:200]
                if follow and self._status is not None:
                    self._status.update(line.strip())
                if time.monotonic() > deadline:
                    proc.kill()
                    raise KernelBuildError(self.step, self.log, f"timed out after {timeout:.0f} s")
            code = proc.wait()
        if code != 0:
            tail = "".join(lines[-40:])
            raise KernelBuildError(self.step, self.log, f"{' '.join(argv)} exited {code}\n{tail}")
        return "".join(lines)

    _status = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A step with a spinner (rich) whose time is recorded and whose name errors carry."""
        self.step = name
        start = time.monotonic()
        console = self.show.console
        try:
            if console is None:
                yield
            else:
                with console.status(f"[bold]{self.spec.name}[/]: {name}…") as status:
                    self._status = _Throttled(status, f"{self.spec.name}: {name}")
                    yield
        except BaseException:
            if console is not None:
                console.print(f"[red]✗[/] {self.spec.name}: {self.step} ({time.monotonic() - start:.0f} s)")
            raise
        finally:
            self._status = None
            self.step_seconds[name] = round(time.monotonic() - start, 1)
        if console is not None:
            console.print(f"[green]✓[/] {self.spec.name}: {name} ({time.monotonic() - start:.0f} s)")

    # -- the steps

    def run(self, tool_root: Path) -> dict:
        from common.proc import run  # noqa: PLC0415

        src = self.source
        tree = f"{SRC_INSIDE}/linux-build"
        host_tree = self.root / tree.lstrip("/")
        jobs = str(os.cpu_count() or 1)
        flags = [f"{k}={v}" for k, v in make_flags_for(src.series).items()]

        with self.stage("copy the toolchain root"):
            run(["cp", "-a", "--reflink=auto", str(tool_root), str(self.root)],
                "copy the toolchain root", timeout=STEP_TIMEOUT_S)
        with self.stage("install kernel build tools (apt)"):
            installed = self.chroot(["dpkg-query", "-W", "-f", "${Package}\n"]).split()
            stale = [p for p in installed if p.startswith(("linux-headers-", "linux-kbuild-", "linux-compiler-"))]
            if stale:  # the toolchain root's own Debian kernel headers: not this kernel's
                self.chroot(["apt-get", "-q", "-y", "purge", *stale])
            self.chroot(["apt-get", "-q", "update"])
            self.chroot(["apt-get", "-q", "-y", "install", *BUILD_PACKAGES])
            self.chroot(["apt-get", "clean"])
        with self.stage(f"unpack {src.path.name}"):
            host_tree.parent.mkdir(parents=True, exist_ok=True)
            if src.is_tree:
                shutil.copytree(src.path, host_tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            else:
                _extract_single_dir(src.path, host_tree)
        patches = patches_for(src.series)
        with self.stage(f"apply {len(patches)} patch(es) for {src.series}"):
            for patch in patches:
                inside = f"/tmp/{patch.name}"
                shutil.copyfile(patch, self.root / inside.lstrip("/"))
                self.step = f"apply {patch.name}"
                self.chroot(["patch", "-p1", "--forward", "--batch", "-i", inside], cwd=tree)
        fragments = " + ".join(path.name for path in config_fragments(self.spec))
        with self.stage(f"configure (x86_64_defconfig + {fragments})"):
            self.chroot(["make", "x86_64_defconfig", *flags], cwd=tree)
            config = host_tree / ".config"
            config.write_text(merge_config(config.read_text(), config_text(self.spec)))
            self.chroot(["make", "olddefconfig", *flags], cwd=tree)
            missing = config_mismatches(config.read_text(), config_text(self.spec))
            if missing:
                raise KernelBuildError(self.step, self.log, f"options of {fragments} that did not "
                                       "survive olddefconfig (a dependency is off?):\n" + "\n".join(missing))
            if "syncconfig" in (host_tree / "scripts/kconfig/Makefile").read_text():
                # From 4.17 kernelrelease reads CONFIG_LOCALVERSION from include/config/auto.conf,
                # which only syncconfig writes; without it 6.1 names itself "6.1.192", not
                # "6.1.192-liteflow" (4.15's setlocalversion reads .config itself).
                self.chroot(["make", "syncconfig", *flags], cwd=tree)
            release = self.chroot(["make", "-s", "kernelrelease", *flags], cwd=tree).strip().splitlines()[-1]
        final_tree = f"{SRC_INSIDE}/linux-headers-{release}"
        os.rename(host_tree, self.root / final_tree.lstrip("/"))  # nothing compiled yet: safe to move
        tree, host_tree = final_tree, self.root / final_tree.lstrip("/")

        with self.stage(f"make bzImage modules (-j{jobs})"):
            self.chroot(["make", f"-j{jobs}", *flags, "bzImage", "modules"], cwd=tree,
                        timeout=BUILD_TIMEOUT_S, follow=True)
        with self.stage("make modules_install"):
            self.chroot(["make", *flags, "INSTALL_MOD_PATH=/tmp/liteflow-modules", "INSTALL_MOD_STRIP=1",
                         "modules_install"], cwd=tree)
            shutil.move(str(self.root / "tmp/liteflow-modules"), str(self.tmp / "modules"))
            installed = sorted(p.name for p in (self.tmp / "modules/lib/modules").iterdir())
            if installed != [release]:
                raise KernelBuildError(self.step, self.log, f"the kernel calls itself {installed}, but its "
                                       f"release was read as {release!r} before the build")
            for link in ("build", "source"):  # they point at the tree inside the root
                path = self.tmp / "modules/lib/modules" / release / link
                if path.is_symlink():
                    path.unlink()
            shutil.copyfile(host_tree / "arch/x86/boot/bzImage", self.tmp / "bzImage")
            shutil.copyfile(host_tree / ".config", self.tmp / "config")
        # The tree stays as built (no `make clean`: it walks every directory, and a trimmed source
        # such as the project's 4.15 copy lacks arch/um, which fs/hostfs's clean rules include).
        with self.stage("make modules_prepare (tree for out-of-tree modules)"):
            self.chroot(["make", f"-j{jobs}", *flags, "modules_prepare"], cwd=tree)
            if not (host_tree / "Module.symvers").is_file():
                raise KernelBuildError(self.step, self.log, "the built tree has no Module.symvers")
            gcc = self.chroot(["gcc", "-dumpfullversion"]).strip()
            gcc_text = self.chroot(["gcc", "--version"]).splitlines()[0].strip()
            packages = dict(
                line.split("\t", 1)
                for line in self.chroot(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n"]).splitlines()
                if "\t" in line
            )
        self.step = "done"
        return {
            "kernel_release": release,
            "headers_dir": tree,
            "gcc_version": gcc,
            "kernel_cc": gcc_text,
            "bzimage_sha256": file_sha256(self.tmp / "bzImage"),
            "packages": {k: v for k, v in packages.items()
                         if k.startswith(("gcc", "binutils", "make", "libc6", "libelf", "libssl"))},
        }


class _Throttled:
    """Shows make's latest line in the spinner, at most twice a second, with the elapsed time."""

    def __init__(self, status, label: str):
        self.status = status
        self.label = label
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, line: str) -> None:
        now = time.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        elapsed = int(now - self.start)
        self.status.update(f"[bold]{self.label}[/] {elapsed // 60}:{elapsed % 60:02d} — {line[:80]}")


def _extract_single_dir(tarball: Path, dest: Path) -> None:
    """Extract a tarball whose members all sit under one top folder, as `dest`."""
    staging = dest.parent / f".extract-{os.getpid()}"
    staging.mkdir()
    try:
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(staging), "--no-same-owner"],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise CommandError(f"extract {tarball}", exc.cmd, exc.returncode, exc.stderr) from None
    tops = list(staging.iterdir())
    if len(tops) != 1 or not tops[0].is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise KernelSourceError(f"{tarball} does not hold one top-level folder")
    os.rename(tops[0], dest)
    staging.rmdir()


# --------------------------------------------------------------------------------------------
# Kernel configs as text


_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse_config(text: str) -> dict[str, str | None]:
    """``{symbol: value}`` of a .config or fragment; None for ``# CONFIG_X is not set``."""
    values: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        if match := _SET.match(line):
            values[match.group(1)] = match.group(2)
        elif match := _UNSET.match(line):
            values[match.group(1)] = None
    return values


def merge_config(base: str, fragment: str) -> str:
    """`base` with every symbol the fragment names replaced by the fragment's line."""
    wanted = parse_config(fragment)
    kept = []
    for line in base.splitlines():
        match = _SET.match(line.strip()) or _UNSET.match(line.strip())
        if match and match.group(1) in wanted:
            continue
        kept.append(line)
    for symbol, value in wanted.items():
        kept.append(f"# {symbol} is not set" if value is None else f"{symbol}={value}")
    return "\n".join(kept) + "\n"


def config_mismatches(final: str, fragment: Mapping[str, str | None] | str) -> list[str]:
    """Fragment lines the final config does not honour (as ``CONFIG_X: want …, got …``)."""
    wanted = parse_config(fragment) if isinstance(fragment, str) else dict(fragment)
    have = parse_config(final)
    problems = []
    for symbol, value in wanted.items():
        got = have.get(symbol)
        if value is None:
            if got not in (None, "n"):
                problems.append(f"{symbol}: want unset, got {got}")
        elif got != value:
            problems.append(f"{symbol}: want {value}, got {got if got is not None else 'unset'}")
    return problems


# --------------------------------------------------------------------------------------------
# What a guest needs to build modules for a built kernel


_TREE_TOP_FILES = frozenset({"Makefile", ".config", "Module.symvers"})
_TREE_DIRS = ("include/", "scripts/", "arch/x86/include/")
_TREE_BUILD_FILES = ("Makefile", "Kbuild", "Kconfig")
_TREE_TOOLS = frozenset({"tools/objtool/objtool"})
_TREE_SKIP_SUFFIXES = (".o", ".cmd", ".a", ".ko", ".tmp")


def module_build_file(rel: str) -> bool:
    """Whether a file of a built tree (path relative to it) is needed by ``make -C TREE M=DIR``.

    What Debian's linux-headers packages carry, found the same way: the top Makefile, the
    final .config and Module.symvers, the headers (generated ones included), kbuild's scripts
    and their compiled helpers (fixdep, modpost), the arch's headers and makefiles, objtool, and
    every Makefile/Kbuild/Kconfig; no objects, no sources, no vmlinux.
    """
    name = rel.rsplit("/", 1)[-1]
    if rel in _TREE_TOP_FILES or rel in _TREE_TOOLS:
        return True
    if name.endswith(_TREE_SKIP_SUFFIXES) or name.startswith(".tmp"):
        return False
    if rel.startswith(_TREE_DIRS):
        return True
    return name.startswith(_TREE_BUILD_FILES)


def copy_module_build_tree(tree: Path, dest: Path) -> int:
    """Copy the part of the built tree `tree` that out-of-tree module builds need into `dest`.

    A from-source kernel's guest gets it as /usr/src/linux-headers-<release> (the ``build`` link
    of /lib/modules/<release>), so the slow path can compile snapshot modules in the guest as it
    does on Debian's kernels: about 60 MB instead of the whole built tree's 3 GB. Returns the
    number of files copied.
    """
    copied = 0
    for folder, dirs, files in os.walk(tree):
        dirs.sort()
        base = Path(folder)
        rel_dir = base.relative_to(tree).as_posix()
        for name in sorted(files) + [d for d in dirs if (base / d).is_symlink()]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not module_build_file(rel):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            source = base / name
            if source.is_symlink():
                target.symlink_to(os.readlink(source))
            else:
                shutil.copy2(source, target)
            copied += 1
    return copied


__all__ = [
    "KernelBuild", "KernelBuildError", "KernelSource", "KernelSourceError", "build_inputs",
    "build_root_for", "config_mismatches", "copy_module_build_tree", "ensure_kernel", "expected_sha256",
    "find_build_root_for", "find_kernel", "kernel_key", "locate_source", "merge_config", "mirror",
    "module_build_file", "parse_config", "patches_for",
]
