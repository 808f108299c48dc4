"""The QEMU harness (edgeslim.harness.emulator, .firmware, ._testfw) and the test firmware (firmware_templates/cortex_m).

These tests use a hand-written stand-in library (test_qemu_standin/: its cost and stack use are
known in advance) to check what the firmware measures: instruction counts under -icount shift=6,
the stack high-water mark, the serial and preload paths, exit codes, faults, timeouts and process
clean-up. The generated model libraries run in test_qemu_models.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeslim.errors import DeviceError
from edgeslim.harness import _testfw, emulator, firmware

STANDIN = Path(__file__).parent / "test_qemu_standin"
pytestmark = pytest.mark.timeout(180)


def standin_expected(x: np.ndarray) -> np.ndarray:
    """What standin_invoke computes (standin.h)."""
    i = np.arange(x.shape[1])
    return np.clip((3 * x.astype(np.int32) + 5 * i - 7) >> 1, -128, 127).astype(np.int8)


def build_standin(out_dir: Path, *flags: str, board: str = "mps2-an386", core: str | None = None):
    return firmware.build_test_firmware(
        [STANDIN / "standin.c"], STANDIN / "standin.h", out_dir, name="standin",
        input_bytes=16, output_bytes=16, arena_bytes=64, board=board, core=core,
        library_flags=flags,
    )  # fmt: skip


@pytest.fixture(scope="module")
def standin_fw(tmp_path_factory):
    return build_standin(tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(1234)
    x = rng.integers(-128, 128, size=(6, 16)).astype(np.int8)
    x[0, :] = 127  # saturates high
    x[1, :] = -128  # saturates low
    return x


def test_serial_and_preload_paths_give_the_same_outputs_and_counts(standin_fw, inputs):
    over_serial = _testfw.run_firmware(standin_fw, inputs, preload=False, timeout=60)
    preloaded = _testfw.run_firmware(standin_fw, inputs, preload=True, timeout=60)
    expected = standin_expected(inputs)
    np.testing.assert_array_equal(over_serial.outputs, expected)
    np.testing.assert_array_equal(preloaded.outputs, expected)
    assert over_serial.statuses == preloaded.statuses == [0] * len(inputs)
    # -icount shift=6: the same code on the same data costs the same, run after run.
    assert over_serial.instructions == preloaded.instructions
    assert over_serial.exit_code == preloaded.exit_code == 0
    hello = preloaded.hello
    assert (hello.input_bytes, hello.output_bytes, hello.arena_bytes) == (16, 16, 64)
    assert hello.timer_hz == 25_000_000
    assert hello.stack_reserved == firmware.DEFAULT_STACK_BYTES
    # the timing code itself (two timer reads and a call) is small and removed
    assert 0 < hello.overhead_end - hello.overhead_start < 100


def test_instruction_counts_are_exact(tmp_path):
    """The stand-in's fixed loop compiles to 6 Thumb-2 instructions per iteration on the M4
    (ldr, add, adds, cmp, str, bne: arm-none-eabi-gcc 12, -O2): 2048 more iterations must cost
    exactly 12288 more instructions."""
    x = np.zeros((2, 16), np.int8)
    short = _testfw.run_firmware(build_standin(tmp_path / "a", "-DSTANDIN_SPIN=1024"), x)
    long = _testfw.run_firmware(build_standin(tmp_path / "b", "-DSTANDIN_SPIN=3072"), x)
    assert long.instructions[0] - short.instructions[0] == 12288
    assert 6144 < short.instructions[0] < 6800  # 1024 x 6 plus the 16-element loops
    again = _testfw.run_firmware(build_standin(tmp_path / "a", "-DSTANDIN_SPIN=1024"), x)
    assert again.instructions == short.instructions


def test_stack_high_water_mark_counts_what_the_call_uses(tmp_path):
    x = np.zeros((1, 16), np.int8)
    small = _testfw.run_firmware(build_standin(tmp_path / "s", "-DSTANDIN_STACK_BYTES=1000"), x)
    large = _testfw.run_firmware(build_standin(tmp_path / "l", "-DSTANDIN_STACK_BYTES=3000"), x)
    assert large.stack_bytes[0] - small.stack_bytes[0] == 2000
    assert 1000 <= small.stack_bytes[0] <= 1000 + 64  # the array plus a few saved registers


@pytest.mark.parametrize(
    "board,core,hz",
    [
        ("mps2-an385", "cortex-m0plus", 25_000_000),
        ("mps2-an385", None, 25_000_000),
        ("mps2-an500", None, 25_000_000),
        ("mps3-an547", None, 32_000_000),
    ],
)
def test_other_boards_boot_and_run(tmp_path, inputs, board, core, hz):
    fw = build_standin(tmp_path, board=board, core=core)
    run = _testfw.run_firmware(fw, inputs, timeout=60)
    np.testing.assert_array_equal(run.outputs, standin_expected(inputs))
    assert run.hello.timer_hz == hz
    assert run.exit_code == 0
    assert all(5000 < n < 8000 for n in run.instructions)


def test_semihosting_exit_code_and_cleanup(standin_fw):
    with emulator.QemuSession(standin_fw.elf, standin_fw.board, timeout=30) as session:
        fw = _testfw.TestFirmware(session, standin_fw)
        fw.hello()
        assert fw.exit(7) == 7
        process = session.process
    assert process.poll() == 7


def test_hang_times_out_and_qemu_is_killed(tmp_path):
    fw = build_standin(tmp_path, "-DSTANDIN_HANG")
    with emulator.QemuSession(fw.elf, fw.board, timeout=4) as session:
        client = _testfw.TestFirmware(session, fw)
        client.hello()
        with pytest.raises(DeviceError, match="no result from mps2-an386 within 4 s"):
            client.infer(bytes(16))
        process = session.process
        assert process.poll() is None  # still running, hung
    assert process.poll() is not None  # killed on leaving the block


def test_hardfault_is_reported_with_its_exit_code(tmp_path):
    fw = build_standin(tmp_path, "-DSTANDIN_FAULT")
    with pytest.raises(DeviceError, match=r"took a HardFault \(exit 241\)") as info:
        _testfw.run_firmware(fw, np.zeros((1, 16), np.int8), timeout=30)
    # the fault frame names the faulting function and the bus fault address
    assert "in standin_invoke," in info.value.message
    assert "BFAR=0xfffffff0" in info.value.message


def test_missing_preload_is_rejected(standin_fw):
    with emulator.QemuSession(standin_fw.elf, standin_fw.board, timeout=30) as session:
        client = _testfw.TestFirmware(session, standin_fw)
        with pytest.raises(DeviceError, match="no ESLB header"):
            client.infer_preloaded()
        assert client.exit(0) == 0


def test_wrong_input_size_is_an_error_before_qemu_starts(standin_fw):
    with pytest.raises(DeviceError, match="3 inputs of 15 bytes each; the model takes 16"):
        _testfw.run_firmware(standin_fw, np.zeros((3, 15), np.int8))
    with pytest.raises(DeviceError, match="0 inputs"):
        _testfw.run_firmware(standin_fw, np.zeros((0, 16), np.int8))


def test_unknown_board_names_the_known_ones():
    with pytest.raises(DeviceError, match="no emulated board for 'mps2-an999'") as info:
        emulator.board_for("mps2-an999")
    assert "mps2-an386" in info.value.hint
    assert emulator.board_for("cortex-m4").machine == "mps2-an386"
    assert emulator.board_for("cortex-m55").machine == "mps3-an547"


def test_instruction_index_from_timer_ticks():
    # 25 MHz: 40 ns a tick; shift=6: 64 ns an instruction; 8 ticks = 5 instructions
    assert emulator.instruction_index(1600, 25_000_000, 6) == 1000
    assert emulator.instruction_index(1601, 25_000_000, 6) == 1001  # 64040 ns: instruction 1001
    indices = [emulator.instruction_index(t, 25_000_000, 6) for t in range(9)]
    assert indices == [0, 1, 2, 2, 3, 4, 4, 5, 5]
    # 32 MHz: 31.25 ns a tick
    assert emulator.instruction_index(2048, 32_000_000, 6) == 1000
