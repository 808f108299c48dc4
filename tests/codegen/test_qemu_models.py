"""Whole models: the generated C library on the emulated Cortex-M boards, bit for bit against
TFLite Micro, with its RAM below TFLite Micro's arena and deterministic instruction counts.

The four int8 models (the digits example's architecture, a DS-CNN, a small residual network,
a MobileNetV2-style network, trained briefly on scikit-learn's digits), a weight-clustered
digits model (for the 4-bit packed weights) and their 200 int8 test inputs are committed in
test_qemu_models/, written by ``tools/bench_codegen.py --write-models`` (seeded). The
reference outputs and the TFLite Micro arena are computed here, with the tflite-micro
interpreter (edgeslim.micro, in a child process).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeslim import codegen, micro
from edgeslim.harness import _testfw, firmware, toolchain

MODELS_DIR = Path(__file__).parent / "test_qemu_models"
MODELS = ("digits", "dscnn", "resnet", "mobilenet")
pytestmark = pytest.mark.timeout(300)

# The generated kernels cost 9-19 instructions per MAC on the emulated M4 (measured with
# tools/bench_codegen.py): fail if they get much slower. The floor catches a timer that
# does not run (SIMD could reach 2 MACs per instruction, not 4).
MAX_INSTRUCTIONS_PER_MAC = 30
MIN_INSTRUCTIONS_PER_MAC = 0.25
# "Nothing large on the stack": the generated library keeps tensors in its arena.
MAX_STACK_BYTES = 512
# Inputs per model on the other cores (test-time budget; all 200 run on the M4).
OTHER_CORE_INPUTS = 50


class Case:
    """A model, its generated library and its TFLite Micro reference, made once per module."""

    def __init__(self, name: str, work: Path, *, pack_weights: bool = False):
        self.name = name
        self.model = (MODELS_DIR / f"{name}.tflite").read_bytes()
        self.inputs = np.load(MODELS_DIR / f"{name}_inputs.npy")
        self.lib_dir = work / "c"
        self.result = codegen.generate(self.model, self.lib_dir, name=name,
                                       pack_weights=pack_weights)  # fmt: skip
        self.reference = micro.run(self.model, self.inputs).reshape(len(self.inputs), -1)
        self.work = work
        self._tflm_arena = None

    @property
    def tflm_arena(self) -> int:
        if self._tflm_arena is None:
            self._tflm_arena = micro.measure_arena(self.model)
        return self._tflm_arena

    def firmware(self, board: str = "mps2-an386", core: str | None = None) -> firmware.Firmware:
        return firmware.firmware_for_library(
            self.lib_dir, self.work / f"fw-{board}-{core or 'default'}", name=self.name,
            input_bytes=self.result.input_bytes, output_bytes=self.result.output_bytes,
            arena_bytes=self.result.arena_size, board=board, core=core,
        )  # fmt: skip


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    made: dict[tuple[str, bool], Case] = {}

    def get(name: str, *, pack_weights: bool = False) -> Case:
        key = (name, pack_weights)
        if key not in made:
            made[key] = Case(name, tmp_path_factory.mktemp(name), pack_weights=pack_weights)
        return made[key]

    return get


def test_committed_inputs_are_realistic(cases):
    """The inputs exercise the int8 range (real digits, saturated background) and the models
    are not degenerate: TFLite Micro's predictions vary across inputs."""
    for name in MODELS:
        case = cases(name)
        assert case.inputs.dtype == np.int8 and len(case.inputs) == 200
        assert case.inputs.min() == -128 and case.inputs.max() >= 100
        assert len(np.unique(case.reference.argmax(axis=1))) >= 8


