"""`edgeslim build model.tflite`: int8 models converted elsewhere are checked and bundled as they
are (no compression, no conversion), scored when data is given, and run bit-exact with TFLite
Micro on the emulated board; float ones are refused with nothing written.

Models: the code generator's goldens ds_cnn (CONV/DEPTHWISE/AVERAGE_POOL/FC, int8 I/O) and
resnet (a residual ADD, SOFTMAX, int8 I/O), and tests/prebuilt/goldens/ (float I/O, float,
dynamic range; tools/gen_prebuilt_goldens.py regenerates them)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslim.cli import cli

TESTS = Path(__file__).resolve().parent.parent
INT8_MODELS = {"ds_cnn": TESTS / "codegen" / "goldens" / "models" / "ds_cnn.tflite",
               "resnet": TESTS / "codegen" / "goldens" / "models" / "resnet.tflite"}
GOLDENS = Path(__file__).resolve().parent / "goldens"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={"debug": False})


def tree(path: Path) -> dict:
    """Every file under ``path`` with its SHA-256 (the user's files, before and after)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def models(tmp_path):
    """Copies of the models in a user folder (the user's files are never modified)."""
    d = tmp_path / "user"
    d.mkdir()
    for name, src in {**INT8_MODELS, **{p.stem: p for p in GOLDENS.glob("*.tflite")}}.items():
        shutil.copy(src, d / f"{name}.tflite")
    return d


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(INT8_MODELS))
def test_int8_tflite_to_cortex_m4_c_bundle_runs_bit_exact_on_the_emulated_board(name, models, tmp_path):
    before = tree(models)
    out = tmp_path / "out"
    res = run("build", models / f"{name}.tflite", "--target", "cortex-m4", "--backend", "c", "-o", out)
    assert res.exit_code == 0, res.output
    assert "already converted" in res.output and "no accuracy measured" in res.output
    b = out / "cortex-m4"
    model_bytes = (models / f"{name}.tflite").read_bytes()
    assert (b / "model.tflite").read_bytes() == model_bytes  # shipped as it came
    sha = hashlib.sha256(model_bytes).hexdigest()
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["extra"]["source"] == {"format": "tflite", "already_converted": True, "sha256": sha}
    assert manifest["model"]["sha256"] == sha
    for f in ("tflm/model_data.cc", "tflm/op_resolver.h", "tflm/Makefile", f"c/{name}.c", f"c/{name}.h",
              "report.json", "report.md"):
        assert (b / f).is_file(), f
    assert not (b / "recipe.toml").exists()  # nothing was compressed: no recipe rebuilds it
    report = json.loads((b / "report.json").read_text())
    assert report["kind"] == "prebuilt" and report["model"]["already_converted"] is True
    assert report["model"]["sha256"] == sha and report["metric"]["measured"] is False
    assert report["check"]["arena_measured_bytes"] > 0
    cg = report["codegen"]
    assert 0 < cg["arena_bytes"] < report["check"]["arena_measured_bytes"]
    md = (b / "report.md").read_text()
    assert "already converted" in md and "No accuracy was measured" in md
    assert f"{cg['arena_bytes'] + cg['io_bytes']['input'] + cg['io_bytes']['output']} B with them" in md
    assert tree(models) == before
    # the bundle works downstream: emulated, benched, bit-exact with TFLite Micro
    res = run("emulate", b, "--bench", "-n", "6")
    assert res.exit_code == 0, res.output
    bench = json.loads((b / "bench.json").read_text())
    assert bench["reference"] == "tflite-micro" and bench["complete"] is True
    assert bench["agreement"]["compared"] == bench["agreement"]["bit_exact"] == 6
    # and for a Raspberry Pi: the agent's bundle, the model as it came
    res = run("build", models / f"{name}.tflite", "--target", "rpi4", "-o", out)
    assert res.exit_code == 0, res.output
    pi = out / "rpi4"
    for f in ("agent.py", "install.sh", "edgeslim-agent.service", "README.md", "manifest.json", "report.md"):
        assert (pi / f).is_file(), f
    assert (pi / "model.tflite").read_bytes() == model_bytes
    assert json.loads((pi / "manifest.json").read_text())["extra"]["source"]["sha256"] == sha


