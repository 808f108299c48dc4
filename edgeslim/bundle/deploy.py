"""Putting a bundle on a device: `edgeslim flash`.

Cortex-M: build firmware.bin with arm-none-eabi-gcc against the user's TFLite
Micro tree (TFLM_DIR), then copy it to a mounted mbed-style USB drive or flash
it with pyOCD (optional extra ``edgeslim[flash]``). Raspberry Pi: rsync (or
scp) over ssh. Android: ``adb push``. Whatever is not reachable is a
DeviceError saying so; nothing reports success that did not happen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgeslim.errors import DeviceError

SSH_OPTS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]


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
    _run(["make", "-C", str(tflm), f"TFLM_DIR={Path(tflm_dir).resolve()}", *make_args],
         what="building the firmware", timeout=timeout)
    binary = tflm / "firmware.bin"
    if not binary.is_file():
        raise DeviceError("make finished but tflm/firmware.bin is missing",
                          hint="Check the Makefile's output; pass LDSCRIPT=... with --make-arg.")
    return binary


def copy_to_drive(binary: Path, drive: Path) -> FlashResult:
    """Copy a firmware binary to a mounted mbed-style (DAPLink) USB drive; the
    board's interface chip flashes it when the copy completes."""
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
    bundle_dir = Path(bundle_dir)
    dest = dest or f"edgeslim/{bundle_dir.name}"
    ssh = ["ssh", *SSH_OPTS] + (["-p", str(port)] if port else [])
    if shutil.which("ssh") is None:
        raise DeviceError("ssh is not installed", hint="Install an OpenSSH client.")
    _run([*ssh, host, "mkdir", "-p", dest], what=f"connecting to {host}", timeout=60)
    if shutil.which("rsync"):
        _run(["rsync", "-az", "-e", " ".join(ssh), f"{bundle_dir}/", f"{host}:{dest}/"],
             what=f"rsync to {host}", timeout=timeout)
    else:
        scp = ["scp", *SSH_OPTS, "-r"] + (["-P", str(port)] if port else [])
        _run([*scp, *[str(p) for p in sorted(bundle_dir.iterdir())], f"{host}:{dest}/"],
             what=f"scp to {host}", timeout=timeout)
    files = [p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()]
    return FlashResult("rpi", f"{host}:{dest}", files,
                       f"copied {len(files)} files to {host}:{dest}; run ./install.sh there")


# --------------------------------------------------------------------------- Android


def push_android(bundle_dir: Path, *, serial: str | None = None,
                 device_dir: str = "/data/local/tmp/edgeslim", timeout: float = 300) -> FlashResult:
    """adb push the bundle's models (and labels) to the device."""
    assets = Path(bundle_dir) / "android" / "edgeslim-model" / "src" / "main" / "assets"
    if not assets.is_dir():
        raise DeviceError(f"{bundle_dir} has no android/ assets: not an Android bundle",
                          hint="Build the bundle with --target android.")
    if shutil.which("adb") is None:
        raise DeviceError("adb is not installed, so no Android device is reachable",
                          hint="Install Android platform-tools (Debian: adb) and connect a device with USB debugging on.")
    out = _run(["adb", "devices"], what="listing Android devices", timeout=30)
    devices = [line.split()[0] for line in out.splitlines()[1:] if line.strip().endswith("device")]
    if serial:
        devices = [d for d in devices if d == serial]
    if not devices:
        raise DeviceError("no Android device is connected" + (f" with serial {serial}" if serial else ""),
                          hint="Connect a device with USB debugging enabled (adb devices lists it).")
    adb = ["adb", "-s", devices[0]]
    _run([*adb, "shell", "mkdir", "-p", device_dir], what="adb shell mkdir", timeout=60)
    files = sorted(p for p in assets.iterdir() if p.is_file())
    for p in files:
        _run([*adb, "push", str(p), f"{device_dir}/{p.name}"], what=f"adb push {p.name}", timeout=timeout)
    return FlashResult("android", f"{devices[0]}:{device_dir}", [p.name for p in files],
                       f"pushed {len(files)} files to {devices[0]}:{device_dir}")
