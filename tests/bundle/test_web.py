"""The web bundle (edgeslim/bundle/web.py, firmware_templates/web/, `edgeslim serve`),
tested in a real browser: headless Chromium with no name resolution but loopback,
LiteRT.js 2.5.3 from the bundle, the digits model trained in the session.

Tolerance: the browser's outputs must be within TOLERANCE_STEPS int8 steps (of the
output quantization) of host LiteRT's (ai-edge-litert, XNNPACK) on every input.
Measured on 2026-11-30 (Chromium 156): 0 steps on all 8 reference and 120 test
inputs; 1 step is allowed because both are XNNPACK builds for different
instruction sets (wasm SIMD, x86), not one code path.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeslim.bundle import write_target_files
from edgeslim.bundle.manifest import verify_manifest, write_manifest
from edgeslim.bundle.web import LITERTJS_VERSION, make_server, static_batch
from edgeslim.errors import TargetError
from edgeslim.targets import load_target

sys.path.insert(0, str(Path(__file__).parent))
from web_browser import Browser, host_steps as _host_steps  # noqa: E402

pytestmark = pytest.mark.timeout(180)

TOLERANCE_STEPS = 1
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
N_TEST = 120
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits(digits_npz):
    d = np.load(digits_npz)
    return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def web_model_bytes(digits_tfk_model, digits):
    """The session's digits model, int8 inside with float32 input/output (the web
    profile's int8_io = false)."""
    from edgeslim.convert import to_int8_tflite

    return to_int8_tflite(digits_tfk_model, digits["x_train"][:200], int8_io=False)


def _write_bundle(d: Path, model_bytes: bytes, digits) -> Path:
    target = load_target("web")
    (d / "model.tflite").write_bytes(model_bytes)
    write_target_files(d, target, model_bytes=model_bytes, fp16_bytes=None, model_name="digits web",
                       labels=LABELS, check=None, reference=(digits["x_test"], digits["y_test"]))
    write_manifest(d, target=target, model_path=d / "model.tflite", extra={})
    return d


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, web_model_bytes, digits):
    return _write_bundle(tmp_path_factory.mktemp("web_bundle"), web_model_bytes, digits)


