"""Firmware for the emulated boards, rendered from firmware_templates/cortex_m/ and linked with
the cross-toolchain:

- ``build_dut_firmware``: the device-under-test harness (the MLPerf Tiny command set of dut.c,
  docs/protocol.md) around a generated C model library, for a Cortex-M target profile. It links
  twice: the first link places the library's constant data between two symbols, the host
  computes its CRC-32 from the linked image, and the second link carries that value, which the
  device checks at boot against its own computation over its flash (``info%`` reports both).
- ``build_test_firmware`` / ``firmware_for_library``: edgeslim's internal test firmware (its
  binary protocol is in ``edgeslim.harness._testfw``), used by the tests and tools/bench_codegen.py.

The harness's timing port for the emulated boards (port_mps.c) uses SysTick: under
``qemu -icount`` its ticks are exact instruction counts (``icount%``), not device milliseconds.
"""

from __future__ import annotations

import re

import shlex
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgeslim.errors import DeviceError
from edgeslim.harness.emulator import BOARDS, DEFAULT_ICOUNT_SHIFT, Board, board_for
from edgeslim.harness.toolchain import (
    CC, COMMON_FLAGS, CORES, DEFAULT_OPT, LINK_FLAGS, OBJCOPY, Core, SectionSizes, core_for,
    cross_compile, require_tool, run, section_sizes, symbols,
)  # fmt: skip
from edgeslim.resources import templates_dir

DEFAULT_STACK_BYTES = 64 * 1024
HARNESS_SOURCES = ("startup.c", "uart.c", "stack.c", "semihost.c", "port_mps.c", "dut.c")
# The library's objects go in a folder of this name; the linker script selects its
# constant data by that path.
LIBRARY_OBJ_DIR = "eslm_model_obj"
PROTOCOL_VERSION = 1

FIRMWARE_SOURCES = ("startup.c", "uart.c", "timer.c", "stack.c", "semihost.c")


@dataclass(frozen=True)
class Firmware:
    """A linked test firmware and the figures of the model library inside it."""

    elf: Path
    board: Board
    core: Core
    name: str
    input_bytes: int
    output_bytes: int
    arena_bytes: int
    library_objects: tuple[Path, ...]
    library_size: SectionSizes
    firmware_size: SectionSizes


def jinja_env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "cortex_m")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def invoke_entry(header: Path, name: str) -> str:
    """The library function the firmware calls with one input and one output buffer:
    ``<name>_invoke``, or for a model with several inputs or outputs
    ``<name>_invoke_packed`` (the inputs concatenated, the outputs concatenated)."""
    packed = f"int {name}_invoke_packed(const int8_t *inputs, int8_t *outputs);"
    return f"{name}_invoke_packed" if packed in Path(header).read_text() else f"{name}_invoke"


def build_test_firmware(
    library_sources: Sequence[Path],
    header: Path,
    out_dir: Path,
    *,
    name: str,
    input_bytes: int,
    output_bytes: int,
    arena_bytes: int,
    board: str | Board = "mps2-an386",
    core: str | Core | None = None,
    opt: str = DEFAULT_OPT,
    stack_bytes: int = DEFAULT_STACK_BYTES,
    library_flags: Sequence[str] = (),
) -> Firmware:
    """Cross-compile a model library (``int <name>_invoke(const int8_t*, int8_t*)`` declared
    in ``header``) and the test firmware for ``board``; link ``out_dir/firmware.elf``.

    ``core`` defaults to the board's own core; pass ``cortex-m0plus`` with ``mps2-an385`` to
    run ARMv6-M code on the emulated Cortex-M3. ``library_flags`` are extra compiler flags for
    the library only (e.g. ``-D`` options).
    """
    b = board if isinstance(board, Board) else board_for(board)
    c = core if isinstance(core, Core) else core_for(core or b.core)
    if min(input_bytes, output_bytes) <= 0:
        raise DeviceError(
            f"model {name!r} has {input_bytes} input and {output_bytes} output bytes",
            hint="the test firmware needs a model with one non-empty int8 input and output",
        )
    header = Path(header)
    out_dir = Path(out_dir)
    gen_dir = out_dir / "firmware"
    gen_dir.mkdir(parents=True, exist_ok=True)
    env = jinja_env()
    context = {
        "board": b,
        "name": name,
        "header": header.name,
        "invoke": invoke_entry(header, name),
        "input_bytes": input_bytes,
        "output_bytes": output_bytes,
        "arena_bytes": arena_bytes,
        "stack_size": stack_bytes,
    }
    for template, target in (
        ("board.h.j2", "board.h"),
        ("link.ld.j2", "link.ld"),
        ("test_main.c.j2", "test_main.c"),
    ):
        (gen_dir / target).write_text(env.get_template(template).render(**context))

    lib_objects = cross_compile(
        library_sources, out_dir / "obj" / "lib", core=c, include_dirs=[header.parent], opt=opt,
        extra_flags=library_flags,
    )  # fmt: skip
    fw_src = templates_dir() / "cortex_m"
    fw_objects = cross_compile(
        [*(fw_src / s for s in FIRMWARE_SOURCES), gen_dir / "test_main.c"],
        out_dir / "obj" / "firmware",
        core=c,
        include_dirs=[gen_dir, fw_src, header.parent],
        opt=opt,
    )
    elf = out_dir / "firmware.elf"
    run(
        [
            require_tool(CC),
            *c.cflags,
            *COMMON_FLAGS,
            *LINK_FLAGS,
            f"-T{gen_dir / 'link.ld'}",
            f"-Wl,-Map={out_dir / 'firmware.map'}",
            *map(str, fw_objects),
            *map(str, lib_objects),
            "-lm",
            "-o",
            str(elf),
        ],
        "linking the test firmware",
    )
    return Firmware(
        elf=elf,
        board=b,
        core=c,
        name=name,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        arena_bytes=arena_bytes,
        library_objects=tuple(lib_objects),
        library_size=section_sizes(lib_objects),
        firmware_size=section_sizes([elf]),
    )



