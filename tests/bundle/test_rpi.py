"""The Raspberry Pi bundle: the agent runs the real bundle with ai-edge-litert and,
in a separate venv, with tflite-runtime 2.14 + numpy < 2, and matches the host interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeslim.bundle import write_target_files
from edgeslim.bundle.manifest import write_manifest
from edgeslim.targets import load_target


@pytest.fixture(scope="module")
def rpi_bundle(tmp_path_factory, tiny_cnn_bytes):
    d = tmp_path_factory.mktemp("rpi_bundle")
    (d / "model.tflite").write_bytes(tiny_cnn_bytes)  # the pipeline writes it first
    target = load_target("rpi")
    files = write_target_files(d, target, model_bytes=tiny_cnn_bytes, fp16_bytes=None,
                               model_name="tiny cnn", labels=["zero", "one", "two"], check=None)
    write_manifest(d, target=target, model_path=d / "model.tflite", extra={})
    x = np.random.default_rng(3).integers(-128, 128, size=(12, 8, 8, 1), dtype=np.int8)
    np.save(d / "x.npy", x)
    return d, files, x


def run_agent(python, bundle, *args):
    return subprocess.run([str(python), str(bundle / "agent.py"), *args], capture_output=True,
                          text=True, timeout=300)


def test_bundle_files(rpi_bundle):
    d, files, _ = rpi_bundle
    assert {p.name for p in files} == {"agent.py", "install.sh", "edgeslim-agent.service", "README.md", "labels.txt"}
    assert (d / "labels.txt").read_text() == "zero\none\ntwo\n"
    unit = (d / "edgeslim-agent.service").read_text()
    assert "ExecStart=@INSTALL_DIR@/venv/bin/python @INSTALL_DIR@/agent.py watch" in unit
    assert "[Install]" in unit and "WantedBy=multi-user.target" in unit
    subprocess.run(["bash", "-n", str(d / "install.sh")], check=True)
    sh = (d / "install.sh").read_text()
    assert "ai-edge-litert" in sh and "tflite-runtime==2.14.0" in sh and '"numpy<2"' in sh
    assert (d / "agent.py").stat().st_mode & 0o111


def test_agent_with_ai_edge_litert_matches_host(rpi_bundle, tiny_cnn_bytes, tmp_path, litert_outputs):
    d, _, x = rpi_bundle
    out = tmp_path / "y.npy"
    r = run_agent(sys.executable, d, "run", str(d / "x.npy"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), litert_outputs(tiny_cnn_bytes, x))
    info = run_agent(sys.executable, d, "info")
    assert info.returncode == 0, info.stderr
    meta = json.loads(info.stdout.strip().splitlines()[-1])
    assert meta["runtime"] == "ai-edge-litert" and meta["manifest_match"] is True
    # JSON lines and the stdin mode give the same raw outputs
    lines = run_agent(sys.executable, d, "run", str(d / "x.npy")).stdout.strip().splitlines()
    assert [json.loads(s)["output"] for s in lines] == litert_outputs(tiny_cnn_bytes, x).tolist()
    assert json.loads(lines[0])["label"] in ("zero", "one", "two")
    p = subprocess.run([sys.executable, str(d / "agent.py"), "stdin"], input=x[0].tobytes().hex() + "\n",
                       capture_output=True, text=True, timeout=120)
    assert json.loads(p.stdout)["output"] == litert_outputs(tiny_cnn_bytes, x[:1])[0].tolist()


def test_agent_detects_a_swapped_model(rpi_bundle, tmp_path):
    import shutil

    d, _, _ = rpi_bundle
    copy = tmp_path / "b"
    shutil.copytree(d, copy)
    data = bytearray((copy / "model.tflite").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(data))
    r = run_agent(sys.executable, copy, "info")
    assert r.returncode == 3 and json.loads(r.stdout.strip().splitlines()[-1])["manifest_match"] is False


def test_agent_with_tflite_runtime_and_old_numpy(rpi_bundle, tiny_cnn_bytes, tflite_runtime_python, tmp_path, litert_outputs):
    d, _, x = rpi_bundle
    versions = subprocess.run(
        [str(tflite_runtime_python), "-c",
         "import numpy, importlib.metadata as m; print(numpy.__version__, m.version('tflite-runtime'))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert versions[0].startswith("1.") and versions[1] == "2.14.0"
    out = tmp_path / "y.npy"
    r = run_agent(tflite_runtime_python, d, "run", str(d / "x.npy"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    got, want = np.load(out).astype(int), litert_outputs(tiny_cnn_bytes, x).astype(int)
    # tflite-runtime 2.14's int8 kernels are older than ai-edge-litert's: outputs
    # may differ by one quantization step (measured: 1 of 36 values, by 1 LSB).
    # Tolerance: at most 1 LSB anywhere, on at most 10% of the values.
    assert got.shape == want.shape == (12, 3)
    assert np.abs(got - want).max() <= 1
    assert np.mean(got != want) <= 0.10
    info = json.loads(run_agent(tflite_runtime_python, d, "info").stdout.strip().splitlines()[-1])
    assert info["runtime"] == "tflite-runtime" and info["manifest_match"] is True


def test_agent_watch_mode_answers_files(rpi_bundle, tiny_cnn_bytes, tmp_path, litert_outputs):
    """What the systemd unit runs: .npy files in the inbox are answered in the outbox."""
    d, _, x = rpi_bundle
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    np.save(inbox / "req1.npy", x[:4])
    r = run_agent(sys.executable, d, "watch", str(inbox), str(outbox), "--once")
    assert r.returncode == 0, r.stderr
    assert list(inbox.iterdir()) == [] and [p.name for p in outbox.iterdir()] == ["req1.npy"]
    np.testing.assert_array_equal(np.load(outbox / "req1.npy"), litert_outputs(tiny_cnn_bytes, x[:4]))
