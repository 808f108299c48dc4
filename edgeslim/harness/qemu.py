"""Emulated Cortex-M boards: cross-compile a model library into the test firmware, run it
under ``qemu-system-arm`` and talk to it over a socket serial link.

The pieces, each usable alone:

- ``BOARDS`` / ``CORES``: the QEMU boards (memory map, UART, tick timer) and the compiler
  flags per core, read from the target profiles' ``[build] cflags`` and ``qemu_machine``
  (facts: docs in firmware_templates/cortex_m/README.md).
- ``cross_compile`` and ``section_sizes``: ``arm-none-eabi-gcc -Wall -Wextra -Werror`` and
  ``arm-none-eabi-size`` figures (text, rodata, data, bss) of a set of objects.
- ``build_test_firmware``: renders firmware_templates/cortex_m/ for one board and model
  library and links the ELF.
- ``QemuSession``: one QEMU process with UART0 on a TCP socket on a free port, a deadline on
  every read, and the process killed on close (use it as a context manager).
- ``TestFirmware``: the host side of the test firmware's binary protocol (hello, one
  inference over serial, a batch preloaded with ``-device loader``, exit).
- ``run_firmware``: all of the above for a batch of int8 inputs -> outputs, instruction counts
  and stack use.

Under ``-icount shift=N`` every instruction takes 2**N ns of virtual time, so the tick
timer's readings convert to exact instruction counts (``instruction_index``); these are
instruction counts, not cycles (no pipeline, cache or wait states are modelled).
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgeslim.errors import DeviceError
from edgeslim.resources import templates_dir

CC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
NM = "arm-none-eabi-nm"
ADDR2LINE = "arm-none-eabi-addr2line"
QEMU = "qemu-system-arm"
TOOLCHAIN_HINT = (
    "Install the Arm toolchain and the emulator "
    "(Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)."
)

# Flags every object is compiled with: C99, no warning tolerated.
WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror")
COMMON_FLAGS = ("-mthumb", "-ffunction-sections", "-fdata-sections")
LINK_FLAGS = (
    "-nostartfiles",
    "--specs=nano.specs",
    "--specs=nosys.specs",
    "-Wl,--gc-sections",
)
DEFAULT_ICOUNT_SHIFT = 6
DEFAULT_STACK_BYTES = 64 * 1024
DEFAULT_OPT = "-O2"


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: its compiler flags and the QEMU board that runs its code."""

    name: str
    cflags: tuple[str, ...]
    board: str
    note: str = ""


@dataclass(frozen=True)
class Board:
    """A QEMU machine's memory map and peripherals (../shared/notes/qemu-cortex-m.md)."""

    machine: str
    core: str
    flash_origin: int
    flash_size: int
    ram_origin: int
    ram_size: int
    uart_base: int
    timer_base: int  # CMSDK APB timer 0, the tick counter (polled); 0: SysTick instead
    timer_hz: int
    bulk_addr: int  # extra memory the host preloads bulk inputs into
    bulk_size: int


# What the profiles cannot say: notes per core, and the Cortex-M3 (its board runs M0+ code), which
# has no target profile of its own.
_CORE_NOTES = {
    "cortex-m0plus": "QEMU has no Cortex-M0+ board: ARMv6-M code runs on the Cortex-M3 (a superset); "
    "unaligned accesses do not fault there as they would on silicon",
}
_CORES_WITHOUT_PROFILE = (Core("cortex-m3", ("-mcpu=cortex-m3", "-mfloat-abi=soft"), "mps2-an385"),)


def _cores_from_profiles() -> dict[str, Core]:
    """One Core per built-in Cortex-M target profile: its ``[build] cflags`` (less the flags every
    object gets) and its ``[build] qemu_machine``. The profiles are the one place naming them."""
    import shlex

    from edgeslim.targets import list_targets

    cores = {c.name: c for c in _CORES_WITHOUT_PROFILE}
    for t in list_targets():
        machine, cflags = t.build.get("qemu_machine"), t.build.get("cflags")
        if t.is_mcu and machine and cflags and t.profile not in cores:
            flags = tuple(f for f in shlex.split(cflags) if f not in COMMON_FLAGS)
            cores[t.profile] = Core(t.profile, flags, machine, _CORE_NOTES.get(t.profile, ""))
    return dict(sorted(cores.items()))


CORES: dict[str, Core] = _cores_from_profiles()

