"""`edgeslim search`: the budget search with the whole Pareto set written (docs/search.md)."""

from __future__ import annotations

from pathlib import Path

import click

from edgeslim.commands._options import SEARCH_KEYS, library_options, recipe_options, run_search, search_options


@click.command("search")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help=".npz (x_train, y_train[, x_val, y_val, x_test, y_test]) or an image folder.")
@click.option("--test-data", type=click.Path(path_type=Path),
              help="Held-out data scored as the test split (as for edgeslim build).")
@click.option("--target", "-t", default="cortex-m4", show_default=True,
              help="Target profile name or a path to a board .toml.")
@click.option("--out", "-o", default="out", show_default=True, type=click.Path(path_type=Path),
              help="Output folder: the winner's bundle in OUT/<target>/, the Pareto set's recipes, "
                   "search.json and pareto.png in OUT/search/.")
@click.option("--recipe", type=click.Path(path_type=Path),
              help="Recipe TOML whose settings the search does not vary are kept.")
@recipe_options
@click.option("--backend", type=click.Choice(["tflm", "c"]), default="tflm", show_default=True,
              help="Microcontroller code whose figures the budgets are measured on.")
@library_options
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text file with one class name per line, shipped in the bundle.")
@click.option("--name", help="Model name used in file and C identifiers.")
@click.option("--trust-model", is_flag=True,
              help="Allow loading models with Lambda layers or custom objects.")
@search_options
def command(model, data, test_data, target, out, recipe, backend, kernels, memory_plan, labels, name,
            trust_model, **flags):
    """Search compression settings under --max-flash/--max-ram/--max-macs and --max-drop;
    write every Pareto-optimal candidate's recipe and the best one's bundle."""
    search = {k: flags.pop(k) for k in SEARCH_KEYS}
    from edgeslim.commands.build import read_labels

    label_list = read_labels(labels) if labels else None
    run_search(model, data, target=target, recipe=recipe, flags=flags, search=search,
               backend=backend, out=out, trust_model=trust_model, test_data=test_data,
               labels=label_list, name=name, pareto_set=True, kernels=kernels, memory_plan=memory_plan)
