"""Putting a bundle on a device: `edgeslim flash`.

Cortex-M: build firmware.bin with arm-none-eabi-gcc against the user's TFLite
Micro tree (TFLM_DIR), then copy it to a mounted mbed-style USB drive or flash
it with pyOCD (optional extra ``edgeslim[flash]``). Raspberry Pi: rsync (or
scp) over ssh. Android: ``adb push``. Whatever is not reachable is a
DeviceError saying so; nothing reports success that did not happen.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import struct
from dataclasses import dataclass
from pathlib import Path

from edgeslim.errors import DeviceError

SSH_OPTS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]

# What a --host, a user, a --dest and an adb serial may be. Everything passed to ssh, scp,
# rsync, adb and make is checked against these first and passed after a `--` where the
# tool takes one, so a value can never become an option (`-oProxyCommand=...`) or reach
# a remote shell as anything but one word.
_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")
_REMOTE_PATH_RE = re.compile(r"[A-Za-z0-9._+/][A-Za-z0-9._+/-]{0,255}")
_SERIAL_RE = re.compile(r"[A-Za-z0-9._:][A-Za-z0-9._:-]{0,127}")
_MAKE_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)
_FIRMWARE_SUFFIXES = (".bin", ".hex")


def validate_host(host: str) -> tuple[str | None, str]:
    """``[user@]host`` -> (user, host), or DeviceError naming what is wrong. A hostname, an
    IPv4 address or a bracketed IPv6 address; never anything starting with ``-``."""
    if not isinstance(host, str) or not host:
        raise DeviceError("--host is empty", hint="Give the Pi as user@host, e.g. pi@raspberrypi.local.")
    user, _, name = host.rpartition("@")
    if host.startswith("-") or name.startswith("-") or user.startswith("-"):
        raise DeviceError(f"--host {host!r} starts with '-': a host name never does (ssh would read it "
                          "as an option)", hint="Give the Pi as user@host, e.g. pi@raspberrypi.local. Nothing was copied.")
    if user and not _USER_RE.fullmatch(user):
        raise DeviceError(f"--host {host!r}: {user!r} is not a valid user name",
                          hint="A user name is letters, digits, '_', '.' and '-'. Nothing was copied.")
    if not (_HOSTNAME_RE.fullmatch(name) or _IPV6_RE.fullmatch(name)) or len(name) > 253:
        raise DeviceError(f"--host {host!r}: {name!r} is not a host name or IP address",
                          hint="Give the Pi as user@host, e.g. pi@raspberrypi.local or pi@192.168.1.20. "
                               "Nothing was copied.")
    return (user or None), name


def validate_remote_path(dest: str) -> str:
    """A folder on the Pi: letters, digits and ``._+/-``, not starting with ``-``, so that
    it is one word for the remote shell that ssh and rsync hand it to."""
    if not isinstance(dest, str) or not _REMOTE_PATH_RE.fullmatch(dest) or "//" in dest:
        raise DeviceError(f"--dest {dest!r} is not a plain folder path",
                          hint="Use letters, digits and . _ + / - (not starting with '-'), e.g. "
                               "edgeslim/my-model. Nothing was copied.")
    return dest


def validate_serial(serial: str) -> str:
    if not _SERIAL_RE.fullmatch(serial or ""):
        raise DeviceError(f"--serial {serial!r} is not an adb device serial",
                          hint="Copy the serial from `adb devices` (letters, digits, '.', ':', '-'). "
                               "Nothing was pushed.")
    return serial


def validate_make_args(make_args) -> list[str]:
    """``--make-arg`` values are make variables, NAME=value; never options (``--eval=...``)."""
    for arg in make_args:
        if not _MAKE_VAR_RE.fullmatch(arg):
            raise DeviceError(f"--make-arg {arg!r} is not a make variable assignment NAME=value",
                              hint="e.g. --make-arg LDSCRIPT=board.ld. Nothing was built.")
    return list(make_args)


def check_firmware(binary: Path) -> None:
    """A file about to be flashed is a Cortex-M firmware image: an Intel HEX file, or a raw
    .bin image starting with a vector table (initial stack pointer word-aligned in the SRAM
    region 0x20000000-0x3FFFFFFF or a TCM below 0x20000000, and a Thumb reset vector: an odd
    address). Anything else (a text file, a model, an ELF) is refused before the drive or the
    probe sees it."""
    binary = Path(binary)
    if not binary.is_file():
        raise DeviceError(f"firmware {binary} does not exist", hint="Nothing was flashed.")
    head = binary.read_bytes()[:64]
    suffix = binary.suffix.lower()
    if suffix == ".hex":
        if head[:1] == b":" and all(c in b"0123456789ABCDEFabcdef:\r\n" for c in head):
            return
        why = "it is not an Intel HEX file (lines start with ':')"
    elif suffix not in _FIRMWARE_SUFFIXES:
        why = f"its name ends in {suffix or 'no suffix'!r}, not .bin or .hex"
    elif head[:4] == b"\x7fELF":
        why = "it is an ELF file, not a raw image (convert it with arm-none-eabi-objcopy -O binary)"
    elif len(head) < 8:
        why = f"it is {len(head)} bytes long, too short for a vector table"
    else:
        sp, reset = struct.unpack_from("<II", head)
        if sp % 4 or not (0x00000400 <= sp <= 0x40000000):
            why = f"its first word 0x{sp:08x} is not an initial stack pointer in RAM"
        elif not reset & 1 or reset >= 0x20000000:
            why = f"its second word 0x{reset:08x} is not a Thumb reset handler address in code memory"
        else:
            return
    raise DeviceError(f"{binary} is not a Cortex-M firmware image: {why}",
                      hint="Give the firmware.bin (or .hex) built for the board. Nothing was flashed.")


@dataclass
class FlashResult:
    """What happened, in words a user can check (``message``), and the files moved."""

    kind: str
    destination: str
    files: list[str]
    message: str


def _run(cmd: list[str], *, what: str, timeout: float, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise DeviceError(f"{what}: {cmd[0]} is not installed", hint=f"Install {cmd[0]} and try again.") from exc
    except subprocess.TimeoutExpired as exc:
        raise DeviceError(f"{what}: {cmd[0]} did not finish within {timeout:.0f} s",
                          hint="Check the connection to the device.") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise DeviceError(f"{what} failed ({' '.join(cmd[:2])}, exit code {proc.returncode}): {tail}",
                          hint="Nothing was deployed. Fix the problem above and run the command again.")
    return proc.stdout


# --------------------------------------------------------------------------- Cortex-M


def build_firmware(bundle_dir: Path, *, tflm_dir: Path | None, make_args: list[str] = (),
                   timeout: float = 3600) -> Path:
    """Run the bundle's tflm/Makefile against TFLM_DIR; returns tflm/firmware.bin."""
    tflm = Path(bundle_dir) / "tflm"
    if not (tflm / "Makefile").is_file():
        raise DeviceError(f"{bundle_dir} has no tflm/Makefile: not a Cortex-M bundle",
                          hint="Build the bundle with --target cortex-m4 (or another cortex-m target).")
    tflm_dir = tflm_dir or (Path(os.environ["TFLM_DIR"]) if os.environ.get("TFLM_DIR") else None)
    if tflm_dir is None:
        raise DeviceError("building the firmware needs a TensorFlow Lite Micro tree",
                          hint="Pass --tflm-dir /path/to/tflite-micro (or set TFLM_DIR), or give a "
                               "firmware you built with --binary.")
    if not (Path(tflm_dir) / "tensorflow" / "lite" / "micro").is_dir():
        raise DeviceError(f"{tflm_dir} is not a TensorFlow Lite Micro tree (no tensorflow/lite/micro/)",
                          hint="Clone https://github.com/tensorflow/tflite-micro and pass its path.")
    if shutil.which("arm-none-eabi-gcc") is None:
        raise DeviceError("arm-none-eabi-gcc is not installed",
                          hint="Install the Arm GNU toolchain (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi).")
    make_args = validate_make_args(make_args)
    _run(["make", "-C", str(tflm.resolve()), f"TFLM_DIR={Path(tflm_dir).resolve()}", *make_args],
         what="building the firmware", timeout=timeout)
    binary = tflm / "firmware.bin"
    if not binary.is_file():
        raise DeviceError("make finished but tflm/firmware.bin is missing",
                          hint="Check the Makefile's output; pass LDSCRIPT=... with --make-arg.")
    return binary


