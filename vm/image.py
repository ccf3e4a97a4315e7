"""The guest image: a Debian root with the target kernel, workload tools and the guest Python venv.

``provision(kernel_name) -> Image`` builds (or finds in the cache) everything QEMU needs to boot a
guest by direct kernel boot:

    cache_dir("images")/<key>/
        disk.img                  raw ext4 root (label "root", the guest's /dev/vda)
        vmlinuz, initrd.img       the image's own kernel and initrd (virtio_blk/pci, ext4, 9p inside)
        id_ed25519(.pub)          root's login key, made at provision time (0600)
        ssh_host_ed25519_key.pub  the guest's host key: the client pins it (no trust on first use)
        manifest.json             dpkg packages, pip freeze, sha256 of kernel/initrd/disk, release
        stamp                     written last: a directory without it is not an image

``<key>`` is the content key of every input (suite, package list, wheel files, recipe version).
The image holds third-party software only: the project's code reaches the guest at run time
through the read-only 9p share ``liteflow`` mounted at /opt/liteflow.

A from-source kernel (``linux-4.15``, ``source:PATH``; ``vm.kernelsrc``) gets the same Debian 12
userspace, debootstrapped, with the built kernel and its modules copied in instead of packages.
Its drivers are built in, so it has no initrd. The harness builds modules for it on the host in
its build root, like every other kernel's; the image also carries the part of the built tree
that out-of-tree module builds need (``vm.kernelsrc.copy_module_build_tree``, about 70 MB for
4.15), so the slow path's ``--update module`` compiles snapshot modules in the guest as on
Debian's kernels. It does so with bookworm's gcc 12, not the bullseye gcc 10 the kernel was
built with: kbuild of that age records no compiler in the module's vermagic, and the core,
lf_test and snapshot modules compile without warnings with both. Debian 12 userspace on 4.15: systemd 252 supports it;
Open vSwitch's service stays disabled (as on every image).

How: start from a copy of the kernel's build root (``vm.buildroot``) when it can be had, else
debootstrap (minbase); add ``-updates``/``-security`` to apt's sources and install the kernel, its
headers and the tools with apt inside the chroot (debootstrap reads only the main suite); install
the venv offline from wheels downloaded on the host (pip in the chroot cannot do TLS); configure
SSH, network, fstab; ``mkfs.ext4 -d`` (no loop mounts). Chroot commands run in a private mount
namespace (``unshare --mount``), so /proc, /sys, /dev binds vanish with the process even when a
provision is interrupted. Everything is built in ``<key>.tmp-<pid>`` and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.cache import cache_dir, content_key
from common.files import file_sha256, flocked, try_flock
from common.progress import Progress
from common.proc import CommandError, run
from vm.kernels import KernelSpec, resolve_kernel

RECIPE_VERSION = 2
SOURCE_KERNEL_RECIPE = 2     # 2: the built tree's module-build part in the image (the guest compiles)

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"

# Installed with apt inside the chroot (after the kernel's suites are added). The guest compiles
# (the engine's user-space build, the C agent, snapshot modules), and gcc only recommends
# libc6-dev: without it an image debootstrapped from scratch could not, while one copied from a
# build root could. Every build-root package is here, so both ways give the same guest.
GUEST_PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "udev", "dbus", "kmod", "procps", "initramfs-tools",
    "openssh-server", "iproute2", "iputils-ping", "iperf3", "mininet", "ethtool",
    "libnl-3-dev", "libnl-genl-3-dev", "gcc", "make", "libc6-dev", "python3", "python3-venv",
)
# Modules the initrd must carry for direct kernel boot from a virtio disk (+ the 9p share).
INITRD_MODULES: tuple[str, ...] = (
    "virtio_pci", "virtio_blk", "virtio_net", "ext4", "9p", "9pnet", "9pnet_virtio",
)

# The guest venv (installed offline from host-downloaded wheels).
GUEST_VENV = "/opt/liteflow-venv"
TENSORFLOW_REQ = "tensorflow-cpu==2.21.0"
PYROUTE2_REQ = "pyroute2==0.9.7"
# The slow path generates snapshot modules in the guest (as LiteFlow does): the toolchain's C
# templates need Jinja2.
TOOLCHAIN_REQS = ["jinja2==3.1.6", "markupsafe==3.0.3"]
WHEEL_PLATFORMS: tuple[str, ...] = (
    "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64",
    "manylinux2014_x86_64", "any",
)
SUITE_PYTHON: dict[str, str] = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}

SHARE_TAG = "liteflow"
SHARE_MOUNT = "/opt/liteflow"
HOSTNAME = "liteflow-guest"

STAMP = "stamp"
MANIFEST = "manifest.json"


class ProvisionError(RuntimeError):
    """Provisioning failed; the message says which step and why."""


@dataclass(frozen=True)
class Image:
    """A provisioned guest image (a complete, stamped cache directory)."""

    path: Path
    kernel_name: str
    kernel_release: str
    suite: str
    manifest: dict = field(repr=False, compare=False)

    @property
    def disk(self) -> Path:
        return self.path / "disk.img"

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def ssh_key(self) -> Path:
        return self.path / "id_ed25519"

    @property
    def host_key_pub(self) -> Path:
        return self.path / "ssh_host_ed25519_key.pub"

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256((self.path / MANIFEST).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- public API


def provision(kernel_name: str | None = None, *, quiet: bool = False) -> Image:
    """The guest image for a kernel (``debian-6.1`` by default): from the cache, else built.

    A cached image is returned after reading its manifest only (no hashing; no root needed).
    Building needs root. Raises ProvisionError, or common.proc.CommandError for a failed
    external command; both name the failed step.
    """
    spec = resolve_kernel(kernel_name)
    progress = Progress(enabled=not quiet)
    py = python_version_for(spec.suite)
    wheels = ensure_wheels(py, progress)
    key = image_key(spec, wheels)
    images = cache_dir("images")
    final = images / key
    if (final / STAMP).exists():
        return load_image(final)
    _require_root()
    with flocked(images / f"{key}.lock"):
        if (final / STAMP).exists():
            return load_image(final)
        _remove_stale(images, key)
        if final.exists():  # a directory without stamp is never complete
            shutil.rmtree(final)
        tmp = images / f"{key}.tmp-{os.getpid()}"
        tmp.mkdir()
        started = time.monotonic()
        try:
            _build(spec, wheels, key, tmp, progress)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        progress.done(f"image {key} for {spec.name} in {time.monotonic() - started:.0f} s: {final}")
    return load_image(final)


def load_image(path: Path) -> Image:
    """An Image from a complete (stamped) image directory."""
    path = Path(path)
    if not (path / STAMP).exists():
        raise ProvisionError(f"{path} is not a complete image (no stamp)")
    manifest = json.loads((path / MANIFEST).read_text())
    return Image(path=path, kernel_name=manifest["kernel_name"],
                 kernel_release=manifest["kernel_release"], suite=manifest["suite"],
                 manifest=manifest)


def cached_image(kernel_name: str | None = None) -> Image | None:
    """The newest complete image for a kernel, without building anything (None if there is none)."""
    spec = resolve_kernel(kernel_name)
    best = None
    for stamp in cache_dir("images").glob(f"*/{STAMP}"):
        try:
            img = load_image(stamp.parent)
        except (OSError, ValueError, KeyError, ProvisionError):
            continue
        if img.kernel_name == spec.name and (best is None or stamp.stat().st_mtime > best[0]):
            best = (stamp.stat().st_mtime, img)
    return best[1] if best else None


def python_version_for(suite: str) -> str:
    try:
        return SUITE_PYTHON[suite]
    except KeyError:
        raise ProvisionError(f"no known python3 version for suite {suite!r}") from None


def image_key(spec: KernelSpec, wheels: WheelSet) -> str:
    """Content key of every input of an image."""
    inputs = {
        "recipe": RECIPE_VERSION,
        "kernel": spec.name,
        "suite": spec.suite,
        "extra_suites": list(spec.extra_suites),
        "image_package": spec.image_package,
        "headers_package": spec.headers_package,
        "local_debs": [(p.name, p.stat().st_size) for p in spec.deb_files()],
        "packages": list(GUEST_PACKAGES),
        "initrd_modules": list(INITRD_MODULES),
        "wheels": wheels.files,
        "requirements": wheels.requirements,
    }
    if spec.is_source:  # the built kernel's own key: source sha256, config, patches, toolchain
        from vm.kernelsrc import kernel_key, locate_source  # noqa: PLC0415

        inputs["kernel_build"] = kernel_key(locate_source(spec), spec=spec)
        inputs["source_kernel_recipe"] = SOURCE_KERNEL_RECIPE
    return content_key(inputs)


# --------------------------------------------------------------------------- wheels


@dataclass(frozen=True)
class WheelSet:
    path: Path
    python: str
    requirements: list[str]
    files: list[str]
    skipped: dict[str, str]  # requirement -> why it is not there


def ensure_wheels(python: str, progress: Progress | None = None) -> WheelSet:
    """Wheels for the guest venv, downloaded on the host for the guest's python (cached).

    TensorFlow is dropped (and the reason recorded) when no wheel exists for that python.
    """
    progress = progress or Progress()
    wanted = [TENSORFLOW_REQ, PYROUTE2_REQ, *TOOLCHAIN_REQS]
    key = content_key({"python": python, "requirements": wanted, "platforms": list(WHEEL_PLATFORMS)})
    root = cache_dir("wheels")
    final = root / key
    if not (final / STAMP).exists():
        with flocked(root / f"{key}.lock"):
            if not (final / STAMP).exists():
                _remove_stale(root, key)
                if final.exists():
                    shutil.rmtree(final)
                tmp = root / f"{key}.tmp-{os.getpid()}"
                tmp.mkdir()
                try:
                    skipped = {}
                    with progress.step(f"downloading wheels for python {python}"):
                        try:
                            _pip_download(python, wanted, tmp)
                        except CommandError as exc:
                            # TF may have no wheel for this python: keep the rest, say why.
                            tail = exc.output.strip().splitlines()
                            skipped[TENSORFLOW_REQ] = tail[-1] if tail else "no wheel"
                            for f in tmp.iterdir():
                                f.unlink()
                            _pip_download(python, [PYROUTE2_REQ, *TOOLCHAIN_REQS], tmp)
                    reqs = [r for r in wanted if r not in skipped]
                    (tmp / "wheels.json").write_text(json.dumps(
                        {"python": python, "requirements": reqs, "skipped": skipped}, indent=1))
                    (tmp / STAMP).write_text("ok\n")
                    os.replace(tmp, final)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
    meta = json.loads((final / "wheels.json").read_text())
    files = sorted(p.name for p in final.iterdir() if p.suffix == ".whl")
    return WheelSet(final, python, meta["requirements"], files, meta["skipped"])


def _pip_download(python: str, reqs: list[str], dest: Path) -> None:
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
            "--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for plat in WHEEL_PLATFORMS:
        argv += ["--platform", plat]
    run([*argv, "-d", dest, *reqs], step=f"pip download for python {python}", timeout=1800)


# --------------------------------------------------------------------------- the build


def _build(spec: KernelSpec, wheels: WheelSet, key: str, tmp: Path, progress: Progress) -> None:
    root = tmp / "root"
    if spec.is_source:  # no packages: the kernel is compiled (or waited for) after the apt step
        build_root = copied = None
    else:
        build_root = copied = _copy_build_root(spec, root, progress)
    if build_root is None:
        with progress.step(f"debootstrap {spec.suite} (minbase)"):
            run(["debootstrap", "--variant=minbase", "--include=initramfs-tools,ca-certificates",
                 spec.suite, root, MIRROR], step=f"debootstrap {spec.suite}", timeout=1800)

    with progress.step("apt: kernel, headers and guest packages"):
        _write_sources(root, spec)
        _policy_rc(root, deny=True)
        mods = root / "etc/initramfs-tools/modules"
        mods.parent.mkdir(parents=True, exist_ok=True)
        existing = mods.read_text().splitlines() if mods.exists() else []
        mods.write_text("\n".join(existing + [m for m in INITRD_MODULES if m not in existing]) + "\n")
        (root / "etc/apt/apt.conf.d/99liteflow").write_text(
            'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
            'Dpkg::Options { "--force-confdef"; "--force-confold"; };\n')
        kernel_pkgs = [spec.image_package, spec.headers_package] if not (spec.is_local or spec.is_source) else []
        binds = []
        local_args = ""
        if spec.is_local:
            binds.append((spec.local_debs, "/mnt/local-debs"))
            local_args = " ".join(shlex.quote(f"/mnt/local-debs/{p.name}") for p in spec.deb_files())
        _chroot(root, "apt-get update -q && apt-get install -y -q "
                + " ".join([*kernel_pkgs, *GUEST_PACKAGES]) + (" " + local_args if local_args else ""),
                step="apt-get install (kernel, headers, guest packages)", timeout=2400, binds=binds)

    built = None
    if spec.is_source:
        from vm.kernelsrc import ensure_kernel  # noqa: PLC0415

        built = ensure_kernel(spec, progress=progress.enabled)  # cached, else built (~11 min)
        with progress.step(f"install the built kernel {built.release} (bzImage, modules)"):
            _install_built_kernel(root, built)
    release = _kernel_release(root)
    if build_root is None:
        build_root = _cached_build_root(spec)
    if build_root is not None and build_root.kernel_release != release:
        raise ProvisionError(
            f"kernel ABI mismatch for {spec.name}: the image got {release} but its build root "
            f"({build_root.path}) has {build_root.kernel_release}; the suite moved on: remove the "
            f"stale build root (cache 'buildroots') and provision again")
    if built is None and not (root / "usr/src" / f"linux-headers-{release}").is_dir():
        raise ProvisionError(f"headers for {release} missing in the image root")

    with progress.step("initrd check" if built is None else "built-in boot drivers check"):
        initrd = root / "boot" / f"initrd.img-{release}"
        if built is not None:
            listing = ""  # no initrd: the boot drivers must be built in (modules.builtin)
        else:
            if not initrd.exists():
                _chroot(root, f"update-initramfs -c -k {release}", step="update-initramfs", timeout=600)
            listing = run(["lsinitramfs", initrd], step="lsinitramfs", timeout=300) \
                if shutil.which("lsinitramfs") else _chroot(
                    root, f"lsinitramfs /boot/initrd.img-{release}", step="lsinitramfs", timeout=300)
        builtin_file = root / "lib/modules" / release / "modules.builtin"
        builtin = builtin_file.read_text() if builtin_file.exists() else ""
        missing = [m for m in ("virtio_blk", "virtio_pci", "ext4", "9p")
                   if not _has_module(listing, m) and not _has_module(builtin, m)]
        if missing:
            where = f"initrd {initrd.name}" if built is None else f"kernel {release} (not built in)"
            raise ProvisionError(f"{where} lacks modules: {', '.join(missing)}")

    with progress.step(f"guest venv {GUEST_VENV} (offline wheels)"):
        # --system-site-packages: the venv's python also sees Debian's python3-mininet.
        venv_cmd = f"rm -rf {GUEST_VENV} && python3 -m venv --system-site-packages {GUEST_VENV}"
        pip = (f"{GUEST_VENV}/bin/pip install -q --disable-pip-version-check --no-index "
               "--find-links /mnt/wheels")
        if wheels.requirements:
            venv_cmd += f" && {pip} " + " ".join(shlex.quote(r) for r in wheels.requirements)
        # pyroute2 (pure python, no dependencies) for the system python3 too, where mininet lives.
        venv_cmd += (f" && {pip} --no-deps --target /usr/local/lib/python3."
                     "$(python3 -c 'import sys; print(sys.version_info[1])')/dist-packages "
                     f"{shlex.quote(PYROUTE2_REQ)}")
        _chroot(root, venv_cmd, step="guest venv install", timeout=1800,
                binds=[(wheels.path, "/mnt/wheels")])

    with progress.step("configure guest (ssh keys, network, fstab, getty)"):
        _configure(root, tmp)
        packages = _chroot(root, "dpkg-query -W -f '${Package}\\t${Version}\\n'",
                           step="dpkg-query", timeout=120)
        freeze = _chroot(root, f"{GUEST_VENV}/bin/python -m pip freeze --disable-pip-version-check",
                         step="pip freeze", timeout=300)
        _chroot(root, "apt-get clean && rm -rf /var/lib/apt/lists/*", step="apt clean", timeout=120)
        _policy_rc(root, deny=False)
        shutil.copyfile(root / "boot" / f"vmlinuz-{release}", tmp / "vmlinuz")
        if built is None:
            shutil.copyfile(root / "boot" / f"initrd.img-{release}", tmp / "initrd.img")

    with progress.step("mkfs.ext4 -d (raw disk image)"):
        used = int(run(["du", "-sxb", root], step="du", timeout=600).split()[0])
        size_mib = _disk_size_mib(used)
        disk = tmp / "disk.img"
        run(["mkfs.ext4", "-q", "-F", "-d", root, "-L", "root", disk, f"{size_mib}M"],
            step="mkfs.ext4", timeout=1800)

    with progress.step("manifest (sha256 of kernel, initrd, disk)"):
        manifest = {
            "recipe": RECIPE_VERSION,
            "key": key,
            "kernel_name": spec.name,
            "suite": spec.suite,
            "kernel_release": release,
            "built_from": "debootstrap" if copied is None else f"copy of build root {copied.path}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "disk_size_mib": size_mib,
            "root_bytes": used,
            "sha256": {n: file_sha256(tmp / n) for n in ("vmlinuz", "initrd.img", "disk.img")
                       if (tmp / n).is_file()},
            "initrd": built is None,
            "python": wheels.python,
            "pip_requirements": wheels.requirements,
            "pip_skipped": wheels.skipped,
            "system_python_extra": [PYROUTE2_REQ],
            "venv_system_site_packages": True,
            "pip_freeze": sorted(line for line in freeze.splitlines() if line.strip()),
            "dpkg": dict(sorted(
                tuple(line.split("\t", 1)) for line in packages.splitlines() if "\t" in line)),
            "wheels": wheels.files,
        }
        if built is not None:
            manifest["kernel_build"] = {
                "key": built.key, "build_seconds": built.build_seconds, "gcc": built.gcc_version,
                "source_sha256": built.stamp["inputs"]["source_sha256"],
                "patches": sorted(built.stamp["inputs"]["patches"]), "cache_entry": str(built.entry),
            }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(root)
        (tmp / STAMP).write_text(f"{manifest['created']}\n")


def _copy_build_root(spec: KernelSpec, dest: Path, progress: Progress):
    """Copy the kernel's build root to ``dest`` when vm.buildroot can give one; else None.

    A build root that cannot be made is not fatal here: the image is then debootstrapped on its
    own (the warning says why), and the ABI check below still compares with any cached root.
    """
    if os.environ.get("LITEFLOW_IMAGE_NO_BUILDROOT"):
        return None
    try:
        from vm.buildroot import ensure_build_root  # noqa: PLC0415 (optional, other module)
    except ImportError:
        return None
    try:
        br = ensure_build_root(spec, progress=progress.enabled)
    except Exception as exc:  # noqa: BLE001 - fall back to debootstrap, loudly
        progress.warn(f"no build root for {spec.name} ({str(exc).splitlines()[0][:300]}); "
                      "debootstrapping the image instead")
        return None
    with progress.step(f"copy build root of {spec.name} as the image base"):
        run(["cp", "-a", "--reflink=auto", br.path, dest], step="copy build root", timeout=1800)
    return br


def _install_built_kernel(root: Path, built) -> None:
    """The built kernel into the image: /boot/vmlinuz-REL, /boot/config-REL, /lib/modules/REL,
    and the part of its built tree that module builds need as /usr/src/linux-headers-REL, linked
    as /lib/modules/REL/build like a Debian headers package."""
    from vm.kernelsrc import copy_module_build_tree  # noqa: PLC0415

    boot = root / "boot"
    boot.mkdir(exist_ok=True)
    shutil.copyfile(built.bzimage, boot / f"vmlinuz-{built.release}")
    shutil.copyfile(built.config, boot / f"config-{built.release}")
    modules = root / "lib/modules" / built.release
    if modules.exists():
        shutil.rmtree(modules)
    shutil.copytree(built.modules_dir, modules, symlinks=True)
    headers = f"/usr/src/linux-headers-{built.release}"
    if (root / headers.lstrip("/")).exists():
        shutil.rmtree(root / headers.lstrip("/"))
    copy_module_build_tree(built.root / built.headers_dir.lstrip("/"), root / headers.lstrip("/"))
    (modules / "build").symlink_to(headers)


def _cached_build_root(spec: KernelSpec):
    """The complete cached build root of `spec` without building one (None if none/unavailable)."""
    try:
        from vm.buildroot import find_build_root  # noqa: PLC0415
        return find_build_root(spec)
    except Exception:  # noqa: BLE001 - the comparison is best effort when there is no root
        return None


def _write_sources(root: Path, spec: KernelSpec) -> None:
    lines = [f"deb {MIRROR} {spec.suite} main"]
    for extra in spec.extra_suites:
        mirror = SECURITY_MIRROR if extra.endswith("-security") else MIRROR
        lines.append(f"deb {mirror} {extra} main")
    (root / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")


def _policy_rc(root: Path, deny: bool) -> None:
    path = root / "usr/sbin/policy-rc.d"
    if deny:
        path.write_text("#!/bin/sh\nexit 101\n")
        path.chmod(0o755)
    elif path.exists():
        path.unlink()


def _has_module(listing: str, name: str) -> bool:
    """Whether a file listing (lsinitramfs, modules.builtin) holds module `name`."""
    return any(line.strip().endswith((f"/{name}.ko", f"/{name}.ko.xz", f"/{name}.ko.zst", f"/{name}.ko.gz"))
               for line in listing.splitlines())


def _kernel_release(root: Path) -> str:
    releases = sorted(p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*"))
    if len(releases) != 1:
        raise ProvisionError(f"expected one kernel in the image root, found {releases or 'none'}")
    return releases[0]


def _configure(root: Path, tmp: Path) -> None:
    # Login key for root and the guest's host key, both generated now and kept next to the image.
    key = tmp / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "liteflow-testbed", "-f", key],
        step="ssh-keygen (login key)", timeout=60)
    key.chmod(0o600)
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    hostkey = root / "etc/ssh/ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{HOSTNAME}", "-f", hostkey],
        step="ssh-keygen (host key)", timeout=60)
    hostkey.chmod(0o600)
    shutil.copyfile(hostkey.with_suffix(".pub"), tmp / "ssh_host_ed25519_key.pub")
    sshd_d = root / "etc/ssh/sshd_config.d"
    sshd_d.mkdir(parents=True, exist_ok=True)
    (sshd_d / "liteflow.conf").write_text(
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nUseDNS no\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)
    (ssh_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)

    (root / "etc/hostname").write_text(HOSTNAME + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n"
                                    "::1 localhost ip6-localhost ip6-loopback\n")
    (root / "etc/fstab").write_text(
        "# <fs> <mount> <type> <options> <dump> <pass>\n"
        "/dev/vda / ext4 rw,errors=remount-ro 0 1\n"
        f"{SHARE_TAG} {SHARE_MOUNT} 9p trans=virtio,version=9p2000.L,ro,nofail,msize=262144 0 0\n")
    (root / SHARE_MOUNT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    net = root / "etc/systemd/network"
    net.mkdir(parents=True, exist_ok=True)
    (net / "20-eth0.network").write_text("[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n")
    # machine-id generated at first boot
    (root / "etc/machine-id").write_text("")
    _chroot(root, "systemctl enable systemd-networkd.service serial-getty@ttyS0.service ssh.service"
            " && systemctl mask systemd-networkd-wait-online.service"
            " && (systemctl disable openvswitch-switch.service 2>/dev/null || true)",
            step="systemctl enable", timeout=120)


def _disk_size_mib(used_bytes: int) -> int:
    """Root size + 30% + 1.5 GiB of headroom for modules, logs and results, rounded to 256 MiB."""
    mib = used_bytes * 1.3 / 2**20 + 1536
    return int((mib + 255) // 256 * 256)


# --------------------------------------------------------------------------- chroot helper


def _chroot(root: Path, command: str, *, step: str, timeout: float,
            binds: list[tuple[Path, str]] | None = None) -> str:
    """Run a shell command in the chroot, inside a private mount namespace (mounts die with it)."""
    r = shlex.quote(str(root))
    setup = [
        "set -e",
        f"mount -t proc proc {r}/proc",
        f"mount -t sysfs sysfs {r}/sys",
        f"mount --rbind /dev {r}/dev",
    ]
    for src, target in binds or []:
        t = shlex.quote(f"{root}{target}")
        setup += [f"mkdir -p {t}", f"mount --bind {shlex.quote(str(src))} {t}"]
    env = ("env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "
           "DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 LANG=C.UTF-8")
    setup.append(f"exec chroot {r} {env} /bin/sh -c {shlex.quote(command)}")
    out = run(["unshare", "--mount", "--propagation", "private", "--fork", "/bin/sh", "-c",
               "\n".join(setup)], step=step, timeout=timeout)
    for _, target in binds or []:
        try:
            (root / target.lstrip("/")).rmdir()
        except OSError:
            pass
    return out


# --------------------------------------------------------------------------- housekeeping


def _remove_stale(parent: Path, key: str) -> None:
    """Remove temp dirs of earlier, interrupted runs.

    Ours (same key) are stale since we hold the key's lock; another key's temp dir is stale when
    its lock can be taken right now (no live builder).
    """
    for stale in parent.glob("*.tmp-*"):
        if not stale.is_dir():
            continue
        other = stale.name.split(".tmp-", 1)[0]
        if other == key:
            shutil.rmtree(stale, ignore_errors=True)
            continue
        with try_flock(parent / f"{other}.lock") as ours:
            if ours:  # else being built right now
                shutil.rmtree(stale, ignore_errors=True)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ProvisionError("provisioning needs root (debootstrap, chroot, mount namespaces)")


def _main(argv: list[str]) -> int:  # python -m vm.image [KERNEL]
    img = provision(argv[0] if argv else None)
    print(img.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
