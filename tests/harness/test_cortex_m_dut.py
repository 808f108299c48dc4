"""The Cortex-M device-under-test harness (firmware_templates/cortex_m/dut.c, built by
edgeslim.harness.firmware) on emulated boards, driven by a small runner written here to the
MLPerf Tiny command sequence of ../shared/notes/mlperf-tiny-protocol.md: the reply shapes line
by line on every Cortex-M profile's board (M0+ code on the M3 board, M4, M7, M33, M55), the
worked transcript replayed, outputs bit-exact with TFLite Micro, the same
instruction counts on two runs under -icount, garbage and over-long lines answered with e-
errors, and info% proving which model and weights the device runs.

The model is the digits CNN committed for the codegen tests (64 int8 inputs, 10 outputs).
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
import pytest

from edgeslim import codegen, micro
from edgeslim.harness import _testfw, emulator, firmware, toolchain

MODELS_DIR = Path(__file__).resolve().parents[1] / "codegen" / "test_qemu_models"
pytestmark = pytest.mark.timeout(180)
FLOAT = r"-?\d+\.\d{3,}"


class Runner:
    """The host side as the MLPerf Tiny runner does it: a command, then lines up to m-ready."""

    def __init__(self, session: emulator.QemuSession, timeout: float = 20.0):
        self.serial = session.serial
        self.timeout = timeout

    def lines(self) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + self.timeout
        buf = b""
        while True:
            chunk = self.serial.read(1)
            if chunk:
                buf += chunk
                if buf.endswith(b"\r\n"):
                    line = buf[:-2].decode("ascii")
                    buf = b""
                    out.append(line)
                    if line == "m-ready":
                        return out
            elif time.monotonic() > deadline:
                raise AssertionError(f"no m-ready within {self.timeout} s; got {out} {buf!r}")

    def send(self, command: str | bytes) -> list[str]:
        """Send one command; its reply lines without the closing m-ready."""
        self.serial.write(command.encode("ascii") if isinstance(command, str) else command)
        self.serial.flush()
        lines = self.lines()
        assert lines[-1] == "m-ready"
        return lines[:-1]

    def load(self, data: bytes) -> list[list[str]]:
        """db load N, then db chunks of 31 bytes, each waiting for m-ready (as the runner)."""
        replies = [self.send(f"db load {len(data)}%")]
        for i in range(0, len(data), 31):
            replies.append(self.send(f"db {data[i:i + 31].hex()}%"))
        return replies


class Case:
    def __init__(self, work: Path):
        self.model = (MODELS_DIR / "digits.tflite").read_bytes()
        self.inputs = np.load(MODELS_DIR / "digits_inputs.npy")[:4]
        self.flat = self.inputs.reshape(len(self.inputs), -1).astype(np.int8)
        codegen.generate(self.model, work / "c", name="digits")
        self.lib_dir = work / "c"
        self.work = work
        self.reference = micro.run(self.model, self.inputs).reshape(len(self.inputs), -1)
        self._fw: dict[str, firmware.DutFirmware] = {}

    def firmware(self, target: str) -> firmware.DutFirmware:
        if target not in self._fw:
            self._fw[target] = firmware.build_dut_firmware(
                self.lib_dir, self.work / f"fw-{target}", name="digits", target=target)
        return self._fw[target]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return Case(tmp_path_factory.mktemp("dut"))


def boot(fw: firmware.DutFirmware) -> emulator.QemuSession:
    """QEMU on a free port (QEMU waits for the connection, so the boot lines arrive)."""
    return emulator.QemuSession(fw.elf, fw.board, icount_shift=fw.icount_shift, timeout=60)


BOARD_OF = {"cortex-m0plus": "mps2-an385", "cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500",
            "cortex-m33": "mps2-an505", "cortex-m55": "mps3-an547"}


@pytest.mark.parametrize("target", sorted(BOARD_OF))
def test_runner_sequence_reply_shapes_and_bit_exact_outputs(case, target):
    fw = case.firmware(target)
    assert fw.board.machine == BOARD_OF[target]
    with boot(fw) as session:
        dut = Runner(session)
        boot_lines = dut.lines()
        assert len(boot_lines) == 4
        assert boot_lines[0] == "m-timestamp-mode-performance"
        assert re.fullmatch(r"m-lap-us-\d+", boot_lines[1])
        assert boot_lines[2:] == ["m-init-done", "m-ready"]
        assert dut.send("name%") == ["m-name-dut-[edgeslim]"]
        profile = dut.send("profile%")
        assert len(profile) == 2
        assert re.fullmatch(r"m-profile-\[edgeslim-harness \S+\]", profile[0])
        assert profile[1] == "m-model-[digits]"
        # the port probes the DWT cycle counter (compiled in for all but the M0+); QEMU's does
        # not count, so every emulated board falls back to SysTick, whose ticks icount% needs
        (info,) = dut.send("info%")
        assert ",counter=systick," in info
        for x, ref in zip(case.flat, case.reference):
            data = x.tobytes()
            replies = dut.load(data)
            assert replies[0] == [f"m-[Expecting {len(data)} bytes]"]
            assert all(r == [] for r in replies[1:-1])  # nothing until the last chunk
            assert replies[-1] == ["m-load-done"]
            printed = dut.send("db print%")
            assert printed == ["m-buffer-" + "-".join(f"{b:02x}" for b in data[i:i + 8])
                               for i in range(0, len(data), 8)]  # fmt: skip
            lines = dut.send("infer 3 2%")
            assert lines[:3] == ["m-warmup-start-2", "m-warmup-done", "m-infer-start-3"]
            t0, t1 = (int(re.fullmatch(r"m-lap-us-(\d+)", s).group(1)) for s in lines[3:5])
            assert t1 > t0
            assert lines[5] == "m-infer-done"
            values = re.fullmatch(r"m-results-\[(.*)\]", lines[6]).group(1).split(",")
            assert len(lines) == 7 and len(values) == fw.output_bytes
            assert all(re.fullmatch(FLOAT, v) for v in values)
            (raw,) = dut.send("results hex%")
            got = np.frombuffer(bytes.fromhex(raw[len("m-results-hex-["):-1]), np.int8)
            np.testing.assert_array_equal(got, ref)  # bit-exact with TFLite Micro
            scale, zero = _output_quant(case.model)
            np.testing.assert_allclose([float(v) for v in values],
                                       scale * (ref.astype(np.int32) - zero), atol=6e-4)
            assert dut.send("results%") == [lines[6]]


def _output_quant(model: bytes) -> tuple[float, int]:
    from edgeslim.modelgraph import read as read_graph

    g = read_graph(model)
    t = g.tensors[g.outputs[0]]
    return float(t.scale), int(t.zero_point)


def test_worked_transcript_replayed(case):
    """The notes' transcript, with the digits model's 64-byte input in place of 4 bytes."""
    fw = case.firmware("cortex-m4")
    data = bytes([0x80, 0xFF, 0x01, 0x02]) * 16
    with boot(fw) as session:
        dut = Runner(session)
        dut.lines()
        assert dut.send("name%") == ["m-name-dut-[edgeslim]"]
        assert dut.send("db load 64%") == ["m-[Expecting 64 bytes]"]
        assert dut.send(f"db {data[:31].hex()}%") == []
        assert dut.send(f"db {data[31:62].hex()}%") == []
        assert dut.send(f"db {data[62:].hex()}%") == ["m-load-done"]
        assert dut.send("db print%") == ["m-buffer-80-ff-01-02-80-ff-01-02"] * 8
        lines = dut.send("infer 10 1%")
        pattern = [r"m-warmup-start-1", r"m-warmup-done", r"m-infer-start-10", r"m-lap-us-\d+",
                   r"m-lap-us-\d+", r"m-infer-done", rf"m-results-\[{FLOAT}(,{FLOAT}){{9}}\]"]
        assert len(lines) == len(pattern)
        for line, pat in zip(lines, pattern):
            assert re.fullmatch(pat, line), (line, pat)
        assert dut.send("bogus%") == ["e-[Unknown command: bogus]"]
        assert dut.send("timestamp%")[0].startswith("m-lap-us-")


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m33"])
def test_instruction_counts_are_the_same_on_two_runs(case, target):
    fw = case.firmware(target)
    x = case.flat[0].tobytes()
    counts = []
    for _ in range(2):
        with boot(fw) as session:
            dut = Runner(session)
            dut.lines()
            dut.load(x)
            lines = dut.send("infer 2 1%")
            (icount,) = dut.send("icount%")
            m = re.fullmatch(r"m-icount-\[instructions=(\d+),runs=2,per_run=(\d+),shift=6\]",
                             icount)
            assert m, icount
            t0, t1 = (int(line[len("m-lap-us-"):]) for line in lines[3:5])
            counts.append((int(m.group(1)), int(m.group(2)), t1 - t0))
    # The same instructions; the emulated laps start at a time that depends on how long the
    # device waited for the host's bytes, so their difference agrees to the microsecond's phase.
    assert counts[0][:2] == counts[1][:2]
    assert abs(counts[0][2] - counts[1][2]) <= 1
    total, per_run, lap = counts[0]
    assert abs(lap - total * 64 / 1000) <= 2  # shift=6: 64 ns an instruction
    assert per_run == total // 2
    # the generated kernels: 9-19 instructions per MAC on the M4 (tests/codegen)
    macs = int(firmware._header_value(case.lib_dir / "digits.h", "DIGITS_MACS"))
    assert 5 * macs < per_run < 30 * macs


def test_garbage_and_over_long_lines_give_errors_and_the_next_command_works(case):
    fw = case.firmware("cortex-m4")
    with boot(fw) as session:
        dut = Runner(session)
        dut.lines()
        assert dut.send(b"\x00\xff\x13\x80") == ["e-[Invalid byte 0x00 in command; discarded]"]
        assert dut.send("name%") == ["m-name-dut-[edgeslim]"]
        assert dut.send("y" * 200 + "%") == [
            "e-[Command too long: more than 80 characters with the %]"]
        assert dut.send("name%") == ["m-name-dut-[edgeslim]"]
        longest = "db load " + "0" * 69 + "64"  # 79 characters and the %: accepted
        assert dut.send(longest + "%") == ["m-[Expecting 64 bytes]"]
        assert dut.send("db 0g%") == ["e-[Invalid hex digit '0g']"]
        assert dut.send("db 123%") == ["e-[Insufficent number of hex digits]"]
        assert dut.send("db load 0%") == ["e-[db load N must be > 0]"]
        assert dut.send("db load 65%") == ["e-[db load 65: the model's input is 64 bytes]"]
        assert dut.send("infer 1 0%") == ["e-[No input loaded: send db load 64 and the data first]"]
        assert dut.send("results%") == ["e-[No results: run infer first]"]
        assert dut.send("db load 1 2 3 4 5%")[0].startswith("e-[Unknown command: db load")
        assert dut.send("%") == []
        assert dut.send("\r\nname%\r\n") == ["m-name-dut-[edgeslim]"]


def test_info_proves_the_model_and_its_weights(case):
    fw = case.firmware("cortex-m4")
    with boot(fw) as session:
        dut = Runner(session)
        dut.lines()
        (line,) = dut.send("info%")
    body = re.fullmatch(r"m-info-\[(.*)\]", line).group(1)
    fields = dict(kv.split("=", 1) for kv in body.split(","))
    assert fields["sha256"] == hashlib.sha256(case.model).hexdigest() == fw.model_sha256
    assert fields["weights_crc"] == fields["weights_crc_expected"] == f"{fw.weights_crc:08x}"
    assert fw.weights_bytes > 10_000  # the digits CNN's weights, not an empty range
    assert fields["arena"] == str(fw.arena_bytes)
    assert (fields["clock"], fields["counter"], fields["protocol"]) == ("25000000", "systick", "1")
    assert (fields["input"], fields["output"]) == ("64", "10")


def test_a_corrupted_weight_shows_at_boot_and_in_info(case, tmp_path):
    """Flip one weight byte in the ELF: the device computes the checksum, it does not echo it."""
    fw = case.firmware("cortex-m4")
    syms = toolchain.symbols(fw.elf)
    data = bytearray(fw.elf.read_bytes())
    weights = firmware._linked_weights(fw.elf, tmp_path)
    offset = bytes(data).find(weights)
    assert offset >= 0 and syms["__eslm_weights_end__"] > syms["__eslm_weights_start__"]
    data[offset + len(weights) // 2] ^= 0x01
    bad = tmp_path / "bad.elf"
    bad.write_bytes(bytes(data))
    with emulator.QemuSession(bad, fw.board, icount_shift=6, timeout=60) as session:
        dut = Runner(session)
        boot_lines = dut.lines()
        assert any(line.startswith("e-[Weight checksum mismatch: ") for line in boot_lines)
        (line,) = dut.send("info%")
    crc = re.search(r"weights_crc=([0-9a-f]{8}),weights_crc_expected=([0-9a-f]{8})", line)
    assert crc.group(2) == f"{fw.weights_crc:08x}" != crc.group(1)


def test_boards_and_flags_come_from_the_target_profiles():
    from edgeslim.targets import list_targets

    mcu = [t for t in list_targets() if t.is_mcu]
    assert {t.profile for t in mcu} <= set(toolchain.CORES)
    for t in mcu:
        board, core = firmware.board_for_target(t.profile)
        assert board.machine == t.build["qemu_machine"] == toolchain.CORES[t.profile].board
        assert core.cflags == toolchain.CORES[t.profile].cflags
        assert set(core.cflags) <= set(t.build["cflags"].split())
    board, core = firmware.board_for_target("cortex-m33")
    assert (board.machine, board.flash_origin, board.uart_base) == ("mps2-an505", 0x10000000,
                                                                    0x50200000)
    with pytest.raises(Exception, match="names no emulated board"):
        firmware.board_for_target("rpi4")


def test_the_protocol_does_not_change_what_is_measured(case):
    """icount% per input against the test firmware's count for the same library and inputs
    (edgeslim.harness._testfw, which removes its timing overhead): the harness adds only its own
    few instructions of timer reads, loop and call, the same for every input."""
    fw = case.firmware("cortex-m4")
    test_fw = firmware.firmware_for_library(
        case.lib_dir, case.work / "test-fw", name="digits", input_bytes=fw.input_bytes,
        output_bytes=fw.output_bytes, arena_bytes=fw.arena_bytes,
    )  # fmt: skip
    reference = _testfw.run_firmware(test_fw, case.flat).instructions
    counts = []
    with boot(fw) as session:
        dut = Runner(session)
        dut.lines()
        for x in case.flat:
            dut.load(x.tobytes())
            dut.send("infer 1 0%")
            (icount,) = dut.send("icount%")
            counts.append(int(re.search(r"per_run=(\d+)", icount).group(1)))
    extra = [c - r for c, r in zip(counts, reference)]
    assert len(set(reference)) > 1  # the inputs cost different amounts: a real comparison
    assert all(0 < e < 100 for e in extra), extra
    assert max(extra) - min(extra) <= 1, extra  # +-1: the test firmware's overhead estimate
