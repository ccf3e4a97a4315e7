"""From-source kernels (vm.kernelsrc): names, the source mirror, checksums, cache keys, failures.

Fast unit tests: no compiler, no chroot, no network. The builder is replaced by fakes where a test
needs a build to "happen"; the tarballs are tiny fakes with a kernel-like top-level Makefile.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from vm import buildroot as br
from vm import kernelsrc as ks
from vm.image import Image
from vm.kernels import KernelNameError, all_kernels, matrix_kernels, resolve_kernel
from vm.matrix import selected_kernels

MAKEFILE = "VERSION = 4\nPATCHLEVEL = 15\nSUBLEVEL = 1\nEXTRAVERSION =\nNAME = Fearless Coyote\n"


def fake_tarball(folder: Path, name: str = "linux-4.15.1.tar.xz", makefile: str = MAKEFILE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    top = name.split(".tar")[0]
    with tarfile.open(path, "w:xz") as tar:
        for member, text in ((f"{top}/COPYING", "GPL-2.0\n"), (f"{top}/Makefile", makefile),
                             (f"{top}/Kconfig", "mainmenu \"Linux\"\n")):
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(ks.MIRROR_ENV, raising=False)
    monkeypatch.delenv(ks.SHA256_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local mirror folder with a fake 4.15.1 tarball, and its sha256 as the expected one."""
    tarball = fake_tarball(tmp_path / "mirror")
    monkeypatch.setenv(ks.MIRROR_ENV, str(tmp_path / "mirror"))
    monkeypatch.setenv(ks.SHA256_ENV, sha256(tarball))
    return tarball


