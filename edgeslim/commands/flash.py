"""`edgeslim flash BUNDLE`: put a bundle on its device (Cortex-M, Raspberry Pi, Android)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def _bundle_kind(bundle: Path) -> str | None:
    manifest = bundle / "manifest.json"
    if manifest.is_file():
        try:
            kind = json.loads(manifest.read_text(encoding="utf-8"))["target"]["kind"]
            if kind in ("mcu", "rpi", "android"):
                return kind
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            pass
    if (bundle / "tflm").is_dir():
        return "mcu"
    if (bundle / "android").is_dir():
        return "android"
    if (bundle / "agent.py").is_file():
        return "rpi"
    return None


@click.command(name="flash")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--drive", type=click.Path(path_type=Path), help="Cortex-M: mount point of the board's mbed-style USB drive.")
@click.option("--probe", is_flag=True, help="Cortex-M: flash with pyOCD through a debug probe (edgeslim[flash]).")
@click.option("--probe-target", default=None, help="Cortex-M: pyOCD target type, e.g. stm32l475xg.")
@click.option("--tflm-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cortex-M: TensorFlow Lite Micro checkout to build against (or TFLM_DIR).")
@click.option("--binary", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Cortex-M: a firmware binary already built (skips the build).")
@click.option("--make-arg", multiple=True, help="Cortex-M: extra make variable, e.g. LDSCRIPT=board.ld.")
@click.option("--host", default=None, help="Raspberry Pi: user@host to copy the bundle to over ssh.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Raspberry Pi: ssh port.")
@click.option("--dest", default=None, help="Raspberry Pi: folder on the Pi (default edgeslim/<bundle name>).")
@click.option("--serial", default=None, help="Android: adb device serial.")
def command(bundle, drive, probe, probe_target, tflm_dir, binary, make_arg, host, port, dest, serial):
    """Deploy a bundle: build + copy/flash (Cortex-M), rsync (Pi), adb push (Android)."""
    from edgeslim.bundle import deploy
    from edgeslim.errors import DeviceError

    if not bundle.is_dir():
        raise DeviceError(f"bundle {bundle} does not exist", hint="Give the folder `edgeslim build` wrote.")
    kind = _bundle_kind(bundle)
    if kind == "mcu":
        if not drive and not probe:
            raise DeviceError("say where the firmware goes: --drive <mounted board drive> or --probe (pyOCD)",
                              hint="Nothing was flashed.")
        # Cheap checks first: a missing drive or a bad argument is reported before any build.
        if drive and not drive.is_dir():
            raise DeviceError(f"drive {drive} is not mounted (no such directory)",
                              hint="Plug the board in and pass the mount point of its USB drive, e.g. "
                                   "/media/$USER/DAPLINK. Nothing was flashed.")
        deploy.validate_make_args(make_arg)
        if binary is None:
            built = bundle / "tflm" / "firmware.bin"
            binary = built if built.is_file() and tflm_dir is None else deploy.build_firmware(
                bundle, tflm_dir=tflm_dir, make_args=list(make_arg))
        deploy.check_firmware(binary)
        result = (deploy.copy_to_drive(binary, drive) if drive
                  else deploy.flash_with_probe(binary, target_type=probe_target))
    elif kind == "rpi":
        if not host:
            raise DeviceError("say which Pi: --host user@host", hint="Nothing was copied.")
        result = deploy.push_rpi(bundle, host, dest=dest, port=port)
    elif kind == "android":
        result = deploy.push_android(bundle, serial=serial)
    else:
        raise DeviceError(f"{bundle} is not an edgeslim bundle (no manifest.json, tflm/, android/ or agent.py)",
                          hint="Give the folder `edgeslim build` wrote.")
    click.echo(result.message)
