"""`edgeslim check model.tflite --target cortex-m4`: the target checks alone."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="check")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", "target_spec", required=True, help="Target name or profile .toml.")
@click.option("--ram", default=None, help="Override the RAM budget, e.g. 192k (k = 1024).")
@click.option("--flash", default=None, help="Override the flash budget, e.g. 512k.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(model, target_spec, ram, flash, as_json):
    """Check an int8 .tflite against a target: ops, scales, flash and the TFLM arena."""
    from edgeslim.errors import EdgeslimError, TargetError
    from edgeslim.targets import check_model, load_target

    try:
        if not model.is_file():
            raise TargetError(f"model file {model} does not exist", hint="Give the path to a .tflite file.")
        target = load_target(target_spec, ram=ram, flash=flash)
        result = check_model(model.read_bytes(), target)
    except EdgeslimError as exc:
        if not as_json:
            raise
        # --json: a script reads stdout, so the verdict is JSON there too; the message goes
        # to stderr as for any error, and the exit code is the error's.
        click.echo(json.dumps({"fits": False, "error": exc.message, "hint": exc.hint,
                               "error_type": type(exc).__name__}, indent=2))
        click.echo(f"error: {exc.message}", err=True)
        raise click.exceptions.Exit(exc.exit_code) from None
    if as_json:
        click.echo(json.dumps({"fits": True, **result.to_dict()}, indent=2))
        return
    click.echo(f"{model.name} fits {target.profile}: ops {', '.join(result.ops)}")
    if result.flash_needed_bytes is not None:
        click.echo(f"  flash: {result.flash_needed_bytes} B needed (model {result.model_bytes} B + runtime "
                   f"{target.runtime_flash_bytes} B) of {result.flash_budget_bytes} B, "
                   f"{result.flash_headroom_bytes} B to spare")
    if result.arena_bytes is not None:
        click.echo(f"  arena: {result.arena_measured_bytes} B measured + {result.arena_margin:.0%} = "
                   f"{result.arena_bytes} B of {result.ram_budget_bytes} B available, "
                   f"{result.ram_headroom_bytes} B to spare")
    for note in result.notes:
        click.echo(f"  note: {note}")
