"""ctypes binding of the kernel's inference engine, built as a user-space library.

The toolchain's contract is that the kernel computes exactly what TFLite computes; the only
honest way to check that in user space is to run the kernel's own C (kernel/engine/lf_engine.c)
rather than a Python model of it.  The library is built on demand with the flags of
kernel/engine/Makefile (which mirror the kernel's: no SIMD, no FP registers) into the user's
cache directory, keyed by a hash of the sources and flags, so nothing is built in the repo and a
source change rebuilds it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from common.cache import cache_dir, content_key
from common.proc import run

from .errors import SnapshotError
from .spec import LF_MAX_LAYERS, SnapshotSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_DIR = REPO_ROOT / "kernel" / "engine"
INCLUDE_DIR = REPO_ROOT / "kernel" / "include"
LIB_NAME = "libliteflow_engine.so"
SOURCES = (ENGINE_DIR / "lf_engine.c", ENGINE_DIR / "lf_engine_user.c",
           INCLUDE_DIR / "lf_engine.h", ENGINE_DIR / "Makefile")


class EngineError(RuntimeError):
    """The C engine returned a negative errno."""

    def __init__(self, what: str, code: int):
        name = errno.errorcode.get(-code, str(code))
        super().__init__(f"{what}: {name} ({code})")
        self.code = code


# --- ctypes mirrors of lf_engine.h (sizes are checked against the compiled library) ---------


class LfQuant(ctypes.Structure):
    _fields_ = [("zero_point", ctypes.c_int32), ("scale_multiplier", ctypes.c_int32),
                ("scale_shift", ctypes.c_int32)]


class LfLayer(ctypes.Structure):
    _fields_ = [
        ("in_units", ctypes.c_uint16), ("out_units", ctypes.c_uint16),
        ("activation", ctypes.c_uint8),
        ("input_zero_point", ctypes.c_int32), ("output_zero_point", ctypes.c_int32),
        ("act_min", ctypes.c_int32), ("act_max", ctypes.c_int32),
        ("weights", ctypes.POINTER(ctypes.c_int8)), ("bias", ctypes.POINTER(ctypes.c_int32)),
        ("multiplier", ctypes.POINTER(ctypes.c_int32)), ("shift", ctypes.POINTER(ctypes.c_int32)),
        ("act_table", ctypes.POINTER(ctypes.c_int8)),
    ]


class LfSnapshotSpec(ctypes.Structure):
    _fields_ = [("input_size", ctypes.c_uint16), ("output_size", ctypes.c_uint16),
                ("num_layers", ctypes.c_uint8), ("input_quant", LfQuant),
                ("output_quant", LfQuant), ("layers", LfLayer * LF_MAX_LAYERS)]


# --- building and loading -------------------------------------------------------------------

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _build_key() -> str:
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in SOURCES}
    return content_key({"sources": digests, "cc": os.environ.get("CC", "cc")})


def library_path() -> Path:
    """Path of the built library, building it into the cache first if needed."""
    target_dir = cache_dir("engine") / _build_key()
    lib = target_dir / LIB_NAME
    if lib.exists():
        return lib
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target_dir.parent))
    try:
        run(["make", "-s", "-C", ENGINE_DIR, f"OUT={tmp}"], "build libliteflow_engine.so",
            timeout=120)
        try:
            os.rename(tmp, target_dir)  # atomic; loses the race harmlessly to a parallel build
        except OSError:
            if not lib.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return lib


def load_library() -> ctypes.CDLL:
    """The engine library, built and loaded once per process."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        lib = ctypes.CDLL(str(library_path()))
        spec_p = ctypes.POINTER(LfSnapshotSpec)
        i8p = ctypes.POINTER(ctypes.c_int8)
        lib.lf_engine_infer.argtypes = [spec_p, i8p, i8p]
        lib.lf_engine_infer.restype = ctypes.c_int
        lib.lf_engine_validate.argtypes = [spec_p]
        lib.lf_engine_validate.restype = ctypes.c_int
        lib.lf_engine_parse_blob.argtypes = [ctypes.c_void_p, ctypes.c_size_t, spec_p]
        lib.lf_engine_parse_blob.restype = ctypes.c_int
        lib.lf_engine_macs.argtypes = [spec_p]
        lib.lf_engine_macs.restype = ctypes.c_uint64
        lib.lf_engine_infer_batch.argtypes = [spec_p, i8p, ctypes.c_size_t, i8p]
        lib.lf_engine_infer_batch.restype = ctypes.c_int
        lib.lf_engine_bench.argtypes = [spec_p, i8p, ctypes.c_uint64]
        lib.lf_engine_bench.restype = ctypes.c_uint64
        lib.lf_engine_blob_size.argtypes = [spec_p]
        lib.lf_engine_blob_size.restype = ctypes.c_size_t
        lib.lf_engine_write_blob.argtypes = [spec_p, ctypes.c_void_p, ctypes.c_size_t]
        lib.lf_engine_write_blob.restype = ctypes.c_long
        lib.lf_engine_sizeof.argtypes = [ctypes.c_int]
        lib.lf_engine_sizeof.restype = ctypes.c_size_t
        for what, cls in enumerate((LfSnapshotSpec, LfLayer)):
            if lib.lf_engine_sizeof(what) != ctypes.sizeof(cls):
                raise RuntimeError(f"ctypes mirror of {cls.__name__} disagrees with the C layout")
        if lib.lf_engine_sizeof(4) != ctypes.sizeof(LfQuant):
            raise RuntimeError("ctypes mirror of LfQuant disagrees with the C layout")
        _lib = lib
        return lib


