"""The Android bundle: assets (int8 + fp16), the Kotlin LiteRT module, README with adb."""

from __future__ import annotations

import re

import pytest

from edgeslim.bundle import write_target_files
from edgeslim.errors import TargetError
from edgeslim.targets import check_model, load_target, read_model


@pytest.fixture(scope="module")
def android_bundle(tmp_path_factory, tiny_cnn_bytes, tiny_cnn_fp16_bytes):
    d = tmp_path_factory.mktemp("android_bundle")
    target = load_target("android-gpu")
    fp16 = tiny_cnn_fp16_bytes
    check = check_model(tiny_cnn_bytes, target)
    files = write_target_files(d, target, model_bytes=tiny_cnn_bytes, fp16_bytes=fp16,
                               model_name="tiny cnn", labels=["zero", "one", "two"], check=check)
    return d / "android", files, fp16


def test_assets_hold_both_models(android_bundle, tiny_cnn_bytes):
    root, _, fp16 = android_bundle
    assets = root / "edgeslim-model" / "src" / "main" / "assets"
    assert (assets / "model.tflite").read_bytes() == tiny_cnn_bytes
    assert (assets / "model_fp16.tflite").read_bytes() == fp16
    types = {t.dtype.lower() for t in read_model(fp16).tensors}
    assert "float16" in types and "int8" not in types  # a real float16-weight model
    assert (assets / "labels.txt").read_text().splitlines() == ["zero", "one", "two"]


def test_kotlin_module(android_bundle):
    root, _, _ = android_bundle
    kt_dir = root / "edgeslim-model" / "src" / "main" / "kotlin" / "ai" / "edgeslim" / "tiny_cnn"
    model = (kt_dir / "EdgeslimModel.kt").read_text()
    assert "package ai.edgeslim.tiny_cnn" in model
    assert 'CPU("model.tflite")' in model and 'GPU("model_fp16.tflite")' in model
    assert "Variant = Variant.GPU" in model  # android-gpu leads with the GPU variant
    assert "GpuDelegate(compat.bestOptionsForThisDevice)" in model
    assert 'listOf("zero", "one", "two")' in model
    bench = (kt_dir / "Benchmark.kt").read_text()
    assert "fun run(context: Context, variant: Variant" in bench and "class BenchmarkActivity" in bench
    for src in (model, bench):  # balanced braces and parentheses
        assert src.count("{") == src.count("}") and src.count("(") == src.count(")")
    gradle = (root / "edgeslim-model" / "build.gradle.kts").read_text()
    assert re.search(r'com\.google\.ai\.edge\.litert:litert:\$litertVersion', gradle)
    assert 'noCompress += "tflite"' in gradle and "arm64-v8a" in gradle
    manifest = (root / "edgeslim-model" / "src" / "main" / "AndroidManifest.xml").read_text()
    assert 'android:name="ai.edgeslim.tiny_cnn.BenchmarkActivity"' in manifest
    assert 'android.permission.INTERNET' in manifest  # the protocol server's socket
    dut = (kt_dir / "EdgeslimDut.kt").read_text()
    assert "package ai.edgeslim.tiny_cnn" in dut and "Variant.CPU" in dut and "port: Int = 8470" in dut
    assert "loadedSha256 = sha256Hex(" in model  # the phone hashes the bytes it mapped
    assert "class DutServer(" in (kt_dir / "DutServer.kt").read_text()  # run on the JVM: test_android_dut.py


def test_readme_has_adb_and_says_not_built_by_ci(android_bundle):
    root, _, _ = android_bundle
    readme = (root / "README.md").read_text()
    assert "adb push" in readme and "benchmark_model" in readme and "--use_gpu=true" in readme
    assert "does not\nbuild it" in readme or "does not build it" in readme
    assert "adb forward tcp:8470 tcp:8470" in readme and "--port socket://127.0.0.1:8470" in readme


def test_gpu_variant_needs_the_fp16_model(tmp_path, tiny_cnn_bytes):
    with pytest.raises(TargetError, match="float16"):
        write_target_files(tmp_path, load_target("android"), model_bytes=tiny_cnn_bytes, fp16_bytes=None,
                           model_name="m", labels=None, check=None)
