"""Kernel specs, build-root caching (with a fake builder) and module-build result handling.

Fast unit tests: nothing here runs debootstrap, apt or a compiler. The one test that compiles a
real module runs only when a complete build root is already cached and we are root.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
from pathlib import Path

import pytest

from common.proc import CommandError
from vm import buildroot as br
from vm.kernels import (
    DEFAULT_KERNEL,
    KernelNameError,
    KernelSpec,
    all_kernels,
    resolve_kernel,
)

# ------------------------------------------------------------------------------ kernel names


def test_debian_names_resolve_to_their_suites():
    assert resolve_kernel("debian-5.10").suite == "bullseye"
    assert resolve_kernel("debian-6.1").suite == "bookworm"
    assert resolve_kernel("debian-6.12").suite == "trixie"
    assert resolve_kernel(None).name == DEFAULT_KERNEL == "debian-6.1"
    spec = resolve_kernel("debian-6.12")
    assert "trixie-security" in spec.extra_suites and "trixie-updates" in spec.extra_suites
    assert spec.image_package == "linux-image-amd64"
    assert spec.headers_package == "linux-headers-amd64"
    assert spec.local_debs is None and not spec.is_local


def test_all_kernels_are_the_three_debian_ones():
    assert [k.name for k in all_kernels()] == ["debian-5.10", "debian-6.1", "debian-6.12"]
    for spec in all_kernels():
        assert all(s.startswith(spec.suite + "-") for s in spec.extra_suites)


@pytest.mark.parametrize("bad", ["debian-5.11", "debian", "6.1", "", "Debian-6.1"])
def test_unknown_name_lists_valid_ones(bad):
    with pytest.raises(KernelNameError) as info:
        resolve_kernel(bad)
    text = str(info.value)
    for valid in ("debian-5.10", "debian-6.1", "debian-6.12", "local:DIR"):
        assert valid in text


def _touch_debs(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"!<arch>\n" + name.encode())


UBUNTU_DEBS = (
    "linux-headers-4.15.0-173_4.15.0-173.182_all.deb",
    "linux-headers-4.15.0-173-generic_4.15.0-173.182_amd64.deb",
    "linux-image-unsigned-4.15.0-173-generic_4.15.0-173.182_amd64.deb",
    "linux-modules-4.15.0-173-generic_4.15.0-173.182_amd64.deb",
)


def test_local_missing_folder(tmp_path):
    with pytest.raises(KernelNameError, match="does not exist"):
        resolve_kernel(f"local:{tmp_path / 'nope'}")
    with pytest.raises(KernelNameError, match="needs a folder"):
        resolve_kernel("local:")


def test_local_folder_without_debs(tmp_path):
    (tmp_path / "README").write_text("no packages here")
    with pytest.raises(KernelNameError, match=r"no \.deb"):
        resolve_kernel(f"local:{tmp_path}")


def test_local_folder_without_headers(tmp_path):
    _touch_debs(tmp_path, "linux-image-4.15.0-173-generic_4.15.0-173.182_amd64.deb")
    with pytest.raises(KernelNameError, match="linux-headers"):
        resolve_kernel(f"local:{tmp_path}")


def test_local_folder_defaults_to_bookworm_and_reads_packages(tmp_path):
    debs = tmp_path / "ubuntu-4.15"
    _touch_debs(debs, *UBUNTU_DEBS)
    spec = resolve_kernel(f"local:{debs}")
    assert spec.is_local and spec.local_debs == debs.resolve()
    assert spec.suite == "bookworm" and "bookworm-security" in spec.extra_suites
    assert spec.headers_package == "linux-headers-4.15.0-173-generic"
    assert spec.image_package == "linux-image-unsigned-4.15.0-173-generic"
    assert [p.name for p in spec.headers_debs()] == sorted(UBUNTU_DEBS[:2])
    assert spec.slug == "local-ubuntu-4.15"


def test_local_suite_file(tmp_path):
    _touch_debs(tmp_path, *UBUNTU_DEBS)
    (tmp_path / "suite").write_text("# base for Ubuntu 18.04 debs (libssl1.1)\nbullseye\n")
    spec = resolve_kernel(f"local:{tmp_path}")
    assert spec.suite == "bullseye" and spec.extra_suites == ("bullseye-updates", "bullseye-security")
    (tmp_path / "suite").write_text("buster\n")
    with pytest.raises(KernelNameError, match="buster"):
        resolve_kernel(f"local:{tmp_path}")


# ------------------------------------------------------------------------------ keys, sources


def test_content_key_changes_with_inputs(tmp_path):
    keys = {br.root_key(spec) for spec in all_kernels()}
    assert len(keys) == 3
    spec = resolve_kernel("debian-6.1")
    assert br.root_key(spec) == br.root_key(resolve_kernel("debian-6.1"))  # stable
    assert br.root_key(spec, mirror="http://mirror.example/debian") != br.root_key(spec)
    assert br.root_key(spec, security_mirror="http://m.example/sec") != br.root_key(spec)
    other = KernelSpec("debian-6.1", "bookworm", ("bookworm-updates",))
    assert br.root_key(other) != br.root_key(spec)
    headers = KernelSpec("debian-6.1", "bookworm", spec.extra_suites, headers_package="linux-headers-rt-amd64")
    assert br.root_key(headers) != br.root_key(spec)


def test_content_key_follows_local_deb_contents(tmp_path):
    _touch_debs(tmp_path, *UBUNTU_DEBS)
    spec = resolve_kernel(f"local:{tmp_path}")
    before = br.root_key(spec)
    (tmp_path / UBUNTU_DEBS[2]).write_bytes(b"a different image")  # image: not in the build root
    assert br.root_key(spec) == before
    (tmp_path / UBUNTU_DEBS[1]).write_bytes(b"rebuilt headers")
    assert br.root_key(spec) != before


def test_apt_sources_use_the_security_mirror():
    text = br.apt_sources(resolve_kernel("debian-5.10"))
    assert "deb http://deb.debian.org/debian bullseye main" in text
    assert "deb http://deb.debian.org/debian bullseye-updates main" in text
    assert "deb http://deb.debian.org/debian-security bullseye-security main" in text


# ------------------------------------------------------------------------------ caching


def _fake_headers(root: Path, release: str, *, common: bool = True) -> None:
    arch = root / f"usr/src/linux-headers-{release}"
    (arch / "include/config").mkdir(parents=True)
    (arch / "Module.symvers").write_text("")
    (arch / "include/config/kernel.release").write_text("9.9.9\n")  # Debian: the upstream version
    (arch / "include/generated").mkdir(parents=True)
    (arch / "include/generated/utsrelease.h").write_text(f'#define UTS_RELEASE "{release}"\n')
    (arch / "include/config/auto.conf").write_text('CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14) 12.2.0"\n')
    if common:
        (root / f"usr/src/linux-headers-{release.rsplit('-', 1)[0]}-common/include").mkdir(parents=True)


class FakeBuilder:
    """Stands in for debootstrap+apt: makes a root with headers, or dies half-way."""

    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail

    def __call__(self, spec, root, show, *, mirror, security_mirror):
        self.calls += 1
        root.mkdir(parents=True)
        (root / "etc").mkdir()
        _fake_headers(root, "6.1.0-99-amd64")
        if self.fail:
            raise KeyboardInterrupt("killed during apt")
        headers_dir, release = br.find_headers(root)
        return {"kernel_release": release, "headers_dir": headers_dir, "gcc_version": "12.2.0",
                "kernel_cc": br.kernel_cc_text(root / headers_dir.lstrip("/")), "packages": {"gcc-12": "12.2.0-14"}}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "buildroots"


def test_build_root_is_cached_and_reused(cache, monkeypatch):
    fake = FakeBuilder()
    monkeypatch.setattr(br, "_populate_root", fake)
    spec = resolve_kernel("debian-6.1")
    root = br.ensure_build_root(spec, progress=False)
    assert root.kernel_release == "6.1.0-99-amd64"
    assert root.headers_dir == "/usr/src/linux-headers-6.1.0-99-amd64"
    assert root.kernel_cc.startswith("gcc-12")
    assert root.path == cache / f"debian-6.1-{br.root_key(spec)}" / "root"
    assert json.loads((root.entry_dir / br.STAMP_NAME).read_text())["key"] == root.key
    again = br.ensure_build_root(spec, progress=False)
    assert fake.calls == 1 and again.path == root.path
    assert br.find_build_root(spec).kernel_release == root.kernel_release
    assert not list(cache.glob(".tmp-*"))


def test_interrupted_build_is_never_taken_for_complete(cache, monkeypatch):
    spec = resolve_kernel("debian-6.12")
    monkeypatch.setattr(br, "_populate_root", FakeBuilder(fail=True))
    with pytest.raises(KeyboardInterrupt):
        br.ensure_build_root(spec, progress=False)
    assert not list(cache.glob(".tmp-*")), "an interrupted builder removes its own folder"
    assert br.find_build_root(spec) is None
    assert not (cache / f"debian-6.12-{br.root_key(spec)}").exists()

    fake = FakeBuilder()
    monkeypatch.setattr(br, "_populate_root", fake)
    root = br.ensure_build_root(spec, progress=False)
    assert fake.calls == 1 and (root.entry_dir / br.STAMP_NAME).is_file()


def test_killed_builder_from_another_process_is_cleaned(cache, monkeypatch):
    spec = resolve_kernel("debian-5.10")
    entry = f"debian-5.10-{br.root_key(spec)}"
    cache.mkdir(parents=True)
    stale = cache / f".tmp-{entry}-999999"  # a builder killed with SIGKILL: no stamp
    _fake_headers(stale / "root", "5.10.0-1-amd64")
    unstamped = cache / entry  # a final-looking folder without a stamp (hand-made)
    _fake_headers(unstamped / "root", "5.10.0-2-amd64")
    fake = FakeBuilder()
    monkeypatch.setattr(br, "_populate_root", fake)
    root = br.ensure_build_root(spec, progress=False)
    assert fake.calls == 1 and root.kernel_release == "6.1.0-99-amd64"
    assert not stale.exists()


def test_temp_folder_of_a_live_builder_is_kept(cache, monkeypatch):
    cache.mkdir(parents=True)
    busy_entry = "debian-6.12-0123456789abcdef"
    busy = cache / f".tmp-{busy_entry}-4242"
    busy.mkdir()
    monkeypatch.setattr(br, "_populate_root", FakeBuilder())
    with (cache / f"{busy_entry}.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as its builder does (a separate open file: excludes us)
        br.ensure_build_root(resolve_kernel("debian-6.1"), progress=False)
        assert busy.is_dir()
    br._remove_stale_tmp(cache, own_entry="something-else")
    assert not busy.exists()


def test_corrupt_or_foreign_stamp_is_rebuilt(cache, monkeypatch):
    spec = resolve_kernel("debian-6.1")
    fake = FakeBuilder()
    monkeypatch.setattr(br, "_populate_root", fake)
    root = br.ensure_build_root(spec, progress=False)
    (root.entry_dir / br.STAMP_NAME).write_text("{not json")
    br.ensure_build_root(spec, progress=False)
    assert fake.calls == 2


def test_stamp_of_other_inputs_is_not_trusted(cache, monkeypatch):
    spec = resolve_kernel("debian-6.1")
    fake = FakeBuilder()
    monkeypatch.setattr(br, "_populate_root", fake)
    root = br.ensure_build_root(spec, progress=False)
    stamp = json.loads((root.entry_dir / br.STAMP_NAME).read_text())
    (root.entry_dir / br.STAMP_NAME).write_text(json.dumps({**stamp, "key": "0000000000000000"}))
    assert br.find_build_root(spec) is None
    br.ensure_build_root(spec, progress=False)
    assert fake.calls == 2


def test_no_final_folder_until_the_stamp_is_written(cache, monkeypatch):
    spec = resolve_kernel("debian-6.1")
    monkeypatch.setattr(br, "_populate_root", FakeBuilder())

    def die(path, data):
        raise KeyboardInterrupt("killed while writing the stamp")

    monkeypatch.setattr(br, "atomic_write_json", die)
    with pytest.raises(KeyboardInterrupt):
        br.ensure_build_root(spec, progress=False)
    assert not (cache / f"debian-6.1-{br.root_key(spec)}").exists()
    assert br.find_build_root(spec) is None


def test_find_headers_picks_the_arch_folder(tmp_path):
    _fake_headers(tmp_path, "6.12.48+deb13-amd64")
    assert br.find_headers(tmp_path) == ("/usr/src/linux-headers-6.12.48+deb13-amd64", "6.12.48+deb13-amd64")
    _fake_headers(tmp_path, "6.12.41+deb13-amd64", common=False)
    with pytest.raises(br.BuildRootError, match="exactly one"):
        br.find_headers(tmp_path)


def test_find_headers_cross_checks_kernel_release(tmp_path):
    _fake_headers(tmp_path, "4.15.0-173-generic")
    (tmp_path / "usr/src/linux-headers-4.15.0-173-generic/include/generated/utsrelease.h").write_text(
        '#define UTS_RELEASE "4.15.0-1"\n')
    with pytest.raises(br.BuildRootError, match="4.15.0-1"):
        br.find_headers(tmp_path)


def test_making_a_root_needs_root(monkeypatch):
    monkeypatch.setattr(br, "ensure_tools", lambda tools: [])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(br.BuildRootError, match="root"):
        br._check_host(br.Progress("x", enabled=False))


# ------------------------------------------------------------------------------ warnings


GCC_LOG = """\
make: Entering directory '/usr/src/linux-headers-6.1.0-27-amd64'
  CC [M]  /build/k-1/core/lf_core.c
