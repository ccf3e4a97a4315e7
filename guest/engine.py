"""Guest half of the engine experiment: in-kernel ns/query next to the user-space engine's.

For each network of the plan: load the core and lf_test sized for it, install the snapshot
(hot load of its blob, or insmod of its compiled module when the blob is over netlink's attribute
limit), run the core's BENCH command (inference inside the kernel, under rcu_read_lock like the
fast path), then time the user-space build of the same engine source on the same blob in the
same guest, so the two figures share CPU, accelerator and load and their ratio means something.
"""

from __future__ import annotations

import ctypes
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from guest.tools import sh
from userspace.netlink import LiteFlowNetlink

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


def install(nl: LiteFlowNetlink, app_id: int, net: dict, base: Path) -> None:
    """Hot-load the blob, or insmod the compiled snapshot when the blob is over netlink's limit
    (its init registers it with lf_test and switches to it)."""
    if "module" in net:
        sh("insmod", str(base / net["module"]), f"app_id={app_id}")
    else:
        nl.load_model(app_id, net["snapshot_id"], (base / net["blob"]).read_bytes())


def main(plan: dict, base: Path) -> dict:
    report: dict = {"networks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        lib = build_engine(Path(tmp))
        sh("insmod", str(base / "liteflow.ko"))
        try:
            for net in plan["networks"]:
                sh("insmod", str(base / "lf_test.ko"), f"input_size={net['input_size']}", f"output_size={net['output_size']}")
                try:
                    with LiteFlowNetlink() as nl:
                        app = nl.app("lf_test")
                        blob = (base / net["blob"]).read_bytes()
                        install(nl, app.app_id, net, base)
                        kernel = nl.bench(app.app_id, net["kernel_iterations"])
                        if kernel.snapshot_id != net["snapshot_id"]:
                            raise RuntimeError(f"{net['name']}: BENCH ran snapshot {kernel.snapshot_id:#x}, "
                                               f"not {net['snapshot_id']:#x}")
                    user_ns = userspace_ns(lib, blob, net["input_size"], net["userspace_iterations"])
                    report["networks"][net["name"]] = {
                        "kernel_ns_per_query": kernel.total_ns / kernel.iterations,
                        "kernel_iterations": kernel.iterations,
                        "macs": kernel.macs,
                        "guest_userspace_ns_per_inference": user_ns,
                        "guest_userspace_iterations": net["userspace_iterations"],
                        "installed_by": "module" if "module" in net else "hot load",
                    }
                finally:
                    sh("rmmod", "lf_test", check=False)   # releases the snapshot it ran
                    if "module" in net:
                        sh("rmmod", Path(net["module"]).stem, check=False)
        finally:
            sh("rmmod", "liteflow", check=False)
    return report

