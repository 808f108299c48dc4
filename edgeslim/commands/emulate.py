"""`edgeslim emulate BUNDLE`: the device when you have none. Builds a Cortex-M bundle's harness
firmware (its generated C library behind the MLPerf Tiny protocol) and runs it on the matching
emulated board under qemu-system-arm, the UART on a local TCP port, until interrupted; or, with
--bench, benches it over that port (as `edgeslim bench`), writes bench.json and exits."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import click


class _Stop(Exception):
    """SIGTERM, turned into an exception so that QEMU is stopped on the way out."""


def _on_sigterm(signum, frame):
    raise _Stop()


@click.command(name="emulate")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="TCP port for the UART on 127.0.0.1 (default: a free one).")
@click.option("--icount-shift", type=click.IntRange(0, 10), default=6, show_default=True,
              help="qemu -icount shift: each instruction takes 2**shift ns of emulated time "
                   "(deterministic instruction counts).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds (default: run until interrupted).")
@click.option("--bench", "bench", is_flag=True,
              help="Run the bench over the emulated device, write bench.json into the bundle, stop.")
@click.option("--data", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="With --bench: .npz with x_test (and y_test); random int8 inputs without it.")
@click.option("-n", "--count", "n", type=int, default=100, show_default=True,
              help="With --bench: inputs to send.")
def command(bundle, port, icount_shift, timeout, bench, data, n):
    """Run a Cortex-M bundle (built with --backend c) on its emulated board, serving the MLPerf
    Tiny device protocol on socket://127.0.0.1:<port>; Ctrl-C stops it. With --bench, bench it
    instead and exit."""
    from edgeslim.errors import DeviceError
    from edgeslim.harness.emulate import bundle_firmware, read_bundle
    from edgeslim.harness.emulator import Emulator

    if not bundle.is_dir():
        raise DeviceError(f"bundle {bundle} does not exist",
                          hint="Give the folder `edgeslim build` wrote.")
    info = read_bundle(bundle)
    if bench:
        from edgeslim.harness.bench import check_single_io

        check_single_io((bundle / "model.tflite").read_bytes())  # before building anything
        _bench(bundle, info, port=port, icount_shift=icount_shift, data=data, n=n)
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C stops it even when started from a shell that ignores SIGINT (a background job).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with tempfile.TemporaryDirectory(prefix="edgeslim-emulate-") as work:
            click.echo(f"building the harness firmware for {info.name} ({info.profile}) ...")
            fw = bundle_firmware(bundle, Path(work), icount_shift=icount_shift)
            emulator = Emulator(fw, port=port)
            with emulator:
                click.echo(f"emulating {fw.board.machine} ({fw.core.name}) with qemu -icount "
                           f"shift={icount_shift}, QEMU pid {emulator.process.pid}")
                click.echo(f"model sha256 {fw.model_sha256}, weights CRC-32 {fw.weights_crc:08x}")
                click.echo("Emulated figures are instruction counts of the emulator "
                           f"(m-lap-us is emulated time, 2**{icount_shift} ns per instruction; "
                           "icount% gives the counts), not device milliseconds.")
                click.echo(emulator.url)
                click.echo("Ctrl-C stops the emulator.")
                deadline = None if timeout is None else time.monotonic() + timeout
                while emulator.alive():
                    if deadline is not None and time.monotonic() >= deadline:
                        click.echo(f"stopping after {timeout:g} s")
                        break
                    time.sleep(0.2)
                else:
                    code = emulator.process.returncode
                    raise DeviceError(
                        f"QEMU exited with code {code} while emulating {fw.board.machine}",
                        hint=qemu_exit_hint(code) + emulator.output().strip(),
                    )
    except (KeyboardInterrupt, _Stop):
        click.echo("stopped", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _bench(bundle, info, *, port, icount_shift, data, n):
    from rich.progress import Progress

    from edgeslim.commands.bench import _table
    from edgeslim.harness.bench import BENCH_FILE
    from edgeslim.harness.emulate import bench_emulated

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="edgeslim-emulate-") as work:
            click.echo(f"building the harness firmware for {info.name} ({info.profile}) ...")
            with Progress(transient=True) as progress:
                task = progress.add_task("bench (emulated)", total=None)

                def on_input(done, total):
                    progress.update(task, completed=done, total=total)

                # replies from an emulator come slower than from silicon: a longer per-command deadline
                result = bench_emulated(bundle, work_dir=Path(work), port=port, icount_shift=icount_shift,
                                        data=data, n=n, timeout=20.0, on_input=on_input)
    except (KeyboardInterrupt, _Stop):
        click.echo("stopped", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    _table(result)
    click.echo("Emulated figures: instruction counts of the emulator "
               f"(qemu -icount shift={icount_shift}), not device milliseconds.")
    click.echo(f"wrote {bundle / BENCH_FILE}")


def qemu_exit_hint(code: int | None) -> str:
    return {0xF1: "The firmware took a HardFault. ",
            0xF2: "The firmware took an unexpected exception. "}.get(code or 0, "")
