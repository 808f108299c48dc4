"""The Raspberry Pi agent's `serve`: the MLPerf Tiny protocol over TCP and over a
pseudo-terminal, outputs equal to the host LiteRT's, faults answered with e- lines,
and `edgeslim bench` against it (library and CLI): bit-exact, partial results when
the agent dies, refusal of a different model."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeslim.bundle import write_target_files
from edgeslim.bundle.manifest import write_manifest
from edgeslim.errors import DeviceError
from edgeslim.harness.protocol import DutClient
from edgeslim.targets import load_target


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_cnn_bytes):
    d = tmp_path_factory.mktemp("rpi_serve")
    (d / "model.tflite").write_bytes(tiny_cnn_bytes)
    target = load_target("rpi")
    write_target_files(d, target, model_bytes=tiny_cnn_bytes, fp16_bytes=None,
                       model_name="tiny cnn", labels=["zero", "one", "two"], check=None)
    write_manifest(d, target=target, model_path=d / "model.tflite", extra={})
    return d


class Agent:
    """`agent.py serve` as a child process; killed (the whole process group) on stop()."""

    def __init__(self, bundle_dir, *args, python=sys.executable):
        self.proc = subprocess.Popen([str(python), str(bundle_dir / "agent.py"), "serve", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            self.banner = self._wait_for("serving")
        except BaseException:
            self.stop()  # an agent that failed to start is not left behind
            raise

    def _wait_for(self, word, timeout=60):
        deadline = time.monotonic() + timeout
        out = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                data = os.read(fd, 4096)
                if not data:
                    break
                out += data
                for line in out.decode(errors="replace").splitlines():
                    if word in line:
                        return line
        raise AssertionError(f"agent did not start: {out.decode(errors='replace')}")

    @property
    def port(self):
        return int(re.search(r"tcp 127\.0\.0\.1:(\d+)", self.banner).group(1))

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.fixture
def tcp_agent(bundle):
    agent = Agent(bundle, "--tcp", "0")  # port 0: the agent takes a free port and prints it
    try:
        yield agent
    finally:
        agent.stop()


class PtyLink:
    """The host end (master) of a pseudo-terminal pair, with pyserial's read/write/close."""

    def __init__(self, fd, name):
        self.fd, self.name = fd, name

    def read(self, n):
        r, _, _ = select.select([self.fd], [], [], 0.05)
        if not r:
            return b""
        try:
            return os.read(self.fd, max(n, 1))
        except OSError:  # EIO: the agent closed the slave
            return None

    def write(self, b):
        os.write(self.fd, b)

    def close(self):
        os.close(self.fd)


def send(client, text):
    """Send raw bytes; collect reply lines up to m-ready."""
    client.link.write(text if isinstance(text, bytes) else text.encode("ascii"))
    deadline = time.monotonic() + 10
    lines = []
    while True:
        line = client._readline("raw", deadline, 10)
        if line == "m-ready":
            return lines
        lines.append(line)


@pytest.mark.timeout(120)
def test_tcp_transcript_and_faults(bundle, tcp_agent, tiny_cnn_bytes, litert_outputs):
    """The worked transcript's command sequence, with the model's real 64-byte input,
    reply shapes checked exactly; then garbage and an oversize line."""
    x = np.random.default_rng(5).integers(-128, 128, size=(1, 8, 8, 1), dtype=np.int8)
    want = litert_outputs(tiny_cnn_bytes, x)[0]
    with DutClient(f"socket://127.0.0.1:{tcp_agent.port}", timeout=10) as c:
        assert send(c, "name%") == ["m-name-dut-[edgeslim]"]
        assert send(c, "db load 64%") == ["m-[Expecting 64 bytes]"]
        data = x.tobytes()
        assert send(c, f"db {data[:31].hex()}%") == []
        assert send(c, f"db {data[31:62].hex()}%") == []
        assert send(c, f"db {data[62:].hex()}%") == ["m-load-done"]
        dump = send(c, "db print%")
        assert len(dump) == 8 and all(re.fullmatch(r"m-buffer(-[0-9a-f]{2}){8}", l) for l in dump)
        assert dump[0] == "m-buffer-" + "-".join(f"{b:02x}" for b in data[:8])
        lines = send(c, "infer 10 1%")
        assert lines[:3] == ["m-warmup-start-1", "m-warmup-done", "m-infer-start-10"]
        assert re.fullmatch(r"m-lap-us-\d+", lines[3]) and re.fullmatch(r"m-lap-us-\d+", lines[4])
        assert int(lines[4][9:]) > int(lines[3][9:])
        assert lines[5] == "m-infer-done" and len(lines) == 7
        values = [float(v) for v in re.fullmatch(r"m-results-\[(.*)\]", lines[6]).group(1).split(",")]
        assert all(re.fullmatch(r"-?\d+\.\d{3}", v) for v in lines[6][11:-1].split(","))
        scale, zero = 1 / 256, -128  # softmax output quantization
        np.testing.assert_allclose(values, (want.astype(float) - zero) * scale, atol=0.0005)
        assert send(c, "results hex%") == [f"m-results-hex-[{want.tobytes().hex()}]"]
        assert send(c, "bogus%") == ["e-[Unknown command: bogus]"]
        # faults: garbage bytes, an oversize line; the next command works each time
        assert send(c, b"\x00\xff\xfe\x80") == ["e-[Invalid byte 0x00 in command; discarded]"]
        assert send(c, "name%") == ["m-name-dut-[edgeslim]"]
        assert send(c, "db " + "ab" * 50 + "%") == ["e-[Command too long: more than 80 characters with the %]"]
        assert send(c, "name%") == ["m-name-dut-[edgeslim]"]
        assert c.info()["sha256"] == json.loads((bundle / "manifest.json").read_text())["model"]["sha256"]
    assert tcp_agent.proc.poll() is None  # the agent survived all of it


