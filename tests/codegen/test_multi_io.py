"""A model with two inputs and two outputs (a Keras functional model: an image and a feature
vector in, a class head and a score head out; int8) through the C backend: one pointer per
input and output in the generated API, bit-exact with tflite-micro on the host (the typed
API, called through ctypes) and on the emulated Cortex-M4 (the test firmware feeds the
packed inputs to <name>_invoke_packed), reference and DSP kernels; and through
`edgeslim build --backend c`."""

from __future__ import annotations

import ctypes
import json
import re
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslim import codegen
from edgeslim.cli import cli
from edgeslim.harness import _testfw, firmware

N = 24


def _model_bytes() -> bytes:
    from edgeslim._tf import keras, tf

    keras.utils.set_random_seed(7)
    L = keras.layers
    img = keras.Input((10, 6, 2), name="a_image")
    vec = keras.Input((12,), name="b_features")
    x = L.Conv2D(8, 3, padding="same", activation="relu")(img)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.Conv2D(12, 1, activation="relu")(x)
    v = L.Dense(8, activation="relu")(vec)
    a = L.Dense(4, name="class")(L.Concatenate()([L.GlobalAveragePooling2D()(x), v]))
    b = L.Dense(3, name="score")(v)
    model = keras.Model([img, vec], [a, b])
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(64):
            yield {"a_image": rng.normal(0, 1, (1, 10, 6, 2)).astype(np.float32),
                   "b_features": rng.normal(0, 1, (1, 12)).astype(np.float32)}

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def _tflm(model: bytes, xs: list[np.ndarray]) -> list[np.ndarray]:
    """tflite-micro's outputs, per output, for the inputs xs[i] (N samples each)."""
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(model, arena_size=1 << 20)
    outs = []
    for k in range(len(xs[0])):
        for i, x in enumerate(xs):
            interp.set_input(x[k:k + 1], i)
        interp.invoke()
        outs.append([np.array(interp.get_output(j)).ravel().copy() for j in range(2)])
    return [np.stack([o[j] for o in outs]) for j in range(2)]


@pytest.fixture(scope="module")
def mio(tmp_path_factory):
    work = tmp_path_factory.mktemp("mio")
    model = _model_bytes()
    (work / "mio.tflite").write_bytes(model)
    libs = {kind: codegen.generate(model, work / kind, name="mio", target=target)
            for kind, target in (("ref", None), ("dsp", "cortex-m4"))}
    rng = np.random.default_rng(3)
    xs = [rng.integers(-128, 128, (N, *i["shape"][1:]), dtype=np.int8)
          for i in libs["ref"].inputs]
    return dict(model=model, work=work, libs=libs, xs=xs, want=_tflm(model, xs))


def test_the_api_has_one_pointer_per_input_and_output(mio):
    r = mio["libs"]["ref"]
    h = r.header.read_text()
    assert "int mio_invoke(const int8_t *input0, const int8_t *input1, int8_t *output0, " \
           "int8_t *output1);" in h
    assert "int mio_invoke_packed(const int8_t *inputs, int8_t *outputs);" in h
    assert "#define MIO_NUM_INPUTS 2" in h and "#define MIO_NUM_OUTPUTS 2" in h
    sizes = [int(re.search(rf"#define MIO_{k}_BYTES (\d+)", h).group(1))
             for k in ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1")]
    assert sorted(sizes[:2]) == [12, 120] and sizes[2:] == [4, 3]
    assert [i["offset"] for i in r.inputs] == [0, (sizes[0] + 3) // 4 * 4]
    assert r.input_bytes == r.inputs[1]["offset"] + r.inputs[1]["bytes"]
    rep = r.report()
    assert len(rep["inputs"]) == len(rep["outputs"]) == 2
    # the image branch's depthwise + 1x1 pair runs fused here too
    assert {o.schedule for o in r.ops if o.op == "DEPTHWISE_CONV_2D"} == {"fused"}


@pytest.mark.parametrize("kind", ["ref", "dsp"])
def test_bit_exact_on_the_host_through_the_typed_api(kind, mio, tmp_path):
    r = mio["libs"][kind]
    so = tmp_path / "libmio.so"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-fPIC", "-shared",
                    f"-I{r.header.parent}", str(r.source), "-o", str(so)], check=True, timeout=300)
    lib = ctypes.CDLL(str(so))
    p8 = ctypes.POINTER(ctypes.c_int8)
    lib.mio_invoke.argtypes = [p8] * 4
    outs = [np.zeros((N, o["bytes"]), np.int8) for o in r.outputs]
    for k in range(N):
        ins = [np.ascontiguousarray(x[k]) for x in mio["xs"]]
        got = [np.zeros(o["bytes"], np.int8) for o in r.outputs]
        rc = lib.mio_invoke(*(a.ctypes.data_as(p8) for a in ins + got))
        assert rc == 0
        for j in range(2):
            outs[j][k] = got[j]
    for j in range(2):
        np.testing.assert_array_equal(outs[j], mio["want"][j])


