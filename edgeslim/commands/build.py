"""`edgeslim build`: Keras model + data -> compressed, int8, checked bundle for a target."""

from __future__ import annotations

from pathlib import Path

import click

from edgeslim.commands._options import (SEARCH_KEYS, library_options, print_prebuilt_summary, print_summary,
                                        recipe_options, run_search, search_options)


@click.command("build")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "data", type=click.Path(path_type=Path),
              help=".npz (x_train, y_train[, x_val, y_val, x_test, y_test]) or an image folder with class "
                   "sub-folders. Required for a Keras model; optional for an int8 .tflite (it is then scored).")
@click.option("--test-data", type=click.Path(path_type=Path),
              help="Held-out data the model never trained on (.npz with x_test, y_test, or an image "
                   "folder), scored as the test split. Without it the test split is DATA's x_test, "
                   "or is carved from DATA's training samples (the report then says so).")
@click.option("--target", "-t", default="rpi", show_default=True,
              help="Target profile name (see `edgeslim targets`) or a path to a board .toml.")
@click.option("--out", "-o", default="out", show_default=True, type=click.Path(path_type=Path),
              help="Output folder; the bundle goes to OUT/<target as typed>/.")
@click.option("--recipe", type=click.Path(path_type=Path), help="Recipe TOML (docs/recipe.md).")
@recipe_options
@click.option("--ram", help="Override the target's RAM budget, e.g. 192k (k = 1024).")
@click.option("--flash", help="Override the target's flash budget, e.g. 512k.")
@click.option("--backend", type=click.Choice(["tflm", "c"]), default="tflm", show_default=True,
              help="Microcontroller code: TFLite Micro bundle, or also edgeslim's interpreter-free C.")
@click.option("--pack-weights", is_flag=True,
              help="With --backend c: store clustered weights as 4-bit indices (less flash, more instructions).")
@library_options
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text file with one class name per line, shipped in the bundle.")
@click.option("--name", help="Model name used in file and C identifiers (default: the file's stem).")
@click.option("--teacher", "teachers", multiple=True, type=click.Path(path_type=Path),
              help="Distil this teacher model into MODEL first (repeat for several teachers).")
@click.option("--distill-width", type=float,
              help="Distil MODEL into a student derived from it with this fraction of filters/units.")
@click.option("--distill-epochs", type=int, help="Maximum epochs of the distill stage.")
@click.option("--temperature", type=float, help="Distillation temperature (default 2).")
@click.option("--alpha", type=float, help="Distillation: weight of the label loss (default 0.5).")
@click.option("--rank-energy", type=float,
              help="Add the lowrank stage, keeping this fraction of each layer's singular-value energy.")
@click.option("--calibration", type=click.Choice(["random", "coreset"]),
              help="How the int8 calibration samples are chosen (default random).")
@click.option("--audio-front-end", type=click.Choice(["mlperf-tiny-kws"]),
              help="--target web: the feature front end the model was trained on, so the page can take a "
                   "WAV file or the microphone (mlperf-tiny-kws: 16 kHz, 1 s, 49x10 MFCC as MLPerf Tiny's KWS).")
@click.option("--trust-model", is_flag=True,
              help="Allow loading models with Lambda layers or custom objects (runs code from the file).")
