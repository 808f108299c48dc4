"""The Arm cross-toolchain: compiler flags per Cortex-M core (from the target profiles),
``arm-none-eabi-gcc`` with no warning tolerated, and the figures of what it built.

- ``CORES`` / ``core_for``: one ``Core`` per Cortex-M target profile (its ``[build] cflags`` and
  ``qemu_machine``), plus the Cortex-M3 (no profile; its board runs Cortex-M0+ code).
- ``cross_compile``: ``-std=c99 -Wall -Wextra -Werror`` objects, a DeviceError with the
  compiler's messages on any warning.
- ``section_sizes`` (``arm-none-eabi-size -A``: text, rodata, data, bss), ``symbols``
  (``nm``), ``undefined_symbols`` (``nm -u``), ``function_at`` (``addr2line``).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from edgeslim.errors import DeviceError

CC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
NM = "arm-none-eabi-nm"
OBJCOPY = "arm-none-eabi-objcopy"
ADDR2LINE = "arm-none-eabi-addr2line"
ADDR2LINE = "arm-none-eabi-addr2line"
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
DEFAULT_STACK_BYTES = 64 * 1024
DEFAULT_OPT = "-O2"


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: its compiler flags and the QEMU board that runs its code."""

    name: str
    cflags: tuple[str, ...]
    board: str
    note: str = ""


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

def core_for(name: str) -> Core:
    if name not in CORES:
        raise DeviceError(f"unknown core {name!r}", hint=f"use one of {sorted(CORES)}")
    return CORES[name]



def require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise DeviceError(f"{tool} is not installed (not found on PATH)", hint=TOOLCHAIN_HINT)
    return path


def run(cmd: Sequence[str], what: str, timeout: float = 300) -> subprocess.CompletedProcess:
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
    cc = require_tool(CC)
    obj_dir = Path(obj_dir)
    obj_dir.mkdir(parents=True, exist_ok=True)
    flags = compile_flags(core, opt=opt) + [f"-I{d}" for d in include_dirs] + list(extra_flags)
    objects = []
    for src in sources:
        src = Path(src)
        obj = obj_dir / (src.stem + ".o")
        run([cc, *flags, "-c", str(src), "-o", str(obj)], f"compiling {src.name}")
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
    size = require_tool(SIZE)
    totals = dict.fromkeys(("text", "rodata", "data", "bss"), 0)
    for f in files:
        out = run([size, "-A", str(f)], f"{SIZE} {Path(f).name}").stdout
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
    nm = require_tool(NM)
    names: set[str] = set()
    for obj in objects:
        out = run([nm, "-u", str(obj)], f"{NM} {Path(obj).name}").stdout
        names.update(line.split()[-1] for line in out.splitlines() if line.strip())
    return names



def function_at(elf: Path, address: int) -> str:
    """The function holding ``address`` in ``elf`` (``arm-none-eabi-addr2line``), or '?'."""
    tool = shutil.which(ADDR2LINE)
    if tool is None:
        return "?"
    proc = subprocess.run([tool, "-f", "-e", str(elf), f"0x{address & ~1:x}"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    name = proc.stdout.splitlines()[0].strip() if proc.stdout else ""
    return name or "?"



def symbols(elf: Path) -> dict[str, int]:
    """Every symbol of an ELF with its address (``arm-none-eabi-nm``)."""
    out = run([require_tool(NM), str(elf)], f"{NM} {Path(elf).name}").stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = int(parts[0], 16)
    return syms
