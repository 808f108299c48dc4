"""Mixed precision (edgeslim/precision.py, convert.py, the targets' 16x8 op lists): whole-model
16x8 and float layers, converted for real, run on LiteRT and TFLite Micro, checked against the
profiles, and compared with plain int8 in the build report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslim import convert, evaluate, targets
from edgeslim.errors import RecipeError, TargetError
from edgeslim.tflite_inspect import inspect_tflite

from damaged_model import damaged_model

SEED = 1234
# Accuracy points a mixed model may lose against the float model on the digits test split
# (360 samples: one sample is 0.28 points). Plain int8 loses 0 here; 16x8 keeps more bits.
MAX_DROP_POINTS = 1.0
NO_STAGES = {"build": {"stages": [], "seed": 0}}


@pytest.fixture(scope="module")
def digits(digits_npz):
    d = np.load(digits_npz)
    return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def calib(digits):
    return convert.calibration_sample(digits["x_train"], 200, SEED)


@pytest.fixture(scope="module")
def float_accuracy(digits_tfk_model, digits):
    pred = digits_tfk_model.predict(digits["x_test"], verbose=0)
    return float(np.mean(pred.argmax(-1) == digits["y_test"]))


@pytest.fixture(scope="module")
def model16(digits_tfk_model, calib):
    return convert.to_int16x8_tflite(digits_tfk_model, calib)


def _accuracy(pred, y):
    return float(np.mean(np.argmax(pred, -1) == y))


# -- whole-model 16x8 -----------------------------------------------------------------


def test_16x8_has_int16_activations_int8_weights(model16):
    info = targets.read_model(model16)
    activations = [t for t in info.tensors if not t.constant]
    assert activations and {t.dtype for t in activations} == {"INT16"}, \
        sorted({(t.dtype, t.name) for t in activations if t.dtype != "INT16"})
    compute = [o for o in info.operators if o.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert len(compute) == 7  # conv1, dw1, pw1, dw2, pw2, fc1, output
    for o in compute:
        assert o.input_dtypes[:2] == ["INT16", "INT8"], (o.opcode, o.layer, o.input_dtypes)
        assert o.output_dtypes == ["INT16"]


def test_16x8_accuracy_within_threshold_of_float_on_litert_and_tflm(model16, digits, float_accuracy):
    x, y = digits["x_test"], digits["y_test"]
    litert = evaluate.run_litert(model16, x)
    micro = evaluate.run_micro(model16, x)  # TFLite Micro's reference 16x8 kernels
    assert _accuracy(litert, y) >= float_accuracy - MAX_DROP_POINTS / 100
    assert _accuracy(micro, y) >= float_accuracy - MAX_DROP_POINTS / 100
    # The two runtimes' 16x8 kernels round differently (not bit-exact), but agree on the class.
    assert np.mean(litert.argmax(-1) == micro.argmax(-1)) >= 0.99


def test_16x8_passes_the_op_checks_of_targets_that_list_its_ops(model16):
    for name in ("cortex-m4", "cortex-m0plus", "rpi4", "android"):
        targets.check_model(model16, targets.load_target(name), measure=False)


@pytest.fixture(scope="module")
def bilinear16():
    """16x8 model with a bilinear resize (layer 'up'): LiteRT runs it, TFLite Micro has
    no int16 RESIZE_BILINEAR."""
    from edgeslim._tf import keras

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.layers.Input((4, 4, 2)),
        keras.layers.Conv2D(2, 1, name="conv"),
        keras.layers.UpSampling2D(2, interpolation="bilinear", name="up"),
        keras.layers.Conv2D(2, 1, name="head"),  # so 'up' is not the model's output tensor
    ])
    calib = np.random.default_rng(SEED).standard_normal((16, 4, 4, 2)).astype(np.float32)
    return convert.to_int16x8_tflite(model, calib), calib


def test_16x8_op_a_runtime_lacks_is_refused_naming_op_layer_and_target(bilinear16):
    data, x = bilinear16
    with pytest.raises(TargetError) as exc:
        targets.check_model(data, targets.load_target("cortex-m4"), measure=False)
    msg = str(exc.value)
    assert "RESIZE_BILINEAR (from layer 'up')" in msg and "cortex-m4" in msg and "16x8" in msg
    assert "CONV_2D" not in msg.split("\n")[0]
    targets.check_model(data, targets.load_target("rpi4"))  # LiteRT has it...
    assert evaluate.run_litert(data, x).shape == (16, 8, 8, 2)  # ...and runs it
    # the rest of the model is 16x8 that TFLite Micro runs: the check names only the missing op
    ops = {o.opcode for o in targets.read_model(data).operators}
    assert ops == {"CONV_2D", "RESIZE_BILINEAR"}


def test_16x8_refused_before_any_work_where_it_cannot_ship():
    cfg = convert.ConvertConfig(activations="int16")
    with pytest.raises(TargetError, match="web.*no op with int16|int16.*web"):
        targets.check_precision(targets.load_target("web"), cfg)
    with pytest.raises(TargetError, match="--backend c generates int8 kernels only"):
        targets.check_precision(targets.load_target("cortex-m4"), cfg, backend="c")
    targets.check_precision(targets.load_target("cortex-m4"), cfg)  # the TFLite Micro bundle
    targets.check_precision(targets.load_target("rpi4"), cfg)


def test_converter_without_16x8_kernel_names_the_op():
    from edgeslim._tf import keras

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(4, name="d"),
                              keras.layers.ELU(name="elu")])
    calib = np.random.default_rng(SEED).standard_normal((8, 8)).astype(np.float32)
    with pytest.raises(convert.ConversionError, match="no 16x8 .*ELU"):
        convert.to_int16x8_tflite(model, calib)


# -- float layers -----------------------------------------------------------------------


def test_float_layers_on_integer_only_target_refused(digits_tfk_model, digits_npz, tmp_path):
    from edgeslim.pipeline import build

    with pytest.raises(TargetError) as exc:
        build(digits_tfk_model, digits_npz, target="cortex-m4", out=tmp_path,
              recipe={**NO_STAGES, "convert": {"float_layers": ["pw1"]}})
    assert "cortex-m4 runs fully-integer models only" in str(exc.value)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_float_layers_cli_refusal_is_clean(digits_keras3_path, digits_npz, tmp_path):
    from edgeslim.cli import cli

    result = CliRunner().invoke(cli, ["build", str(digits_keras3_path), "--data", str(digits_npz),
                                      "--target", "cortex-m4", "--float-worst", "1", "-o", str(tmp_path)],
                                obj={"debug": False})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "cannot be kept in float" in result.output


@pytest.fixture(scope="module")
def float_layers_build(tmp_path_factory, digits_tfk_model, digits_npz):
    """rpi4, no compression stage: pw1 (exact name), ^dw (regex: dw1, dw2) and the worst other
    layer by added quantization error (float_worst = 1) kept in float."""
    from edgeslim.pipeline import build

    out = tmp_path_factory.mktemp("float_layers")
    return build(digits_tfk_model, digits_npz, target="rpi4", out=out,
                 recipe={**NO_STAGES, "convert": {"float_layers": ["pw1", "^dw"], "float_worst": 1}})


def test_float_layers_are_float_exactly_there_and_litert_runs_it(float_layers_build, digits, float_accuracy):
    data = float_layers_build.model_path.read_bytes()
    info = inspect_tflite(data)
    worst = float_layers_build.report["precision"]["worst"]
    assert len(worst) == 1 and worst[0]["layer"] not in ("dw1", "pw1", "dw2")
    assert {o.layer for o in info.float_ops} == {"dw1", "pw1", "dw2", worst[0]["layer"]}
    by_layer = {}
    for o in info.ops:
        if o.opcode not in ("QUANTIZE", "DEQUANTIZE"):
            by_layer.setdefault(o.layer, set()).update(o.input_dtypes + o.output_dtypes)
    for layer in ("dw1", "pw1", "dw2"):
        assert by_layer[layer] == {"FLOAT32"}, (layer, by_layer[layer])
    for layer in {"conv1", "pool1", "pw2", "fc1", "output"} - {worst[0]["layer"]}:
        assert "FLOAT32" not in by_layer[layer], (layer, by_layer[layer])
    assert info.input_dtypes == ["INT8"] and info.output_dtypes == ["INT8"]
    acc = _accuracy(evaluate.run_litert(data, digits["x_test"]), digits["y_test"])
    assert acc >= float_accuracy - MAX_DROP_POINTS / 100


def test_report_compares_mixed_with_plain_int8(float_layers_build):
    report = json.loads((float_layers_build.bundle_dir / "report.json").read_text())
    p = report["precision"]
    order = ["conv1", "dw1", "pw1", "pool1", "dw2", "pw2", "flatten", "fc1", "output"]
    chosen = {"dw1", "pw1", "dw2", p["worst"][0]["layer"]}
    assert p["mode"] == "float-layers" and p["float_layers"] == [n for n in order if n in chosen]
    assert p["mixed"]["bytes"] == float_layers_build.model_path.stat().st_size
    # The float layers' weights and biases ship as float32: dw1 144 + 16, pw1 384 + 24,
    # dw2 216 + 24 = 808 values (3 bytes more per weight, less their per-channel scales),
    # plus the worst layer's.
    sizes = {"conv1": 144 + 16, "pool1": 0, "pw2": 768 + 32, "flatten": 0, "fc1": 16384 + 32,
             "output": 320 + 10}
    floats = [t for t in targets.read_model(float_layers_build.model_path.read_bytes()).tensors
              if t.constant and t.dtype == "FLOAT32"]
    assert sum(int(np.prod(t.shape)) for t in floats) == 808 + sizes[p["worst"][0]["layer"]]
    assert p["mixed"]["bytes"] > p["int8"]["bytes"]
    assert p["mixed"]["test"] == report["metric"]["int8"]  # the deployed model's figure
    assert p["mixed"]["val"] == report["metric"]["validation"]["int8"]
    assert 0.9 <= p["int8"]["val"] <= 1 and 0.9 <= p["int8"]["test"] <= 1
    assert p["test_split"] == report["evaluation"]["test_split"]
    md = (float_layers_build.bundle_dir / "report.md").read_text()
    assert "## Mixed precision: int8 with float layers pw1, ^dw and the 1 worst layer(s)" in md
    assert f"`{p['worst'][0]['layer']}` ({p['worst'][0]['op']}, " in md
    assert f"| {p['int8']['bytes']} B | {p['mixed']['bytes']} B |" in md
    html = (float_layers_build.bundle_dir / "report.html").read_text()
    assert "<h3>Mixed precision: int8 with float layers pw1, ^dw" in html
    assert report["recipe"]["convert"] == {"activations": "int8", "float_layers": ["pw1", "^dw"],
                                           "float_worst": 1}


def test_16x8_build_for_rpi4_reports_the_comparison(tmp_path, digits_tfk_model, digits_npz):
    from edgeslim.pipeline import build

    res = build(digits_tfk_model, digits_npz, target="rpi4", out=tmp_path,
                recipe={**NO_STAGES, "convert": {"activations": "int16"}})
    p = res.report["precision"]
    assert p["mode"] == "16x8"
    assert {t.dtype for t in targets.read_model(res.model_path.read_bytes()).input_tensors} == {"INT16"}
    assert p["mixed"]["test"] >= res.report["metric"]["float"] - MAX_DROP_POINTS / 100
    # int8 weights both ways; 16x8 adds int64 biases and int16 quantization parameters
    assert p["int8"]["bytes"] < p["mixed"]["bytes"] < 1.2 * p["int8"]["bytes"]
    assert res.report["stages"][-1]["tflite_kind"] == "16x8"


# -- the recipe ---------------------------------------------------------------------------


def test_convert_table_round_trips_and_is_validated():
    from edgeslim import recipe as recipe_mod

    rcp = recipe_mod.from_dict({"build": {"stages": []},
                                "convert": {"float_layers": ["pw1", "^dw"], "float_worst": 1}})
    assert rcp.convert.float_layers == ("pw1", "^dw") and rcp.convert.float_worst == 1
    assert recipe_mod.from_dict(rcp.to_dict()) == rcp
    with pytest.raises(RecipeError, match="convert.activations = 'int4'"):
        recipe_mod.from_dict({"convert": {"activations": "int4"}})
    with pytest.raises(RecipeError, match="cannot be combined"):
        recipe_mod.from_dict({"convert": {"activations": "int16", "float_layers": ["a"]}})
    with pytest.raises(RecipeError, match="cannot follow the qat stage"):
        recipe_mod.from_dict({"build": {"stages": ["qat"]}, "convert": {"activations": "int16"}})
    with pytest.raises(RecipeError, match="convert.float_layers"):
        recipe_mod.from_dict({"convert": {"float_layers": "pw1"}})  # a string, not an array
    with pytest.raises(RecipeError, match="not a valid regular expression"):
        recipe_mod.from_dict({"convert": {"float_layers": ["("]}})


def test_float_layer_names_exact_then_regex_and_typos_refused():
    names = ["conv1", "dw1", "pw1", "dw2", "pw2", "pw10"]
    assert convert.match_layers(["pw1"], names) == ["pw1"]  # exact: not pw10
    assert convert.match_layers(["^dw", "pw2"], names) == ["dw1", "dw2", "pw2"]
    with pytest.raises(RecipeError, match="'pw3' matches no layer"):
        convert.match_layers(["pw3"], names)


# -- float_worst ----------------------------------------------------------------------------


def test_float_worst_keeps_the_layer_that_does_the_damage_in_float():
    """float_worst = 1 keeps conv2, the deliberately damaged layer, and only it, in float,
    and the model's output gets its accuracy back."""
    from edgeslim import precision
    from edgeslim._tf import keras
    from edgeslim.quant_debug import snr_db
    from edgeslim.recipe import BuildConfig

    model = damaged_model(keras, conv3=False)
    x = np.random.default_rng(SEED).standard_normal((320, 12, 12, 2)).astype(np.float32)
    calib, x_eval = x[:64], x[64:]
    done = precision.convert_model(model, convert.ConvertConfig(float_worst=1), BuildConfig(), calib)
    assert done.float_layers == ["conv2"] and [w["layer"] for w in done.worst] == ["conv2"]
    assert {o.layer for o in inspect_tflite(done.tflite).float_ops} == {"conv2"}

    ref = model.predict(x_eval, verbose=0)

    def output_snr(data):
        out = evaluate.run_litert(data, x_eval)
        return snr_db(float(np.mean(ref ** 2)), float(np.mean((out - ref) ** 2)))

    int8_snr, mixed_snr = output_snr(done.int8_tflite), output_snr(done.tflite)
    print(f"output SNR: int8 {int8_snr:.1f} dB, conv2 in float {mixed_snr:.1f} dB")
    assert mixed_snr >= int8_snr + 10.0  # at least 10x less error power