_MB = 1024 * 1024
BOARDS: dict[str, Board] = {
    b.machine: b
    for b in (
        Board("mps2-an385", "cortex-m3", 0x0, 4 * _MB, 0x20000000, 4 * _MB,
              0x40004000, 0x40000000, 25_000_000, 0x21000000, 16 * _MB),
        Board("mps2-an386", "cortex-m4", 0x0, 4 * _MB, 0x20000000, 4 * _MB,
              0x40004000, 0x40000000, 25_000_000, 0x21000000, 16 * _MB),
        Board("mps2-an500", "cortex-m7", 0x0, 4 * _MB, 0x20000000, 4 * _MB,
              0x40004000, 0x40000000, 25_000_000, 0x60000000, 16 * _MB),
        # IoTKit (SSE-200): code and RAM at their secure aliases, where the core boots;
        # its CMSDK timers sit behind the security controller, so SysTick times it.
        Board("mps2-an505", "cortex-m33", 0x10000000, 4 * _MB, 0x38000000, 4 * _MB,
              0x50200000, 0, 20_000_000, 0x80000000, 16 * _MB),
        Board("mps3-an547", "cortex-m55", 0x0, 512 * 1024, 0x20000000, 512 * 1024,
              0x49303000, 0, 32_000_000, 0x60000000, 16 * _MB),  # SSE-300: no CMSDK timer
    )
}


def board_for(target: str) -> Board:
    """A board by QEMU machine name (``mps2-an386``) or by core (``cortex-m4``)."""
    if target in BOARDS:
        return BOARDS[target]
    if target in CORES:
        return BOARDS[CORES[target].board]
    raise DeviceError(
        f"no emulated board for {target!r}",
        hint=f"use one of the boards {sorted(BOARDS)} or cores {sorted(CORES)}",
    )


def core_for(name: str) -> Core:
    if name not in CORES:
        raise DeviceError(f"unknown core {name!r}", hint=f"use one of {sorted(CORES)}")
    return CORES[name]


# -- compiling ---------------------------------------------------------------------------


def _require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise DeviceError(f"{tool} is not installed (not found on PATH)", hint=TOOLCHAIN_HINT)
    return path


