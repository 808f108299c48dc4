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


def host_raw(model_bytes, x):
    """LiteRT on the host, one sample at a time: the raw int8 outputs."""
    from ai_edge_litert.interpreter import Interpreter

    ip = Interpreter(model_content=model_bytes)
    ip.allocate_tensors()
    i, o = ip.get_input_details()[0]["index"], ip.get_output_details()[0]["index"]
    out = []
    for n in range(len(x)):
        ip.set_tensor(i, x[n:n + 1])
        ip.invoke()
        out.append(ip.get_tensor(o)[0].copy())
    return np.stack(out)


class Agent:
    """`agent.py serve` as a child process; killed (the whole process group) on stop()."""

    def __init__(self, bundle_dir, *args):
        self.proc = subprocess.Popen([sys.executable, str(bundle_dir / "agent.py"), "serve", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.banner = self._wait_for("serving")

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
def test_tcp_transcript_and_faults(bundle, tcp_agent, tiny_cnn_bytes):
    """The worked transcript's command sequence, with the model's real 64-byte input,
    reply shapes checked exactly; then garbage and an oversize line."""
    x = np.random.default_rng(5).integers(-128, 128, size=(1, 8, 8, 1), dtype=np.int8)
    want = host_raw(tiny_cnn_bytes, x)[0]
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
def test_pty_serial_outputs_equal_host(bundle, tiny_cnn_bytes):
    """`serve --serial` on the slave of a pty pair; the host talks through the master."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    agent = Agent(bundle, "--serial", path)
    os.close(slave)  # the agent holds its own descriptor now
    try:
        x = np.random.default_rng(6).integers(-128, 128, size=(6, 8, 8, 1), dtype=np.int8)
        want = host_raw(tiny_cnn_bytes, x)
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
