"""LiteFlow's snapshot toolchain: Keras model -> int8 snapshot -> kernel module or weight blob.

    check_model(model)                      refuse what the kernel engine cannot run
    quantize(model, ...) -> bytes           TFLite full-integer model
    read_spec(tflite) -> SnapshotSpec       the engine's view of it (exact TFLite arithmetic)
    build_snapshot(model, ...) -> Snapshot  the three steps above
    write_blob(spec) / read_blob(blob)      hot-update weight blob
    generate_module(spec, out_dir, ...)     C source + Kbuild of lf_snap_<app>_<id>.ko
    Engine.from_blob / from_spec, infer     the kernel's C engine, in user space
    verify(model, samples, seed)            engine vs tf.lite.Interpreter, bit for bit
    example_model(path)                     an Aurora-sized example model

TensorFlow is imported lazily, only by the steps that need it (quantize, read_spec, verify).
"""

from .blob import read_blob, write_blob
from .check import ModelSummary, check_model
from .codegen import generate_module, module_name, new_snapshot_id
from .engine import Engine, EngineError, parse_blob_errno
from .models import dense_model
from .errors import SnapshotError
from .pipeline import Snapshot, build_snapshot
from .quantize import quantize
from .random_model import random_dense_model, random_spec
from .spec import LayerSpec, Quant, SnapshotSpec, reference_infer, read_spec
from .verify import VerifyResult, example_model, verify, verify_snapshot

__all__ = [
    "dense_model",
    "Engine", "EngineError", "LayerSpec", "ModelSummary", "Quant", "Snapshot", "SnapshotError",
    "SnapshotSpec", "VerifyResult", "build_snapshot", "check_model", "example_model",
    "generate_module", "module_name", "new_snapshot_id", "parse_blob_errno", "quantize", "random_dense_model",
    "random_spec", "read_blob", "read_spec", "reference_infer", "verify", "verify_snapshot", "write_blob",
]