@pytest.mark.parametrize("kind", ["ref", "dsp"])
def test_bit_exact_on_the_emulated_m4_through_the_packed_api(kind, mio):
    r = mio["libs"][kind]
    fw = firmware.firmware_for_library(r.header.parent, mio["work"] / f"fw-{kind}", name="mio",
                                       input_bytes=r.input_bytes, output_bytes=r.output_bytes,
                                       arena_bytes=r.arena_size, board="mps2-an386")
    batch = np.zeros((N, r.input_bytes), np.int8)
    for i, x in zip(r.inputs, mio["xs"]):
        batch[:, i["offset"]:i["offset"] + i["bytes"]] = x.reshape(N, -1)
    run = _testfw.run_firmware(fw, batch, timeout=240)
    assert run.statuses == [0] * N
    for o, want in zip(r.outputs, mio["want"]):
        np.testing.assert_array_equal(run.outputs[:, o["offset"]:o["offset"] + o["bytes"]], want)


@pytest.fixture(scope="module")
def built(mio):
    """`edgeslim build mio.tflite --target cortex-m4 --backend c`: the bundle folder."""
    out = mio["work"] / "out"
    res = CliRunner().invoke(cli, ["build", str(mio["work"] / "mio.tflite"), "--target",
                                   "cortex-m4", "--backend", "c", "-o", str(out)],
                             obj={"debug": False})
    assert res.exit_code == 0, res.output
    return out / "cortex-m4"


def test_edgeslim_build_backend_c(mio, built):
    b = built
    assert (b / "c" / "mio.c").read_text() == (mio["libs"]["dsp"].source.read_text())
    cg = json.loads((b / "report.json").read_text())["codegen"]
    assert [i["name"] for i in cg["inputs"]] == ["input0", "input1"]
    assert [o["name"] for o in cg["outputs"]] == ["output0", "output1"]
    plan = cg["memory_plan"]
    assert plan["arena_size"] < plan["layer_by_layer"]["arena_size"]
    md = (b / "report.md").read_text()
    assert "input (the first of 2)" in md and "## C library memory plan" in md
    assert f"Arena **{plan['arena_size']} B**" in md and "fused with operator" in md
    # bench compares one output per sample: refused clearly, before any firmware is built
    res = CliRunner().invoke(cli, ["emulate", str(b), "--bench", "-n", "2"], obj={"debug": False})
    assert res.exit_code == 2, res.output
    assert "2 inputs and 2 outputs" in res.output and "Traceback" not in res.output


def test_the_harness_firmware_serves_the_packed_inputs(mio, built, tmp_path):
    """The bundle's device-under-test harness (`edgeslim emulate`) on the emulated M4: the
    packed inputs loaded over the protocol, both outputs in the results, bit-exact."""
    from edgeslim.harness.emulate import bundle_firmware
    from edgeslim.harness.emulator import Emulator
    from edgeslim.harness.protocol import DutClient

    r = mio["libs"]["dsp"]  # the bundle's library (cortex-m4: DSP kernels)
    fw = bundle_firmware(built, tmp_path)
    assert (fw.input_bytes, fw.output_bytes) == (r.input_bytes, r.output_bytes)
    with Emulator(fw) as emulator, DutClient(emulator.url, timeout=30) as dut:
        for k in range(3):
            packed = np.zeros(r.input_bytes, np.int8)
            for i, x in zip(r.inputs, mio["xs"]):
                packed[i["offset"]:i["offset"] + i["bytes"]] = x[k].ravel()
            dut.load(packed.tobytes())
            dut.infer(1, 0)
            got = np.frombuffer(dut.results_hex(), np.int8)
            for o, want in zip(r.outputs, mio["want"]):
                np.testing.assert_array_equal(got[o["offset"]:o["offset"] + o["bytes"]], want[k])