def _aligned_copy(blob: bytes) -> ctypes.Array:
    """A 4-byte-aligned private copy of the blob (the parser uses it in place)."""
    buf = (ctypes.c_uint32 * ((len(blob) + 3) // 4))()
    ctypes.memmove(buf, blob, len(blob))
    return buf


def parse_blob_errno(blob: bytes) -> int:
    """lf_engine_parse_blob's raw return value (0 or a negative errno), for tests and checks."""
    lib = load_library()
    spec = LfSnapshotSpec()
    buf = _aligned_copy(blob)
    return int(lib.lf_engine_parse_blob(buf, len(blob), ctypes.byref(spec)))


def _i8p(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))


class Engine:
    """One snapshot loaded into the C engine; keeps the memory its spec points into alive."""

    def __init__(self, spec: LfSnapshotSpec, keepalive: list):
        self._lib = load_library()
        self._spec = spec
        self._keep = keepalive
        err = self._lib.lf_engine_validate(ctypes.byref(spec))
        if err:
            raise EngineError("lf_engine_validate", err)

    @classmethod
    def from_blob(cls, blob: bytes) -> "Engine":
        """Parse a weight blob exactly as the kernel's hot-update path does."""
        lib = load_library()
        spec = LfSnapshotSpec()
        buf = _aligned_copy(blob)
        err = lib.lf_engine_parse_blob(buf, len(blob), ctypes.byref(spec))
        if err:
            raise EngineError("lf_engine_parse_blob", err)
        return cls(spec, [buf])

    def to_blob(self) -> bytes:
        """The snapshot as a weight blob, written by the C engine (lf_engine_write_blob: what a
        network trained in the kernel goes through to become a snapshot)."""
        size = self._lib.lf_engine_blob_size(ctypes.byref(self._spec))
        buf = ctypes.create_string_buffer(size)
        written = self._lib.lf_engine_write_blob(ctypes.byref(self._spec), buf, size)
        if written < 0:
            raise EngineError("lf_engine_write_blob", int(written))
        return buf.raw[:written]

    @classmethod
    def from_spec(cls, snap: SnapshotSpec) -> "Engine":
        """Point a C spec at numpy copies of a SnapshotSpec's arrays (no blob in between)."""
        spec = LfSnapshotSpec()
        keep: list = []
        spec.input_size, spec.output_size = snap.input_size, snap.output_size
        spec.num_layers = snap.num_layers
        for dst, q in ((spec.input_quant, snap.input_quant), (spec.output_quant, snap.output_quant)):
            dst.zero_point, dst.scale_multiplier, dst.scale_shift = q.zero_point, q.multiplier, q.shift
        if snap.num_layers > LF_MAX_LAYERS:
            raise SnapshotError(f"model: {snap.num_layers} layers exceed {LF_MAX_LAYERS}")
        for n, l in enumerate(snap.layers):
            c = spec.layers[n]
            c.in_units, c.out_units, c.activation = l.in_units, l.out_units, l.activation
            c.input_zero_point, c.output_zero_point = l.input_zero_point, l.output_zero_point
            c.act_min, c.act_max = l.act_min, l.act_max
            arrays = [np.ascontiguousarray(l.weights, np.int8)]
            arrays += [np.ascontiguousarray(a, np.int32) for a in (l.bias, l.multiplier, l.shift)]
            keep += arrays
            c.weights = _i8p(arrays[0])
            for name, a in zip(("bias", "multiplier", "shift"), arrays[1:]):
                setattr(c, name, a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)))
            if l.act_table is not None:
                table = np.ascontiguousarray(l.act_table, np.int8)
                keep.append(table)
                c.act_table = _i8p(table)
        return cls(spec, keep)

    @property
    def input_size(self) -> int:
        return int(self._spec.input_size)

    @property
    def output_size(self) -> int:
        return int(self._spec.output_size)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per inference (lf_engine_macs)."""
        return int(self._lib.lf_engine_macs(ctypes.byref(self._spec)))

    def infer(self, x: np.ndarray) -> np.ndarray:
        """int8 [n, input_size] (or one vector) -> int8 [n, output_size]."""
        x = np.ascontiguousarray(np.asarray(x, np.int8).reshape(-1, self.input_size))
        out = np.zeros((x.shape[0], self.output_size), np.int8)
        err = self._lib.lf_engine_infer_batch(ctypes.byref(self._spec), _i8p(x), x.shape[0],
                                              _i8p(out))
        if err:
            raise EngineError("lf_engine_infer", err)
        return out

    def bench(self, x: np.ndarray, iterations: int = 100_000) -> float:
        """Mean ns per inference of one input vector: thread CPU time measured inside C."""
        row = np.ascontiguousarray(np.asarray(x, np.int8).reshape(-1)[: self.input_size])
        ns = self._lib.lf_engine_bench(ctypes.byref(self._spec), _i8p(row), iterations)
        if not ns:
            raise EngineError("lf_engine_bench", -errno.EINVAL)
        return ns / iterations
