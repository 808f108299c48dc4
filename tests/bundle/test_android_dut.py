"""The Android bundle's protocol server (DutServer.kt), compiled with kotlinc and run on the
JVM: `edgeslim bench` against it over TCP (bit-exact, the model's hash checked, a different
model refused), and its replies equal to the Python reference engine's (edgeslim/harness/dut.py)
on the same byte streams, faults included.

No phone and no Android SDK or LiteRT for Android exist here, so the model behind the server
is a stated fake (tests/bundle/android_jvm/ReplayMain.kt.in): it replays the outputs host
LiteRT computed for the same inputs. Everything else (framing, commands, errors, hashing,
the TCP server) is the shipped Kotlin. EdgeslimDut.kt (LiteRT on Android) is not compiled.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgeslim.bundle import write_target_files
from edgeslim.bundle.manifest import write_manifest
from edgeslim.errors import DeviceError
from edgeslim.harness.dut import DutEngine
from edgeslim.targets import load_target

HERE = Path(__file__).parent
PROFILE = "edgeslim-android test (JVM replay)"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_cnn_bytes, tiny_cnn_fp16_bytes):
    d = tmp_path_factory.mktemp("android_dut")
    (d / "model.tflite").write_bytes(tiny_cnn_bytes)
    target = load_target("android")
    write_target_files(d, target, model_bytes=tiny_cnn_bytes, fp16_bytes=tiny_cnn_fp16_bytes,
                       model_name="tiny cnn", labels=["zero", "one", "two"], check=None)
    write_manifest(d, target=target, model_path=d / "model.tflite", extra={})
    return d


@pytest.fixture(scope="module")
def dut_jar(bundle, tmp_path_factory):
    """The bundle's DutServer.kt and the test's replay model, compiled into one jar."""
    kotlinc = shutil.which("kotlinc")
    assert kotlinc, "kotlinc is missing: tools/setup.sh installs Debian's kotlin package"
    src = bundle / "android" / "edgeslim-model" / "src" / "main" / "kotlin" / "ai" / "edgeslim" / "tiny_cnn"
    work = tmp_path_factory.mktemp("kotlin")
    replay = (HERE / "android_jvm" / "ReplayMain.kt.in").read_text().replace("PACKAGE", "ai.edgeslim.tiny_cnn")
    (work / "ReplayMain.kt").write_text(replay)
    jar = work / "dut.jar"
    proc = subprocess.run([kotlinc, str(src / "DutServer.kt"), str(work / "ReplayMain.kt"),
                           "-include-runtime", "-d", str(jar)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0 and jar.is_file(), proc.stderr
    assert not re.search(r"\.kt:\d+:\d+: warning", proc.stderr), proc.stderr  # compiles cleanly
    return jar


@pytest.fixture(scope="module")
def replay(bundle, tiny_cnn_bytes, litert_outputs, tmp_path_factory):
    """Labelled float inputs, their int8 form, host LiteRT's outputs for them (the replay
    table), and the output quantization."""
    from edgeslim.evaluate import io_details

    rng = np.random.default_rng(11)
    x = rng.standard_normal((16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    d = tmp_path_factory.mktemp("replay")
    np.savez(d / "d.npz", x_test=x, y_test=y)
    qin, qout = io_details(tiny_cnn_bytes)
    xq = qin.quantize(x)
    out = litert_outputs(tiny_cnn_bytes, xq)
    table = d / "table.txt"
    table.write_text("".join(f"{a.tobytes().hex()} {b.tobytes().hex()}\n" for a, b in zip(xq, out)))
    return {"npz": d / "d.npz", "xq": xq, "out": out, "table": table, "scale": float(qout.scale),
            "zero_point": int(qout.zero_point), "input_bytes": int(xq[0].size)}


class JvmServer:
    """`java -cp dut.jar ...ReplayMainKt` on a free port; killed (its process group) on stop()."""

    def __init__(self, jar, model_file, replay):
        self.proc = subprocess.Popen(
            ["java", "-Xshare:auto", "-cp", str(jar), "ai.edgeslim.tiny_cnn.ReplayMainKt", "0",
             str(model_file), str(replay["table"]), str(replay["input_bytes"]), repr(replay["scale"]),
             str(replay["zero_point"])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            self.port = self._port()
        except BaseException:
            self.stop()
            raise

    def _port(self, timeout=60):
        deadline, out, fd = time.monotonic() + timeout, b"", self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                data = os.read(fd, 4096)
                if not data:
                    break
                out += data
                m = re.search(rb"serving tcp 127\.0\.0\.1:(\d+)", out)
                if m:
                    return int(m.group(1))
        raise AssertionError(f"the JVM server did not start: {out.decode(errors='replace')}")

    @property
    def url(self):
        return f"socket://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def server(dut_jar, bundle, replay):
    s = JvmServer(dut_jar, bundle / "model.tflite", replay)
    yield s
    s.stop()


@pytest.mark.timeout(300)
def test_bench_against_the_kotlin_server(bundle, server, replay):
    """edgeslim bench over TCP: the device's hash matches the bundle's, every output bit-exact
    with host LiteRT, the counter is the phone's nanoTime clock, bench.json written."""
    from edgeslim.harness.bench import run_bench

    r = run_bench(bundle, server.url, data=replay["npz"], n=12, warmup=1, runs=2, timeout=10)
    assert r["complete"] is True and r["error"] is None and r["reference"] == "litert"
    assert r["bundle"]["kind"] == "android"
    assert r["device"]["info"]["sha256"] == hashlib.sha256((bundle / "model.tflite").read_bytes()).hexdigest()
    assert r["device"]["info"]["counter"] == "nanoTime" and str(r["device"]["info"]["arena"]) == "0"
    assert r["agreement"]["bit_exact"] == 12 and r["agreement"]["max_abs_diff"] == 0
    assert r["agreement"]["top1_agreement"] == 1.0
    assert r["latency_us"]["min"] >= 0 and r["measured"] == 12
    assert (bundle / "bench.json").is_file()
    (bundle / "bench.json").unlink()


