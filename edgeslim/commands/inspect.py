"""`edgeslim inspect model.tflite [--target T] [--json F] [--md F] [--html F]`: where size,
memory and compute go (edgeslim.inspection), printed and written."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", "target_spec", default=None,
              help="Also check op support and flash/RAM margin against this target (name or .toml).")
@click.option("--ram", default=None, help="Override the target's RAM budget, e.g. 192k.")
@click.option("--flash", default=None, help="Override the target's flash budget, e.g. 512k.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write everything as JSON to this file.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a Markdown report to this file.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a self-contained HTML report with plots to this file.")
@click.option("--no-arena", is_flag=True,
              help="Skip measuring the TFLite Micro arena (a child process; seconds per model).")
def command(model, target_spec, ram, flash, json_path, md_path, html_path, no_arena):
    """Per-op shapes, parameters, MACs, sparsity; memory (activation peak, TFLite Micro arena,
    C backend plan); size (gzip, entropy-coded weights); target fit."""
    from edgeslim.errors import ModelFormatError, ModelLoadError
    from edgeslim.inspection import inspect_model, to_markdown, to_text
    from edgeslim.io.outputs import check_output_file, write_text_atomic

    if not model.is_file():
        raise ModelLoadError(f"{model} does not exist" if not model.exists() else f"{model} is not a file",
                             hint="Give the path of a .tflite file.")
    outputs = {"--json": json_path, "--md": md_path, "--html": html_path}
    for option, path in outputs.items():
        if path is not None:
            check_output_file(path, inputs=(model,), option=option)
    html = _html_renderer() if html_path is not None else None
    target = None
    if target_spec is not None:
        from edgeslim.targets import load_target

        target = load_target(target_spec, ram=ram, flash=flash)
    try:
        result = inspect_model(model.read_bytes(), target=target, measure_arena=not no_arena)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{model}: {exc.message}", hint=exc.hint) from None
    click.echo(to_text(result), nl=False)
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    if md_path is not None:
        write_text_atomic(md_path, to_markdown(result, model.name))
    if html_path is not None:
        write_text_atomic(html_path, html(result.to_dict(), title=model.name))
    for path in (json_path, md_path, html_path):
        if path is not None:
            click.echo(f"wrote {path}")


def _html_renderer():
    """The HTML hook: edgeslim/report/html.py (self-contained, matplotlib plots) renders
    the inspection's dict; ``render_inspection(data: dict, *, title: str) -> str``."""
    from edgeslim.errors import EdgeslimError

    try:
        from edgeslim.report.html import render_inspection
    except ImportError:
        raise EdgeslimError("--html is not available in this edgeslim: the HTML report module "
                            "(edgeslim/report/html.py) is not installed",
                            hint="Use --json or --md.") from None
    return render_inspection
