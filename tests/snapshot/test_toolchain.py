"""Keras -> TFLite -> spec -> engine / C module: bit-exactness and refusals (needs TensorFlow)."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from common.proc import run  # noqa: E402
from userspace.snapshot import (Engine, SnapshotError, build_snapshot, check_model,  # noqa: E402
                                example_model, generate_module, random_dense_model,
                                reference_infer, verify_snapshot, write_blob)
from userspace.snapshot import codegen  # noqa: E402
from userspace.snapshot.verify import sample_inputs, tflite_infer  # noqa: E402

pytestmark = pytest.mark.tensorflow

SAMPLES = 2000
REPO = Path(__file__).resolve().parents[2]


def dense_model(sizes, acts, seed, gain=1.0):
    tf.keras.utils.set_random_seed(seed)
    layers = [tf.keras.Input((sizes[0],))]
    for n, (u, a) in enumerate(zip(sizes[1:], acts)):
        layers.append(tf.keras.layers.Dense(
            u, activation=a, name=f"fc{n}",
            kernel_initializer=tf.keras.initializers.RandomNormal(stddev=gain / np.sqrt(sizes[n])),
            bias_initializer=tf.keras.initializers.RandomNormal(stddev=0.3)))
    return tf.keras.Sequential(layers)


@pytest.fixture(scope="module")
def aurora(tmp_path_factory):
    return build_snapshot(example_model(tmp_path_factory.mktemp("m") / "aurora.keras"))


ARCHS = {
    "relu": ([20, 64, 64, 4], ["relu", "relu", "linear"], 2.0),
    "sigmoid_linear": ([10, 40, 20, 8, 3], ["sigmoid", "linear", "tanh", "sigmoid"], 3.0),
}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def other(request):
    sizes, acts, gain = ARCHS[request.param]
    return build_snapshot(dense_model(sizes, acts, seed=7, gain=gain))


def _assert_exact(snap, seed):
    result = verify_snapshot(snap, samples=SAMPLES, seed=seed)
    assert result.samples == SAMPLES
    assert result.bit_exact, str(result)
    # the default interpreter (XNNPACK, float32 requantization) may differ by a step, rarely
    assert result.default_exact >= 0.99 * SAMPLES, str(result)
    return result


def test_aurora_bit_exact(aurora):
    assert [l.out_units for l in aurora.spec.layers] == [32, 16, 1]
    assert [l.activation_name for l in aurora.spec.layers] == ["tanh", "tanh", "linear"]
    _assert_exact(aurora, seed=1)


def test_other_architectures_bit_exact(other):
    _assert_exact(other, seed=2)


@pytest.mark.parametrize("seed", [3, 5, 11])
def test_random_models_bit_exact(seed):
    _assert_exact(build_snapshot(random_dense_model(seed)), seed)


@pytest.mark.parametrize("arch", sorted(ARCHS) + ["aurora"])
def test_converting_a_frozen_function_gives_the_keras_entry_points_snapshot(arch, tmp_path):
    """quantize() hands the converter a frozen concrete function instead of the Keras model (the
    Keras entry point round-trips a SavedModel, most of an update's time in the guest); the
    snapshot, every weight, bias, multiplier and zero point, must not change."""
    from userspace.snapshot.quantize import full_integer, representative_dataset
    from userspace.snapshot.spec import read_spec

    if arch == "aurora":
        model = tf.keras.models.load_model(str(example_model(tmp_path / "aurora.keras")), compile=False)
    else:
        sizes, acts, gain = ARCHS[arch]
        model = dense_model(sizes, acts, seed=7, gain=gain)
    names = list(check_model(model).names)
    converter = full_integer(tf.lite.TFLiteConverter.from_keras_model(model),
                             representative_dataset(model.input_shape[-1]))
    through_keras = read_spec(bytes(converter.convert()), names=names)
    assert write_blob(build_snapshot(model).spec) == write_blob(through_keras)


def test_double_rounding_is_not_what_tflite_runs(other, aurora):
    """The rounding choice is observable: gemmlowp double rounding misses some outputs."""
    misses = 0
    for snap in (aurora, other):
        x = sample_inputs(snap.spec, SAMPLES, 4)
        y = tflite_infer(snap.tflite, x)
        assert np.array_equal(reference_infer(snap.spec, x, "single"), y)
        misses += int((reference_infer(snap.spec, x, "double") != y).any(axis=1).sum())
    assert misses > 0


def test_activation_tables_match_the_interpreter(aurora, other):
    """Every (pre-activation, post-activation) pair TFLite produced is in our table."""
    checked = 0
    for snap in (aurora, other):
        interp = tf.lite.Interpreter(
            model_content=snap.tflite, experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
        x = sample_inputs(snap.spec, SAMPLES, 5)
        inp = interp.get_input_details()[0]
        interp.resize_tensor_input(inp["index"], list(x.shape))
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        layer = iter([l for l in snap.spec.layers if l.act_table is not None])
        for op in interp._get_ops_details():
            if op["op_name"] in ("TANH", "LOGISTIC"):
                pre = interp.get_tensor(int(op["inputs"][0])).astype(np.int64)
                post = interp.get_tensor(int(op["outputs"][0]))
                table = next(layer).act_table
                assert np.array_equal(table[pre + 128], post)
                checked += len(np.unique(pre))
    assert checked > 50


def test_blob_engine_equals_numpy_model(aurora):
    x = sample_inputs(aurora.spec, 500, 6)
    assert np.array_equal(Engine.from_blob(write_blob(aurora.spec)).infer(x),
                          reference_infer(aurora.spec, x))


# --- refusals -----------------------------------------------------------------------------


def _seq(*layers, n_in=8):
    return tf.keras.Sequential([tf.keras.Input((n_in,))] + list(layers))


@pytest.mark.parametrize("bad, name", [
    (lambda: tf.keras.layers.Dropout(0.1, name="drop"), "drop"),
    (lambda: tf.keras.layers.Dense(4, activation="softmax", name="soft"), "soft"),
    (lambda: tf.keras.layers.Dense(4, activation="elu", name="elu_fc"), "elu_fc"),
    (lambda: tf.keras.layers.Activation("tanh", name="act"), "act"),
])
def test_unsupported_layers_are_named(bad, name):
    model = _seq(tf.keras.layers.Dense(4, name="ok"), bad())
    with pytest.raises(SnapshotError, match=name):
        check_model(model)


def test_conv_is_refused():
    model = tf.keras.Sequential([tf.keras.Input((8, 1)),
                                 tf.keras.layers.Conv1D(2, 3, name="conv"),
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(1)])
    with pytest.raises(SnapshotError, match="conv|input shape"):
        check_model(model)
    model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Reshape((8, 1)),
                                 tf.keras.layers.Conv1D(2, 3, name="conv1d_x")])
    with pytest.raises(SnapshotError, match="Reshape|conv1d_x"):
        check_model(model)


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_non_finite_weights_are_refused(value, word):
    model = _seq(tf.keras.layers.Dense(4, name="first"), tf.keras.layers.Dense(2, name="second"))
    w, b = model.get_layer("second").get_weights()
    w[1, 1] = value
    model.get_layer("second").set_weights([w, b])
    with pytest.raises(SnapshotError, match=f"second.*{word}"):
        check_model(model)


def test_over_limit_models_are_refused():
    with pytest.raises(SnapshotError, match="wide.*LF_MAX_UNITS"):
        check_model(_seq(tf.keras.layers.Dense(257, name="wide")))
    with pytest.raises(SnapshotError, match="LF_MAX_UNITS"):
        check_model(_seq(tf.keras.layers.Dense(2), n_in=300))
    with pytest.raises(SnapshotError, match="LF_MAX_LAYERS"):
        check_model(_seq(*[tf.keras.layers.Dense(4) for _ in range(9)]))


def test_refusal_happens_before_conversion(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("converter must not run for an unsupported model")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_concrete_functions", boom)
    with pytest.raises(SnapshotError, match="soft"):
        build_snapshot(_seq(tf.keras.layers.Dense(4, activation="softmax", name="soft")))


# --- code generation ----------------------------------------------------------------------


def _generate(snap, out, **kw):
    return generate_module(snap.spec, out, app="cc", snapshot_id=0xABCDEF,
                           include_dir=REPO / "kernel" / "include", source="aurora.keras", **kw)


def test_codegen_source_reads_like_kernel_c(aurora, tmp_path):
    d = _generate(aurora, tmp_path)
    assert d == tmp_path / "lf_snap_cc_0000000000abcdef"
    c = (d / "lf_snap_cc_0000000000abcdef.c").read_text()
    for needle in ("#define LF_SNAP_L0_IN_UNITS\t30", "#define LF_SNAP_L0_OUT_UNITS\t32",
                   "#define LF_SNAP_L2_OUT_UNITS\t1", "Layer 0 \"hidden1\": 30 -> 32, tanh.",
                   "Layer 2 \"action\": 16 -> 1, linear.", "zero point", "scale",
                   "static const s8 lf_snap_l0_weights[LF_SNAP_L0_OUT_UNITS][LF_SNAP_L0_IN_UNITS]",
                   "lf_snap_l1_act_table[LF_ACT_TABLE_SIZE]", ".owner\t\t= THIS_MODULE",
                   "lf_register_model(&lf_snap_model)", "lf_unregister_model(&lf_snap_model)",
                   "module_param(app_id, uint", 'MODULE_LICENSE("GPL")', "MODULE_DESCRIPTION("):
        assert needle in c, needle
    assert all(len(line.expandtabs(8)) <= 100 for line in c.splitlines())
    kbuild = (d / "Kbuild").read_text()
    assert "obj-m := lf_snap_cc_0000000000abcdef.o" in kbuild
    assert f"ccflags-y += -I{REPO / 'kernel' / 'include'}" in kbuild
    # deterministic: regenerating gives the same bytes
    again = _generate(aurora, tmp_path / "again")
    assert (again / "lf_snap_cc_0000000000abcdef.c").read_text() == c


def test_codegen_error_leaves_nothing_behind(aurora, tmp_path, monkeypatch):
    def boom(**kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(codegen, "render_kbuild", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _generate(aurora, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(SnapshotError):
        generate_module(aurora.spec, tmp_path, app="Bad-Name", snapshot_id=1,
                        include_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def _host_headers() -> str | None:
    build = f"/lib/modules/{os.uname().release}/build"
    if os.path.isdir(build):
        return build
    found = sorted(glob.glob("/usr/src/linux-headers-*-amd64"))
    return found[-1] if found else None


@pytest.mark.skipif(_host_headers() is None or shutil.which("make") is None,
                    reason="no kernel headers on this host")
def test_generated_module_compiles(aurora, tmp_path):
    """Compile only (never loaded here): warnings are errors."""
    symvers = REPO / "kernel" / "core" / "Module.symvers"
    d = _generate(aurora, tmp_path, extra_symbols=symvers if symvers.exists() else None)
    stage = "modules" if symvers.exists() else "lf_snap_cc_0000000000abcdef.o"
    run(["make", "-C", _host_headers(), f"M={d}", "KCFLAGS=-Werror", stage],
        "compile snapshot module", timeout=300)
    assert (d / "lf_snap_cc_0000000000abcdef.o").exists()
