"""In-place depthwise and fused depthwise -> 1x1 execution in generated C, bit-exact with
tflite-micro: small Keras models (a stride of 2, a 5x3 VALID filter, depth multiplier 2, channels not a
multiple of 4, a branch, a depthwise layer before a pool), int8, through the
reference and the DSP kernels, on the host with UBSan + ASan and on the emulated
Cortex-M4; and the DS-CNN's RAM below the layer-by-layer bound on the M4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeslim import codegen
from edgeslim.harness import _testfw, firmware

HERE = Path(__file__).resolve().parent
SANITIZE = ["-O0", "-fsanitize=undefined,address", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer"]
HOST_INPUTS = 32
M4_INPUTS = 4


def _build(keras, name: str):
    L = keras.layers

    def stem(shape, c, k=3):
        i = keras.Input(shape)
        return i, L.Conv2D(c, k, padding="same", activation="relu")(i)

    def head(i, x):
        return keras.Model(i, L.Dense(5)(L.GlobalAveragePooling2D()(x)))

    if name == "chain":  # two blocks back to back: top-down, then bottom-up
        i, x = stem((12, 5, 3), 16)
        for _ in range(2):
            x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
            x = L.Conv2D(16, 1, activation="relu")(x)
        return head(i, x)
    if name == "stride2":
        i, x = stem((13, 6, 2), 8, k=1)  # (a 3x3 stem's DSP scratch would be the peak)
        x = L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)
        return head(i, L.Conv2D(12, 1, activation="relu")(x))
    if name == "valid5x3":  # (the converter turns a dilated depthwise layer into
        # SPACE_TO_BATCH_ND + DEPTHWISE_CONV_2D: dilation is covered by test_schedule.py)
        i, x = stem((14, 6, 2), 8)
        x = L.DepthwiseConv2D((5, 3), padding="valid")(x)
        return head(i, L.Conv2D(8, 1)(x))
    if name == "multiplier2":  # 6 channels, depth multiplier 2 (the reference kernel)
        i, x = stem((9, 5, 2), 6)
        x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu")(x)
        return head(i, L.Conv2D(8, 1, activation="relu")(x))
    if name == "branch":  # the depthwise input is read again later (when the converter
        # orders that pooling after the block, the output cannot go over the input)
        i, x = stem((10, 4, 2), 8)
        y = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        y = L.Conv2D(8, 1)(y)
        z = L.Concatenate()([L.GlobalAveragePooling2D()(y), L.GlobalAveragePooling2D()(x)])
        return keras.Model(i, L.Dense(5)(z))
    if name == "inplace":  # no 1x1 after the depthwise layer: in place
        i, x = stem((10, 6, 2), 12)
        return head(i, L.DepthwiseConv2D(3, padding="same", activation="relu")(x))
    raise ValueError(name)


# what the scheduler must pick for each model's depthwise layer(s)
EXPECTED = {"chain": {"fused"}, "stride2": {"fused"}, "valid5x3": {"fused"},
            "multiplier2": {"fused"}, "branch": {"fused"}, "inplace": {"inplace"}}


@pytest.fixture(scope="module")
def fused(tmp_path_factory, chost):
    from edgeslim._tf import keras
    from edgeslim.convert import to_int8_tflite

    work = tmp_path_factory.mktemp("fused")
    cases = {}
    for k, name in enumerate(EXPECTED):
        keras.utils.set_random_seed(100 + k)
        model = _build(keras, name)
        shape = model.input_shape[1:]
        rng = np.random.default_rng(k)
        calib = rng.normal(0, 1, (64, *shape)).astype(np.float32)
        tfl = to_int8_tflite(model, calib)
        x = chost.inputs(tfl, HOST_INPUTS, seed=k)
        libs = {}
        for kind, target in (("ref", None), ("dsp", "cortex-m4"), ("mve", "cortex-m55")):
            libs[kind] = codegen.generate(tfl, work / f"{name}_{kind}", name=f"{name}_{kind}",
                                          target=target)
            libs[kind + "_layers"] = codegen.generate(
                tfl, work / f"{name}_{kind}_layers", name=f"{name}_{kind}_layers",
                target=target, layer_by_layer=True)
        cases[name] = dict(model=tfl, x=x, tflm=chost.tflm(tfl, x).reshape(len(x), -1),
                           **libs)
    return cases


def test_the_schedule_goes_below_the_layer_by_layer_plan(fused):
    for name, case in fused.items():
        for kind in ("ref", "dsp", "mve"):
            r, layers = case[kind], case[kind + "_layers"]
            modes = {o.schedule for o in r.ops if o.op == "DEPTHWISE_CONV_2D"}
            assert modes == EXPECTED[name], (name, kind, modes)
            assert {o.schedule for o in layers.ops} == {"plain"}
            assert r.arena_size < layers.arena_size, (name, kind)
            rep = r.report()["memory_plan"]
            assert rep["layer_by_layer"]["arena_size"] == layers.arena_size
            assert rep["layer_by_layer"]["lower_bound"] == layers.plan.lower_bound
            assert rep["arena_size"] == r.arena_size < rep["layer_by_layer"]["lower_bound"]


@pytest.mark.parametrize("kind", ["ref", "dsp", "mve"])
def test_bit_exact_on_the_host_with_sanitizers(kind, fused, chost, tmp_path):
    exe = chost.build([case[kind] for case in fused.values()], tmp_path, extra_flags=SANITIZE)
    for i, (name, case) in enumerate(fused.items()):
        want = case["tflm"]
        got = chost.run(exe, i, case["x"], np.int8, want.shape[1:])
        np.testing.assert_array_equal(got, want, err_msg=f"{name} {kind}")


@pytest.mark.parametrize("board, kinds", [("mps2-an386", ("ref", "dsp")), ("mps3-an547", ("mve",))],
                         ids=["m4", "m55"])
def test_bit_exact_on_the_emulated_core(board, kinds, fused, tmp_path, mux_firmware):
    """Scheduled libraries, reference and DSP kernels on the M4, Helium (MVE) kernels on the
    M55 (the fused bands call the optimized kernels with each band's shapes): one firmware,
    one QEMU run per core."""
    results, batch, expected = [], [], []
    for case in fused.values():
        for kind in kinds:
            results.append((case[kind], case))
    fw, in_bytes, out_bytes = mux_firmware([r for r, _ in results], tmp_path, board)
    for i, (r, case) in enumerate(results):
        for x, want in zip(case["x"][:M4_INPUTS], case["tflm"][:M4_INPUTS]):
            row = np.zeros(in_bytes, np.int8)
            row[0], row[1:1 + x.size] = i, x.ravel()
            out = np.zeros(out_bytes, np.int8)
            out[:want.size] = want
            batch.append(row)
            expected.append(out)
    run = _testfw.run_firmware(fw, np.stack(batch), timeout=240)
    assert run.statuses == [0] * len(batch)
    np.testing.assert_array_equal(run.outputs, np.stack(expected))


# -- the DS-CNN of tests/codegen/test_qemu_models on the emulated M4 ------------------------

DSCNN = HERE / "test_qemu_models" / "dscnn"
# fused blocks call each kernel once per row: at most this much more than layer by layer
MAX_FUSION_OVERHEAD = {"ref": 1.06, "dsp": 1.10}


@pytest.mark.parametrize("kind", ["ref", "dsp"])
def test_dscnn_ram_below_the_layer_by_layer_bound_on_m4(kind, tmp_path, chost):
    model = DSCNN.with_suffix(".tflite").read_bytes()
    x = np.load(str(DSCNN) + "_inputs.npy")[:6]
    want = chost.tflm(model, x).reshape(len(x), -1)
    target = "cortex-m4" if kind == "dsp" else None
    runs, libs = {}, {}
    for plan in ("scheduled", "layers"):
        lib = codegen.generate(model, tmp_path / plan, name="dscnn", target=target,
                               layer_by_layer=plan == "layers")
        fw = firmware.firmware_for_library(lib.header.parent, tmp_path / f"fw-{plan}",
                                           name="dscnn", input_bytes=lib.input_bytes,
                                           output_bytes=lib.output_bytes,
                                           arena_bytes=lib.arena_size, board="mps2-an386")
        runs[plan], libs[plan] = _testfw.run_firmware(fw, x, timeout=240), lib
        np.testing.assert_array_equal(runs[plan].outputs, want)
    ram = {p: libs[p].arena_size + runs[p].max_stack_bytes for p in runs}
    # below the bound of executing one whole layer at a time, not only below its plan
    assert ram["scheduled"] < libs["layers"].plan.lower_bound
    assert ram["scheduled"] <= 0.75 * ram["layers"], ram
    overhead = np.mean(runs["scheduled"].instructions) / np.mean(runs["layers"].instructions)
    assert 0.9 < overhead < MAX_FUSION_OVERHEAD[kind], overhead
