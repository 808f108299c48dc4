"""`edgeslim emulate`: a Cortex-M bundle (built with --backend c) runs on its emulated board,
reachable at the socket:// URL it prints, until it is interrupted; QEMU goes with it.

The bundle is made by hand from the digits model committed for the codegen tests (a real
`edgeslim build` trains a model: too slow here): model.tflite, c/ from edgeslim.codegen and a
manifest naming the cortex-m4 profile.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeslim import codegen

MODELS_DIR = Path(__file__).resolve().parents[1] / "codegen" / "test_qemu_models"
pytestmark = pytest.mark.timeout(120)


def make_bundle(path: Path, *, profile: str = "cortex-m4", with_c: bool = True) -> Path:
    from edgeslim.bundle.manifest import write_manifest
    from edgeslim.targets import load_target

    path.mkdir(parents=True)
    model = (MODELS_DIR / "digits.tflite").read_bytes()
    (path / "model.tflite").write_bytes(model)
    if with_c:
        codegen.generate(model, path / "c", name="digits")
    write_manifest(path, target=load_target(profile), model_path=path / "model.tflite",
                   extra={"model_name": "digits", "backend": "c" if with_c else "tflm"})
    return path


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


class Running:
    """`edgeslim emulate` as a child process, its URL and QEMU's pid read from its output."""

    def __init__(self, bundle: Path, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeslim.cli", "emulate", str(bundle), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.qemu_pid = None
        self.port = None
        self.lines = []
        deadline = time.monotonic() + 60
        while self.port is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if m := re.search(r"QEMU pid (\d+)", line):
                self.qemu_pid = int(m.group(1))
            if m := re.fullmatch(r"socket://127\.0\.0\.1:(\d+)", line.strip()):
                self.port = int(m.group(1))
        assert self.port and self.qemu_pid, (self.lines, self.proc.poll())

    def ask(self, command: bytes, expect: str) -> list[str]:
        """Connect, send a command, read lines up to the reply `expect` and m-ready."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as s:
            s.sendall(command)
            buf = b""
            while not re.search(rb"(^|\n)" + re.escape(expect.encode()) + rb".*\r\nm-ready\r\n",
                                buf, re.S):  # fmt: skip
                chunk = s.recv(4096)
                assert chunk, buf
                buf += chunk
        return buf.decode().splitlines()

    def close(self):
        """Stop as a user would (SIGTERM: emulate stops and reaps QEMU); kill what is left."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.qemu_pid and _alive(self.qemu_pid):
            os.kill(self.qemu_pid, signal.SIGKILL)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "cortex-m4")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_emulate_serves_the_protocol_until_interrupted(bundle, stop):
    run = Running(bundle)
    try:
        assert any("instruction counts of the emulator" in line and "not device milliseconds"
                   in line for line in run.lines)  # fmt: skip
        assert any("mps2-an386" in line and "shift=6" in line for line in run.lines)
        lines = run.ask(b"name%", "m-name-dut-[edgeslim]")
        assert lines[-2:] == ["m-name-dut-[edgeslim]", "m-ready"]
        # a second client: the device kept running and answers again
        import hashlib

        sha = hashlib.sha256((bundle / "model.tflite").read_bytes()).hexdigest()
        lines = run.ask(b"info%", f"m-info-[sha256={sha}")
        assert "counter=systick" in lines[-2]
        assert _alive(run.qemu_pid)
        run.proc.send_signal(stop)
        assert run.proc.wait(30) == 0
        assert "stopped" in run.proc.stderr.read()
        assert not _alive(run.qemu_pid)
    finally:
        run.close()


def test_emulate_stops_after_its_timeout_on_the_port_asked_for(bundle):
    from edgeslim.harness.emulator import free_port

    port = free_port()
    run = Running(bundle, "--timeout", "1", "--icount-shift", "5", "--port", str(port))
    try:
        assert run.port == port
        assert any("shift=5" in line for line in run.lines)
        assert run.proc.wait(30) == 0
        assert not _alive(run.qemu_pid)
    finally:
        run.close()


def test_emulate_refuses_a_bundle_without_the_c_library(tmp_path):
    from click.testing import CliRunner

    from edgeslim.cli import cli

    bundle = make_bundle(tmp_path / "tflm-only", with_c=False)
    result = CliRunner().invoke(cli, ["emulate", str(bundle)], obj={"debug": False})
    assert result.exit_code == 2
    assert "no generated C library" in result.output and "--backend c" in result.output