/build/k-1/core/lf_core.c: In function 'lf_query_model':
/build/k-1/core/lf_core.c:120:13: warning: unused variable 'n' [-Wunused-variable]
  120 |         int n;
      |             ^
In file included from /build/k-1/core/lf_core.c:3:
/build/k-1/include/liteflow.h:40:1: warning: 'lf_x' defined but not used [-Wunused-function]
/build/k-1/include/liteflow.h:40:1: warning: 'lf_x' defined but not used [-Wunused-function]
  MODPOST /build/k-1/test/Module.symvers
WARNING: modpost: "lf_register_model" [/build/k-1/test/lf_test.ko] undefined!
  LD [M]  /build/k-1/core/liteflow.ko
  BTF [M] /build/k-1/core/liteflow.ko
Skipping BTF generation for /build/k-1/core/liteflow.ko due to unavailability of vmlinux
"""


def test_parse_warnings_finds_gcc_and_modpost_warnings_once():
    found = br.parse_warnings(GCC_LOG)
    assert len(found) == 3
    first = found[0]
    assert (first.file, first.line, first.column) == ("/build/k-1/core/lf_core.c", 120, 13)
    assert first.message == "unused variable 'n'" and first.option == "-Wunused-variable"
    assert found[1].option == "-Wunused-function"
    assert "undefined!" in found[2].text and found[2].file == ""


def test_parse_warnings_clean_log():
    clean = "\n".join(line for line in GCC_LOG.splitlines() if "warning" not in line.lower())
    assert br.parse_warnings(clean) == []


# ------------------------------------------------------------------------------ modules


def make_ko(path: Path, vermagic: str, name: str = "hello") -> Path:
    """A minimal ELF64 relocatable with a .modinfo section, enough for read_modinfo."""
    modinfo = f"license=GPL\0vermagic={vermagic}\0name={name}\0alias=a1\0alias=a2\0".encode()
    shstr = b"\0.modinfo\0.shstrtab\0"
    data_off = 64
    shstr_off = data_off + len(modinfo)
    shoff = (shstr_off + len(shstr) + 7) & ~7
    header = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)
    body = header + modinfo + shstr
    body += b"\0" * (shoff - len(body))
    sections = [
        struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, data_off, len(modinfo), 0, 0, 1, 0),
        struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body + b"".join(sections))
    return path


def test_read_modinfo(tmp_path):
    ko = make_ko(tmp_path / "hello.ko", "6.1.0-27-amd64 SMP preempt mod_unload modversions ")
    info = br.read_modinfo(ko)
    assert info["vermagic"] == ["6.1.0-27-amd64 SMP preempt mod_unload modversions "]
    assert info["alias"] == ["a1", "a2"]
    (tmp_path / "plain").write_bytes(b"not elf")
    with pytest.raises(ValueError):
        br.read_modinfo(tmp_path / "plain")


def _fake_root(tmp_path: Path, release: str = "6.1.0-99-amd64") -> br.BuildRoot:
    path = tmp_path / "root"
    (path / "build").mkdir(parents=True)
    return br.BuildRoot(path=path, kernel_release=release, headers_dir=f"/usr/src/linux-headers-{release}",
                        gcc_version="12.2.0", spec=resolve_kernel("debian-6.1"), key="k")


def _kernel_tree(tmp_path: Path) -> Path:
    src = tmp_path / "kernel"
    for sub, mod in (("core", "liteflow"), ("test", "lf_test")):
        (src / sub).mkdir(parents=True)
        (src / sub / "Kbuild").write_text(f"obj-m := {mod}.o\n")
        (src / sub / f"{mod}.ko").write_text("stale output, must not be copied")
    (src / "include").mkdir()
    (src / "include/liteflow.h").write_text("/* header */\n")
    return src


class FakeMake:
    """Plays `make M=... modules` in the root: writes a .ko, Module.symvers and modules.order."""

    def __init__(self, root: br.BuildRoot, outputs: dict[str, str], vermagic: str | None = None, fail: str = ""):
        self.root, self.outputs, self.fail, self.argvs = root, outputs, fail, []
        self.vermagic = vermagic or f"{root.kernel_release} SMP preempt mod_unload modversions "

    def __call__(self, argv, step, *, timeout=None):
        self.argvs.append(list(argv))
        inside = next(a for a in argv if a.startswith("M="))[2:]
        folder = self.root.host_path(inside)
        assert (folder / "Kbuild").is_file() and not list(folder.glob("*.ko")), "copy must drop old outputs"
        assert (folder.parent / "include/liteflow.h").is_file()
        sub = folder.name
        if sub == self.fail:
            raise CommandError(step, argv, 2, f"{inside}/x.c:1:1: error: boom\n")
        mod = (folder / "Kbuild").read_text().split(":=")[1].strip()[:-2]
        make_ko(folder / f"{mod}.ko", self.vermagic, mod)
        (folder / "Module.symvers").write_text(f"0x0\tsym_{mod}\t{inside}/{mod}\tEXPORT_SYMBOL\t\n")
        (folder / "modules.order").write_text(f"{inside}/{mod}.o\n")
        return self.outputs.get(sub, "")


def test_build_modules_in_order_with_extra_symbols(tmp_path, monkeypatch):
    root = _fake_root(tmp_path)
    src = _kernel_tree(tmp_path)
    fake = FakeMake(root, {"test": "  CC [M]  x\n"})
    monkeypatch.setattr(root, "chroot_run", fake)
    out = tmp_path / "out"
    built = br.build_modules(root, src, ["core", "test"], out_dir=out)
    assert [m.name for m in built] == ["liteflow", "lf_test"]
    assert all(m.path.parent == out and m.path.is_file() for m in built)
    assert built[0].vermagic.startswith("6.1.0-99-amd64 ") and built[0].kernel_release == "6.1.0-99-amd64"
    assert built[0].symvers == out / "core.Module.symvers" and built[0].symvers.is_file()
    assert not any(a.startswith("KBUILD_EXTRA_SYMBOLS=") for a in fake.argvs[0])
    extra = [a for a in fake.argvs[1] if a.startswith("KBUILD_EXTRA_SYMBOLS=")]
    assert len(extra) == 1 and extra[0].endswith("/core/Module.symvers") and extra[0].split("=")[1].startswith("/build/")
    assert fake.argvs[0][:3] == ["make", "-C", "/usr/src/linux-headers-6.1.0-99-amd64"]
    assert built[1].warnings == []
    assert not list((root.path / "build").iterdir()), "the copy in the root is removed"
    assert "CC [M]" in (out / "build.log").read_text()


def test_build_modules_reports_and_strictly_rejects_warnings(tmp_path, monkeypatch):
    root = _fake_root(tmp_path)
    src = _kernel_tree(tmp_path)
    warn = "/build/x/core/lf_core.c:7:5: warning: unused variable 'v' [-Wunused-variable]\n"
    monkeypatch.setattr(root, "chroot_run", FakeMake(root, {"core": warn}))
    built = br.build_modules(root, src, ["core", "test"], out_dir=tmp_path / "o1")
    assert [w.option for w in built[0].warnings] == ["-Wunused-variable"] and built[1].warnings == []
    monkeypatch.setattr(root, "chroot_run", FakeMake(root, {"core": warn}))
    with pytest.raises(br.BuildWarningsError) as info:
        br.build_modules(root, src, ["core", "test"], out_dir=tmp_path / "o2", strict=True)
    assert "unused variable" in str(info.value) and len(info.value.warnings) == 1
    assert not (tmp_path / "o2/liteflow.ko").exists()


def test_build_modules_failure_names_folder_and_kernel(tmp_path, monkeypatch):
    root = _fake_root(tmp_path)
    src = _kernel_tree(tmp_path)
    monkeypatch.setattr(root, "chroot_run", FakeMake(root, {}, fail="test"))
    with pytest.raises(CommandError) as info:
        br.build_modules(root, src, ["core", "test"], out_dir=tmp_path / "out")
    text = str(info.value)
    assert "'test'" in text and "debian-6.1" in text and "6.1.0-99-amd64" in text
    assert f"{src}/test/x.c:1:1: error: boom" in text, "paths point at the user's source, not the copy"


def test_build_modules_rejects_wrong_vermagic(tmp_path, monkeypatch):
    root = _fake_root(tmp_path)
    src = _kernel_tree(tmp_path)
    monkeypatch.setattr(root, "chroot_run", FakeMake(root, {}, vermagic="5.10.0-1-amd64 SMP mod_unload "))
    with pytest.raises(br.BuildRootError, match="vermagic"):
        br.build_modules(root, src, ["core"], out_dir=tmp_path / "out")


def test_build_modules_rejects_bad_subdirs(tmp_path):
    root = _fake_root(tmp_path)
    src = _kernel_tree(tmp_path)
    for bad in ("../etc", "/core", "missing"):
        with pytest.raises(br.BuildRootError):
            br.build_modules(root, src, [bad], out_dir=tmp_path / "out")


# ------------------------------------------------------------------------------ real compile
