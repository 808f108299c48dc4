"""edgeslim's internal test firmware protocol: NOT a device protocol for users.

Devices speak the MLPerf Tiny command set (docs/protocol.md; host client
``edgeslim.harness.protocol.DutClient``). This binary protocol exists only inside edgeslim's own
test firmware (firmware_templates/cortex_m/test_main.c.j2, built by
``edgeslim.harness.firmware.build_test_firmware``) for the tests and tools/bench_codegen.py: it
preloads a batch of inputs with QEMU's ``-device loader`` and returns raw outputs, instruction
counts and stack use without the cost of a serial link.
"""

from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeslim.errors import DeviceError
from edgeslim.harness.emulator import DEFAULT_ICOUNT_SHIFT, QemuSession, instruction_index
from edgeslim.harness.firmware import Firmware
from edgeslim.harness.toolchain import function_at

_HELLO = struct.Struct("<4s5I2Q2I")
_RESULT = struct.Struct("<ciQQI")
PROTOCOL_VERSION = 2
TIMER_OVERFLOW = 2**64 - 1  # the firmware's ESLM_TIMER_OVERFLOW
BULK_MAGIC = b"ESLB"
BULK_HEADER = struct.Struct("<4sIII")

@dataclass(frozen=True)
class Hello:
    protocol: int
    input_bytes: int
    output_bytes: int
    arena_bytes: int
    timer_hz: int
    overhead_start: int  # timer readings around a call of an empty function
    overhead_end: int
    stack_reserved: int
    stack_used_since_boot: int


@dataclass(frozen=True)
class Measurement:
    """One inference on the board."""

    status: int
    ticks: int  # timer ticks between the readings around <name>_invoke
    instructions: int  # in <name>_invoke under -icount (the timing overhead removed)
    stack_bytes: int  # stack high-water mark of the call
    output: bytes


class TestFirmware:
    """Host side of the test firmware's binary protocol (firmware_templates/cortex_m/README.md)."""

    __test__ = False  # not a pytest class

    def __init__(self, session: QemuSession, firmware: Firmware):
        self.session = session
        self.firmware = firmware
        self._hello: Hello | None = None
        self._overhead = 0

    @property
    def shift(self) -> int:
        return self.session.icount_shift if self.session.icount_shift is not None else (
            DEFAULT_ICOUNT_SHIFT
        )

    def _instructions(self, start: int, end: int, hz: int) -> int:
        return instruction_index(end, hz, self.shift) - instruction_index(start, hz, self.shift)

    def hello(self) -> Hello:
        self.session.write(b"H")
        self._tag(b"E", "hello")
        raw = b"E" + self.session.read_exact(_HELLO.size - 1, "hello")
        magic, *fields = _HELLO.unpack(raw)
        if magic != b"ESLM":
            raise DeviceError(
                f"unexpected hello from the board: {raw!r}",
                hint="is this edgeslim's test firmware?",
            )
        hello = Hello(*fields)
        if hello.protocol != PROTOCOL_VERSION:
            raise DeviceError(
                f"the board speaks protocol {hello.protocol}, this host {PROTOCOL_VERSION}",
                hint="rebuild the test firmware with this edgeslim",
            )
        fw = self.firmware
        if (hello.input_bytes, hello.output_bytes) != (fw.input_bytes, fw.output_bytes):
            raise DeviceError(
                f"the board runs a model with {hello.input_bytes}/{hello.output_bytes} "
                f"input/output bytes, expected {fw.input_bytes}/{fw.output_bytes}"
            )
        self._hello = hello
        self._overhead = self._instructions(hello.overhead_start, hello.overhead_end,
                                            hello.timer_hz)  # fmt: skip
        return hello

    @property
    def overhead_instructions(self) -> int:
        """Instructions of the timing itself (two timer reads and a call), removed from counts."""
        if self._hello is None:
            self.hello()
        return self._overhead

    def _tag(self, expected: bytes, what: str) -> bytes:
        """The first byte of a reply; a fault frame becomes a DeviceError naming the function."""
        tag = self.session.read_exact(1, what)
        if tag == b"F":
            pc, lr, cfsr, hfsr, bfar = struct.unpack("<5I", self.session.read_exact(20, "fault"))
            code = self.session.wait(10)
            raise DeviceError(
                f"the firmware on {self.session.board.machine} took a HardFault (exit {code}) "
                f"at pc=0x{pc:08x} in {function_at(self.firmware.elf, pc)}, "
                f"lr=0x{lr:08x} in {function_at(self.firmware.elf, lr)} "
                f"(CFSR=0x{cfsr:08x} HFSR=0x{hfsr:08x} BFAR=0x{bfar:08x})",
                hint="an out-of-bounds or unaligned access in that function",
            )
        if tag not in expected:
            raise DeviceError(f"unexpected reply from the board: {tag!r} where {what} was due")
        return tag

    def _measurement(self) -> Measurement:
        hello = self._hello or self.hello()
        self._tag(b"R", "result")
        raw = b"R" + self.session.read_exact(_RESULT.size - 1, "result")
        _, status, start, end, stack = _RESULT.unpack(raw)
        output = self.session.read_exact(self.firmware.output_bytes, "output tensor")
        if end == TIMER_OVERFLOW:
            raise DeviceError(
                "an inference ran longer than the board's timer can count "
                f"(2**32 ticks at {hello.timer_hz} Hz)",
                hint="the model is too large to time on the emulated board",
            )
        instructions = self._instructions(start, end, hello.timer_hz) - self._overhead
        return Measurement(status, end - start, instructions, stack, output)

    def infer(self, data: bytes) -> Measurement:
        """Send one input over the serial link and run it."""
        if len(data) != self.firmware.input_bytes:
            raise DeviceError(
                f"input has {len(data)} bytes, the model takes {self.firmware.input_bytes}"
            )
        if self._hello is None:
            self.hello()
        self.session.write(b"I" + bytes(data))
        return self._measurement()

    def infer_preloaded(self) -> list[Measurement]:
        """Run every input preloaded at the board's bulk address (see ``write_bulk``)."""
        if self._hello is None:
            self.hello()
        self.session.write(b"B")
        tag = self._tag(b"NE", "batch header")
        if tag == b"E":
            code = self.session.read_exact(1, "error code")[0]
            raise DeviceError(
                f"the board rejected the preloaded inputs (error {code}: "
                + {1: "no ESLB header", 2: "wrong input size", 3: "too many inputs"}.get(
                    code, "unknown"
                )
                + ")"
            )
        (count,) = struct.unpack("<I", self.session.read_exact(4, "batch count"))
        return [self._measurement() for _ in range(count)]

    def exit(self, code: int = 0) -> int:
        """Ask the firmware to end the run through semihosting; QEMU's exit code."""
        self.session.write(b"X" + bytes([code & 0xFF]))
        return self.session.wait()


