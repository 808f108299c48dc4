"""`edgeslim inspect model.tflite [--target T] [--keras M --data D] [--json F] [--md F] [--html F]`:
where size, memory, compute and (with the float model and data) int8 error go
(edgeslim.inspection), printed and written."""

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
@click.option("--keras", "keras_path", type=click.Path(path_type=Path), default=None,
              help="The float Keras model the .tflite was converted from (.keras, .h5 or SavedModel): "
                   "with --data, measure the per-layer quantization error.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Real inputs for --keras (.npz or image folder): its validation split is used.")
@click.option("--samples", default=None, type=click.IntRange(min=1),
              help="At most this many validation samples for the quantization error "
                   "[default: 256, as a build's report].")
def command(model, target_spec, ram, flash, json_path, md_path, html_path, no_arena, keras_path,
            data_path, samples):
    """Per-op shapes, parameters, MACs, sparsity; memory (activation peak, TFLite Micro arena,
    C backend plan); size (gzip, entropy-coded weights); target fit; with --keras and --data,
    the per-layer quantization error, the layer that does the most damage first."""
    from edgeslim.errors import DataError, ModelFormatError, ModelLoadError
    from edgeslim.inspection import inspect_model, to_markdown, to_text
    from edgeslim.io.outputs import check_output_file, write_text_atomic

    if (keras_path is None) != (data_path is None):
        given, missing = ("--keras", "--data") if data_path is None else ("--data", "--keras")
        raise click.UsageError(f"{given} needs {missing}: the per-layer quantization error compares "
                               "the float Keras model with the .tflite on real inputs; give both "
                               "(--keras model.keras --data d.npz) or neither.")
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
    keras_model = x = None
    inputs = ""
    if samples is None:
        from edgeslim.pipeline import QUANT_ERROR_SAMPLES as samples
    if keras_path is not None:
        keras_model, x, inputs = _float_model_and_inputs(keras_path, data_path, samples)
    try:
        result = inspect_model(model.read_bytes(), target=target, measure_arena=not no_arena,
                               keras_model=keras_model, x=x, inputs=inputs, max_samples=samples)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{model}: {exc.message}", hint=exc.hint) from None
    except DataError as exc:  # the validation samples do not fit the Keras model
        raise DataError(f"--data {data_path}: {exc.message}", hint=exc.hint) from None
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


def _float_model_and_inputs(keras_path: Path, data_path: Path, samples: int):
    """The float model (Keras 3 bridged to tf_keras by load_model) and the validation split of
    the data, with a sentence saying which samples."""
    from edgeslim.io.data import load_data
    from edgeslim.io.dataset import CARVED
    from edgeslim.io.models import load_model

    loaded = load_model(keras_path)
    ds = load_data(data_path)
    n = min(samples, len(ds.x_val))
    origin = ("carved from its training samples, seed 0" if ds.val_origin == CARVED
              else "x_val" if data_path.suffix.lower() == ".npz" else "given")
    inputs = f"{n} samples of the validation split of {data_path.name} ({origin})"
    return loaded.model, ds.x_val[:n], inputs


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
