"""The compiled library itself: its static RAM (.bss + .data) is exactly the arena the
generator announces, nothing large sits on the stack, and nothing defines main."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from edgeslim.codegen import generate

ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2",
             "-std=c99", "-Wall", "-Wextra", "-Werror", "-ffunction-sections",
             "-fdata-sections", "-fstack-usage"]
MAX_FRAME = 256  # bytes: the kernels keep a few scalars and at most a pointer table


def _size(tool: str, obj) -> dict:
    out = subprocess.run([tool, "-A", str(obj)], capture_output=True, text=True, check=True)
    sizes = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def _static_ram(sizes: dict) -> int:
    return sum(v for k, v in sizes.items()
               if k.startswith((".bss", ".data", ".sbss", ".sdata")) or k == "COMMON")


@pytest.mark.parametrize("model", ["ds_cnn", "resnet", "mobilenet", "ops/concatenation_00"])
def test_bss_and_data_equal_the_arena_on_cortex_m4(model, tmp_path, chost):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.fail("arm-none-eabi-gcc is required (Debian package gcc-arm-none-eabi)")
    path = chost.goldens / ("models" if "/" not in model else "") / f"{model}.tflite"
    name = model.replace("/", "_")
    result = generate(path.read_bytes(), tmp_path / "c", name=name)
    obj = tmp_path / f"{name}.o"
    proc = subprocess.run(["arm-none-eabi-gcc", *ARM_FLAGS, "-c", str(result.source),
                           "-o", str(obj)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""  # not even a warning
    sizes = _size("arm-none-eabi-size", obj)
    assert _static_ram(sizes) == result.arena_size
    header = result.header.read_text()
    assert re.search(rf"#define {name.upper()}_ARENA_SIZE {result.arena_size}\b", header)
    # Stack: every function's frame is small (-fstack-usage writes one line per function).
    frames = [int(line.split()[-2]) for line in (tmp_path / f"{name}.su").read_text().splitlines()]
    assert frames and max(frames) <= MAX_FRAME, max(frames)
    assert "dynamic" not in (tmp_path / f"{name}.su").read_text()
    # Self-contained: only the entry point is exported, no main, no libc calls but roundf.
    nm = subprocess.run(["arm-none-eabi-nm", str(obj)], capture_output=True, text=True,
                        check=True).stdout
    defined = {ln.split()[-1] for ln in nm.splitlines() if re.search(r" [TDBR] ", ln)}
    undefined = {ln.split()[-1] for ln in nm.splitlines() if " U " in ln}
    assert defined == {f"{name}_invoke", f"{name}_invoke_with_arena"}
    assert "main" not in defined
    # (memcpy, memmove, memset: GCC turns copy and fill loops into calls to them, which
    # every freestanding C environment GCC targets must provide)
    assert undefined <= {"roundf", "__aeabi_ldivmod", "__aeabi_lmul", "__aeabi_idiv",
                         "__aeabi_idivmod", "__aeabi_uidiv", "memcpy", "memmove",
                         "memset"}, undefined


def test_no_static_arena_build_uses_no_static_ram(tmp_path, chost):
    """With <NAME>_NO_STATIC_ARENA the caller owns the arena: no .bss/.data at all."""
    result = generate((chost.goldens / "models" / "ds_cnn.tflite").read_bytes(),
                      tmp_path / "c", name="kws")
    obj = tmp_path / "kws.o"
    subprocess.run(["arm-none-eabi-gcc", *ARM_FLAGS, "-DKWS_NO_STATIC_ARENA", "-c",
                    str(result.source), "-o", str(obj)], check=True, capture_output=True,
                   cwd=tmp_path)
    assert _static_ram(_size("arm-none-eabi-size", obj)) == 0
    nm = subprocess.run(["arm-none-eabi-nm", str(obj)], capture_output=True, text=True,
                        check=True).stdout
    assert {ln.split()[-1] for ln in nm.splitlines() if " T " in ln} == {"kws_invoke_with_arena"}


def test_host_build_has_the_same_static_ram(tmp_path, chost):
    result = generate((chost.goldens / "models" / "resnet.tflite").read_bytes(),
                      tmp_path / "c", name="resnet")
    obj = tmp_path / "resnet.o"
    # Without the sanitizer, whose instrumentation adds its own .data.
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-c",
                    str(result.source), "-o", str(obj)], check=True, capture_output=True)
    sizes = _size("size", obj)
    assert sizes.get(".bss", 0) + sizes.get(".data", 0) == result.arena_size
