"""The emulated Cortex-M boards and QEMU: ``qemu-system-arm`` with UART0 on a local TCP port.

- ``BOARDS`` / ``board_for``: each QEMU machine's memory map, UART and tick timer (facts:
  ../shared/notes/qemu-cortex-m.md and firmware_templates/cortex_m/README.md).
- ``QemuSession``: one QEMU process for a test or a benchmark: the guest starts once the host
  connects (nothing it prints is lost), a deadline on every read, the process killed on close.
- ``Emulator``: a long-running device (``edgeslim emulate``): the guest starts at once and a new
  client may connect whenever the last one left.
- ``instruction_index``: under ``-icount shift=N`` every instruction takes 2**N ns of virtual
  time, so a tick timer's readings convert to exact instruction counts. These are instruction
  counts of the emulator, not cycles (no pipeline, cache or wait states are modelled).
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from edgeslim.errors import DeviceError
from edgeslim.harness.toolchain import CORES, require_tool

if TYPE_CHECKING:
    from edgeslim.harness.firmware import DutFirmware

QEMU = "qemu-system-arm"
DEFAULT_ICOUNT_SHIFT = 6


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



def qemu_command(machine: str, elf: Path, port: int, *, wait: bool,
                 icount_shift: int | None) -> list[str]:  # fmt: skip
    """The ``qemu-system-arm`` command line running ``elf`` on ``machine``, UART0 on a TCP
    server at 127.0.0.1:``port`` (``wait``: the guest starts only once a client connects)."""
    cmd = [
        require_tool(QEMU),
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
                    hint=exit_hint(self.process.returncode) + self.output(),
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



def exit_hint(code: int | None) -> str:
    return {
        0xF1: "the firmware took a HardFault. ",
        0xF2: "the firmware took an unexpected exception. ",
    }.get(code or 0, "")


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

    def __init__(self, firmware: "DutFirmware", *, port: int | None = None,
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
        return qemu_command(fw.board.machine, fw.elf, port, wait=False, icount_shift=fw.icount_shift)

    def output(self) -> str:
        """What QEMU printed so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def start(self) -> "Emulator":
        tries = 1 if self.requested_port else 3  # a free port can be taken before QEMU binds it
        for _ in range(tries):
            self.port = self.requested_port or free_port()
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
            code = stop_process(self.process)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
