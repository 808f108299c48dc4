"""End to end: the digits example through the default recipe (prune + cluster + QAT),
for a microcontroller target, with real TFMOT, conversion, LiteRT and TFLite Micro."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslim.cli import cli

SEED = 7
TARGET = "cortex-m4"
# Fast but real: every stage fine-tunes; the example model starts trained.
# The accuracy guard is off here (these tests check what each stage does to the file that
# ships); tests/test_guard.py tests the guard.
FLAGS = ["--seed", str(SEED), "--epochs", "2", "--sparsity", "0.5", "--clusters", "16", "--backend", "c",
         "--no-guard"]
# Unstructured pruning, clustering and QAT (the round-1 default; today's default is channel
# pruning, tested in tests/compress/test_channels.py and by tests/test_api.py).
STAGES = {"build": {"stages": ["prune", "cluster", "qat"]}}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def mcu_build(tmp_path_factory, digits_keras3_path, digits_npz):
    """One full build through the Python API (the same code path as the CLI)."""
    from edgeslim.pipeline import build
    from edgeslim import recipe as R

    out = tmp_path_factory.mktemp("build_api")
    flags = R.flags_to_table(seed=SEED, epochs=2, sparsity=0.5, clusters=16, no_guard=True)
    return build(digits_keras3_path, digits_npz, target=TARGET, flags=flags, out=out, backend="c",
                 recipe=STAGES)


@pytest.fixture(scope="session")
def mcu_build_cli(tmp_path_factory, digits_keras3_path, digits_npz):
    """The same build again, through the command line."""
    out = tmp_path_factory.mktemp("build_cli")
    import tomli_w

    recipe = out / "stages.toml"
    recipe.write_text(tomli_w.dumps(STAGES))
    result = CliRunner().invoke(
        cli, ["build", str(digits_keras3_path), "--data", str(digits_npz), "--target", TARGET,
              "-o", str(out), "--recipe", str(recipe), *FLAGS], obj={"debug": True}, catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return out / TARGET, result.output


def test_bundle_layout(mcu_build):
    b = mcu_build.bundle_dir
    for name in ("model.tflite", "report.json", "report.md", "recipe.toml", "manifest.json"):
        assert (b / name).is_file(), name
    assert (b / "tflm").is_dir()
    manifest = json.loads((b / "manifest.json").read_text())
    assert _sha(b / "model.tflite") in json.dumps(manifest)
    # nothing left over from the atomic write
    assert [p.name for p in b.parent.iterdir() if p.name.startswith(".")] == []


def test_int8_accuracy_within_two_points(mcu_build):
    m = mcu_build.report["metric"]
    assert m["name"] == "accuracy"
    assert m["float"] >= 0.93
    assert m["float"] - m["int8"] <= 0.02, m
    # TFLite Micro's reference kernels (what the device runs) agree with LiteRT
    assert m["int8_tflm"] is not None and abs(m["int8_tflm"] - m["int8"]) <= 0.01
    assert m["tflm_litert_top1_agreement"] >= 0.98


def test_model_is_fully_int8(mcu_build):
    from edgeslim.evaluate import io_details
    from edgeslim.tflite_inspect import inspect_tflite

    data = mcu_build.model_path.read_bytes()
    qin, qout = io_details(data)
    assert qin.dtype == np.int8 and qout.dtype == np.int8
    assert inspect_tflite(data).float_ops == []


def test_gzip_size_at_least_4x_smaller(mcu_build):
    s = mcu_build.report["size"]
    assert s["float_tflite_gzip_bytes"] >= 4 * s["int8_tflite_gzip_bytes"], s


def _layers(report) -> dict:
    return {layer["layer"]: layer for layer in report["layers"]}


def test_sparsity_reached_in_the_int8_file_depthwise_included(mcu_build):
    layers = _layers(mcu_build.report)
    rcp = mcu_build.recipe.config("prune")
    dw = [n for n, l in layers.items() if l["op"] == "DEPTHWISE_CONV_2D"]
    assert len(dw) == 2
    for name in dw:
        assert layers[name]["sparsity"] >= rcp.depthwise_sparsity - 0.02, (name, layers[name])
    for name in ("conv1", "pw1", "pw2", "fc1"):
        assert layers[name]["sparsity"] >= rcp.sparsity - 0.02, (name, layers[name])


def test_clusters_per_output_channel_in_the_int8_file(mcu_build):
    layers = _layers(mcu_build.report)
    for name in ("conv1", "dw1", "pw1", "dw2", "pw2", "fc1"):
        assert layers[name]["unique_per_channel_max"] <= 16, (name, layers[name])


def test_report_says_which_layers_went_through_qat(mcu_build):
    r = mcu_build.report
    assert r["qat"]["ran"] is True
    qat_stage = next(s for s in r["stages"] if s["name"] == "qat")
    annotated = set(qat_stage["info"].get("annotated_layers", []))
    assert {"conv1", "dw1", "pw1", "dw2", "pw2", "fc1", "output"} <= annotated, qat_stage["info"]
    # QAT's int8 model ships unless plain int8 conversion of the pre-QAT model is strictly
    # better on the validation split; the report says which and by how much.
    choice = r["qat"]["choice"]
    expected = "ptq" if choice["val_int8_ptq"] > choice["val_int8_qat"] else "qat"
    assert choice["shipped"] == expected and r["qat"]["shipped"] == (expected == "qat")
    md = (mcu_build.bundle_dir / "report.md").read_text()
    assert choice["reason"] in md


def test_report_has_every_stage_and_per_class(mcu_build):
    r = mcu_build.report
    assert [s["name"] for s in r["stages"]] == ["baseline", "prune", "cluster", "qat", "int8"]
    for s in r["stages"]:
        assert s["tflite_bytes"] > 0 and s["tflite_gzip_bytes"] > 0 and s["params"] > 0
    pc = r["per_class"]
    assert len(pc["classes"]) == 10
    assert abs(pc["overall_drop"] - r["metric"]["drop"]) < 1e-9
    assert "CONV_2D" in r["ops"] and "DEPTHWISE_CONV_2D" in r["ops"]
    arena = r["check"]["arena_bytes"]
    assert 1024 < arena < 256 * 1024
    md = (mcu_build.bundle_dir / "report.md").read_text()
    assert "Per-class accuracy" in md and "dw1" in md


def test_same_seed_gives_the_same_model(mcu_build, mcu_build_cli):
    bundle, output = mcu_build_cli
    assert _sha(bundle / "model.tflite") == _sha(mcu_build.model_path)
    # the CLI ends with the summary table
    assert "gzip'd" in output and "drop" in output and "accuracy guard: shipped recipe" in output


def test_recipe_in_bundle_rebuilds_the_same_recipe(mcu_build):
    from edgeslim import recipe as R

    again = R.resolve(recipe_file=mcu_build.bundle_dir / "recipe.toml")
    assert again == mcu_build.recipe


def test_backend_c_library_in_the_bundle(mcu_build, tmp_path):
    """--backend c adds edgeslim's interpreter-free C library beside tflm/ (tested in depth
    in tests/codegen); here: it is there, it compiles cleanly, and it needs less RAM
    than TFLite Micro's measured arena for the same model."""
    import subprocess

    cg = mcu_build.report["codegen"]
    c_dir = mcu_build.bundle_dir / "c"
    sources = sorted(c_dir.glob("*.c"))
    assert sources and sorted(c_dir.glob("*.h"))
    assert cg["arena_bytes"] < mcu_build.report["check"]["arena_measured_bytes"]
    plan = cg["memory_plan"]  # the plan, and the layer-by-layer plan it is compared with
    assert plan["arena_size"] == cg["arena_bytes"] <= plan["layer_by_layer"]["arena_size"]
    md = (mcu_build.bundle_dir / "report.md").read_text()
    assert "## C library memory plan" in md and f"Arena **{plan['arena_size']} B**" in md
    for src in sources:
        proc = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-c", str(src),
                               "-I", str(c_dir), "-o", str(tmp_path / (src.stem + ".o"))],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_regression_autoencoder_end_to_end(tmp_path, digits_npz):
    """Reconstruction (arrays as targets): the metric is MSE, no per-class table,
    and the int8 model still reconstructs about as well as the float one."""
    from edgeslim._tf import keras
    from edgeslim.pipeline import build
    from edgeslim import recipe as R

    d = np.load(digits_npz)
    x_train = d["x_train"].reshape(len(d["x_train"]), 64)
    x_test = d["x_test"].reshape(len(d["x_test"]), 64)
    data = tmp_path / "ae.npz"
    np.savez(data, x_train=x_train, y_train=x_train, x_test=x_test, y_test=x_test)
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    h = keras.layers.Dense(32, activation="relu", name="enc")(inp)
    h = keras.layers.Dense(12, activation="relu", name="code")(h)
    h = keras.layers.Dense(32, activation="relu", name="dec")(h)
    out = keras.layers.Dense(64, activation="sigmoid", name="recon")(h)
    ae = keras.Model(inp, out, name="autoencoder")
    ae.compile("adam", "mse")
    ae.fit(x_train, x_train, epochs=30, batch_size=64, verbose=0)
    model = tmp_path / "ae.keras"
    ae.save(model)

    res = build(model, data, target="rpi4", out=tmp_path / "out", drop_stages=("cluster",),
                flags=R.flags_to_table(seed=0, epochs=1))
    m = res.report["metric"]
    assert m["name"] == "mse" and m["higher_is_better"] is False
    assert res.report["data"]["task"] == "regression" and res.report["per_class"] is None
    assert m["float"] < 0.05
    # int8 error no more than 25% above float (MSE, lower is better), and drop = int8 - float
    assert m["int8"] <= 1.25 * m["float"] + 0.002, m
    assert abs(m["drop"] - (m["int8"] - m["float"])) < 1e-12
