"""Unit tests of vm.image's caching logic, with the expensive build replaced by a fake."""

import json
import time

import pytest

from vm import image as img
from vm.kernels import resolve_kernel


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(img, "_require_root", lambda: None)
    return tmp_path / "cache"


def _wheels(tmp_path, files=("a-1-py3-none-any.whl",)):
    return img.WheelSet(tmp_path, "3.11", [img.TENSORFLOW_REQ, img.PYROUTE2_REQ], list(files), {})


def _fake_build(calls, fail=False):
    def build(spec, wheels, key, tmp, progress):
        calls.append(key)
        (tmp / "disk.img").write_bytes(b"x")
        if fail:
            raise RuntimeError("interrupted")
        (tmp / img.MANIFEST).write_text(json.dumps(
            {"kernel_name": spec.name, "kernel_release": "6.1.0-99-amd64", "suite": spec.suite,
             "sha256": {}}))
        (tmp / img.STAMP).write_text("ok\n")
    return build


def test_key_depends_on_every_input(tmp_path, monkeypatch):
    spec = resolve_kernel("debian-6.1")
    base = img.image_key(spec, _wheels(tmp_path))
    assert base == img.image_key(spec, _wheels(tmp_path))
    assert base != img.image_key(spec, _wheels(tmp_path, ("b-2-py3-none-any.whl",)))
    assert base != img.image_key(resolve_kernel("debian-6.12"), _wheels(tmp_path))
    monkeypatch.setattr(img, "GUEST_PACKAGES", (*img.GUEST_PACKAGES, "strace"))
    assert base != img.image_key(spec, _wheels(tmp_path))
    monkeypatch.setattr(img, "RECIPE_VERSION", img.RECIPE_VERSION + 1)
    assert base != img.image_key(spec, _wheels(tmp_path))


def test_provision_builds_once_then_cached_fast(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(img, "ensure_wheels", lambda py, progress=None: _wheels(tmp_path))
    monkeypatch.setattr(img, "_build", _fake_build(calls))
    first = img.provision("debian-6.1", quiet=True)
    assert first.kernel_release == "6.1.0-99-amd64" and first.disk.exists()
    t0 = time.monotonic()
    second = img.provision("debian-6.1", quiet=True)
    assert time.monotonic() - t0 < 1.0
    assert calls == [first.path.name] and second.path == first.path
    assert img.cached_image("debian-6.1").path == first.path
    assert img.cached_image("debian-6.12") is None


def test_interrupted_build_leaves_nothing_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(img, "ensure_wheels", lambda py, progress=None: _wheels(tmp_path))
    monkeypatch.setattr(img, "_build", _fake_build([], fail=True))
    with pytest.raises(RuntimeError):
        img.provision("debian-6.1", quiet=True)
    images = img.cache_dir("images")
    assert not [p for p in images.iterdir() if p.is_dir()]


def test_stale_temp_and_unstamped_dirs_are_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setattr(img, "ensure_wheels", lambda py, progress=None: _wheels(tmp_path))
    key = img.image_key(resolve_kernel("debian-6.1"), _wheels(tmp_path))
    images = img.cache_dir("images")
    (images / f"{key}.tmp-1").mkdir()
    (images / key).mkdir()  # renamed but no stamp: never complete
    (images / key / "disk.img").write_bytes(b"half")
    calls = []
    monkeypatch.setattr(img, "_build", _fake_build(calls))
    out = img.provision("debian-6.1", quiet=True)
    assert calls == [key] and (out.path / img.STAMP).exists()
    assert not (images / f"{key}.tmp-1").exists()
    assert (out.path / "disk.img").read_bytes() == b"x"


def test_load_image_refuses_unstamped(tmp_path):
    (tmp_path / img.MANIFEST).write_text("{}")
    with pytest.raises(img.ProvisionError):
        img.load_image(tmp_path)


def test_wheels_skip_tensorflow_when_no_wheel(monkeypatch):
    seen = []

    def fake_download(python, reqs, dest):
        seen.append(list(reqs))
        if img.TENSORFLOW_REQ in reqs:
            (dest / "partial.whl").write_bytes(b"")
            raise img.CommandError("pip download", ["pip"], 1,
                                   "ERROR: No matching distribution found for tensorflow-cpu==2.21.0")
        (dest / "pyroute2-0.9.7-py3-none-any.whl").write_bytes(b"")

    monkeypatch.setattr(img, "_pip_download", fake_download)
    ws = img.ensure_wheels("3.9")
    assert ws.requirements == [img.PYROUTE2_REQ, *img.TOOLCHAIN_REQS]
    assert "No matching distribution" in ws.skipped[img.TENSORFLOW_REQ]
    assert ws.files == ["pyroute2-0.9.7-py3-none-any.whl"]
    again = img.ensure_wheels("3.9")  # cached: no second download
    assert again.files == ws.files and len(seen) == 2


def test_python_per_suite_and_disk_size():
    assert img.python_version_for("bookworm") == "3.11"
    assert img.python_version_for("bullseye") == "3.9"
    assert img.python_version_for("trixie") == "3.13"
    with pytest.raises(img.ProvisionError):
        img.python_version_for("buster")
    size = img._disk_size_mib(3 * 2**30)
    assert size % 256 == 0 and size >= 3 * 1024 * 1.3 + 1536


def test_initrd_module_listing():
    listing = "usr/lib/modules/6.1.0-56-amd64/kernel/fs/9p/9p.ko\nx/drivers/block/virtio_blk.ko.xz\n"
    assert img._has_module(listing, "9p") and img._has_module(listing, "virtio_blk")
    assert not img._has_module(listing, "ext4") and not img._has_module(listing, "p")


def test_stale_temps_of_other_keys_removed_unless_locked(tmp_path):
    import fcntl

    images = img.cache_dir("images")
    (images / "aaaa.tmp-1").mkdir()
    (images / "bbbb.tmp-2").mkdir()
    with open(images / "bbbb.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # bbbb is being built by someone else
        img._remove_stale(images, "cccc")
    assert not (images / "aaaa.tmp-1").exists()
    assert (images / "bbbb.tmp-2").exists()


def test_an_image_from_debootstrap_has_everything_a_build_root_copy_has():
    """The image is built from a cached build root when one exists, else from debootstrap, under
    the same key: both must give a guest that compiles (libc6-dev is only recommended by gcc)."""
    from vm.buildroot import BOOTSTRAP_PACKAGES

    assert set(BOOTSTRAP_PACKAGES) <= set(img.GUEST_PACKAGES)


def test_the_image_is_based_on_the_build_root_when_one_can_be_made(tmp_path, monkeypatch):
    """A failure inside the copy path falls back to debootstrap with a warning; that fallback
    must not hide a plain bug of ours (it once hid a renamed progress attribute)."""
    from common.progress import Progress
    from vm import buildroot

    seen = {}

    def fake_root(spec, progress=True):
        seen["progress"] = progress
        root = tmp_path / "root"
        root.mkdir()
        return type("Root", (), {"path": root})()

    monkeypatch.setattr(buildroot, "ensure_build_root", fake_root)
    monkeypatch.delenv("LITEFLOW_IMAGE_NO_BUILDROOT", raising=False)
    monkeypatch.setattr(img, "run", lambda argv, step, timeout: "")
    progress = Progress(enabled=False)
    warnings = []
    monkeypatch.setattr(progress, "warn", warnings.append)
    copied = img._copy_build_root(resolve_kernel("debian-6.1"), tmp_path / "dest", progress)
    assert copied is not None and not warnings and seen["progress"] is False
