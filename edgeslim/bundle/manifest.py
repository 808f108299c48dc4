"""manifest.json: which model a bundle holds, made with what, and every file's SHA-256.

A device proves which model it runs by hashing its model file and comparing
with ``model.sha256`` (the Raspberry Pi agent does this with --verify).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeslim import __version__
from edgeslim.targets import Target

MANIFEST = "manifest.json"
_LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
              "tflite-micro", "numpy")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_manifest(bundle_dir: Path, *, target: Target, model_path: Path, extra: dict | None = None) -> dict:
    """Write <bundle_dir>/manifest.json (atomically) and return it as a dict.

    Lists every file under bundle_dir except the manifest itself, with sizes and
    SHA-256s; ``model_path`` (inside the bundle) is the model a device runs."""
    bundle_dir = Path(bundle_dir).resolve()
    model_path = Path(model_path)
    if not model_path.is_absolute():
        inside = bundle_dir / model_path
        model_path = inside if inside.exists() else model_path.resolve()
    model_path = model_path.resolve()
    files = []
    for p in sorted(bundle_dir.rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".manifest-"):
            files.append({"path": p.relative_to(bundle_dir).as_posix(),
                          "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    manifest: dict[str, Any] = {
        "format": "edgeslim-bundle/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "path": model_path.relative_to(bundle_dir).as_posix(),
            "bytes": model_path.stat().st_size,
            "sha256": sha256_file(model_path),
        },
        "target": {"name": target.name, "profile": target.profile, "kind": target.kind,
                   "runtime": target.runtime},
        "tool": {"name": "edgeslim", "version": __version__,
                 "python": platform.python_version()},
        "libraries": library_versions(),
        "files": files,
    }
    if extra:
        manifest["extra"] = extra
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=bundle_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, bundle_dir / MANIFEST)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return manifest


def verify_manifest(bundle_dir: Path) -> list[str]:
    """The paths whose SHA-256 differs from manifest.json (empty: all match)."""
    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    bad = []
    for entry in manifest["files"]:
        p = bundle_dir / entry["path"]
        if not p.is_file() or sha256_file(p) != entry["sha256"]:
            bad.append(entry["path"])
    return bad