@pytest.mark.parametrize("name", MODELS)
def test_bit_exact_on_cortex_m4_with_less_ram_than_tflite_micro(cases, name):
    case = cases(name)
    fw = case.firmware()
    # the first input again at the end: the same input must cost the same instructions
    batch = np.concatenate([case.inputs, case.inputs[:1]]).reshape(len(case.inputs) + 1, -1)
    run = _testfw.run_firmware(fw, batch, timeout=240)

    np.testing.assert_array_equal(run.outputs[:-1], case.reference)
    np.testing.assert_array_equal(run.outputs[-1], case.reference[0])
    assert run.statuses == [0] * len(batch)
    assert run.exit_code == 0
    assert run.instructions[-1] == run.instructions[0]
    assert run.hello.arena_bytes == case.result.arena_size

    stack = run.max_stack_bytes
    assert 0 < stack <= MAX_STACK_BYTES
    ram = case.result.arena_size + stack
    assert ram <= case.tflm_arena, f"{name}: RAM {ram} B > TFLite Micro arena {case.tflm_arena} B"

    # the same kernels on other data: counts differ only by data-dependent branches
    assert max(run.instructions) < 1.05 * min(run.instructions)
    per_mac = np.mean(run.instructions) / case.result.macs
    assert MIN_INSTRUCTIONS_PER_MAC < per_mac < MAX_INSTRUCTIONS_PER_MAC


@pytest.mark.parametrize(
    "board,core",
    [("mps2-an385", "cortex-m0plus"), ("mps2-an500", None), ("mps3-an547", None)],
    ids=["m0plus-on-an385", "m7-an500", "m55-an547"],
)
@pytest.mark.parametrize("name", MODELS)
def test_bit_exact_on_other_cores(cases, name, board, core):
    """The same library built for ARMv6-M (run on the M3), the M7 and the M55 (MVE enabled):
    bit-exact on the first OTHER_CORE_INPUTS inputs (all 200 run on the M4 above)."""
    case = cases(name)
    inputs = case.inputs[:OTHER_CORE_INPUTS]
    run = _testfw.run_firmware(case.firmware(board, core), inputs, timeout=240)
    np.testing.assert_array_equal(run.outputs, case.reference[:OTHER_CORE_INPUTS])
    assert run.statuses == [0] * len(inputs)
    assert run.max_stack_bytes <= MAX_STACK_BYTES


def test_instruction_counts_repeat_across_runs(cases):
    case = cases("digits")
    fw = case.firmware()
    first = _testfw.run_firmware(fw, case.inputs[:4], timeout=120)
    second = _testfw.run_firmware(fw, case.inputs[:4], timeout=120, preload=False)
    assert first.instructions == second.instructions
    assert first.stack_bytes == second.stack_bytes
    assert min(first.instructions) > MIN_INSTRUCTIONS_PER_MAC * case.result.macs


def test_packed_4bit_weights_bit_exact_on_cortex_m4_with_less_flash(cases):
    """Beyond TFLite Micro: a clustered model (<= 16 weight values per output channel) with
    pack_weights=True stores 4-bit indices into per-channel tables and decodes them in the
    kernels: same outputs as TFLite Micro on the unpacked model, a third less flash."""
    plain = cases("digits_clustered")
    packed = cases("digits_clustered", pack_weights=True)
    work = packed.work
    flash = {}
    for label, case in (("plain", plain), ("packed", packed)):
        objects = toolchain.cross_compile(sorted(case.lib_dir.glob("*.c")), work / f"obj-{label}",
                                     core="cortex-m4", include_dirs=[case.lib_dir])  # fmt: skip
        size = toolchain.section_sizes(objects)
        flash[label] = size.text + size.rodata
        assert size.bss + size.data == case.result.arena_size
    assert flash["packed"] < 0.75 * flash["plain"], flash

    run_plain = _testfw.run_firmware(plain.firmware(), plain.inputs[:OTHER_CORE_INPUTS], timeout=240)
    run_packed = _testfw.run_firmware(packed.firmware(), packed.inputs, timeout=240)
    np.testing.assert_array_equal(run_packed.outputs, plain.reference)
    assert run_packed.statuses == [0] * len(packed.inputs)
    assert run_packed.max_stack_bytes <= MAX_STACK_BYTES
    # decoding costs instructions, within reason
    cost = np.mean(run_packed.instructions[:OTHER_CORE_INPUTS]) / np.mean(run_plain.instructions)
    assert 0.5 < cost < 1.5