def _run(cmd: Sequence[str], what: str, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise DeviceError(f"{what} took more than {timeout:.0f} s", hint=" ".join(cmd)) from exc
    if proc.returncode != 0:
        raise DeviceError(
            f"{what} failed (exit {proc.returncode}):\n{(proc.stderr or proc.stdout).strip()}",
            hint="command: " + " ".join(cmd),
        )
    return proc


def compile_flags(core: str | Core, *, opt: str = DEFAULT_OPT) -> list[str]:
    """The full ``arm-none-eabi-gcc`` flags for a core (warnings are errors)."""
    c = core if isinstance(core, Core) else core_for(core)
    return [*c.cflags, *COMMON_FLAGS, opt, *WARNING_FLAGS]


def cross_compile(
    sources: Iterable[Path],
    obj_dir: Path,
    *,
    core: str | Core,
    include_dirs: Iterable[Path] = (),
    opt: str = DEFAULT_OPT,
    extra_flags: Sequence[str] = (),
) -> list[Path]:
    """Compile C sources for ``core`` with ``-Wall -Wextra -Werror``; return the objects.

    Raises DeviceError with the compiler's messages on any warning or error.
    """
    cc = _require_tool(CC)
    obj_dir = Path(obj_dir)
    obj_dir.mkdir(parents=True, exist_ok=True)
    flags = compile_flags(core, opt=opt) + [f"-I{d}" for d in include_dirs] + list(extra_flags)
    objects = []
    for src in sources:
        src = Path(src)
        obj = obj_dir / (src.stem + ".o")
        _run([cc, *flags, "-c", str(src), "-o", str(obj)], f"compiling {src.name}")
        objects.append(obj)
    return objects


@dataclass(frozen=True)
class SectionSizes:
    """Bytes by kind of section, summed over objects (``arm-none-eabi-size -A``)."""

    text: int
    rodata: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        """What the objects put in flash: code, constants and .data's initial values."""
        return self.text + self.rodata + self.data

    @property
    def ram(self) -> int:
        """Static RAM: .data + .bss."""
        return self.data + self.bss

    def as_dict(self) -> dict:
        return {"text": self.text, "rodata": self.rodata, "data": self.data, "bss": self.bss}


_SECTION_KINDS = (
    ("text", (".text",)),
    ("rodata", (".rodata",)),
    ("data", (".data",)),
    ("bss", (".bss", "COMMON")),
)


def section_sizes(files: Iterable[Path]) -> SectionSizes:
    """Text, rodata, data and bss bytes of objects or an ELF (``arm-none-eabi-size -A``)."""
    size = _require_tool(SIZE)
    totals = dict.fromkeys(("text", "rodata", "data", "bss"), 0)
    for f in files:
        out = _run([size, "-A", str(f)], f"{SIZE} {Path(f).name}").stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                continue
            name, nbytes = parts[0], int(parts[1])
            for kind, prefixes in _SECTION_KINDS:
                if any(name == p or name.startswith(p + ".") for p in prefixes):
                    totals[kind] += nbytes
                    break
    return SectionSizes(**totals)


def undefined_symbols(objects: Iterable[Path]) -> set[str]:
    """Symbols the objects use but do not define (libc, libgcc helpers), ``arm-none-eabi-nm -u``."""
    nm = _require_tool(NM)
    names: set[str] = set()
    for obj in objects:
        out = _run([nm, "-u", str(obj)], f"{NM} {Path(obj).name}").stdout
        names.update(line.split()[-1] for line in out.splitlines() if line.strip())
    return names


# -- the test firmware -------------------------------------------------------------------

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


def _jinja_env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "cortex_m")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


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
    env = _jinja_env()
    context = {
        "board": b,
        "name": name,
        "header": header.name,
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
    _run(
        [
            _require_tool(CC),
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


# -- QEMU ----------------------------------------------------------------------------------


def qemu_command(machine: str, elf: Path, port: int, *, wait: bool,
                 icount_shift: int | None) -> list[str]:  # fmt: skip
    """The ``qemu-system-arm`` command line running ``elf`` on ``machine``, UART0 on a TCP
    server at 127.0.0.1:``port`` (``wait``: the guest starts only once a client connects)."""
    cmd = [
        _require_tool(QEMU),
        "-M", machine,
        "-display", "none",
        "-monitor", "none",
        "-kernel", str(elf),
        "-semihosting-config", "enable=on,target=native",
        "-chardev",
        f"socket,id=u0,host=127.0.0.1,port={port},server=on,wait={'on' if wait else 'off'},nodelay=on",
        "-serial", "chardev:u0",
    ]  # fmt: skip
    if icount_shift is not None:
        cmd += ["-icount", f"shift={icount_shift}"]
    return cmd


def stop_process(process: subprocess.Popen) -> int | None:
    """Terminate ``process`` (kill it if it does not exit within 5 s); its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QemuSession:
    """One ``qemu-system-arm`` process with UART0 on a TCP socket (pyserial ``socket://``).

    QEMU waits for the host to connect before the guest starts (``wait=on``), so nothing the
    firmware sends is lost. Every read has a deadline; ``close()`` (or leaving the ``with``
    block) kills the process if it is still running.
    """

    def __init__(
        self,
        elf: Path,
        board: str | Board,
        *,
        icount_shift: int | None = DEFAULT_ICOUNT_SHIFT,
        preload: Sequence[tuple[Path, int]] = (),
        timeout: float = 60.0,
        connect_timeout: float = 15.0,
    ):
        self.elf = Path(elf)
        self.board = board if isinstance(board, Board) else board_for(board)
        self.icount_shift = icount_shift
        self.preload = tuple(preload)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.serial = None
        self._stderr = None
        self.returncode: int | None = None

    # context manager
    def __enter__(self) -> "QemuSession":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def command(self, port: int) -> list[str]:
        cmd = qemu_command(self.board.machine, self.elf, port, wait=True, icount_shift=self.icount_shift)
        for path, addr in self.preload:
            cmd += ["-device", f"loader,file={path},addr=0x{addr:08x},force-raw=on"]
        return cmd

    def start(self) -> None:
        import serial

        last_error = ""
        for _attempt in range(3):  # the free port can be taken between probe and bind
            self.port = free_port()
            self._stderr = tempfile.TemporaryFile()
            self.process = subprocess.Popen(
                self.command(self.port),
                stdin=subprocess.DEVNULL,
                stdout=self._stderr,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + self.connect_timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    self.serial = serial.serial_for_url(
                        f"socket://127.0.0.1:{self.port}", timeout=0.5
                    )
                    return
                except serial.SerialException as exc:
                    last_error = str(exc)
                    time.sleep(0.05)
            last_error = self.output() or last_error
            self.close()
        raise DeviceError(
            f"could not start {self.board.machine} in QEMU: {last_error.strip()}",
            hint="check that qemu-system-arm runs: " + " ".join(self.command(0)),
        )

    def output(self) -> str:
        """What QEMU printed (stdout and stderr) so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def write(self, data: bytes) -> None:
        self.serial.write(data)
        self.serial.flush()

    def read_exact(self, n: int, what: str = "reply") -> bytes:
        """Exactly ``n`` bytes from the board, or DeviceError after ``timeout`` s."""
        import serial

        deadline = time.monotonic() + self.timeout
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.serial.read(n - len(buf))
            except serial.SerialException:  # QEMU closed the socket: it is exiting
                chunk = b""
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            if chunk:
                buf += chunk
                continue
            if self.process.poll() is not None:
                raise DeviceError(
                    f"QEMU ({self.board.machine}) exited with code {self.process.returncode} "
                    f"while the host waited for the {what} ({len(buf)}/{n} bytes)",
                    hint=_exit_hint(self.process.returncode) + self.output(),
                )
            if time.monotonic() > deadline:
                raise DeviceError(
                    f"no {what} from {self.board.machine} within {self.timeout:.0f} s "
                    f"({len(buf)}/{n} bytes)",
                    hint="the firmware hung or the model is too slow for this timeout",
                )
        return bytes(buf)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for QEMU to exit (e.g. after a semihosting exit); its exit code."""
        try:
            self.returncode = self.process.wait(timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(
                f"QEMU ({self.board.machine}) did not exit within {timeout or self.timeout} s"
            ) from exc
        return self.returncode

    def close(self) -> None:
        if self.serial is not None:
            try:
                self.serial.close()
            except OSError:
                pass
            self.serial = None
        if self.process is not None:
            self.returncode = stop_process(self.process)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _function_at(elf: Path, address: int) -> str:
    """The function holding ``address`` in ``elf`` (``arm-none-eabi-addr2line``), or '?'."""
    tool = shutil.which(ADDR2LINE)
    if tool is None:
        return "?"
    proc = subprocess.run([tool, "-f", "-e", str(elf), f"0x{address & ~1:x}"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    name = proc.stdout.splitlines()[0].strip() if proc.stdout else ""
    return name or "?"


def _exit_hint(code: int | None) -> str:
    return {
        0xF1: "the firmware took a HardFault. ",
        0xF2: "the firmware took an unexpected exception. ",
    }.get(code or 0, "")


# -- the test firmware's protocol --------------------------------------------------------

_HELLO = struct.Struct("<4s5I2Q2I")
_RESULT = struct.Struct("<ciQQI")
PROTOCOL_VERSION = 2
TIMER_OVERFLOW = 2**64 - 1  # the firmware's ESLM_TIMER_OVERFLOW
BULK_MAGIC = b"ESLB"
BULK_HEADER = struct.Struct("<4sIII")


def instruction_index(ticks: int, timer_hz: int, shift: int = DEFAULT_ICOUNT_SHIFT) -> int:
    """The instruction a timer reading was taken at, counted from the timer's start.

    Under ``-icount shift`` instruction k runs at virtual time k * 2**shift ns and the timer
    shows floor(time / tick period). A tick (40 ns at 25 MHz, 31.25 ns at 32 MHz) is shorter
    than an instruction (64 ns), so one reading pins down one instruction: the first k with
    k * 2**shift >= ticks * period, i.e. ceil(ticks * 1e9 / (hz * 2**shift)), in integers.
    Differences of these indices are exact instruction counts (no +-1 from the tick phase).
    This holds while a tick is shorter than 2**shift ns (shift >= 6 on these boards).
    """
    den = timer_hz * (1 << shift)
    return (ticks * 10**9 + den - 1) // den


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
                f"at pc=0x{pc:08x} in {_function_at(self.firmware.elf, pc)}, "
                f"lr=0x{lr:08x} in {_function_at(self.firmware.elf, lr)} "
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


__all__ = [
    "BOARDS",
    "CORES",
    "Board",
    "Core",
    "Firmware",
    "FirmwareRun",
    "Hello",
    "Measurement",
    "QemuSession",
    "SectionSizes",
    "TestFirmware",
    "board_for",
    "build_test_firmware",
    "compile_flags",
    "core_for",
    "cross_compile",
    "firmware_for_library",
    "free_port",
    "run_firmware",
    "section_sizes",
    "instruction_index",
    "undefined_symbols",
    "write_bulk",
]