@pytest.mark.timeout(120)
def test_pty_serial_outputs_equal_host(bundle, tiny_cnn_bytes, litert_outputs):
    """`serve --serial` on the slave of a pty pair; the host talks through the master."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    agent = Agent(bundle, "--serial", path)
    os.close(slave)  # the agent holds its own descriptor now
    try:
        x = np.random.default_rng(6).integers(-128, 128, size=(6, 8, 8, 1), dtype=np.int8)
        want = litert_outputs(tiny_cnn_bytes, x)
        with DutClient(PtyLink(master, path), timeout=10) as c:
            got = []
            for i in range(len(x)):
                c.load(x[i].tobytes())
                assert c.db_print() == x[i].tobytes()
                c.infer(1, 0)
                got.append(np.frombuffer(c.results_hex(), dtype=np.int8))
            np.testing.assert_array_equal(np.stack(got), want)
            # two runs of bad bytes: two errors, the printable bytes between them dropped
            assert send(c, b"\x01garbage\x02") == ["e-[Invalid byte 0x01 in command; discarded]"]
            assert send(c, b"") == ["e-[Invalid byte 0x02 in command; discarded]"]
            assert c.name() == "edgeslim"
    finally:
        agent.stop()


@pytest.mark.timeout(180)
def test_bench_library_bit_exact_with_data(bundle, tcp_agent, tiny_cnn_bytes, tmp_path, litert_outputs):
    """Labelled float data, quantized by bench: every output bit-exact with host LiteRT."""
    from edgeslim.evaluate import io_details
    from edgeslim.harness.bench import run_bench

    rng = np.random.default_rng(7)
    x = rng.standard_normal((20, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    np.savez(tmp_path / "d.npz", x_test=x, y_test=y)
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file() and p.name != "bench.json"}
    seen = []
    r = run_bench(bundle, f"socket://127.0.0.1:{tcp_agent.port}", data=tmp_path / "d.npz", n=15,
                  warmup=0, timeout=10, on_input=lambda done, total: seen.append((done, total)))
    assert r["complete"] is True and r["error"] is None and r["reference"] == "litert"
    assert r["measured"] == 15 and seen[-1] == (15, 15) and len(r["per_input"]) == 15
    assert r["agreement"]["bit_exact"] == 15 and r["agreement"]["max_abs_diff"] == 0
    assert r["agreement"]["top1_agreement"] == 1.0
    qin, _ = io_details(tiny_cnn_bytes)
    host_top = litert_outputs(tiny_cnn_bytes, qin.quantize(x[:15])).argmax(axis=1)
    assert r["agreement"]["accuracy_device"] == pytest.approx(np.mean(host_top == y[:15]))
    lat = r["latency_us"]
    assert 0 <= lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] and lat["min"] <= lat["mean"]
    assert r["link"]["us_per_input"] > lat["mean"]
    assert r["device"]["info"]["counter"] == "perf_counter_ns"
    on_disk = json.loads((bundle / "bench.json").read_text())
    assert on_disk["agreement"] == r["agreement"] and on_disk["complete"] is True
    # the user's files are untouched; only bench.json is new
    after = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file() and p.name != "bench.json"}
    assert after == before
    (bundle / "bench.json").unlink()


@pytest.mark.timeout(180)
def test_bench_cli_random_inputs(bundle, tcp_agent):
    from click.testing import CliRunner

    from edgeslim.cli import cli

    res = CliRunner().invoke(cli, ["bench", str(bundle), "--port", f"socket://127.0.0.1:{tcp_agent.port}",
                                   "-n", "8", "--warmup", "2", "--runs", "3", "--timeout", "10"], obj={"debug": False})
    assert res.exit_code == 0, res.output
    assert "bit-exact vs litert" in res.output and "8 / 8" in res.output and "latency median" in res.output
    r = json.loads((bundle / "bench.json").read_text())
    assert r["inputs"] == {"source": "random (seed 0)", "count": 8, "warmup_per_input": 2, "runs_per_input": 3}
    assert r["agreement"]["bit_exact"] == 8
    (bundle / "bench.json").unlink()


@pytest.mark.timeout(180)
def test_bench_agent_killed_mid_run_keeps_partial_results(bundle, tmp_path):
    """The agent is killed after a few inputs: a DeviceError saying so, a partial bench.json."""
    from edgeslim.harness.bench import run_bench

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    agent = Agent(copy, "--tcp", "0")
    try:
        def kill_after_5(done, total):
            if done == 5:
                os.killpg(agent.proc.pid, signal.SIGKILL)

        with pytest.raises(DeviceError) as err:
            run_bench(copy, f"socket://127.0.0.1:{agent.port}", n=20, warmup=0, timeout=5,
                      on_input=kill_after_5)
        assert "dropped during" in err.value.message
        assert "5 of 20 inputs were measured" in err.value.hint and "bench.json" in err.value.hint
        r = json.loads((copy / "bench.json").read_text())
        assert r["complete"] is False and r["measured"] == 5 and "dropped" in r["error"]
        assert r["agreement"]["bit_exact"] == 5
    finally:
        agent.stop()


@pytest.mark.timeout(180)
def test_bench_refuses_a_different_model(bundle, tcp_agent, tmp_path):
    """A bundle whose model.tflite differs from the one the agent loaded: refused, both hashes shown."""
    from click.testing import CliRunner

    from edgeslim.cli import cli
    from edgeslim.harness.bench import run_bench

    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    data = bytearray((other / "model.tflite").read_bytes())
    data[-1] ^= 0xFF  # still loads host-side: the last byte is padding in the flatbuffer
    (other / "model.tflite").write_bytes(bytes(data))
    agent_sha = json.loads((bundle / "manifest.json").read_text())["model"]["sha256"]
    import hashlib

    other_sha = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(DeviceError) as err:
        run_bench(other, f"socket://127.0.0.1:{tcp_agent.port}", n=2, timeout=10)
    assert agent_sha in err.value.message and other_sha in err.value.message
    assert not (other / "bench.json").exists()
    res = CliRunner().invoke(cli, ["bench", str(other), "--port", f"socket://127.0.0.1:{tcp_agent.port}",
                                   "-n", "2"], obj={"debug": False})
    assert res.exit_code == 2 and "different model" in res.output


@pytest.mark.timeout(60)
def test_bench_silent_port_times_out(bundle):
    """A port where something listens but never answers: a clear timeout naming the command."""
    import socket

    from edgeslim.harness.bench import run_bench

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        with pytest.raises(DeviceError, match=r"no complete reply to name% within 0.5 s"):
            run_bench(bundle, f"socket://127.0.0.1:{srv.getsockname()[1]}", n=1, timeout=0.5)
    finally:
        srv.close()


@pytest.mark.timeout(300)
def test_bench_mcu_bundle_uses_tflite_micro_as_reference(bundle, tcp_agent, tiny_cnn_bytes, tmp_path, litert_outputs):
    """A bundle of kind "mcu" is compared with TFLite Micro, not LiteRT. The agent runs
    LiteRT, so bench's bit-exact count must equal LiteRT-vs-TFLM agreement computed here
    (measured on this model: 49 of 50 random inputs equal, one differs by 1 LSB)."""
    from edgeslim import micro
    from edgeslim.harness.bench import run_bench

    mcu = tmp_path / "mcu"
    shutil.copytree(bundle, mcu)
    manifest = json.loads((mcu / "manifest.json").read_text())
    manifest["target"]["kind"] = "mcu"
    (mcu / "manifest.json").write_text(json.dumps(manifest))
    r = run_bench(mcu, f"socket://127.0.0.1:{tcp_agent.port}", n=30, warmup=0, timeout=10, seed=11)
    assert r["reference"] == "tflite-micro"
    x = np.random.default_rng(11).integers(-128, 128, size=(30, 8, 8, 1), dtype=np.int8)
    litert, tflm = litert_outputs(tiny_cnn_bytes, x).astype(int), np.asarray(micro.run(tiny_cnn_bytes, x)).astype(int)
    assert r["agreement"]["bit_exact"] == int(np.sum(np.all(litert == tflm, axis=1)))
    assert r["agreement"]["max_abs_diff"] == int(np.abs(litert - tflm).max())


@pytest.mark.timeout(900)
def test_serve_with_tflite_runtime_and_old_numpy(bundle, tflite_runtime_python):
    """The agent on an older Pi OS image (tflite-runtime 2.14, numpy < 2) serves the protocol;
    bench reports its agreement with host LiteRT. Tolerance as in test_rpi.py: tflite-runtime
    2.14's int8 kernels may differ by 1 LSB from ai-edge-litert's."""
    from edgeslim.harness.bench import run_bench

    agent = Agent(bundle, "--tcp", "0", python=tflite_runtime_python)
    try:
        r = run_bench(bundle, f"socket://127.0.0.1:{agent.port}", n=12, warmup=0, timeout=10, seed=3)
        assert "tflite-runtime" in r["device"]["profile"] and r["complete"] is True
        assert r["agreement"]["compared"] == 12 and r["agreement"]["max_abs_diff"] <= 1
        assert r["agreement"]["bit_exact"] >= 9
    finally:
        agent.stop()
        (bundle / "bench.json").unlink(missing_ok=True)