def test_the_last_dense_kept_float_is_its_own_op_and_all_float_is_refused():
    """The model's last op has a generic output name ("StatefulPartitionedCall:0"): the final
    Dense 'fc' is still found by its weights, not mistaken for the pooling layer before it."""
    from edgeslim import precision
    from edgeslim._tf import keras
    from edgeslim.recipe import BuildConfig

    model = damaged_model(keras, conv3=False)
    calib = np.random.default_rng(SEED).standard_normal((32, 12, 12, 2)).astype(np.float32)
    done = precision.convert_model(model, convert.ConvertConfig(float_layers=("fc",)), BuildConfig(), calib)
    float_ops = [(o.opcode, layer) for o, layer in convert.op_layers(done.tflite)
                 if o.opcode not in ("QUANTIZE", "DEQUANTIZE") and "FLOAT32" in o.input_dtypes + o.output_dtypes]
    assert float_ops == [("FULLY_CONNECTED", "fc")]
    with pytest.raises(convert.ConversionError, match="every layer of the model in float"):
        precision.convert_model(model, convert.ConvertConfig(float_layers=(".",)), BuildConfig(), calib)


def test_budget_search_refuses_mixed_precision_before_any_work(digits_keras3_path, digits_npz, tmp_path):
    from edgeslim.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", str(digits_keras3_path), "--data", str(digits_npz),
                                      "--target", "rpi4", "--max-macs", "100k", "--activations", "int16",
                                      "-o", str(out)], obj={"debug": False})
    assert result.exit_code == 2, result.output
    assert "budget search converts to plain int8" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()