@search_options
def command(model, data, test_data, target, out, recipe, ram, flash, backend, pack_weights, kernels, memory_plan,
            labels, name, teachers, trust_model, audio_front_end, **flags):
    """Compress MODEL, convert it to a fully-integer TFLite model, check it against the
    target and write a deployable bundle.

    MODEL may also be an int8 .tflite converted elsewhere: it is then checked and bundled as
    it is (no compression or conversion), and scored when --data is given."""
    from edgeslim import recipe as recipe_mod
    from edgeslim.errors import DataError
    from edgeslim.pipeline import Progress, build
    from edgeslim.prebuilt import build_prebuilt, is_tflite

    search = {k: flags.pop(k) for k in SEARCH_KEYS}
    budgets = search["max_flash"] or search["max_ram"] or search["max_macs"]
    label_list = read_labels(labels) if labels else None
    if is_tflite(model):
        from click.core import ParameterSource

        ctx = click.get_current_context()
        set_flags = sorted(k for k, v in flags.items() if v not in (None, False, ())
                           and ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE)
        given = set_flags + [opt for opt, v in (("recipe", recipe), ("teacher", teachers),
                                                 ("trust-model", trust_model)) if v]
        given += [k for k in ("max_flash", "max_ram", "max_macs") if search[k]]
        if given:
            raise click.UsageError(
                f"{model.name} is already converted: compression and conversion options do not apply "
                f"to it ({', '.join('--' + g.replace('_', '-') for g in given)}). Give the Keras model "
                "or SavedModel to compress it, or drop those options.")
        result = build_prebuilt(model, data, target=target, out=out, ram=ram, flash=flash, backend=backend,
                                pack_weights=pack_weights, kernels=kernels or "optimized",
                                memory_plan=memory_plan or "smallest", labels=label_list, name=name,
                                progress=Progress(echo=click.echo), test_data=test_data,
                                front_end={"audio": audio_front_end} if audio_front_end else None)
        print_prebuilt_summary(result)
        return
    if data is None:
        raise DataError("--data is required to build from a Keras model (compression and int8 "
                        "calibration train and measure on it)",
                        hint="Pass --data data.npz (or an image folder); only an int8 .tflite builds without it.")
    if budgets:
        # A budget: search the compression settings (edgeslim.search) instead of one recipe.
        # Build flags a search does not use: said so, not dropped silently.
        why = {"pack_weights": "the search chooses packed weights (search.pack_weights)",
               "teachers": "the search distils from your model only (search.distill)",
               "ram": "the search's budgets are --max-ram/--max-flash",
               "flash": "the search's budgets are --max-ram/--max-flash",
               "audio_front_end": "a search bundle has no audio front end; build the winner's "
                                  "recipe with it"}
        given = {"pack_weights": pack_weights, "teachers": teachers, "ram": ram, "flash": flash,
                 "audio_front_end": audio_front_end}
        ignored = [{"setting": "--" + ("teacher" if k == "teachers" else k.replace("_", "-")),
                    "value": list(v) if k == "teachers" else v, "from": "command line",
                    "why": why[k]} for k, v in given.items() if v]
        run_search(model, data, target=target, recipe=recipe, flags=flags, search=search,
                   backend=backend, out=out, trust_model=trust_model, test_data=test_data,
                   labels=label_list, name=name, pareto_set=False, ignored=ignored, kernels=kernels,
                   memory_plan=memory_plan)
        return
    drop, add = recipe_mod.stage_flags(flags, teachers=teachers)
    result = build(
        model, data, target=target, recipe=recipe, flags=recipe_mod.flags_to_table(**flags),
        drop_stages=drop, add_stages=add, teacher=list(teachers) or None, out=out, ram=ram,
        flash=flash, trust_model=trust_model,
        backend=backend, pack_weights=pack_weights, kernels=kernels or "optimized",
        memory_plan=memory_plan or "smallest", labels=label_list, name=name, progress=Progress(echo=click.echo),
        test_data=test_data,
        front_end={"audio": audio_front_end} if audio_front_end else None,
    )
    print_summary(result)


def read_labels(path: Path) -> list[str]:
    """--labels: a UTF-8 text file, one class name per line (blank lines skipped)."""
    from edgeslim.errors import DataError

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"--labels {path} is not a UTF-8 text file (byte {exc.start} is not UTF-8)",
                        hint="Give a text file with one class name per line.") from None
    if "\x00" in text or any(c in text for c in "\x01\x02\x03\x04\x1b"):
        raise DataError(f"--labels {path} holds control characters: it is not a text file",
                        hint="Give a text file with one class name per line.")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataError(f"--labels {path} holds no class names", hint="Give one class name per line.")
    return names
