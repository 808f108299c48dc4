"""`edgeslim bench BUNDLE --port URL`: latency and output agreement measured on the device."""

from __future__ import annotations

from pathlib import Path

import click


def _table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    lat, agree, link = result["latency_us"], result["agreement"], result["link"]
    dev = result.get("device", {})
    table = Table(title=f"edgeslim bench: {dev.get('profile', result['port'])}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    if result.get("clock", {}).get("kind") == "emulated":
        instr = result["instructions"]
        for key in ("min", "median", "p90", "p99", "mean"):
            table.add_row(f"emulator instructions {key}", f"{instr[key]:.0f}")
    else:
        for key in ("min", "median", "p90", "p99", "mean"):
            table.add_row(f"latency {key} (device clock)", f"{lat[key]:.1f} us")
    if result.get("throughput_per_s"):
        table.add_row("throughput", f"{result['throughput_per_s']:.1f} inferences/s")
    table.add_row(f"bit-exact vs {result['reference']}", f"{agree['bit_exact']} / {agree['compared']}")
    table.add_row(f"max abs {agree.get('output_type', 'int8')} difference", str(agree["max_abs_diff"]))
    if "top1_agreement" in agree:
        table.add_row("top-1 agreement", f"{agree['top1_agreement']:.2%}")
    if "accuracy_device" in agree:
        table.add_row("accuracy: device / reference", f"{agree['accuracy_device']:.2%} / {agree['accuracy_reference']:.2%}")
    table.add_row("link: host time per input", f"{link['us_per_input']:.0f} us"
                  + (f" ({link['ratio_to_inference']:.1f}x the inference's "
                     f"{'host wall time' if link.get('ratio_against') == 'inference_host_wall_us' else 'latency'})"
                     if link["ratio_to_inference"] else ""))
    Console(width=100).print(table)


@click.command(name="bench")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", required=True,
              help="The device: a serial device path, socket://host:port or rfc2217://host:port.")
@click.option("--data", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help=".npz with x_test (and y_test); random int8 inputs without it.")
@click.option("-n", "--count", "n", type=int, default=100, show_default=True, help="Inputs to send.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed inferences before each timed one.")
@click.option("--runs", type=int, default=1, show_default=True,
              help="Timed inferences per input (infer RUNS WARMUP%); the latency is their mean.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for any reply.")
@click.option("--baud", type=int, default=115200, show_default=True, help="Serial baud rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
def command(bundle, port, data, n, warmup, runs, timeout, baud, seed):
    """Run the bundle's model on its device; write bench.json into the bundle."""
    from rich.progress import Progress

    from edgeslim.harness.bench import BENCH_FILE, run_bench

    with Progress(transient=True) as progress:
        task = progress.add_task("bench", total=None)

        def on_input(done, total):
            progress.update(task, completed=done, total=total)

        result = run_bench(bundle, port, data=data, n=n, warmup=warmup, runs=runs, timeout=timeout, baud=baud,
                           seed=seed, on_input=on_input)
    _table(result)
    click.echo(f"wrote {bundle / BENCH_FILE}")