@pytest.fixture
def no_build(monkeypatch):
    """Fail loudly if anything would start building (toolchain root or kernel)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a build was started")

    monkeypatch.setattr(br, "ensure_build_root", forbidden)
    monkeypatch.setattr(ks._Builder, "run", forbidden)


# ------------------------------------------------------------------------------ names


def test_linux_415_is_a_source_kernel_with_a_debian_12_userspace():
    spec = resolve_kernel("linux-4.15")
    assert spec.is_source and not spec.is_local
    assert spec.source_release == "4.15.1" and spec.source_path is None
    assert spec.suite == "bookworm" and spec.slug == "linux-4.15"


def test_all_includes_415_first_and_debian_selects_the_packaged_kernels():
    assert [k.name for k in selected_kernels("all")] == ["linux-4.15", *[k.name for k in all_kernels()]]
    assert selected_kernels("debian") == all_kernels()
    assert matrix_kernels()[0].name == "linux-4.15"


def test_source_path_takes_a_tarball_or_a_tree(tmp_path):
    tarball = fake_tarball(tmp_path)
    spec = resolve_kernel(f"source:{tarball}")
    assert spec.is_source and spec.source_path == tarball and spec.slug == "source-linux-4.15.1.tar.xz"
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Makefile").write_text(MAKEFILE)
    (tree / "Kconfig").write_text("")
    assert resolve_kernel(f"source:{tree}").source_path == tree


@pytest.mark.parametrize("bad", ["source:", "source:/no/such/linux.tar.xz"])
def test_bad_source_paths_are_refused(bad):
    with pytest.raises(KernelNameError):
        resolve_kernel(bad)


def test_a_folder_that_is_no_kernel_tree_is_refused(tmp_path):
    with pytest.raises(KernelNameError, match="not a kernel source tree"):
        resolve_kernel(f"source:{tmp_path}")


def test_unknown_names_list_the_new_kinds():
    with pytest.raises(KernelNameError) as info:
        resolve_kernel("linux-9.9")
    assert "linux-4.15" in str(info.value) and "source:PATH" in str(info.value)


# ------------------------------------------------------------------------------ the mirror


def test_mirror_override_serves_the_tarball_from_a_local_folder(mirror):
    source = ks.locate_source(resolve_kernel("linux-4.15"))
    assert source.path == mirror and source.sha256 == sha256(mirror)
    assert source.version == "4.15.1" and source.series == "4.15"


def test_mirror_override_by_url_downloads_into_the_cache(tmp_path, monkeypatch, cache):
    tarball = fake_tarball(tmp_path / "www" / "v4.x")
    monkeypatch.setenv(ks.MIRROR_ENV, (tmp_path / "www").as_uri())
    monkeypatch.setenv(ks.SHA256_ENV, sha256(tarball))
    source = ks.locate_source(resolve_kernel("linux-4.15"))
    assert source.path == cache / "kernels" / "sources" / tarball.name
    assert source.sha256 == sha256(tarball)


def test_default_mirror_is_kernel_org_and_needs_a_known_checksum(no_build, monkeypatch):
    assert ks.mirror() == ks.DEFAULT_MIRROR == "https://cdn.kernel.org/pub/linux/kernel"
    # the refusal is what this checks, whether or not a kernel.org checksum gets recorded later
    monkeypatch.setattr(ks, "KERNEL_ORG_SHA256", {k: v for k, v in ks.KERNEL_ORG_SHA256.items() if k != "4.15.1"})
    with pytest.raises(ks.KernelSourceError, match=ks.SHA256_ENV):
        ks.ensure_kernel(resolve_kernel("linux-4.15"), progress=False)


def test_a_malformed_expected_checksum_is_refused(mirror, monkeypatch):
    monkeypatch.setenv(ks.SHA256_ENV, "abc")
    with pytest.raises(ks.KernelSourceError, match="64 hex"):
        ks.locate_source(resolve_kernel("linux-4.15"))


# ------------------------------------------------------------------------------ checksum refusal


def test_a_tarball_whose_checksum_differs_is_refused_before_anything_is_built(mirror, monkeypatch, cache,
                                                                            no_build):
    monkeypatch.setenv(ks.SHA256_ENV, "0" * 64)
    with pytest.raises(ks.KernelSourceError, match="checksum mismatch.*refusing"):
        ks.ensure_kernel(resolve_kernel("linux-4.15"), progress=False)
    assert not list((cache / "kernels").glob("linux-4.15-*"))


def test_a_downloaded_tarball_with_the_wrong_checksum_is_not_kept(tmp_path, monkeypatch, cache, no_build):
    fake_tarball(tmp_path / "www" / "v4.x")
    monkeypatch.setenv(ks.MIRROR_ENV, (tmp_path / "www").as_uri())
    monkeypatch.setenv(ks.SHA256_ENV, "1" * 64)
    with pytest.raises(ks.KernelSourceError, match="checksum mismatch"):
        ks.ensure_kernel(resolve_kernel("linux-4.15"), progress=False)
    assert not list((cache / "kernels" / "sources").iterdir())


# ------------------------------------------------------------------------------ the cache key


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """The config fragment and patches copied where a test may change them."""
    patches = tmp_path / "patches"
    for patch in ks.patches_for("4.15"):
        (patches / "4.15").mkdir(parents=True, exist_ok=True)
        (patches / "4.15" / patch.name).write_bytes(patch.read_bytes())
    config = tmp_path / "guest.config"
    config.write_bytes(ks.CONFIG_FRAGMENT.read_bytes())
    monkeypatch.setattr(ks, "PATCH_DIR", patches)
    monkeypatch.setattr(ks, "CONFIG_FRAGMENT", config)
    return patches / "4.15", config


def _key(source: ks.KernelSource, toolchain: str = "tool") -> str:
    return ks.kernel_key(source, toolchain_key=toolchain)


def test_changing_a_patch_changes_the_cache_key(data_copy, mirror):
    patches, _ = data_copy
    source = ks.locate_source(resolve_kernel("linux-4.15"))
    before = _key(source)
    assert _key(source) == before  # stable
    first = sorted(patches.glob("*.patch"))[0]
    first.write_text(first.read_text() + "\n")
    assert _key(source) != before


def test_adding_a_patch_config_source_or_toolchain_changes_the_key(data_copy, mirror):
    patches, config = data_copy
    source = ks.locate_source(resolve_kernel("linux-4.15"))
    keys = {_key(source)}
    (patches / "0099-extra.patch").write_text("Backport of upstream commit " + "a" * 40 + "\n")
    keys.add(_key(source))
    config.write_text(config.read_text() + "CONFIG_NET_SCH_CAKE=y\n")
    keys.add(_key(source))
    keys.add(_key(ks.KernelSource(source.path, "f" * 64, source.version)))
    keys.add(_key(source, toolchain="another gcc"))
    assert len(keys) == 5


def test_patches_apply_only_to_their_series(data_copy):
    assert [p.name for p in ks.patches_for("4.15")] == sorted(p.name for p in ks.patches_for("4.15"))
    assert ks.patches_for("6.1") == []
    assert ks.make_flags_for("4.15")["HOSTCFLAGS"].endswith("-fcommon")


def test_every_shipped_patch_cites_the_upstream_commit_it_backports():
    patches = ks.patches_for("4.15")
    assert len(patches) == 4
    for patch in patches:
        text = patch.read_text()
        assert re.search(r"upstream commits? [0-9a-f]{40}", text), patch.name
        assert "\n--- a/" in text and "\n+++ b/" in text


# ------------------------------------------------------------------------------ versions, configs


def test_version_is_read_from_the_tarball_and_the_tree(tmp_path):
    assert ks._tarball_version(fake_tarball(tmp_path)) == "4.15.1"
    other = fake_tarball(tmp_path / "o", "linux-5.4.0.tar.xz",
                         MAKEFILE.replace("4\n", "5\n", 1).replace("15", "4").replace("= 1", "= 0"))
    assert ks._tarball_version(other) == "5.4.0"
    with pytest.raises(ks.KernelSourceError):
        ks.makefile_version("VERSION = 4\n")


def test_tree_checksum_follows_content(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "Makefile").write_text(MAKEFILE)
    first = ks.tree_sha256(tree)
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref")
    assert ks.tree_sha256(tree) == first  # .git is not the source
    (tree / "Makefile").write_text(MAKEFILE + "# changed\n")
    assert ks.tree_sha256(tree) != first


def test_merge_config_replaces_and_adds_symbols():
    base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\nCONFIG_D=y\n"
    merged = ks.merge_config(base, "CONFIG_B=y\n# CONFIG_D is not set\nCONFIG_E=\"x\"\n")
    assert ks.parse_config(merged) == {"CONFIG_A": "y", "CONFIG_C": "m", "CONFIG_B": "y",
                                       "CONFIG_D": None, "CONFIG_E": '"x"'}


def test_config_mismatches_name_what_did_not_survive():
    final = "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n"
    assert ks.config_mismatches(final, "CONFIG_A=y\n# CONFIG_C is not set\n") == []
    problems = ks.config_mismatches(final, "CONFIG_B=y\n# CONFIG_A is not set\nCONFIG_X=y\n")
    assert problems == ["CONFIG_B: want y, got m", "CONFIG_A: want unset, got y", "CONFIG_X: want y, got unset"]


def test_the_guest_config_builds_in_the_boot_drivers_and_the_experiments_needs():
    wanted = ks.parse_config(ks.CONFIG_FRAGMENT.read_text())
    for symbol in ("VIRTIO_PCI", "VIRTIO_BLK", "VIRTIO_NET", "NET_9P_VIRTIO", "9P_FS", "EXT4_FS",
                   "DEVTMPFS_MOUNT", "TCP_CONG_CUBIC", "TCP_CONG_BBR", "NET_SCH_FQ", "NET_SCH_NETEM",
                   "NET_SCH_HTB", "NET_SCH_TBF", "NET_SCH_PRIO", "NET_SCH_RED", "VETH", "NET_NS", "BRIDGE"):
        assert wanted[f"CONFIG_{symbol}"] == "y", symbol
    for symbol in ("SECURITY_SELINUX", "UNWINDER_ORC", "STACK_VALIDATION"):
        assert wanted[f"CONFIG_{symbol}"] is None, symbol


# ------------------------------------------------------------------------------ builds (faked)


class FakeRoot:
    def __init__(self, path: Path):
        self.path = path


@pytest.fixture
def fake_toolchain(tmp_path, monkeypatch):
    root = tmp_path / "toolchain-root"
    root.mkdir()
    monkeypatch.setattr(br, "ensure_build_root", lambda spec, progress=True: FakeRoot(root))
    return root


def test_a_failed_build_keeps_its_log_names_the_step_and_caches_nothing(mirror, fake_toolchain,
                                                                       monkeypatch, cache):
    def failing(self, tool_root):
        self.log.write_text("CC kernel/fork.o\nerror: something broke\n")
        self.step = "make bzImage modules (-j2)"
        raise ks.KernelBuildError(self.step, self.log, "make exited 2")

    monkeypatch.setattr(ks._Builder, "run", failing)
    with pytest.raises(ks.KernelBuildError) as info:
        ks.ensure_kernel(resolve_kernel("linux-4.15"), progress=False)
    assert info.value.step == "make bzImage modules (-j2)"
    assert "make bzImage modules" in str(info.value)
    assert info.value.log.is_file() and "something broke" in info.value.log.read_text()
    assert info.value.log.parent == cache / "kernels" / "logs"
    kernels = cache / "kernels"
    assert [p.name for p in kernels.iterdir() if not p.name.endswith(".lock")] == ["logs"]


def test_an_unexpected_error_is_reported_with_the_step_it_happened_in(mirror, fake_toolchain, monkeypatch):
    def broken(self, tool_root):
        self.step = "unpack linux-4.15.1.tar.xz"
        raise OSError("disk full")

    monkeypatch.setattr(ks._Builder, "run", broken)
    with pytest.raises(ks.KernelBuildError, match="unpack linux-4.15.1.tar.xz.*\n.*disk full"):
        ks.ensure_kernel(resolve_kernel("linux-4.15"), progress=False)


def test_a_complete_build_is_cached_and_reused(mirror, fake_toolchain, monkeypatch, cache):
    calls = []

    def succeeding(self, tool_root):
        calls.append(tool_root)
        (self.root / "usr/src/linux-headers-4.15.1-liteflow").mkdir(parents=True)
        (self.tmp / "modules/lib/modules/4.15.1-liteflow").mkdir(parents=True)
        (self.tmp / "bzImage").write_bytes(b"kernel")
        return {"kernel_release": "4.15.1-liteflow", "headers_dir": "/usr/src/linux-headers-4.15.1-liteflow",
                "gcc_version": "10.2.1", "kernel_cc": "gcc (Debian 10.2.1-6) 10.2.1", "packages": {}}

    monkeypatch.setattr(ks._Builder, "run", succeeding)
    spec = resolve_kernel("linux-4.15")
    built = ks.ensure_kernel(spec, progress=False)
    assert built.release == "4.15.1-liteflow" and built.bzimage.read_bytes() == b"kernel"
    assert built.stamp["inputs"]["source_sha256"] == sha256(mirror)
    assert ks.ensure_kernel(spec, progress=False) == built and len(calls) == 1
    assert ks.find_kernel(spec) == built
    root = br.find_build_root(spec)  # the module builder's view of it
    assert root.kernel_release == "4.15.1-liteflow" and root.headers_dir == built.headers_dir
    assert root.path == built.root


def test_an_entry_whose_modules_carry_another_release_is_not_trusted(mirror, fake_toolchain, monkeypatch):
    """The first debug-kernel build read 6.1's release before syncconfig ("6.1.192") while its
    modules installed as 6.1.192-liteflow; such an entry is rebuilt, not booted."""
    calls = []

    def misnamed(self, tool_root):
        calls.append(tool_root)
        (self.root / "usr/src/linux-headers-4.15.1").mkdir(parents=True)
        (self.tmp / "modules/lib/modules/4.15.1-liteflow").mkdir(parents=True, exist_ok=True)
        (self.tmp / "bzImage").write_bytes(b"kernel")
        return {"kernel_release": "4.15.1", "headers_dir": "/usr/src/linux-headers-4.15.1",
                "gcc_version": "10.2.1", "kernel_cc": "gcc", "packages": {}}

    monkeypatch.setattr(ks._Builder, "run", misnamed)
    spec = resolve_kernel("linux-4.15")
    with pytest.raises(br.BuildRootError):
        ks.ensure_kernel(spec, progress=False)
    assert ks.find_kernel(spec) is None and len(calls) == 1


def test_find_build_root_does_not_build_a_source_kernel(mirror, no_build):
    assert br.find_build_root(resolve_kernel("linux-4.15")) is None


# ------------------------------------------------------------------------------ booting it


def test_qemu_boots_an_image_without_initrd_directly(tmp_path):
    from vm import qemu

    image_dir = tmp_path / "img"
    image_dir.mkdir()
    (image_dir / "vmlinuz").write_bytes(b"")
    image = Image(image_dir, "linux-4.15", "4.15.1-liteflow", "bookworm", {"initrd": False})
    argv = qemu.qemu_argv(image, accel="tcg", memory_mb=1024, cpus=1, ssh_port=2222,
                          rundir=tmp_path / "run", repo=None)
    assert "-initrd" not in argv and argv[argv.index("-kernel") + 1] == str(image.kernel)


def test_the_debug_kernel_is_debians_61_source_with_the_debug_fragment_outside_the_matrix():
    from vm.kernels import matrix_kernels

    spec = resolve_kernel("debian-6.1-debug")
    assert spec.is_source and spec.source_package == "linux-source-6.1" and spec.suite == "bookworm"
    assert ks.toolchain_spec(spec).name == "debian-6.1"          # bookworm's gcc 12 for a 6.1 tree
    assert ks.toolchain_spec(resolve_kernel("linux-4.15")).name == ks.TOOLCHAIN_KERNEL
    assert [p.name for p in ks.config_fragments(spec)] == ["guest.config", "debug.config"]
    assert "debian-6.1-debug" not in [k.name for k in matrix_kernels()]
    wanted = ks.parse_config(ks.config_text(spec))
    for option in ("CONFIG_KASAN", "CONFIG_PROVE_LOCKING", "CONFIG_PROVE_RCU", "CONFIG_DEBUG_ATOMIC_SLEEP",
                   "CONFIG_VIRTIO_BLK", "CONFIG_TCP_CONG_BBR"):
        assert wanted.get(option) == "y", option


def test_the_debug_fragment_is_in_the_debug_kernels_key_only(data_copy, mirror):
    source = ks.locate_source(resolve_kernel("linux-4.15"))
    debug = resolve_kernel("debian-6.1-debug")
    plain = ks.build_inputs(source, toolchain_key="tool")
    assert "extra_config" not in plain                 # the 4.15 kernel keeps its cached key
    assert ks.build_inputs(source, toolchain_key="tool", spec=resolve_kernel("linux-4.15")) == plain
    with_debug = ks.build_inputs(source, toolchain_key="tool", spec=debug)
    assert set(with_debug["extra_config"]) == {"debug.config"}
    assert with_debug["toolchain"]["root"] == "debian-6.1"
    assert ks.kernel_key(source, toolchain_key="tool", spec=debug) != _key(source)


def test_the_guest_gets_what_module_builds_need_and_no_objects(tmp_path):
    tree, dest = tmp_path / "tree", tmp_path / "dest"
    wanted = ["Makefile", ".config", "Module.symvers", "include/linux/tcp.h",
              "include/generated/autoconf.h", "include/config/auto.conf", "scripts/Makefile.build",
              "scripts/basic/fixdep", "scripts/mod/modpost", "arch/x86/Makefile",
              "arch/x86/include/generated/asm/unistd_64_x32.h", "net/ipv4/Kconfig", "net/Makefile",
              "tools/objtool/objtool"]
    unwanted = ["vmlinux", "vmlinux.o", ".tmp_vmlinux1", "net/ipv4/tcp_bbr.c", "net/ipv4/tcp_bbr.o",
                "net/ipv4/.tcp_bbr.o.cmd", "scripts/mod/modpost.o", "scripts/basic/.fixdep.cmd",
                "arch/x86/boot/bzImage", "drivers/net/virtio_net.ko", "lib/lib.a", "System.map",
                "tools/objtool/check.c"]
    for rel in wanted + unwanted:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(rel)
    (tree / "include/asm-link").symlink_to("generated")

    copied = ks.copy_module_build_tree(tree, dest)

    assert copied == len(wanted) + 1
    for rel in wanted:
        assert (dest / rel).read_text() == rel
    for rel in unwanted:
        assert not (dest / rel).exists(), rel
    assert (dest / "include/asm-link").is_symlink() and (dest / "include/asm-link").resolve() == dest / "include/generated"
