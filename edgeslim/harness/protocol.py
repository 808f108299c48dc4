"""The host side of the MLPerf Tiny device-under-test protocol (docs/protocol.md).

:class:`DutClient` talks to a device over any pyserial URL (``/dev/ttyACM0``, a
pty path, ``socket://host:port``, ``rfc2217://host:port``) or over an object
with pyserial's ``read(n)``/``write(b)``/``close()`` (a test's pty master).
Every read has a deadline: a silent device, or one that answers something that
is not the protocol (the wrong firmware, the wrong baud rate), becomes a
:class:`~edgeslim.errors.DeviceError` naming the command and the timeout,
instead of a hang.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from edgeslim.errors import DeviceError
from edgeslim.harness.dut import MAX_COMMAND

#: Bytes per ``db <hex>%`` chunk: 31 bytes = 62 hex digits, as the MLPerf Tiny runner sends.
CHUNK_BYTES = 31
DEFAULT_TIMEOUT = 5.0
_LAP = re.compile(r"^m-lap-us-(\d+)$")
_RESULTS = re.compile(r"^m-results-\[(.*)\]$")


@dataclass(frozen=True)
class InferResult:
    """One ``infer N W%``: the device clock before and after N inferences, and the outputs."""

    n: int
    t0_us: int
    t1_us: int
    values: list[float]

    @property
    def latency_us(self) -> float:
        return (self.t1_us - self.t0_us) / self.n


class DutClient:
    """One open link to a device speaking the protocol; use it as a context manager.

    ``timeout`` bounds every command's reply; ``infer_timeout`` bounds ``infer``
    (a slow model on a slow board). Opening synchronises: it discards what the
    device printed before (boot lines) and checks it answers ``name%``.
    """

    def __init__(self, port, *, baud: int = 115200, timeout: float = DEFAULT_TIMEOUT,
                 infer_timeout: float = 60.0):
        self.port = port if isinstance(port, str) else getattr(port, "name", repr(port))
        self.timeout = float(timeout)
        self.infer_timeout = float(infer_timeout)
        self._rx = b""
        self.log: list[str] = []  # m-log-[...] lines the device printed (its runtime's logging)
        if isinstance(port, str):
            import serial

            try:
                self.link = serial.serial_for_url(port, baudrate=baud, timeout=0.05)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise DeviceError(f"cannot open {port}: {exc}",
                                  hint="Check the port: a device path, socket://host:port or rfc2217://host:port.") from None
        else:
            self.link = port
        try:
            self.device_name = self._sync()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self.link.close()
        except Exception:  # closing a dropped link: nothing left to do
            pass

    # -- framing -------------------------------------------------------------
    def _write(self, command: str) -> None:
        text = command + "%"
        if len(text) > MAX_COMMAND or not text.isascii():
            raise DeviceError(f"command {text!r} is not a protocol command (ASCII, at most {MAX_COMMAND} characters)")
        try:
            self.link.write(text.encode("ascii"))
            if hasattr(self.link, "flush"):
                self.link.flush()
        except Exception as exc:
            raise self._dropped(command, exc) from None

    def _dropped(self, command: str, exc: Exception) -> DeviceError:
        return DeviceError(f"the link to {self.port} dropped during {command}%: {exc}",
                           hint="Is the device still running and connected? Results so far are kept.")

    def _readline(self, command: str, deadline: float, timeout: float) -> str:
        while b"\n" not in self._rx:
            if time.monotonic() > deadline:
                raise DeviceError(
                    f"{self.port}: no complete reply to {command}% within {timeout:g} s",
                    hint="The device is silent, busy or running other firmware; check the port, the baud rate "
                         "and that the device runs the edgeslim (MLPerf Tiny) protocol.")
            try:
                data = self.link.read(getattr(self.link, "in_waiting", 0) or 1)
            except Exception as exc:
                raise self._dropped(command, exc) from None
            if data is None:
                raise self._dropped(command, EOFError("end of stream"))
            self._rx += data
        line, self._rx = self._rx.split(b"\n", 1)
        return line.rstrip(b"\r").decode("ascii", "replace")

    def _sync(self) -> str:
        """Discard boot output and stale replies; return the device's name.

        Lines before the ``m-name-dut-[...]`` reply (boot lines, a stale
        ``m-ready``) are skipped; an error reply (left-over bytes glued to the
        command) makes it ask once more."""
        deadline = time.monotonic() + self.timeout
        seen: list[str] = []
        for _ in range(3):
            self._write("name")
            name, refused = None, False
            while True:
                line = self._readline("name", deadline, self.timeout)
                seen.append(line)
                if line.startswith("m-name-dut-[") and line.endswith("]"):
                    name = line[len("m-name-dut-["):-1]
                elif line.startswith("e-"):
                    refused = True
                elif line == "m-ready" and (name is not None or refused):
                    break
            if name is not None:
                return name
        raise DeviceError(f"{self.port} does not answer name% as the protocol says (got {seen[-3:]!r})",
                          hint="Is it the edgeslim harness or agent (serve), at the right baud rate?")

    def command(self, command: str, *, timeout: float | None = None) -> list[str]:
        """Send one command; return its reply lines up to (not including) ``m-ready``.
        An ``e-`` reply raises DeviceError; a line that is not ``m-``/``e-`` too."""
        lines = self.raw_command(command, timeout=timeout)
        errors = [l for l in lines if l.startswith("e-")]
        if errors:
            raise DeviceError(f"{self.port} refused {command}%: {errors[0]}")
        return lines

    def raw_command(self, command: str, *, timeout: float | None = None) -> list[str]:
        """Like :meth:`command` but returns ``e-`` lines instead of raising."""
        timeout = self.timeout if timeout is None else timeout
        self._write(command)
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            line = self._readline(command, deadline, timeout)
            if line == "m-ready":
                return lines
            if not (line.startswith("m-") or line.startswith("e-")):
                raise DeviceError(f"{self.port} answered {line[:60]!r} to {command}%: not the protocol",
                                  hint="Is it the edgeslim harness or agent, at the right baud rate?")
            if line.startswith("m-log-["):  # the device's runtime logging: kept, not a reply
                self.log.append(line[len("m-log-["):-1] if line.endswith("]") else line[len("m-log-["):])
                continue
            lines.append(line)

    # -- commands ------------------------------------------------------------
    def name(self) -> str:
        return _one(self.command("name"), "m-name-dut-[", "name")

    def profile(self) -> dict:
        lines = self.command("profile")
        return {"profile": _one(lines, "m-profile-[", "profile"), "model": _one(lines, "m-model-[", "profile")}

    def timestamp(self) -> int:
        return _lap(self.command("timestamp"), "timestamp")[0]

    def info(self) -> dict[str, str]:
        """edgeslim's ``info%``: sha256, arena, clock, counter, protocol, input (bytes)."""
        body = _one(self.command("info"), "m-info-[", "info")
        return dict(kv.split("=", 1) for kv in body.split(",") if "=" in kv)

    def icount(self) -> dict[str, int]:
        """edgeslim's ``icount%`` (emulated firmware only): the last ``infer``'s emulator
        instruction counts, ``instructions`` (all timed runs), ``runs``, ``per_run``, ``shift``."""
        body = _one(self.command("icount"), "m-icount-[", "icount")
        try:
            return {k: int(v) for k, v in (kv.split("=", 1) for kv in body.split(",") if "=" in kv)}
        except ValueError:
            raise DeviceError(f"{self.port}: icount answered {body[:60]!r}") from None

    def load(self, data: bytes) -> None:
        """``db load N%`` and ``db <hex>%`` chunks of at most 31 bytes; a chunk whose
        reply is garbled (an ``e-`` line or noise) is sent once more."""
        self.command(f"db load {len(data)}")
        for start in range(0, len(data), CHUNK_BYTES):
            chunk = data[start:start + CHUNK_BYTES]
            last = start + CHUNK_BYTES >= len(data)
            expect = ["m-load-done"] if last else []
            for attempt in (1, 2):
                try:
                    got = self.raw_command("db " + chunk.hex())
                except DeviceError as exc:
                    if attempt == 2 or "not the protocol" not in exc.message:
                        raise
                    continue
                if got == expect:
                    break
                if attempt == 2:
                    raise DeviceError(f"{self.port}: db chunk at byte {start} answered {got!r} twice "
                                      f"(expected {expect!r})", hint="The link is noisy or the device is not ready.")

    def db_print(self) -> bytes:
        out = bytearray()
        for line in self.command("db print"):
            if line.startswith("m-buffer-"):
                body = line[len("m-buffer-"):]
                out += bytes(int(h, 16) for h in body.split("-") if h)
        return bytes(out)

    def infer(self, n: int = 1, warmup: int = 10) -> InferResult:
        lines = self.command(f"infer {n} {warmup}", timeout=self.infer_timeout)
        laps = _lap(lines, f"infer {n} {warmup}")
        if len(laps) != 2 or "m-infer-done" not in lines:
            raise DeviceError(f"{self.port}: infer reply is incomplete: {lines!r}")
        return InferResult(n, laps[0], laps[1], _values(lines, f"infer {n} {warmup}"))

    def results(self) -> list[float]:
        return _values(self.command("results"), "results")

    def results_hex(self) -> bytes:
        """edgeslim's ``results hex%``: the output tensor's raw bytes (int8 for our models)."""
        body = _one(self.command("results hex"), "m-results-hex-[", "results hex")
        try:
            return bytes.fromhex(body)
        except ValueError:
            raise DeviceError(f"{self.port}: results hex answered non-hex {body[:40]!r}") from None


def _one(lines: list[str], prefix: str, command: str) -> str:
    for line in lines:
        if line.startswith(prefix) and line.endswith("]"):
            return line[len(prefix):-1]
    raise DeviceError(f"reply to {command}% has no {prefix}...] line: {lines!r}")


def _lap(lines: list[str], command: str) -> list[int]:
    laps = [int(m.group(1)) for m in map(_LAP.match, lines) if m]
    if not laps:
        raise DeviceError(f"reply to {command}% has no m-lap-us line: {lines!r}")
    return laps


def _values(lines: list[str], command: str) -> list[float]:
    for line in lines:
        m = _RESULTS.match(line)
        if m:
            try:
                return [float(v) for v in m.group(1).split(",") if v]
            except ValueError:
                break
    raise DeviceError(f"reply to {command}% has no valid m-results-[...] line: {lines!r}")
