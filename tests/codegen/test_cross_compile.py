"""The generated C library cross-compiled for Cortex-M0+, M3, M4, M7 and M55 with
arm-none-eabi-gcc -std=c99 -Wall -Wextra -Werror: no warning, weights in flash, the arena as the
library's only static RAM, and no dependency beyond the compiler's own helpers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeslim import codegen
from edgeslim.errors import DeviceError
from edgeslim.harness import toolchain

HERE = Path(__file__).parent
MODELS_DIR = HERE / "test_qemu_models"
MODELS = ("digits", "dscnn", "resnet", "mobilenet")
pytestmark = pytest.mark.timeout(300)

# ARMv6-M has no divide or 32x32->64 multiply instructions: libgcc's helpers are expected.
ARMV6M_HELPERS = {"__aeabi_idiv", "__aeabi_idivmod", "__aeabi_uidiv", "__aeabi_uidivmod",
                  "__aeabi_lmul", "__aeabi_llsl", "__aeabi_llsr", "__aeabi_lasr"}  # fmt: skip
# The kernels' code, whatever the model: it must stay small next to the weights.
MAX_TEXT_BYTES = 8 * 1024


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = {}
    for name in MODELS:
        lib = tmp_path_factory.mktemp(name)
        model = (MODELS_DIR / f"{name}.tflite").read_bytes()
        out[name] = (codegen.generate(model, lib, name=name), lib)
    return out


@pytest.mark.parametrize("core", sorted(toolchain.CORES))
def test_library_compiles_without_warnings_and_fits_its_arena(generated, core, tmp_path):
    for name, (result, lib) in generated.items():
        sources = sorted(lib.glob("*.c"))
        assert [p.name for p in sources] == [f"{name}.c"]
        # raises DeviceError with the compiler's message on any warning (-Werror)
        objects = toolchain.cross_compile(sources, tmp_path / name, core=core, include_dirs=[lib])
        size = toolchain.section_sizes(objects)

        # the arena is the library's whole working RAM: no hidden static buffers
        assert size.bss + size.data == result.arena_size, f"{name} on {core}: {size}"
        assert size.data == 0  # weights and parameters are const (flash), nothing to copy
        # weights and precomputed parameters are in .rodata
        assert size.rodata >= result.const_bytes
        assert size.rodata <= result.const_bytes + 4096
        assert 0 < size.text <= MAX_TEXT_BYTES

        # self-contained: no libc; on ARMv6-M only libgcc's arithmetic helpers
        undefined = toolchain.undefined_symbols(objects)
        if core == "cortex-m0plus":
            assert undefined <= ARMV6M_HELPERS, f"{name}: {undefined}"
        else:
            assert undefined == set(), f"{name} on {core}: {undefined}"


def test_flash_of_the_library_is_below_the_tflite_file(generated, tmp_path):
    """text + rodata of the library (code, weights, parameters) against the .tflite flatbuffer
    alone, which TFLite Micro needs on top of its interpreter and kernels."""
    for name, (_, lib) in generated.items():
        objects = toolchain.cross_compile(sorted(lib.glob("*.c")), tmp_path / name, core="cortex-m4",
                                     include_dirs=[lib])  # fmt: skip
        size = toolchain.section_sizes(objects)
        tflite = (MODELS_DIR / f"{name}.tflite").stat().st_size
        assert size.text + size.rodata < tflite, f"{name}: {size} vs .tflite {tflite}"


def test_a_warning_fails_the_build(tmp_path):
    with pytest.raises(DeviceError, match="unused variable") as info:
        toolchain.cross_compile([HERE / "test_qemu_standin" / "unused_variable.c"], tmp_path,
                           core="cortex-m4")  # fmt: skip
    assert "-Werror" in info.value.hint  # the command is shown


def test_flags_per_core():
    assert toolchain.compile_flags("cortex-m4")[:3] == [
        "-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
    ]  # fmt: skip
    assert "-mfloat-abi=soft" in toolchain.compile_flags("cortex-m0plus")
    for flag in ("-std=c99", "-Wall", "-Wextra", "-Werror", "-mthumb"):
        assert flag in toolchain.compile_flags("cortex-m55")
    with pytest.raises(DeviceError, match="unknown core 'cortex-a53'"):
        toolchain.compile_flags("cortex-a53")
