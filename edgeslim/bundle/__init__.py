"""Deployable bundles: the target-specific files, one module per bundle kind.

The build pipeline creates the bundle directory (model.tflite, report.json,
report.md, recipe.toml), calls :func:`write_target_files`, then
:func:`edgeslim.bundle.manifest.write_manifest` last, and moves the directory
into place atomically.
"""

from __future__ import annotations

from pathlib import Path

from edgeslim.errors import TargetError
from edgeslim.targets import CheckResult, Target


def write_target_files(bundle_dir: Path, target: Target, *, model_bytes: bytes,
                       fp16_bytes: bytes | None, model_name: str, labels: list[str] | None,
                       check: CheckResult | None, reference=None,
                       front_end: dict | None = None) -> list[Path]:
    """Add the target's files to ``bundle_dir``; returns the paths written.

    mcu: tflm/ (TFLite Micro sources, Makefile, CMake, README); rpi: the agent,
    install.sh, the systemd unit, labels.txt, README; android: android/ (assets
    with the int8 and fp16 models, a Kotlin LiteRT module, README); web: the offline
    web app (index.html, LiteRT.js, service worker; ``reference`` = ``(x, y)``, a few
    inputs whose host-LiteRT outputs the page checks itself against; ``front_end``
    = how the page turns a picture or a sound into the input, see bundle/web.py)."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise TargetError(f"bundle directory {bundle_dir} does not exist")
    if target.kind == "mcu":
        from edgeslim.bundle.tflm import write_tflm

        return write_tflm(bundle_dir, target, model_bytes=model_bytes, model_name=model_name,
                          labels=labels, check=check)
    if target.kind == "rpi":
        from edgeslim.bundle.rpi import write_rpi

        return write_rpi(bundle_dir, target, model_bytes=model_bytes, model_name=model_name,
                         labels=labels)
    if target.kind == "android":
        from edgeslim.bundle.android import write_android

        return write_android(bundle_dir, target, model_bytes=model_bytes, fp16_bytes=fp16_bytes,
                             model_name=model_name, labels=labels, check=check)
    if target.kind == "web":
        from edgeslim.bundle.web import write_web

        return write_web(bundle_dir, target, model_bytes=model_bytes, model_name=model_name,
                         labels=labels, check=check, reference=reference, front_end=front_end)
    raise TargetError(f"no bundle writer for target kind {target.kind!r}")


__all__ = ["write_target_files"]