def copy_to_drive(binary: Path, drive: Path) -> FlashResult:
    """Copy a firmware binary to a mounted mbed-style (DAPLink) USB drive; the
    board's interface chip flashes it when the copy completes."""
    check_firmware(binary)
    drive = Path(drive)
    if not drive.is_dir():
        raise DeviceError(f"drive {drive} is not mounted (no such directory)",
                          hint="Plug the board in and pass the mount point of its USB drive, e.g. "
                               "/media/$USER/DAPLINK.")
    if not os.access(drive, os.W_OK):
        raise DeviceError(f"drive {drive} is not writable", hint="Check the mount's permissions.")
    dest = drive / binary.name
    data = Path(binary).read_bytes()
    with open(dest, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if dest.stat().st_size != len(data):
        raise DeviceError(f"copy to {dest} wrote {dest.stat().st_size} of {len(data)} bytes",
                          hint="The drive may have been unmounted; try again.")
    return FlashResult("mcu", str(dest), [str(dest)],
                       f"copied {len(data)} bytes to {dest}; the board programs itself from the drive "
                       "(check its LED or the drive's FAIL.TXT)")


def flash_with_probe(binary: Path, *, target_type: str | None = None, base_address: int = 0x08000000) -> FlashResult:
    """Flash with pyOCD through a connected debug probe."""
    check_firmware(binary)
    try:
        from pyocd.core.helpers import ConnectHelper
        from pyocd.flash.file_programmer import FileProgrammer
    except ImportError as exc:
        raise DeviceError("pyOCD is not installed", hint="pip install 'edgeslim[flash]'") from exc
    options = {"target_override": target_type} if target_type else {}
    session = ConnectHelper.session_with_chosen_probe(blocking=False, options=options)
    if session is None:
        raise DeviceError("no debug probe found (pyOCD saw none)",
                          hint="Connect a CMSIS-DAP/ST-Link/J-Link probe, or use --drive.")
    with session:
        FileProgrammer(session).program(str(binary), base_address=base_address)
        session.board.target.reset()
    return FlashResult("mcu", "probe", [str(binary)], f"flashed {binary} with pyOCD and reset the target")


# --------------------------------------------------------------------------- Raspberry Pi


def push_rpi(bundle_dir: Path, host: str, *, dest: str | None = None, port: int | None = None,
             timeout: float = 600) -> FlashResult:
    """Copy the bundle to ``host`` (user@host) over ssh: rsync when both ends
    have it, else scp."""
    bundle_dir = Path(bundle_dir).resolve()  # absolute: a local path never starts with '-'
    user, name = validate_host(host)
    dest = validate_remote_path(dest or f"edgeslim/{_safe_remote_name(bundle_dir.name)}")
    if port is not None and not 1 <= int(port) <= 65535:
        raise DeviceError(f"--port {port} is not a TCP port (1-65535)", hint="Nothing was copied.")
    ssh_host = (f"{user}@" if user else "") + name.strip("[]")  # ssh takes IPv6 without brackets
    copy_host = (f"{user}@" if user else "") + name  # scp/rsync need the brackets
    ssh = ["ssh", *SSH_OPTS] + (["-p", str(int(port))] if port else [])
    if shutil.which("ssh") is None:
        raise DeviceError("ssh is not installed", hint="Install an OpenSSH client.")
    # The remote command goes through the Pi's shell: quote it even though dest is checked.
    _run([*ssh, "--", ssh_host, "mkdir", "-p", "--", shlex.quote(dest)],
         what=f"connecting to {host}", timeout=60)
    if shutil.which("rsync"):
        _run(["rsync", "-az", "-e", shlex.join(ssh), "--", f"{bundle_dir}/", f"{copy_host}:{dest}/"],
             what=f"rsync to {host}", timeout=timeout)
    else:
        scp = ["scp", *SSH_OPTS, "-r"] + (["-P", str(int(port))] if port else [])
        _run([*scp, "--", *[str(p) for p in sorted(bundle_dir.iterdir())], f"{copy_host}:{dest}/"],
             what=f"scp to {host}", timeout=timeout)
    files = [p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()]
    return FlashResult("rpi", f"{host}:{dest}", files,
                       f"copied {len(files)} files to {host}:{dest}; run ./install.sh there")


def _safe_remote_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip("-.") or "bundle"
    return cleaned


# --------------------------------------------------------------------------- Android


def push_android(bundle_dir: Path, *, serial: str | None = None,
                 device_dir: str = "/data/local/tmp/edgeslim", timeout: float = 300) -> FlashResult:
    """adb push the bundle's models (and labels) to the device."""
    if serial is not None:
        validate_serial(serial)
    assets = Path(bundle_dir).resolve() / "android" / "edgeslim-model" / "src" / "main" / "assets"
    if not assets.is_dir():
        raise DeviceError(f"{bundle_dir} has no android/ assets: not an Android bundle",
                          hint="Build the bundle with --target android.")
    if shutil.which("adb") is None:
        raise DeviceError("adb is not installed, so no Android device is reachable",
                          hint="Install Android platform-tools (Debian: adb) and connect a device with USB debugging on.")
    out = _run(["adb", "devices"], what="listing Android devices", timeout=30)
    devices = [line.split()[0] for line in out.splitlines()[1:]
               if line.strip().endswith("device") and _SERIAL_RE.fullmatch(line.split()[0])]
    if serial:
        devices = [d for d in devices if d == serial]
    if not devices:
        raise DeviceError("no Android device is connected" + (f" with serial {serial}" if serial else ""),
                          hint="Connect a device with USB debugging enabled (adb devices lists it).")
    adb = ["adb", "-s", devices[0]]
    _run([*adb, "shell", "mkdir", "-p", "--", shlex.quote(device_dir)], what="adb shell mkdir", timeout=60)
    files = sorted(p for p in assets.iterdir() if p.is_file())
    for p in files:
        _run([*adb, "push", "--", str(p), f"{device_dir}/{p.name}"], what=f"adb push {p.name}", timeout=timeout)
    return FlashResult("android", f"{devices[0]}:{device_dir}", [p.name for p in files],
                       f"pushed {len(files)} files to {devices[0]}:{device_dir}")
