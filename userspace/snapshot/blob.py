"""The hot-update weight blob (lf_engine.h, "Hot-update weight blob").

A blob lets the slow path replace a snapshot's weights without a compiler or insmod in the
loop: the kernel parses it in place (lf_engine_parse_blob), so the layout here must match the C
structs byte for byte — little endian, every section 4-byte aligned, crc32 (zlib's) of every
byte after the header.  The reader exists for tests and diagnostics; the kernel's parser is the
one that matters and is exercised through the engine library.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .errors import SnapshotError
from .spec import LF_ACT_TABLE_SIZE, LayerSpec, Quant, SnapshotSpec, check_spec

LF_BLOB_MAGIC = 0x4E53464C  # "LFSN"
LF_BLOB_VERSION = 1
BLOB_ALIGN = 4

# struct lf_blob_header: magic, version, header_size, total_size, crc32, input_size, output_size,
# num_layers, reserved[3], input_quant{zp, mult, shift}, output_quant{zp, mult, shift}
HEADER = struct.Struct("<IHHIIHHB3xiiiiii")
# struct lf_blob_layer: in_units, out_units, activation, has_act_table, reserved[2],
# input_zero_point, output_zero_point, act_min, act_max
LAYER = struct.Struct("<HHBB2xiiii")

assert HEADER.size == 48 and LAYER.size == 24


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOB_ALIGN)


def layer_bytes(layer: LayerSpec) -> bytes:
    """One layer's struct lf_blob_layer followed by its arrays."""
    has_table = layer.act_table is not None
    parts = [
        LAYER.pack(layer.in_units, layer.out_units, layer.activation, int(has_table),
                   layer.input_zero_point, layer.output_zero_point, layer.act_min, layer.act_max),
        _pad4(np.ascontiguousarray(layer.weights, dtype=np.int8).reshape(-1).tobytes()),
        np.ascontiguousarray(layer.bias, dtype="<i4").tobytes(),
        np.ascontiguousarray(layer.multiplier, dtype="<i4").tobytes(),
        np.ascontiguousarray(layer.shift, dtype="<i4").tobytes(),
    ]
    if has_table:
        parts.append(np.ascontiguousarray(layer.act_table, dtype=np.int8).tobytes())
    return b"".join(parts)


def pack_blob(input_size: int, output_size: int, input_quant: Quant, output_quant: Quant,
              payload: bytes, num_layers: int, *, magic: int = LF_BLOB_MAGIC,
              version: int = LF_BLOB_VERSION, crc: int | None = None) -> bytes:
    """Header + payload with the crc computed; the knobs exist so tests can forge bad blobs."""
    total = HEADER.size + len(payload)
    crc = zlib.crc32(payload) if crc is None else crc
    header = HEADER.pack(magic, version, HEADER.size, total, crc, input_size, output_size,
                         num_layers, input_quant.zero_point, input_quant.multiplier,
                         input_quant.shift, output_quant.zero_point, output_quant.multiplier,
                         output_quant.shift)
    return header + payload


def write_blob(spec: SnapshotSpec) -> bytes:
    """The blob for a spec (checked against the engine's limits first)."""
    check_spec(spec)
    payload = b"".join(layer_bytes(l) for l in spec.layers)
    return pack_blob(spec.input_size, spec.output_size, spec.input_quant, spec.output_quant,
                     payload, spec.num_layers)


def read_blob(blob: bytes) -> SnapshotSpec:
    """Parse a blob back into a spec (reals are not in the blob: scales come back as 0)."""
    if len(blob) < HEADER.size:
        raise SnapshotError("blob: shorter than its header")
    (magic, version, header_size, total, crc, in_size, out_size, n_layers,
     izp, imul, ishift, ozp, omul, oshift) = HEADER.unpack_from(blob, 0)
    if magic != LF_BLOB_MAGIC or version != LF_BLOB_VERSION or header_size != HEADER.size:
        raise SnapshotError("blob: bad magic, version or header size")
    if total != len(blob):
        raise SnapshotError(f"blob: total_size {total} but {len(blob)} bytes")
    if zlib.crc32(blob[HEADER.size:]) != crc:
        raise SnapshotError("blob: crc mismatch")
    off = HEADER.size
    layers = []
    for n in range(n_layers):
        in_u, out_u, act, has_table, in_zp, out_zp, amin, amax = LAYER.unpack_from(blob, off)
        off += LAYER.size
        w = np.frombuffer(blob, np.int8, in_u * out_u, off).reshape(out_u, in_u).copy()
        off += in_u * out_u + (-(in_u * out_u) % BLOB_ALIGN)
        arrays = []
        for _ in range(3):
            arrays.append(np.frombuffer(blob, "<i4", out_u, off).astype(np.int32))
            off += 4 * out_u
        table = None
        if has_table:
            table = np.frombuffer(blob, np.int8, LF_ACT_TABLE_SIZE, off).copy()
            off += LF_ACT_TABLE_SIZE
        layers.append(LayerSpec(f"layer{n}", in_u, out_u, act, in_zp, out_zp, amin, amax, w,
                                arrays[0], arrays[1], arrays[2], table))
    if off != len(blob):
        raise SnapshotError(f"blob: {len(blob) - off} trailing bytes")
    return SnapshotSpec(in_size, out_size, Quant(izp, 0.0, imul, ishift),
                        Quant(ozp, 0.0, omul, oshift), layers)