def write_bulk(path: Path, inputs: np.ndarray) -> Path:
    """Inputs (N x input bytes, int8) as the preload file the firmware's ``B`` command reads."""
    arr = np.ascontiguousarray(inputs, dtype=np.int8).reshape(len(inputs), -1)
    Path(path).write_bytes(BULK_HEADER.pack(BULK_MAGIC, len(arr), arr.shape[1], 0) + arr.tobytes())
    return Path(path)


@dataclass
class FirmwareRun:
    """Outputs and figures of a batch of inferences on one board."""

    outputs: np.ndarray  # int8, N x output bytes
    instructions: list[int]
    stack_bytes: list[int]
    statuses: list[int]
    hello: Hello
    exit_code: int | None
    measurements: list[Measurement] = field(repr=False, default_factory=list)

    @property
    def max_stack_bytes(self) -> int:
        return max(self.stack_bytes)


def run_firmware(
    firmware: Firmware,
    inputs: np.ndarray,
    *,
    icount_shift: int | None = DEFAULT_ICOUNT_SHIFT,
    timeout: float = 120.0,
    preload: bool = True,
    work_dir: Path | None = None,
) -> FirmwareRun:
    """Run ``inputs`` (N x input bytes, int8) through the firmware in QEMU.

    With ``preload`` the inputs go in through ``-device loader`` (fast); otherwise each is
    sent over the serial link (slow host->device path, 8-38 KB/s). ``timeout`` bounds the wait
    for each reply (one inference). ``outputs`` holds the output tensors' raw bytes as int8
    (``.view(np.float32)`` for a float output).
    """
    arr = np.ascontiguousarray(inputs, dtype=np.int8)
    arr = arr.reshape(len(arr), int(np.prod(arr.shape[1:], dtype=np.int64)))
    if len(arr) == 0 or arr.shape[1] != firmware.input_bytes:
        raise DeviceError(
            f"{len(arr)} inputs of {arr.shape[1]} bytes each; the model takes "
            f"{firmware.input_bytes} bytes each",
            hint="pass at least one input, shaped (N, input bytes) or (N, *input shape)",
        )
    if arr.nbytes + BULK_HEADER.size > firmware.board.bulk_size:
        raise DeviceError(
            f"{len(arr)} inputs do not fit the board's {firmware.board.bulk_size} bytes of "
            "preload memory",
            hint="run them in smaller batches",
        )
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        preloads = []
        if preload:
            preloads.append((write_bulk(Path(tmp) / "inputs.bin", arr), firmware.board.bulk_addr))
        with QemuSession(
            firmware.elf, firmware.board, icount_shift=icount_shift, preload=preloads,
            timeout=timeout,
        ) as session:  # fmt: skip
            fw = TestFirmware(session, firmware)
            hello = fw.hello()
            if preload:
                ms = fw.infer_preloaded()
            else:
                ms = [fw.infer(row.tobytes()) for row in arr]
            code = fw.exit(0)
    outputs = np.frombuffer(b"".join(m.output for m in ms), dtype=np.int8).reshape(len(ms), -1)
    return FirmwareRun(
        outputs=outputs.copy(),
        instructions=[m.instructions for m in ms],
        stack_bytes=[m.stack_bytes for m in ms],
        statuses=[m.status for m in ms],
        hello=hello,
        exit_code=code,
        measurements=ms,
    )


