"""``edgeslim emulate``: a Cortex-M bundle's harness firmware running on its emulated board, with
the UART on a local TCP port, as a device a protocol client (``edgeslim bench``, an MLPerf Tiny
runner, a terminal) connects to with ``socket://127.0.0.1:<port>``.

- ``bundle_firmware``: reads the bundle's manifest (its target profile) and builds the harness
  firmware (edgeslim.harness.cortex_m) from the bundle's generated C library (``c/``, written
  by ``edgeslim build --backend c``).
- ``Emulator``: one ``qemu-system-arm`` process with ``-icount`` (deterministic instruction
  counts) and UART0 on a TCP server socket that accepts a new client whenever the last one
  left; stopped (terminated, then killed) on ``stop()`` or when leaving its ``with`` block.

Under emulation the device's clock (``m-lap-us``) is virtual time, ``2**shift`` ns per
instruction: figures from it are emulator instruction counts, never device milliseconds.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgeslim.errors import DeviceError
from edgeslim.harness import cortex_m, qemu


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
                    icount_shift: int = qemu.DEFAULT_ICOUNT_SHIFT) -> cortex_m.DutFirmware:
    """Build the harness firmware for a bundle into ``work_dir`` (the bundle is not touched)."""
    info = read_bundle(bundle)
    return cortex_m.build_dut_firmware(info.library_dir, work_dir, name=info.name,
                                       target=info.profile, icount_shift=icount_shift)  # fmt: skip


def _listening(port: int) -> bool:
    """True once something accepts on 127.0.0.1:port (the probe connection is closed at once:
    QEMU then waits for the next client)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the QEMU child (Linux): get SIGTERM when the process that started it dies, so a killed
    ``edgeslim emulate`` leaves no emulator behind. Elsewhere a no-op."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Emulator:
    """``qemu-system-arm`` running a harness firmware, UART0 on ``socket://127.0.0.1:<port>``.

    The guest starts at once (``wait=off``): boot lines printed before a client connects are
    lost, which the protocol allows (a host starts with a command). A client can disconnect and
    a new one connect; the device keeps its state.
    """

    def __init__(self, firmware: cortex_m.DutFirmware, *, port: int | None = None,
                 start_timeout: float = 15.0):  # fmt: skip
        self.firmware = firmware
        self.requested_port = port
        self.port: int | None = None
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        fw = self.firmware
        return qemu.qemu_command(fw.board.machine, fw.elf, port, wait=False, icount_shift=fw.icount_shift)

    def output(self) -> str:
        """What QEMU printed so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def start(self) -> "Emulator":
        tries = 1 if self.requested_port else 3  # a free port can be taken before QEMU binds it
        for _ in range(tries):
            self.port = self.requested_port or qemu.free_port()
            self._log = tempfile.TemporaryFile()
            self.process = subprocess.Popen(
                self.command(self.port), stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )  # fmt: skip
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if _listening(self.port):
                    return self
                time.sleep(0.05)
            message = self.output().strip()
            self.stop()
        raise DeviceError(
            f"QEMU ({self.firmware.board.machine}) did not start listening on port {self.port}"
            + (f": {message}" if message else ""),
            hint="another program may hold that port (choose another with --port), or run "
            "this to see why: " + " ".join(self.command(self.port or 0)),
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """Terminate QEMU (kill it if it does not exit within 5 s); its exit code."""
        code = None
        if self.process is not None:
            code = qemu.stop_process(self.process)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def bench_emulated(bundle: Path, *, work_dir: Path, port: int | None = None,
                   icount_shift: int = qemu.DEFAULT_ICOUNT_SHIFT, **bench_options) -> dict:
    """Build ``bundle``'s harness firmware in ``work_dir``, run it under QEMU, bench it over the
    socket (``edgeslim.harness.bench.run_bench`` with ``bench_options``: data, n, warmup, runs,
    timeout, on_input, ...) and stop QEMU, whatever happened; the bench result (also written to
    ``<bundle>/bench.json``). The figures are labelled as the emulator's."""
    from edgeslim.harness.bench import run_bench

    fw = bundle_firmware(bundle, Path(work_dir), icount_shift=icount_shift)
    with Emulator(fw, port=port) as emulator:
        return run_bench(bundle, emulator.url, emulated=True, **bench_options)


__all__ = ["BundleInfo", "Emulator", "bench_emulated", "bundle_firmware", "read_bundle"]
