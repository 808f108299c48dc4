"""manifest.json: the model's SHA-256, versions, target, every file's SHA-256."""

from __future__ import annotations

import hashlib
import json

from edgeslim.bundle import write_target_files
from edgeslim.bundle.manifest import verify_manifest, write_manifest
from edgeslim.targets import load_target


def test_manifest_lists_files_and_model_hash(tmp_path, tiny_cnn_bytes):
    (tmp_path / "model.tflite").write_bytes(tiny_cnn_bytes)
    (tmp_path / "report.json").write_text("{}")
    target = load_target("cortex-m")
    write_target_files(tmp_path, target, model_bytes=tiny_cnn_bytes, fp16_bytes=None,
                       model_name="tiny", labels=None, check=None)
    m = write_manifest(tmp_path, target=target, model_path=tmp_path / "model.tflite",
                       extra={"recipe": "recipe.toml"})
    assert m == json.loads((tmp_path / "manifest.json").read_text())
    assert m["model"]["sha256"] == hashlib.sha256(tiny_cnn_bytes).hexdigest()
    assert m["model"]["path"] == "model.tflite" and m["model"]["bytes"] == len(tiny_cnn_bytes)
    assert m["target"] == {"name": "cortex-m", "profile": "cortex-m4", "kind": "mcu", "runtime": "tflite-micro"}
    assert m["tool"]["name"] == "edgeslim" and m["libraries"]["tensorflow"]
    paths = {f["path"]: f for f in m["files"]}
    assert {"model.tflite", "report.json", "tflm/model_data.cc", "tflm/Makefile"} <= set(paths)
    assert "manifest.json" not in paths
    cc = (tmp_path / "tflm" / "model_data.cc").read_bytes()
    assert paths["tflm/model_data.cc"]["sha256"] == hashlib.sha256(cc).hexdigest()
    assert m["extra"] == {"recipe": "recipe.toml"}
    assert verify_manifest(tmp_path) == []
    (tmp_path / "report.json").write_text('{"tampered": true}')
    assert verify_manifest(tmp_path) == ["report.json"]
    assert not list(tmp_path.glob(".manifest-*"))  # the temp file was renamed into place
