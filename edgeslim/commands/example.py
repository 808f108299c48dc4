"""`edgeslim example`: the whole job on the built-in example (no download needed).

Trains a small depthwise-separable CNN on scikit-learn's bundled handwritten
digits with Keras 3 (what users have), then runs `edgeslim build` on it.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeslim.commands._options import print_summary, recipe_options

# What `example` writes into OUT/example/ (and so may overwrite there).
EXAMPLE_FILES = ("digits.npz", "digits_cnn.keras")


@click.command("example")
@click.option("--target", "-t", default="rpi4", show_default=True, help="Target profile.")
@click.option("--out", "-o", default="out", show_default=True, type=click.Path(path_type=Path),
              help="Output folder: OUT/example/ holds the example model and data, OUT/<target>/ the bundle.")
@recipe_options
@click.option("--backend", type=click.Choice(["tflm", "c"]), default="tflm", show_default=True)
def command(target, out, backend, **flags):
    """Train the built-in digits example and build it for TARGET."""
    from edgeslim.io.outputs import check_example_folder, check_output_folder, check_replaceable
    from edgeslim.pipeline import _safe_dir_name

    # Before any training: OUT writable, OUT/example ours (or absent), OUT/<target> a bundle (or absent).
    check_output_folder(out)
    check_example_folder(out / "example", EXAMPLE_FILES)
    check_replaceable(out / _safe_dir_name(target))

    import edgeslim._tf  # noqa: F401  (TensorFlow with tf_keras, before Keras 3 loads it)
    from edgeslim import examples
    from edgeslim import recipe as recipe_mod
    from edgeslim.pipeline import Progress, build

    drop, add = recipe_mod.stage_flags(flags)
    seed = flags.get("seed") if flags.get("seed") is not None else 0
    work = out / "example"
    work.mkdir(parents=True, exist_ok=True)
    data = examples.write_digits_npz(work / "digits.npz", seed=seed)
    click.echo(f"[example] training the digits CNN with Keras 3 -> {work / 'digits_cnn.keras'}")
    model = examples.train_digits_model(work / "digits_cnn.keras", data, seed=seed)
    result = build(
        model, data, target=target, flags=recipe_mod.flags_to_table(**flags), drop_stages=drop, add_stages=add,
        out=out, backend=backend, progress=Progress(echo=click.echo),
    )
    print_summary(result)