@pytest.mark.timeout(600)
def test_int8_tflite_with_data_is_scored_with_litert_and_tflite_micro(models, tmp_path):
    from edgeslim.evaluate import run_litert, run_micro

    model = models / "resnet.tflite"
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(40, 16, 16, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=40)
    np.savez(tmp_path / "d.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    out = tmp_path / "out"
    res = run("build", model, "--data", tmp_path / "d.npz", "--target", "cortex-m4", "-o", out)
    assert res.exit_code == 0, res.output
    m = json.loads((out / "cortex-m4" / "report.json").read_text())["metric"]
    assert m["measured"] is True and m["samples"] == 10 and "test split given" in m["evaluated_on"]
    data = model.read_bytes()
    assert m["int8"] == pytest.approx(float(np.mean(run_litert(data, x[30:]).argmax(1) == y[30:])))
    assert m["int8_tflm"] == pytest.approx(float(np.mean(run_micro(data, x[30:]).argmax(1) == y[30:])))
    assert 0.0 <= m["tflm_litert_top1_agreement"] <= 1.0
    assert f"accuracy: {m['int8']:.4f} LiteRT, {m['int8_tflm']:.4f} TFLite Micro" in res.output


@pytest.mark.timeout(600)
def test_float_io_model_runs_on_rpi4_and_is_refused_for_a_microcontroller(models, tmp_path):
    from edgeslim.evaluate import run_litert

    model = models / "float_io.tflite"
    rng = np.random.default_rng(5)
    x = rng.normal(size=(24, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=24)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "out"
    res = run("build", model, "--data", tmp_path / "d.npz", "--target", "rpi4", "-o", out)
    assert res.exit_code == 0, res.output
    b = out / "rpi4"
    assert (b / "agent.py").is_file() and (b / "model.tflite").read_bytes() == model.read_bytes()
    r = json.loads((b / "report.json").read_text())
    assert r["model"]["input"]["type"] == "float32" and r["model"]["output"]["type"] == "float32"
    assert any(e.startswith("QUANTIZE") for e in r["model"]["float_edges"])
    assert any(e.startswith("DEQUANTIZE") for e in r["model"]["float_edges"])
    # no x_test in the file: every sample is scored, and the report says why
    assert r["metric"]["samples"] == 24 and "every sample" in r["metric"]["evaluated_on"]
    assert r["metric"]["int8"] == pytest.approx(float(np.mean(run_litert(model.read_bytes(), x).argmax(1) == y)))
    # a microcontroller bundle takes int8 tensors: refused, the edges named, nothing written
    out2 = tmp_path / "out2"
    res = run("build", model, "--target", "cortex-m4", "-o", out2)
    assert res.exit_code == 2, res.output
    assert "QUANTIZE" in res.output and "DEQUANTIZE" in res.output and "int8 input and output" in res.output
    assert "Traceback" not in res.output and not out2.exists()


@pytest.mark.parametrize("name,kind", [("float", "a float model"),
                                       ("dynamic_range", "dynamic-range quantized")])
def test_float_tflite_is_refused_with_nothing_written(name, kind, models, tmp_path):
    before = tree(models)
    out = tmp_path / "out"
    res = run("build", models / f"{name}.tflite", "--target", "rpi4", "-o", out)
    assert res.exit_code == 2, res.output
    assert kind in res.output and "cannot be" in res.output and "re-quantized" in res.output
    assert "Keras model" in res.output and "Traceback" not in res.output
    assert not out.exists() and tree(models) == before


def test_data_with_the_wrong_input_shape_is_refused_before_anything_is_written(models, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(12, 8, 8, 1)).astype(np.float32), y=rng.integers(0, 10, 12))
    out = tmp_path / "out"
    res = run("build", models / "ds_cnn.tflite", "--data", tmp_path / "d.npz", "--target", "cortex-m4", "-o", out)
    assert res.exit_code == 2, res.output
    assert "shape" in res.output and "Traceback" not in res.output and not out.exists()


def test_compression_options_do_not_apply_to_a_converted_model(models, tmp_path):
    res = run("build", models / "ds_cnn.tflite", "--target", "cortex-m4", "--sparsity", "0.5",
              "-o", tmp_path / "out")
    assert res.exit_code == 2 and "already converted" in res.output and "--sparsity" in res.output
    assert not (tmp_path / "out").exists()


def test_a_keras_model_still_needs_data(tmp_path):
    res = run("build", tmp_path / "m.keras", "--target", "rpi4", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "--data is required" in res.output


def test_not_a_tflite_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 64)
    res = run("build", bad, "--target", "rpi4", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "not a TFLite model" in res.output and "Traceback" not in res.output
    res = run("build", tmp_path / "missing.tflite", "--target", "rpi4", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "does not exist" in res.output


def test_python_api_builds_a_converted_model(models, tmp_path):
    from edgeslim import api
    from edgeslim.errors import EdgeslimError

    r = api.build(models / "ds_cnn.tflite", None, target="rpi4", out=tmp_path / "out", verbose=False)
    assert r.report["kind"] == "prebuilt" and (r.bundle_dir / "agent.py").is_file()
    with pytest.raises(EdgeslimError, match="already converted"):
        api.build(models / "ds_cnn.tflite", None, target="rpi4", out=tmp_path / "o2", sparsity=0.5)


def test_audio_front_end_is_for_the_web_target_and_must_fit_the_model(models, tmp_path):
    res = run("build", models / "ds_cnn.tflite", "--target", "rpi4", "--audio-front-end", "mlperf-tiny-kws",
              "-o", tmp_path / "out")
    assert res.exit_code == 2 and "for the web target" in res.output and not (tmp_path / "out").exists()
    # the web page's MFCC front end gives 49 x 10 features: this model takes 8 x 8 x 1
    res = run("build", models / "float_io.tflite", "--target", "web", "--audio-front-end", "mlperf-tiny-kws",
              "-o", tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert "49 x 10 features" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out" / "web").exists()


def test_float_io_model_makes_a_web_bundle(models, tmp_path):
    res = run("build", models / "float_io.tflite", "--target", "web", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    b = tmp_path / "out" / "web"
    for f in ("index.html", "sw.js", "web.json", "litert/LICENSE"):
        assert (b / f).is_file(), f
    web = json.loads((b / "web.json").read_text())
    assert web["front_end"]["tensor"]["shape"] == [8, 8, 1]


@pytest.mark.timeout(600)
def test_kernels_and_memory_plan_choose_the_c_library_variant(models, tmp_path):
    """--kernels reference --memory-plan layer-by-layer: the bundle's C library has no DSP
    kernel and no fused layer, takes less flash than the default one, and still runs bit-exact
    with TFLite Micro on the emulated Cortex-M4. With --backend tflm both flags are refused."""
    from edgeslim.harness import toolchain

    model = models / "ds_cnn.tflite"
    flash = {}
    for label, extra in (("default", []), ("small", ["--kernels", "reference", "--memory-plan",
                                                      "layer-by-layer"])):
        out = tmp_path / label
        res = run("build", model, "--target", "cortex-m4", "--backend", "c", *extra, "-o", out)
        assert res.exit_code == 0, res.output
        b = out / "cortex-m4"
        cg = json.loads((b / "report.json").read_text())["codegen"]
        objs = toolchain.cross_compile(sorted((b / "c").glob("*.c")), tmp_path / f"obj-{label}",
                                       core="cortex-m4", include_dirs=[b / "c"], opt="-Os")
        flash[label] = (toolchain.section_sizes(objs).flash, cg)
    (big, cg_default), (small, cg_small) = flash["default"], flash["small"]
    assert cg_default["library"] == {"kernels": "optimized", "memory_plan": "smallest"}
    assert "dsp" in cg_default["features"]
    assert cg_small["library"] == {"kernels": "reference", "memory_plan": "layer-by-layer"}
    assert cg_small["features"] == [] and cg_small["memory_plan"]["schedule"] == []
    assert any(o["mode"] == "fused" for o in cg_default["memory_plan"]["schedule"])
    assert small < big and cg_small["arena_bytes"] > cg_default["arena_bytes"]
    res = run("emulate", tmp_path / "small" / "cortex-m4", "--bench", "-n", "4")
    assert res.exit_code == 0, res.output
    bench = json.loads((tmp_path / "small" / "cortex-m4" / "bench.json").read_text())
    assert bench["agreement"]["compared"] == bench["agreement"]["bit_exact"] == 4

    res = run("build", model, "--target", "cortex-m4", "--kernels", "reference", "-o", tmp_path / "tflm")
    assert res.exit_code == 2
    assert "--kernels reference" in res.output and "--backend c" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "tflm" / "cortex-m4").exists()
