"""``edgeslim emulate``: a Cortex-M bundle's harness firmware running on its emulated board, with
the UART on a local TCP port, as a device a protocol client (``edgeslim bench``, an MLPerf Tiny
runner, a terminal) connects to with ``socket://127.0.0.1:<port>``.

- ``bundle_firmware``: reads the bundle's manifest (its target profile) and builds the harness
  firmware (``edgeslim.harness.firmware``) from the bundle's generated C library (``c/``,
  written by ``edgeslim build --backend c``).
- ``bench_emulated``: that firmware on its board (``edgeslim.harness.emulator.Emulator``:
  ``-icount``, UART0 on a local TCP port), benched over the socket, QEMU stopped afterwards.

Under emulation the device's clock (``m-lap-us``) is virtual time, ``2**shift`` ns per
instruction: figures from it are emulator instruction counts, never device milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgeslim.errors import DeviceError
from edgeslim.harness.emulator import DEFAULT_ICOUNT_SHIFT, Emulator
from edgeslim.harness.firmware import DutFirmware, build_dut_firmware


@dataclass(frozen=True)
class BundleInfo:
    """What ``emulate`` needs from a bundle: its target profile and its C library."""

    bundle: Path
    profile: str
    library_dir: Path
    name: str


def read_bundle(bundle: Path) -> BundleInfo:
    """The target profile and generated library of a Cortex-M bundle built with --backend c."""
    bundle = Path(bundle)
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise DeviceError(f"{bundle} has no manifest.json",
                          hint="give the folder `edgeslim build` wrote")  # fmt: skip
    try:
        manifest = json.loads(manifest_path.read_text())
        target = manifest["target"]
        profile, kind = target["profile"], target["kind"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DeviceError(f"{manifest_path} is not an edgeslim manifest ({exc})") from exc
    if kind != "mcu":
        raise DeviceError(
            f"{bundle} is a {kind} bundle ({profile}); only Cortex-M bundles are emulated",
            hint="for a Raspberry Pi bundle run its agent (agent.py serve) instead",
        )
    library_dir = bundle / "c"
    headers = sorted(library_dir.glob("*.h"))
    if not library_dir.is_dir() or len(headers) != 1:
        raise DeviceError(
            f"{bundle} holds no generated C library (c/<model>.h and .c)",
            hint="build the bundle with `edgeslim build ... --backend c`: the harness firmware "
            "runs the interpreter-free C library",
        )
    return BundleInfo(bundle, profile, library_dir, headers[0].stem)


def bundle_firmware(bundle: Path, work_dir: Path, *,
                    icount_shift: int = DEFAULT_ICOUNT_SHIFT) -> DutFirmware:
    """Build the harness firmware for a bundle into ``work_dir`` (the bundle is not touched)."""
    info = read_bundle(bundle)
    return build_dut_firmware(info.library_dir, work_dir, name=info.name,
                                       target=info.profile, icount_shift=icount_shift)  # fmt: skip


def bench_emulated(bundle: Path, *, work_dir: Path, port: int | None = None,
                   icount_shift: int = DEFAULT_ICOUNT_SHIFT, **bench_options) -> dict:
    """Build ``bundle``'s harness firmware in ``work_dir``, run it under QEMU, bench it over the
    socket (``edgeslim.harness.bench.run_bench`` with ``bench_options``: data, n, warmup, runs,
    timeout, on_input, ...) and stop QEMU, whatever happened; the bench result (also written to
    ``<bundle>/bench.json``). The figures are labelled as the emulator's."""
    from edgeslim.harness.bench import run_bench

    fw = bundle_firmware(bundle, Path(work_dir), icount_shift=icount_shift)
    with Emulator(fw, port=port) as emulator:
        return run_bench(bundle, emulator.url, emulated=True, **bench_options)


__all__ = ["BundleInfo", "bench_emulated", "bundle_firmware", "read_bundle"]
