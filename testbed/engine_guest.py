"""Guest half of the engine experiment: in-kernel ns/query next to the user-space engine's.

For each network of the plan: load the core and lf_test sized for it, hot-load the snapshot's
blob, run the core's BENCH command (inference inside the kernel, under rcu_read_lock like the
fast path), then time the user-space build of the same engine source on the same blob in the
same guest, so the two figures share CPU, accelerator and load and their ratio means something.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from testbed.guest_tools import sh
from userspace.netlink import LiteFlowNetlink
from userspace.uapi import load_uapi

ENGINE_SOURCE = Path(__file__).resolve().parent.parent / "kernel" / "engine"
SPEC_SIZE_QUERY = 0  # lf_engine_sizeof(0) == sizeof(struct lf_snapshot_spec)


def build_engine(out_dir: Path) -> ctypes.CDLL:
    subprocess.run(["make", "-s", "-C", str(ENGINE_SOURCE), f"OUT={out_dir}"], check=True,
                   capture_output=True, text=True)
    lib = ctypes.CDLL(str(out_dir / "libliteflow_engine.so"))
    lib.lf_engine_sizeof.restype = ctypes.c_size_t
    lib.lf_engine_sizeof.argtypes = [ctypes.c_int]
    lib.lf_engine_parse_blob.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.lf_engine_bench.restype = ctypes.c_uint64
    lib.lf_engine_bench.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
    return lib


def userspace_ns(lib: ctypes.CDLL, blob: bytes, input_size: int, iterations: int) -> float:
    blob_buf = (ctypes.c_uint32 * ((len(blob) + 3) // 4))()  # 4-byte aligned, as the parser needs
    ctypes.memmove(blob_buf, blob, len(blob))
    spec = ctypes.create_string_buffer(lib.lf_engine_sizeof(SPEC_SIZE_QUERY))
    err = lib.lf_engine_parse_blob(blob_buf, len(blob), spec)
    if err:
        raise RuntimeError(f"lf_engine_parse_blob: {err}")
    sample = np.random.default_rng(0).integers(-128, 128, size=input_size, dtype=np.int8)
    total = lib.lf_engine_bench(spec, sample.ctypes.data, iterations)
    return total / iterations


def main(plan_path: Path) -> dict:
    plan = json.loads(plan_path.read_text())
    base = plan_path.parent
    report: dict = {"networks": {}, "skipped": {}}
    blob_limit = load_uapi().limits["BINARY_MAX"]
    with tempfile.TemporaryDirectory() as tmp:
        lib = build_engine(Path(tmp))
        sh("insmod", str(base / "liteflow.ko"))
        try:
            for net in plan["networks"]:
                size = (base / net["blob"]).stat().st_size
                if size > blob_limit:
                    report["skipped"][net["name"]] = (f"blob of {size} bytes exceeds the {blob_limit}-byte "
                                                      f"netlink attribute limit of a hot load")
                    continue
                sh("insmod", str(base / "lf_test.ko"), f"input_size={net['input_size']}", f"output_size={net['output_size']}")
                try:
                    with LiteFlowNetlink() as nl:
                        app = nl.app("lf_test")
                        blob = (base / net["blob"]).read_bytes()
                        nl.load_model(app.app_id, net["snapshot_id"], blob)
                        kernel = nl.bench(app.app_id, net["kernel_iterations"])
                    user_ns = userspace_ns(lib, blob, net["input_size"], net["userspace_iterations"])
                    report["networks"][net["name"]] = {
                        "kernel_ns_per_query": kernel.total_ns / kernel.iterations,
                        "kernel_iterations": kernel.iterations,
                        "macs": kernel.macs,
                        "guest_userspace_ns_per_inference": user_ns,
                        "guest_userspace_iterations": net["userspace_iterations"],
                    }
                finally:
                    sh("rmmod", "lf_test", check=False)
        finally:
            sh("rmmod", "liteflow", check=False)
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