def library_files(library_dir: Path, name: str, *, hint: str) -> tuple[Path, list[Path]]:
    """A generated library folder's ``<name>.h`` and its ``*.c`` files; a DeviceError with
    ``hint`` when either is missing."""
    library_dir = Path(library_dir)
    header = library_dir / f"{name}.h"
    sources = sorted(library_dir.glob("*.c"))
    if not header.is_file() or not sources:
        raise DeviceError(
            f"{library_dir} holds no generated library named {name!r} ({header.name} and .c files)",
            hint=hint,
        )
    return header, sources

def firmware_for_library(
    library_dir: Path,
    out_dir: Path,
    *,
    name: str,
    input_bytes: int,
    output_bytes: int,
    arena_bytes: int,
    board: str | Board = "mps2-an386",
    core: str | Core | None = None,
    opt: str = DEFAULT_OPT,
) -> Firmware:
    """``build_test_firmware`` for a generated library folder: every ``*.c`` in it, and
    ``<name>.h``."""
    header, sources = library_files(
        library_dir, name, hint="generate it first with edgeslim.codegen.generate(model, out_dir, name=...)"
    )
    return build_test_firmware(
        sources, header, out_dir, name=name, input_bytes=input_bytes, output_bytes=output_bytes,
        arena_bytes=arena_bytes, board=board, core=core, opt=opt,
    )  # fmt: skip


# -- the device-under-test harness ---------------------------------------------------------


@dataclass(frozen=True)
class DutFirmware:
    """A linked harness firmware for one generated model library."""

    elf: Path
    board: Board
    core: Core
    name: str
    model_sha256: str
    input_bytes: int
    output_bytes: int
    arena_bytes: int
    weights_bytes: int
    weights_crc: int  # CRC-32 of the library's constant data in the image
    icount_shift: int | None  # the -icount shift the firmware's icount% assumes


def board_for_target(spec: str) -> tuple[Board, Core]:
    """The QEMU board and compiler flags a Cortex-M target profile names.

    The core's flags are the profile's ``[build] cflags``; the board is its
    ``[build] qemu_machine`` (memory map and UART from ``BOARDS``).
    """
    from edgeslim.targets import load_target

    target = load_target(spec)
    machine = target.build.get("qemu_machine")
    cflags = target.build.get("cflags")
    if not target.is_mcu or not machine or not cflags:
        raise DeviceError(
            f"target {target.profile} names no emulated board "
            "([build] qemu_machine and cflags in its profile)",
            hint="emulation needs a Cortex-M profile such as cortex-m4, cortex-m33 or cortex-m55",
        )
    if machine not in BOARDS:
        raise DeviceError(
            f"target {target.profile} names QEMU machine {machine!r}, which edgeslim has no "
            "memory map for",
            hint=f"known boards: {', '.join(sorted(BOARDS))}",
        )
    flags = tuple(f for f in shlex.split(cflags) if f not in COMMON_FLAGS)
    known = CORES.get(target.profile)
    core = Core(target.core or target.profile, flags, machine, known.note if known else "")
    return BOARDS[machine], core


def _header_value(header: Path, macro: str) -> str:
    for line in header.read_text().splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0] == "#define" and parts[1] == macro:
            return parts[2].strip()
    raise DeviceError(
        f"{header.name} defines no {macro}",
        hint="the harness needs a library generated by this edgeslim from an int8 model with "
        "quantized int8 input and output",
    )


