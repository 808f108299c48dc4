"""manifest.json: which model a bundle holds, made with what, and every file's SHA-256.

A device proves which model it runs by hashing its model file and comparing
with ``model.sha256`` (the Raspberry Pi agent does this with --verify).
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeslim import __version__
from edgeslim.io.outputs import write_text_atomic
from edgeslim.targets import Target

MANIFEST = "manifest.json"
FORMAT = "edgeslim-bundle/1"
# Files edgeslim's own commands add to a bundle after `build` wrote it: `bench`/`emulate --bench`
# write bench.json, `flash` runs the bundle's tflm/Makefile (objects, firmware.elf/.bin/.map).
_ADDED_LATER = ("bench.json",)
_ADDED_LATER_TFLM = (".o", ".d")
_ADDED_LATER_TFLM_NAMES = ("firmware.elf", "firmware.bin", "firmware.map")
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
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(f".{MANIFEST}."):
            files.append({"path": p.relative_to(bundle_dir).as_posix(),
                          "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    manifest: dict[str, Any] = {
        "format": FORMAT,
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
    if target.kind == "rpi":  # what the device's outputs may differ from host LiteRT's, per runtime
        from edgeslim.bundle.rpi import EXPECTED_AGREEMENT

        manifest["expected_agreement"] = EXPECTED_AGREEMENT
    if extra:
        manifest["extra"] = extra
    write_text_atomic(bundle_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
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


def _added_later(rel: str) -> bool:
    if rel in _ADDED_LATER:
        return True
    parts = rel.split("/")
    return (len(parts) >= 2 and parts[0] == "tflm"
            and (parts[-1] in _ADDED_LATER_TFLM_NAMES or parts[-1].endswith(_ADDED_LATER_TFLM)))


def not_a_bundle_reason(folder: Path) -> str | None:
    """None when ``folder`` is a bundle edgeslim wrote, which a new build may replace; otherwise
    why it is not (the folder is then the user's, and nothing may delete it).

    A bundle is a folder whose manifest.json has edgeslim's format and tool name, holding no
    file other than those its manifest lists and those edgeslim's own commands add later
    (bench.json, the firmware the tflm/Makefile builds). A file the user put in a bundle
    makes it theirs too: it would be lost with the folder."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return "it is not a folder" if not folder.is_symlink() else "it is a symbolic link"
    path = folder / MANIFEST
    if not path.is_file():
        return f"it has no {MANIFEST}"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return f"its {MANIFEST} is not readable JSON"
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(manifest.get("tool"), dict) or manifest["tool"].get("name") != "edgeslim"
            or not isinstance(manifest.get("files"), list)):
        return f"its {MANIFEST} was not written by edgeslim"
    listed = {e.get("path") for e in manifest["files"] if isinstance(e, dict)}
    extra = []
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.is_dir():
            rel = p.relative_to(folder).as_posix()
            if rel != MANIFEST and rel not in listed and not _added_later(rel):
                extra.append(rel)
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        return f"it holds files its manifest does not list: {', '.join(extra[:3])}{more}"
    return None
