"""The Raspberry Pi bundle: the agent runs the real bundle with ai-edge-litert and,
in a separate venv, with tflite-runtime 2.14 + numpy < 2, and matches the host interpreter."""

from __future__ import annotations

import json
import os
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


def test_bundle_states_the_expected_agreement_and_run_check_holds_to_it(rpi_bundle, tiny_cnn_bytes, tmp_path,
                                                                        litert_outputs):
    """README.md and `agent.py info` state each runtime's bound (EXPECTED_AGREEMENT);
    `run --check REF.npy` passes within it (exit 0), fails beyond it (exit 1) and refuses a
    reference of another shape (exit 2)."""
    from edgeslim.bundle.rpi import EXPECTED_AGREEMENT

    d, _, x = rpi_bundle
    readme = (d / "README.md").read_text()
    for runtime, a in EXPECTED_AGREEMENT.items():
        steps = "step" if a["max_abs_diff"] == 1 else "steps"
        assert f"- `{runtime}`: at most {a['max_abs_diff']} {steps} ({a['measured']})." in readme
    info = json.loads(run_agent(sys.executable, d, "info").stdout.strip().splitlines()[-1])
    assert info["expected_agreement"] == EXPECTED_AGREEMENT["ai-edge-litert"]
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["expected_agreement"] == EXPECTED_AGREEMENT  # machine-readable, per runtime
    ref = litert_outputs(tiny_cnn_bytes, x)

    def check(ref_array):
        np.save(tmp_path / "ref.npy", ref_array)
        r = run_agent(sys.executable, d, "run", str(d / "x.npy"), "--check", str(tmp_path / "ref.npy"))
        return r.returncode, (json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else r.stderr)

    rc, res = check(ref)
    assert rc == 0 and res["ok"] is True and res["bit_exact"] == 12 and res["max_abs_diff"] == 0
    one = ref.copy()
    one[0, 0] = one[0, 0] + 1 if one[0, 0] < 127 else one[0, 0] - 1  # 1 step: within ai-edge-litert's bound
    rc, res = check(one)
    assert rc == 0 and res["ok"] is True and res["bit_exact"] == 11 and res["max_abs_diff"] == 1
    two = ref.copy()
    two[3, 1] = two[3, 1] + 2 if two[3, 1] < 126 else two[3, 1] - 2
    rc, res = check(two)
    assert rc == 1 and res["ok"] is False and res["max_abs_diff"] == 2 and res["expected"]["max_abs_diff"] == 1
    rc, err = check(ref[:5])
    assert rc == 2 and "shape (5, 3), the outputs are (12, 3)" in err


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