def _linked_weights(elf: Path, work: Path) -> bytes:
    """The library's constant data as linked (from the .text section of the ELF)."""
    syms = symbols(elf)
    start, end = syms["__eslm_weights_start__"], syms["__eslm_weights_end__"]
    text = work / "text.bin"
    run(
        [require_tool(OBJCOPY), "-O", "binary", "--only-section=.text", str(elf), str(text)],
        "extracting the firmware's .text",
    )
    base = syms["eslm_vectors"]  # the first thing in .text (link.ld.j2)
    data = text.read_bytes()
    return data[start - base:end - base]


def build_dut_firmware(
    library_dir: Path,
    out_dir: Path,
    *,
    name: str,
    target: str = "cortex-m4",
    icount_shift: int | None = DEFAULT_ICOUNT_SHIFT,
    opt: str = DEFAULT_OPT,
    stack_bytes: int = DEFAULT_STACK_BYTES,
) -> DutFirmware:
    """Cross-compile the generated library ``library_dir/<name>.{c,h}`` and the harness for
    ``target`` (a Cortex-M profile name); link ``out_dir/harness.elf``.

    ``icount_shift`` is the ``qemu -icount`` shift the firmware's ``icount%`` converts ticks
    with (None: a firmware for a real board, whose ``icount%`` answers with an error).
    """
    library_dir, out_dir = Path(library_dir), Path(out_dir)
    header, sources = library_files(
        library_dir, name, hint="build the bundle with --backend c, or generate it with edgeslim.codegen.generate"
    )
    invoke = invoke_entry(header, name)
    text = header.read_text()
    declared = re.search(rf"int {name}_invoke\((.*?)\);", text, re.S)
    if declared is None or "float" in declared.group(1):
        raise DeviceError(
            f"model {name!r} does not take and return int8 tensors",
            hint="the harness speaks int8 models' tensors (a fully-integer model)",
        )
    NAME = name.upper()
    sha256 = _header_value(header, f"{NAME}_MODEL_SHA256").strip('"')
    input_bytes = int(_header_value(header, f"{NAME}_INPUT_BYTES"))
    output_bytes = int(_header_value(header, f"{NAME}_OUTPUT_BYTES"))
    arena_bytes = int(_header_value(header, f"{NAME}_ARENA_SIZE"))
    _header_value(header, f"{NAME}_OUTPUT_SCALE")  # quantized output, or a clear error

    board, core = board_for_target(target)
    gen_dir = out_dir / "harness"
    gen_dir.mkdir(parents=True, exist_ok=True)
    env = jinja_env()
    lib_obj_dir = out_dir / LIBRARY_OBJ_DIR
    context = {
        "board": board,
        "name": name,
        "NAME": NAME,
        "header": header.name,
        "invoke": invoke,
        "stack_size": stack_bytes,
        "icount_shift": icount_shift or 0,
        "weights_objects": f"*/{LIBRARY_OBJ_DIR}/*.o",
    }
    for template, target_file in (
        ("board.h.j2", "board.h"),
        ("link.ld.j2", "link.ld"),
        ("harness_main.c.j2", "harness_main.c"),
    ):
        (gen_dir / target_file).write_text(env.get_template(template).render(**context))

    lib_objects = cross_compile(sources, lib_obj_dir, core=core,
                                     include_dirs=[library_dir], opt=opt)  # fmt: skip
    fw_src = templates_dir() / "cortex_m"
    includes = [gen_dir, fw_src, library_dir]
    fw_objects = cross_compile(
        [*(fw_src / s for s in HARNESS_SOURCES), gen_dir / "harness_main.c"],
        out_dir / "obj", core=core, include_dirs=includes, opt=opt,
    )  # fmt: skip
    elf = out_dir / "harness.elf"

    def link(crc: int) -> None:
        crc_src = gen_dir / "weights_crc.c"
        crc_src.write_text(env.get_template("weights_crc.c.j2").render(crc=crc))
        crc_obj = cross_compile([crc_src], out_dir / "obj", core=core, opt=opt)
        run(
            [
                require_tool(CC), *core.cflags, *COMMON_FLAGS, *LINK_FLAGS,
                f"-T{gen_dir / 'link.ld'}", f"-Wl,-Map={out_dir / 'harness.map'}",
                *map(str, fw_objects), *map(str, crc_obj), *map(str, lib_objects),
                "-lm", "-o", str(elf),
            ],
            "linking the harness firmware",
        )  # fmt: skip

    link(0)  # places the constant data; its bytes do not depend on the CRC's value
    weights = _linked_weights(elf, out_dir)
    crc = zlib.crc32(weights)
    link(crc)
    if _linked_weights(elf, out_dir) != weights:
        raise DeviceError("the model's constant data moved between the two links of the harness",
                          hint="a bug in edgeslim's harness build: report it")
    return DutFirmware(
        elf=elf, board=board, core=core, name=name, model_sha256=sha256,
        input_bytes=input_bytes, output_bytes=output_bytes, arena_bytes=arena_bytes,
        weights_bytes=len(weights), weights_crc=crc, icount_shift=icount_shift,
    )  # fmt: skip