class ServerThread:
    """make_server() on a free loopback port in a thread; stop() shuts it down."""

    def __init__(self, root: Path):
        self.server = make_server(root, port=0, quiet=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(bundle):
    s = ServerThread(bundle)
    yield s
    s.stop()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.quit()


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory):
    """Where screenshots are kept: $EDGESLIM_ARTEFACTS, else the session's temp folder."""
    d = Path(os.environ.get("EDGESLIM_ARTEFACTS") or tmp_path_factory.getbasetemp() / "artefacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


# --------------------------------------------------------------------------- the bundle


def test_bundle_files_runtime_and_manifest(bundle, web_model_bytes):
    cfg = json.loads((bundle / "web.json").read_text())
    assert cfg["runtime"]["version"] == LITERTJS_VERSION == "2.5.3"
    assert cfg["io"]["input"]["shape"] == [1, 8, 8, 1] and cfg["io"]["input"]["dtype"] == "float32"
    assert cfg["labels"] == LABELS
    for rel in cfg["precache"]:
        assert rel == "./" or (bundle / rel).is_file(), rel
    # the runtime is shipped with its licence, and nothing points at a CDN
    assert "Apache License" in (bundle / "litert/LICENSE").read_text()
    assert json.loads((bundle / "litert/package.json").read_text())["version"] == "2.5.3"
    for page in ("index.html", "app.js", "sw.js", "npy.js", "audio.js"):
        text = (bundle / page).read_text()
        assert "http://" not in text and "https://" not in text, page
    # the shipped model is the build's with the batch pinned to 1: same outputs
    shipped = (bundle / "model.tflite").read_bytes()
    assert len(shipped) == len(web_model_bytes) and shipped != web_model_bytes
    assert shipped == static_batch(web_model_bytes)
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    assert np.array_equal(_host_steps(shipped, x), _host_steps(web_model_bytes, x))
    assert verify_manifest(bundle) == []
    ref = np.load(bundle / "reference.npz")
    assert ref["x"].shape == (8, 8, 8, 1)
    assert np.array_equal(ref["expected_q"], _host_steps(shipped, ref["x"]))


def test_web_profile_checks_like_the_pi(web_model_bytes):
    from edgeslim.targets import check_model

    web, pi = load_target("web"), load_target("rpi4")
    assert (web.kind, web.runtime) == ("web", "litert.js")
    assert web.ops == pi.ops  # every builtin op: LiteRT.js's wasm carries TFLite's resolver
    assert web.recipe["build"] == {"stages": ["channels"], "int8_io": False}
    assert web.recipe["channels"] == pi.recipe["channels"]
    assert "QUANTIZE" in web.op_constraints
    result = check_model(web_model_bytes, web)
    assert result.kind == "web" and "CONV_2D" in result.ops


def test_int8_io_model_refused(tmp_path, tiny_cnn_bytes):
    with pytest.raises(TargetError) as exc:
        write_target_files(tmp_path, load_target("web"), model_bytes=tiny_cnn_bytes, fp16_bytes=None,
                           model_name="tiny", labels=None, check=None)
    assert "int8" in exc.value.message and "int8_io = false" in exc.value.hint
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_bad_front_end_refused_before_writing(tmp_path, web_model_bytes):
    with pytest.raises(TargetError, match="audio front end gives 49 x 10 features"):
        write_target_files(tmp_path, load_target("web"), model_bytes=web_model_bytes, fp16_bytes=None,
                           model_name="m", labels=None, check=None, front_end={"audio": "mlperf-tiny-kws"})
    with pytest.raises(TargetError, match="unknown audio front end 'mel'"):
        write_target_files(tmp_path, load_target("web"), model_bytes=web_model_bytes, fp16_bytes=None,
                           model_name="m", labels=None, check=None, front_end={"audio": "mel"})
    assert list(tmp_path.iterdir()) == []


def test_missing_runtime_names_the_setup_step(tmp_path, monkeypatch, web_model_bytes):
    monkeypatch.setenv("EDGESLIM_LITERTJS_DIR", str(tmp_path / "nothing-here"))
    with pytest.raises(TargetError) as exc:
        write_target_files(tmp_path, load_target("web"), model_bytes=web_model_bytes, fp16_bytes=None,
                           model_name="m", labels=None, check=None)
    assert "LiteRT.js 2.5.3" in exc.value.message and "tools/setup.sh" in exc.value.hint


def test_cli_build_without_runtime_fails_before_training(tmp_path, monkeypatch, digits_keras3_path, digits_npz):
    from click.testing import CliRunner

    from edgeslim.cli import cli

    monkeypatch.setenv("EDGESLIM_LITERTJS_DIR", str(tmp_path / "none"))
    r = CliRunner().invoke(cli, ["build", str(digits_keras3_path), "--data", str(digits_npz), "--target", "web",
                                 "-o", str(tmp_path / "out")], obj={"debug": False})
    assert r.exit_code == 2, r.output
    assert "LiteRT.js 2.5.3" in r.output and "tools/setup.sh" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out" / "web").exists()
    # refused up front: no compression stage ran (their progress lines never appeared)
    assert "[channels]" not in r.output and "[distill]" not in r.output


def test_server_mime_types_and_no_listing(server):
    import urllib.error
    import urllib.request

    types = {}
    for rel in ("litert/wasm/litert_wasm_internal.wasm", "model.tflite", "app.js",
                "app.webmanifest", "web.json", "index.html"):
        with urllib.request.urlopen(server.url + rel, timeout=10) as r:
            types[rel] = r.headers["Content-Type"]
    assert types["litert/wasm/litert_wasm_internal.wasm"] == "application/wasm"
    assert types["model.tflite"] == "application/octet-stream"
    assert types["app.js"] == "text/javascript"
    assert types["app.webmanifest"] == "application/manifest+json"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(server.url + "litert/", timeout=10)
    assert exc.value.code == 404


def test_server_speaks_https_with_a_given_certificate(bundle, tmp_path):
    import ssl
    import urllib.request

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    server = make_server(bundle, port=0, certfile=cert, keyfile=key, quiet=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{server.server_address[1]}/web.json"
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            assert json.loads(r.read())["format"] == "edgeslim-web/1"
    finally:
        server.shutdown()
        server.server_close()
        t.join(10)
    with pytest.raises(TargetError, match="cannot use the TLS certificate"):
        make_server(bundle, port=0, certfile=key, keyfile=None)


def test_serve_refuses_a_folder_that_is_not_a_web_bundle(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgeslim.cli", "serve", str(tmp_path), "--port", "0"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2
    assert "not a web bundle: index.html is missing" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- in the browser


def test_page_classifies_and_agrees_with_host_litert(server, bundle, browser, digits, tmp_path, artefacts):
    st = browser.open(server.url)
    assert st["error"] is None and st["ready"], st
    assert browser.text("status").startswith("Ready: digits web")
    # the benchmark panel's check against the reference outputs written by edgeslim
    ag = st["agreement"]
    assert ag["count"] == 8
    assert ag["max_int8_diff"] <= TOLERANCE_STEPS, ag
    assert ag["top1_agree"] == 8 and ag["correct"] >= 7, ag
    assert st["modelSha"] == json.loads((bundle / "web.json").read_text())["model"]["sha256"]
    # N_TEST held-out digits as an .npz (x_test, y_test), as a field worker would give them
    x, y = digits["x_test"][:N_TEST], digits["y_test"][:N_TEST]
    np.savez_compressed(tmp_path / "digits_test.npz", x_test=x, y_test=y)
    st = browser.upload(tmp_path / "digits_test.npz")
    assert st["error"] is None, st["error"]
    res = st["result"]
    assert res["count"] == N_TEST
    page_steps = np.array(res["steps_all"])
    host = _host_steps((bundle / "model.tflite").read_bytes(), x)
    diff = np.abs(page_steps - host)
    assert diff.max() <= TOLERANCE_STEPS, f"max difference {diff.max()} int8 steps"
    assert np.array_equal(np.array(res["predictions"]), host.argmax(1))
    assert res["correct"] / N_TEST >= 0.9, res["correct"]
    assert res["top"][0]["label"] == LABELS[int(host[0].argmax())]
    assert f"{res['correct']} of {N_TEST} match the labels" in browser.text("summary")
    # the page as a field worker sees it after classifying a file: kept as an artefact
    shot = artefacts / "web_bundle_page.png"
    browser.driver.save_screenshot(str(shot))
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape[0] > 500 and img.shape[1] > 500 and img.std() > 10  # a page, not a blank
    # benchmark panel: latency figures exist and are ordered (no speed asserted)
    bench = browser.run("edgeslim.runBenchmark(10, 2)")
    assert bench["runs"] == 10 and 0 < bench["median_ms"] <= bench["p90_ms"]
    assert "median" in browser.text("bench-latency")
    # one .npy sample, same answer as the host
    np.save(tmp_path / "one.npy", x[3])
    st = browser.upload(tmp_path / "one.npy")
    assert st["error"] is None and st["result"]["top"][0]["label"] == LABELS[int(host[3].argmax())]
    # every request went to the loopback server: nothing from a CDN
    origin = server.url.rstrip("/")
    assert all(u.startswith(origin) for u in browser.resource_urls()), browser.resource_urls()


def test_build_for_web_runs_in_the_browser(tmp_path, digits_keras3_path, digits_npz, browser):
    """The whole path: edgeslim.build(--target web) with the profile's recipe minus its
    compression stage (plain int8 keeps the test fast), then the bundle in Chromium."""
    from edgeslim.pipeline import build

    result = build(digits_keras3_path, digits_npz, target="web", recipe={"build": {"stages": []}},
                   out=tmp_path / "out")
    bundle = Path(result.bundle_dir)
    cfg = json.loads((bundle / "web.json").read_text())
    assert cfg["io"]["input"]["dtype"] == "float32"  # the profile's int8_io = false reached the converter
    assert cfg["reference"]["kind"] == "samples" and cfg["reference"]["count"] == 8
    assert verify_manifest(bundle) == []
    srv = ServerThread(bundle)
    try:
        st = browser.open(srv.url)
    finally:
        srv.stop()
    assert st["ready"] and st["error"] is None, st
    ag = st["agreement"]
    assert ag["max_int8_diff"] <= TOLERANCE_STEPS and ag["top1_agree"] == 8 and ag["correct"] >= 7, ag


def test_image_input_uses_the_stated_front_end(server, browser, digits, tmp_path):
    from PIL import Image

    st = browser.open(server.url)
    assert st["ready"], st
    # a digit as a light-on-dark 8x8 PNG: the front end maps 0..255 onto the input range [0, 1]
    i = 5
    img = (np.clip(digits["x_test"][i, :, :, 0], 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(img, "L").save(tmp_path / "digit.png")
    st = browser.upload(tmp_path / "digit.png", element_id="image-file")
    assert st["error"] is None, st["error"]
    assert st["result"]["top"][0]["label"] == LABELS[int(digits["y_test"][i])]


def test_bad_input_files_show_a_clear_message(server, browser, tmp_path):
    st = browser.open(server.url)
    assert st["ready"], st
    np.save(tmp_path / "wrong_shape.npy", np.zeros((3, 28, 28), np.float32))
    st = browser.upload(tmp_path / "wrong_shape.npy")
    assert "wrong_shape.npy: an array of shape (3, 28, 28) does not fit the model's input (8, 8, 1)" in st["error"]
    assert browser.visible("error") and "does not fit" in browser.text("error")
    (tmp_path / "garbage.npy").write_bytes(b"this is not numpy at all" * 10)
    st = browser.upload(tmp_path / "garbage.npy")
    assert "garbage.npy: not a NumPy .npy array" in st["error"]
    np.savez(tmp_path / "other.npz", audio=np.zeros((2, 16000), np.float32))
    st = browser.upload(tmp_path / "other.npz")
    assert "no array fits the model's input (8, 8, 1)" in st["error"] and "audio (2, 16000)" in st["error"]
    (tmp_path / "photo.png").write_bytes(b"\x89PNG broken")
    st = browser.upload(tmp_path / "photo.png", element_id="image-file")
    assert "photo.png is not a picture this browser can read" in st["error"]


def test_bad_model_shows_a_clear_message(bundle, browser, tmp_path):
    # a damaged copy: model.tflite no longer matches web.json
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    model = bytearray((damaged / "model.tflite").read_bytes())
    model[len(model) // 2] ^= 0xFF
    (damaged / "model.tflite").write_bytes(bytes(model))
    # not a model at all, with a web.json that expects it (a wrong file given to the writer)
    junk = tmp_path / "junk"
    shutil.copytree(bundle, junk)
    (junk / "model.tflite").write_bytes(b"not a flatbuffer" * 64)
    cfg = json.loads((junk / "web.json").read_text())
    import hashlib

    cfg["model"]["sha256"] = hashlib.sha256((junk / "model.tflite").read_bytes()).hexdigest()
    (junk / "web.json").write_text(json.dumps(cfg))
    for folder, expected in ((damaged, "is not the model this page was built for"),
                             (junk, "LiteRT.js cannot load model.tflite")):
        srv = ServerThread(folder)
        try:
            st = browser.open(srv.url)
        finally:
            srv.stop()
        assert not st["ready"] and expected in st["error"], st
        assert browser.visible("error") and expected in browser.text("error")
        assert browser.text("status") == "Not running"


def _start_serve(bundle: Path) -> tuple[subprocess.Popen, str]:
    """`edgeslim serve BUNDLE --port 0` as a child process; returns it and its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "edgeslim.cli", "serve", str(bundle), "--port", "0", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.monotonic() + 30
    line = b""
    while time.monotonic() < deadline and b"\n" not in line:
        r, _, _ = select.select([proc.stdout], [], [], 0.5)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
    text = line.decode()
    if "serving" not in text:
        proc.kill()
        raise RuntimeError(f"edgeslim serve did not start: {text!r}")
    return proc, text.split(" at ", 1)[1].split()[0]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


def test_service_worker_serves_everything_with_the_server_stopped(bundle, browser, tmp_path):
    proc, url = _start_serve(bundle)
    try:
        assert url.startswith("http://127.0.0.1:")
        st = browser.open(url)
        assert st["ready"], st
        st = browser.wait(lambda s: s["offline"] is not None, 30, "the service worker")
        assert st["offline"] == "ready", st
        n_files = len(json.loads((bundle / "web.json").read_text())["precache"])
        assert f"all {n_files} files are stored" in browser.text("offline")
    finally:
        _stop(proc)
    host, port = url.split("//")[1].rstrip("/").split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()
    st = browser.open(url)  # the server is gone: everything comes from the service worker
    assert st["ready"] and st["error"] is None, st
    assert st["controlled"]
    assert st["agreement"]["max_int8_diff"] <= TOLERANCE_STEPS
    np.save(tmp_path / "one.npy", np.load(bundle / "reference.npz")["x"][1])
    st = browser.upload(tmp_path / "one.npy")
    assert st["error"] is None and st["result"]["count"] == 1


def test_file_url_says_what_it_can_do(bundle, browser):
    """Documented (docs/web.md): Chromium refuses module scripts and fetch() from
    file:// pages, so the page cannot run the model there and says so."""
    browser.driver.get((bundle / "index.html").resolve().as_uri())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not browser.visible("error"):
        time.sleep(0.1)
    assert browser.visible("file-note")
    assert "Opened from a file (file://)" in browser.text("file-note")
    assert "edgeslim serve" in browser.text("file-note")
    assert "refused to load app.js from a file:// page" in browser.text("error")
    assert browser.text("status") == "Not running"


# --------------------------------------------------------------------------- sound


def _tf_mfcc(clip: np.ndarray) -> np.ndarray:
    """The stated front end (AUDIO_FRONT_ENDS["mlperf-tiny-kws"]) with TensorFlow's own ops."""
    from edgeslim._tf import tf

    spec = tf.abs(tf.signal.stft(clip, 480, 320, 512, window_fn=tf.signal.hann_window))
    mel = tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 4000.0)
    log_mel = tf.math.log(tf.tensordot(spec, mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10].numpy()


@pytest.fixture(scope="module")
def kws_bundle(tmp_path_factory):
    """A small keyword-shaped model (input (49, 10, 1) MFCCs, 12 classes), its weights
    seeded, not trained (what is tested is the front end and the runtime, not accuracy),
    int8 with float I/O, bundled with the MLPerf Tiny KWS front end."""
    from edgeslim._tf import keras
    from edgeslim.convert import to_int8_tflite

    keras.utils.set_random_seed(7)
    inp = keras.Input((49, 10, 1))
    x = keras.layers.Conv2D(16, (10, 4), strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(12, activation="softmax")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(7)
    calib = (rng.standard_normal((64, 49, 10, 1)) * np.array([30, 7, 7, 3.5, 2.3, 1.9, 1.5, 1.3, 1.2, 1.1])[None, None, :, None]
             - np.array([16] + [0] * 9)[None, None, :, None]).astype(np.float32)
    model_bytes = to_int8_tflite(model, calib, int8_io=False)
    d = tmp_path_factory.mktemp("web_kws")
    (d / "model.tflite").write_bytes(model_bytes)
    labels = ["silence", "unknown"] + LABELS
    write_target_files(d, load_target("web"), model_bytes=model_bytes, fp16_bytes=None, model_name="kws web",
                       labels=labels, check=None, reference=calib[:8], front_end={"audio": "mlperf-tiny-kws"})
    return d


def _write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> np.ndarray:
    import wave

    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return pcm.astype(np.float32) / 32768.0  # what a WAV decoder gives back


def test_sound_file_goes_through_the_stated_front_end(kws_bundle, browser, tmp_path):
    """A 0.75 s WAV (a chirp in noise) -> MFCCs in the page == TensorFlow's tf.signal
    front end on the same samples (tolerance 2e-3 absolute, float32 vs float64 FFTs;
    features span about +-100), and the outputs within TOLERANCE_STEPS of host LiteRT
    on TensorFlow's features."""
    cfg = json.loads((kws_bundle / "web.json").read_text())
    assert cfg["front_end"]["audio"]["frame_length"] == 480 and cfg["front_end"]["audio"]["coefficients"] == 10
    rng = np.random.default_rng(3)
    t = np.arange(12000) / 16000
    sound = 0.4 * np.sin(2 * np.pi * (300 * t + 1800 * t * t)) * np.hanning(len(t)) + 0.01 * rng.standard_normal(len(t))
    decoded = _write_wav(tmp_path / "word.wav", sound)
    clip = np.zeros(16000, np.float32)
    clip[(16000 - len(decoded)) // 2:][:len(decoded)] = decoded  # centred, as the page does
    want = _tf_mfcc(clip)
    srv = ServerThread(kws_bundle)
    try:
        st = browser.open(srv.url)
        assert st["ready"], st
        assert browser.visible("sound-file") and browser.visible("record")
        st = browser.upload(tmp_path / "word.wav", element_id="sound-file")
        assert st["error"] is None, st["error"]
        feats = np.array(browser.driver.execute_script("return edgeslim.features")).reshape(49, 10)
        assert np.abs(feats - want).max() < 2e-3, np.abs(feats - want).max()
        host = _host_steps((kws_bundle / "model.tflite").read_bytes(), want[None, :, :, None])
        assert np.abs(np.array(st["result"]["steps_all"]) - host).max() <= TOLERANCE_STEPS
        (tmp_path / "noise.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
        st = browser.upload(tmp_path / "noise.wav", element_id="sound-file")
        assert "noise.wav is not a sound file this browser can decode" in st["error"]
    finally:
        srv.stop()


def test_microphone_records_and_classifies(kws_bundle, tmp_path):
    """Chromium's fake capture device plays a WAV as the microphone (no sound hardware
    here): one second is recorded, resampled to 16 kHz, turned into MFCCs, classified."""
    t = np.arange(16000) / 16000
    _write_wav(tmp_path / "mic.wav", 0.3 * np.sin(2 * np.pi * 440 * t))
    b = Browser(tmp_path / "profile", extra_args=["--use-fake-device-for-media-stream",
                                                  "--use-fake-ui-for-media-stream",
                                                  f"--use-file-for-fake-audio-capture={tmp_path / 'mic.wav'}"])
    srv = ServerThread(kws_bundle)
    try:
        st = b.open(srv.url)
        assert st["ready"], st
        b.driver.execute_script("edgeslim.result = null; edgeslim.error = null;")
        b.driver.find_element("id", "record").click()
        st = b.wait(lambda s: s["result"] is not None or s["error"], 30, "the recording")
        assert st["error"] is None, st["error"]
        assert st["result"]["source"].startswith("microphone") and st["result"]["count"] == 1
        feats = np.array(b.driver.execute_script("return edgeslim.features")).reshape(49, 10)
        # a 440 Hz tone was captured, not silence: the first coefficient (the mean log mel
        # energy) is far above what an all-zero second gives (log(1e-6) in every bin)
        silent = _tf_mfcc(np.zeros(16000, np.float32))
        assert feats[:, 0].mean() > silent[:, 0].mean() + 50
    finally:
        srv.stop()
        b.quit()