@pytest.mark.timeout(300)
def test_bench_refuses_a_different_model(bundle, dut_jar, replay, tmp_path):
    """The server hashes the bytes it loaded: a bundle with another model is refused, both hashes shown."""
    from edgeslim.harness.bench import run_bench

    other = tmp_path / "other.tflite"
    data = bytearray((bundle / "model.tflite").read_bytes())
    data[-1] ^= 0xFF
    other.write_bytes(bytes(data))
    s = JvmServer(dut_jar, other, replay)
    try:
        with pytest.raises(DeviceError) as err:
            run_bench(bundle, s.url, n=2, timeout=10)
    finally:
        s.stop()
    assert hashlib.sha256(bytes(data)).hexdigest() in err.value.message
    assert hashlib.sha256((bundle / "model.tflite").read_bytes()).hexdigest() in err.value.message
    assert not (bundle / "bench.json").exists()


def _python_engine(bundle, replay):
    """The reference engine with the same replayed model, clock-free (lap lines are masked)."""
    table = {a.tobytes(): b.tobytes() for a, b in zip(replay["xq"], replay["out"])}
    scale, zp = replay["scale"], replay["zero_point"]

    def infer(data):
        raw = table[bytes(data)]
        return raw, [float(v) for v in (np.frombuffer(raw, np.int8).astype(np.float32) - zp) * scale]

    sha = hashlib.sha256((bundle / "model.tflite").read_bytes()).hexdigest()
    return DutEngine(name="edgeslim", profile=PROFILE, model="replay", input_bytes=replay["input_bytes"],
                     infer=infer, clock_us=lambda: 0,
                     info={"sha256": sha, "arena": 0, "clock": 1000000, "counter": "nanoTime"})


def _talk(port, payload, n_ready, timeout=20.0):
    """Connect, skip the boot lines, send ``payload`` at once, read lines up to the
    ``n_ready``-th ``m-ready``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        buf, deadline = b"", time.monotonic() + timeout
        lines = []

        def read_until(count):
            nonlocal buf
            got = []
            while sum(1 for ln in got if ln == "m-ready") < count:
                if b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    got.append(line.decode("ascii"))
                    continue
                assert time.monotonic() < deadline, f"timed out; so far {got}"
                chunk = s.recv(65536)
                assert chunk, f"server closed the connection; so far {got}"
                buf += chunk
            return got

        boot = read_until(1)
        assert boot[0] == "m-timestamp-mode-performance" and boot[-2:] == ["m-init-done", "m-ready"]
        s.sendall(payload)
        lines = read_until(n_ready)
    return lines


def _mask(lines):
    return [re.sub(r"^m-lap-us-\d+$", "m-lap-us-T", ln) for ln in lines]


def _scripts(replay):
    x0, x1 = replay["xq"][0].tobytes(), replay["xq"][1].tobytes()
    n = replay["input_bytes"]

    def load(x):
        return f"db load {n}%".encode() + b"".join(f"db {x[i:i + 31].hex()}%".encode() for i in range(0, n, 31))

    return {
        "worked-transcript": b"name%profile%" + load(x0) + b"db print%infer 10 1%bogus%results%results hex%info%timestamp%",
        "two-inputs": load(x0) + b"infer 2 0%results hex%" + load(x1) + b"infer%results%",
        "errors": (b"results%infer%db 0%db load 0%db load 5%db load -3%infer x%infer 1 -1%infer 1 2 3%"
                   + f"db load {n}%".encode() + b"db 0g%db " + b"00" * 36 + b"%" + b"db 0102%infer%"
                   + b"results hex%%   %name extra%db print%"),
        "garbage": b"nam\x00\xff\xfe" + b"name%" + b"\x01" + b"x\x80y%" + b"\r\nname%\n",
        "oversize": b"db " + b"00" * 60 + b"0000%name%" + b"x" * 79 + b"%" + b"y" * 200 + b"%info%",
    }


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", ["worked-transcript", "two-inputs", "errors", "garbage", "oversize"])
def test_replies_equal_the_python_engine(bundle, dut_jar, replay, script):
    """A fresh server (the engine keeps its buffer across clients) and a fresh Python engine
    get the same bytes in one write: the same reply lines, lap times masked."""
    payload = _scripts(replay)[script]
    want = _python_engine(bundle, replay).feed(payload)
    fresh = JvmServer(dut_jar, bundle / "model.tflite", replay)
    try:
        got = _talk(fresh.port, payload, n_ready=want.count("m-ready"))
    finally:
        fresh.stop()
    assert _mask(got) == _mask(want)
    errors = sum(ln.startswith("e-[") for ln in want)
    assert errors == {"worked-transcript": 1, "two-inputs": 0}.get(script, errors) and (errors > 0) == (script != "two-inputs")