def test_bench_against_the_emulated_device_is_bit_exact_and_repeatable(bundle):
    """End to end: `edgeslim emulate` serving the bundle, `edgeslim bench` over the socket
    (random inputs, TFLite Micro as the reference): every output bit-exact, and a second bench
    measures the same emulated latencies (-icount)."""
    import json

    from click.testing import CliRunner

    from edgeslim.cli import cli

    run = Running(bundle)
    try:
        latencies, instructions = [], []
        for _ in range(2):
            result = CliRunner().invoke(
                cli, ["bench", str(bundle), "--port", f"socket://127.0.0.1:{run.port}", "-n", "4",
                      "--timeout", "20"], obj={"debug": False},
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            report = json.loads((bundle / "bench.json").read_text())
            assert report["complete"] is True
            assert report["agreement"]["compared"] == report["agreement"]["bit_exact"] == 4
            assert report["device"]["info"]["weights_crc"] == (
                report["device"]["info"]["weights_crc_expected"])
            latencies.append([p["latency_us"] for p in report["per_input"]])
            # the emulator's clock is labelled as such; the link is compared in the host's clock
            assert report["clock"]["kind"] == "emulated" and report["clock"]["icount_shift"] == "6"
            assert report["link"]["ratio_against"] == "inference_host_wall_us"
            assert report["throughput_per_s"] is None
            instructions.append([p["instructions"] for p in report["per_input"]])
        # the same inputs (seed 0) cost the same instructions: equal to the microsecond's phase
        assert all(abs(a - b) <= 1 for a, b in zip(*latencies)), latencies
        assert instructions[0] == instructions[1] and min(instructions[0]) > 0, instructions
    finally:
        run.close()


def test_a_killed_emulate_leaves_no_qemu_behind(bundle):
    run = Running(bundle)
    try:
        assert _alive(run.qemu_pid)
        run.proc.kill()  # no chance to clean up: QEMU gets SIGTERM from the kernel instead
        run.proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(run.qemu_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(run.qemu_pid)
    finally:
        run.close()


def _qemu_on_port(port: int) -> list[int]:
    """Live qemu-system-arm processes serving a UART on ``port`` (read from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and b"qemu-system" in args[0] and any(b"port=%d," % port in a for a in args):
            if _alive(int(cmdline.parent.name)):
                found.append(int(cmdline.parent.name))
    return found


def test_emulate_bench_is_bit_exact_and_repeatable_and_leaves_no_qemu(bundle):
    """`edgeslim emulate BUNDLE --bench`: builds, emulates, benches over the socket, writes
    bench.json, stops QEMU and exits with the bench's status; a second run measures the same
    device figures (emulator instructions)."""
    import json

    from edgeslim.harness.emulator import free_port

    figures = []
    for _ in range(2):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeslim.cli", "emulate", str(bundle), "--bench", "-n", "4",
             "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=100)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 0, out + err
        assert "instruction counts of the emulator" in out and "bench.json" in out
        assert _qemu_on_port(port) == []
        report = json.loads((bundle / "bench.json").read_text())
        assert report["complete"] is True and report["clock"]["kind"] == "emulated"
        assert report["agreement"]["compared"] == report["agreement"]["bit_exact"] == 4
        figures.append([p["instructions"] for p in report["per_input"]])
    assert figures[0] == figures[1] and min(figures[0]) > 0, figures


def test_emulate_bench_fails_with_the_bench_status_on_a_wrong_model(tmp_path):
    """The bench's refusal (the device runs another model) is emulate's exit status."""
    from click.testing import CliRunner

    from edgeslim.cli import cli

    bundle = make_bundle(tmp_path / "cortex-m4")
    model = bytearray((bundle / "model.tflite").read_bytes())
    model[-1] ^= 1  # the bundle's model.tflite no longer hashes to what the firmware runs
    (bundle / "model.tflite").write_bytes(bytes(model))
    result = CliRunner().invoke(cli, ["emulate", str(bundle), "--bench", "-n", "1"], obj={"debug": False})
    assert result.exit_code != 0
    assert "different model" in result.output