def _bad_inbox_files(inbox, x):
    """Every kind of bad request the watch mode must survive (issue 13, point 3);
    names sort before the good request, so it is queued behind all of them."""
    import io
    import pickle

    rng = np.random.default_rng(13)
    (inbox / "a01_random.npy").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (inbox / "a02_empty.npy").write_bytes(b"")
    buf = io.BytesIO()
    np.save(buf, x[:3])
    data = buf.getvalue()
    (inbox / "a03_half_written.npy").write_bytes(data[:len(data) // 2])
    np.save(inbox / "a04_pickled.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (inbox / "a05_raw_pickle.npy").write_bytes(pickle.dumps({"x": [1, 2, 3]}))
    np.save(inbox / "a06_wrong_shape.npy", np.zeros((2, 9, 9, 1), np.int8))
    np.save(inbox / "a07_wrong_dtype.npy", np.array(["abc", "def"]))
    np.save(inbox / "a08_complex.npy", np.zeros((8, 8, 1), np.complex64))
    np.save(inbox / "a09_nan.npy", np.full((8, 8, 1), np.nan, np.float32))
    np.save(inbox / "a10_out_of_range.npy", np.full((8, 8, 1), 1000, np.int32))
    (inbox / "a11_folder.npy").mkdir()
    (inbox / "a12_huge_header.npy").write_bytes(b"\x93NUMPY\x01\x00\xff\xff" + b" " * 100)
    return 12


def test_agent_watch_survives_bad_inbox_files(rpi_bundle, tiny_cnn_bytes, tmp_path, litert_outputs):
    """Bad requests queued in front of a good one: each gets an error reply and moves to
    rejected/ with its reason; the good one is served; temporary names are left alone."""
    d, _, x = rpi_bundle
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    n_bad = _bad_inbox_files(inbox, x)
    np.save(inbox / "z_good.npy", x[:5])
    np.save(inbox / ".z_next.npy", x[:2])        # a client's temporary names: not touched
    (inbox / "z_next.npy.part").write_bytes(b"\x93NUMPY")
    r = run_agent(sys.executable, d, "watch", str(inbox), str(outbox), "--once")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    np.testing.assert_array_equal(np.load(outbox / "z_good.npy"), litert_outputs(tiny_cnn_bytes, x[:5]))
    assert sorted(p.name for p in inbox.iterdir()) == [".z_next.npy", "z_next.npy.part"]
    rejected = tmp_path / "rejected"
    moved = sorted(p.name for p in rejected.iterdir() if not p.name.endswith(".reason.txt"))
    assert len(moved) == n_bad and all(n.startswith("a") for n in moved)
    assert (rejected / "a11_folder.npy").is_dir()
    errors = {p.name[:-len(".error.json")]: json.loads(p.read_text())
              for p in outbox.glob("*.error.json")}
    assert sorted(errors) == moved
    for name, reply in errors.items():
        reason = (rejected / f"{name}.reason.txt").read_text().strip()
        assert reply["error"] == reason and reason
    assert "never unpickles" in errors["a04_pickled.npy"]["error"]
    assert "half-written" in errors["a03_half_written.npy"]["error"]
    assert "shape (2, 9, 9, 1)" in errors["a06_wrong_shape.npy"]["error"]
    assert "NaN" in errors["a09_nan.npy"]["error"]
    assert "outside int8" in errors["a10_out_of_range.npy"]["error"]
    assert errors["a11_folder.npy"]["error"] == "not a regular file"
    # the client's rename makes the request visible; the next pass serves it
    os.replace(inbox / ".z_next.npy", inbox / "z_next.npy")
    r = run_agent(sys.executable, d, "watch", str(inbox), str(outbox), "--once")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(outbox / "z_next.npy"), litert_outputs(tiny_cnn_bytes, x[:2]))


def test_agent_stdin_survives_bad_bytes_and_a_closed_pipe(rpi_bundle, tiny_cnn_bytes, litert_outputs):
    d, _, x = rpi_bundle
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", LC_ALL="C")
    lines = [b"\xff\xfe\x80 not utf-8", b"zz", x[0].tobytes().hex()[:-2].encode(), b"\xc3\xa9" * 64,
             x[1].tobytes().hex().encode()]
    p = subprocess.run([sys.executable, str(d / "agent.py"), "stdin"], input=b"\n".join(lines) + b"\n",
                       capture_output=True, env=env, timeout=120)
    assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr
    replies = [json.loads(s) for s in p.stdout.decode("ascii").splitlines()]
    assert len(replies) == 5
    assert [("error" in r) for r in replies] == [True, True, True, True, False]
    assert "63 bytes: the model's input is 64 bytes" in replies[2]["error"]
    assert replies[4]["output"] == litert_outputs(tiny_cnn_bytes, x[1:2])[0].tolist()
    # the reader closes its end: the agent stops quietly on its next answer
    proc = subprocess.Popen([sys.executable, str(d / "agent.py"), "stdin"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdout.close()
        proc.stdin.write((x[0].tobytes().hex() + "\n").encode() * 3)
        proc.stdin.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert b"Traceback" not in err and b"output closed" in err, err


def test_agent_watch_service_keeps_serving(rpi_bundle, tiny_cnn_bytes, tmp_path, litert_outputs):
    """The systemd unit's way: one long-running `watch`. Bad files, then a good request
    written under a temporary name and renamed, as the README says: the service stays
    up and answers it. A file that cannot even be moved aside (rejected/ is a file here)
    is left in the inbox once, logged, and does not stop the requests behind it."""
    import signal
    import time

    d, _, x = rpi_bundle
    inbox, outbox, blocked = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "not_a_folder"
    inbox.mkdir()
    blocked.write_text("a file where rejected/ should be\n")
    proc = subprocess.Popen([sys.executable, str(d / "agent.py"), "watch", str(inbox), str(outbox),
                             "--interval", "0.1", "--rejected", str(blocked)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        (inbox / "a_random.npy").write_bytes(os.urandom(200))
        (inbox / "b_folder.npy").mkdir()
        tmp = inbox / ".c_good.npy.part"
        with open(tmp, "wb") as f:
            np.save(f, x[:4])
        os.replace(tmp, inbox / "c_good.npy")
        deadline = time.monotonic() + 90
        while not (outbox / "c_good.npy").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            time.sleep(0.1)
        time.sleep(0.5)  # a few more passes over the stuck files
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    log = proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    np.testing.assert_array_equal(np.load(outbox / "c_good.npy"), litert_outputs(tiny_cnn_bytes, x[:4]))
    assert "Traceback" not in log
    assert log.count("a_random.npy left in the inbox") == 1 and log.count("b_folder.npy left in the inbox") == 1
    assert sorted(p.name for p in inbox.iterdir()) == ["a_random.npy", "b_folder.npy"]


def test_bundle_readme_documents_the_request_protocol(rpi_bundle):
    """Clients write a temporary name then rename (the agent ignores temporary names);
    refused files go to rejected/ with the reason."""
    d, _, _ = rpi_bundle
    readme = (d / "README.md").read_text()
    assert "inbox/.x.npy.part" in readme and "mv edgeslim/tiny_cnn/inbox/.x.npy.part" in readme
    assert "rejected/NAME.reason.txt" in readme and "NAME.error.json" in readme
    agent = (d / "agent.py").read_text()
    assert 'name.endswith(".npy") and not name.startswith(".")' in agent
