"""The Android bundle: a Kotlin LiteRT library module with the models as assets.

<bundle>/android/edgeslim-model/ holds build.gradle.kts, the manifest, the
Kotlin sources (load/run on CPU or GPU, a benchmark entry point) and
src/main/assets/ with model.tflite (int8, CPU/XNNPACK), model_fp16.tflite
(float16, GPU delegate) and labels.txt; android/README.md has the adb
commands. No Android SDK here: the module is rendered and checked, not built.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgeslim import __version__
from edgeslim.bundle.render import c_identifier, render_to
from edgeslim.bundle.rpi import write_labels
from edgeslim.errors import TargetError
from edgeslim.targets import CheckResult, Target

MODULE = "edgeslim-model"
LITERT_VERSION = "1.4.0"
DEVICE_DIR = "/data/local/tmp/edgeslim"
# The phone-side protocol server's port (EdgeslimDut.start), as the Pi agent's examples use.
DUT_PORT = 8470


def write_android(bundle_dir: Path, target: Target, *, model_bytes: bytes, fp16_bytes: bytes | None,
                  model_name: str, labels: list[str] | None, check: CheckResult | None) -> list[Path]:
    cpu = target.variant("cpu") if any(v.name == "cpu" for v in target.variants) else None
    gpu = target.variant("gpu") if any(v.name == "gpu" for v in target.variants) else None
    if gpu is not None and fp16_bytes is None:
        raise TargetError(
            f"target {target.profile} ships a GPU variant and needs the float16 model, none was given",
            hint="Convert an fp16 model (edgeslim.targets.target_wants_fp16(target) is True) and pass it.")
    ident = c_identifier(model_name)
    package = f"ai.edgeslim.{ident}"
    cpu_model = cpu.model if cpu else "model.tflite"
    gpu_model = gpu.model if gpu else "model_fp16.tflite"
    ctx = {
        "version": __version__,
        "model_name": model_name,
        "target": target,
        "module": MODULE,
        "package": package,
        "package_path": package.replace(".", "/"),
        "abi": "arm64-v8a",
        "litert_version": LITERT_VERSION,
        "cpu_model": cpu_model,
        "gpu_model": gpu_model,
        "cpu_bytes": len(model_bytes),
        "gpu_bytes": len(fp16_bytes) if fp16_bytes is not None else 0,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "num_threads": int(cpu.num_threads or 4) if cpu else 4,
        "default_variant": (target.default_variant or "cpu").upper(),
        "labels": list(labels) if labels else [],
        "gpu_fallback": list(check.gpu_fallback_ops) if check is not None else [],
        "device_dir": DEVICE_DIR,
        "ident": ident,
        "dut_port": DUT_PORT,
    }
    root = bundle_dir / "android"
    mod = root / MODULE
    src = mod / "src" / "main"
    kotlin = src / "kotlin" / ctx["package_path"]
    assets = src / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    written = []
    (assets / cpu_model).write_bytes(model_bytes)
    written.append(assets / cpu_model)
    if fp16_bytes is not None:
        (assets / gpu_model).write_bytes(fp16_bytes)
        written.append(assets / gpu_model)
    if labels:
        written.append(write_labels(assets / "labels.txt", labels))
    written += [
        render_to(mod / "build.gradle.kts", "android/build.gradle.kts.j2", **ctx),
        render_to(src / "AndroidManifest.xml", "android/AndroidManifest.xml.j2", **ctx),
        render_to(kotlin / "EdgeslimModel.kt", "android/EdgeslimModel.kt.j2", **ctx),
        render_to(kotlin / "Benchmark.kt", "android/Benchmark.kt.j2", **ctx),
        render_to(kotlin / "DutServer.kt", "android/DutServer.kt.j2", **ctx),
        render_to(kotlin / "EdgeslimDut.kt", "android/EdgeslimDut.kt.j2", **ctx),
        render_to(root / "README.md", "android/README.md.j2", **ctx),
    ]
    return written
