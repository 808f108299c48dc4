"""Options and output shared by the commands that run a build (build, example)."""

from __future__ import annotations

from pathlib import Path

import click

_RECIPE_FLAGS = [
    click.option("--seed", type=click.IntRange(0, 2**32 - 1),
                 help="Make the build reproducible (byte-identical model.tflite); 0 to 2**32 - 1."),
    click.option("--sparsity", type=float, help="Pruning target sparsity, e.g. 0.5."),
    click.option("--structure", type=click.Choice(["unstructured", "2:4"]), help="Pruning structure."),
    click.option("--clusters", type=int, help="Clusters (shared weight values) per layer, e.g. 16."),
    click.option("--epochs", type=int, help="Fine-tuning epochs for every stage."),
    click.option("--prune-epochs", type=int, help="Fine-tuning epochs of the prune stage."),
    click.option("--cluster-epochs", type=int, help="Fine-tuning epochs of the cluster stage."),
    click.option("--qat-epochs", type=int, help="Epochs of quantization-aware training."),
    click.option("--prune-channels", type=float,
                 help="Add channel pruning: remove this fraction of the filters of every prunable "
                      "layer group (e.g. 0.5), fine-tuned with your model as the teacher."),
    click.option("--channels-epochs", type=int, help="Fine-tuning epochs of the channels stage."),
    click.option("--no-prune", is_flag=True, help="Skip pruning."),
    click.option("--no-cluster", is_flag=True, help="Skip clustering."),
    click.option("--no-qat", is_flag=True, help="Skip QAT (post-training quantization only)."),
    click.option("--representative-samples", type=int,
                 help="Calibration samples for the int8 conversion (default 200)."),
    click.option("--max-drop", type=float,
                 help="Accuracy guard: the most the shipped model may lose on the validation split, "
                      "in accuracy points (default 1.0), or percent of MSE increase for regression "
                      "(default 10). Compression backs off, or plain int8 ships, to stay within it."),
    click.option("--no-guard", is_flag=True,
                 help="Ship the recipe's compressed model whatever its accuracy drop."),
    click.option("--allow-float-fallback", is_flag=True,
                 help="Accept ops that stay float instead of failing (not for microcontrollers)."),
    click.option("--activations", type=click.Choice(["int8", "int16"]),
                 help="int16: whole-model 16x8 (int16 activations, int8 weights), for targets whose "
                      "runtime runs every op of the model at 16x8 (recipe: convert.activations)."),
    click.option("--float-layers", multiple=True,
                 help="Keep this layer in float (a layer name, or a regex); repeat for several. "
                      "Targets that run float ops only (rpi, android). Recipe: convert.float_layers."),
    click.option("--float-worst", type=click.IntRange(0),
                 help="Keep the N layers that add the most quantization error in float "
                      "(rpi, android). Recipe: convert.float_worst."),
]


def recipe_options(fn):
    """Apply the common recipe flags to a click command."""
    for opt in reversed(_RECIPE_FLAGS):
        fn = opt(fn)
    return fn


def print_summary(result) -> None:
    """The short table a build ends with: float vs final, size, what each stage did."""
    from rich.console import Console
    from rich.table import Table

    r = result.report
    m = r["metric"]
    console = Console(highlight=False)
    table = Table(title=f"edgeslim: {r['model']['name']} -> {r['target']['name']}")
    table.add_column("stage")
    table.add_column(f"{m['name']} (val)", justify="right")
    table.add_column(f"{m['name']} (test)", justify="right")
    table.add_column("params", justify="right")
    table.add_column(".tflite", justify="right")
    table.add_column("gzip'd", justify="right")
    table.add_column("time", justify="right")
    for s in r["stages"]:
        metric = f"{s['metric']:.4f}"
        if s.get("metric_tflm") is not None:
            metric += f" (TFLM {s['metric_tflm']:.4f})"
        val = "" if s.get("metric_val") is None else f"{s['metric_val']:.4f}"
        table.add_row(s["name"], val, metric, str(s["params"]), f"{s['tflite_bytes']:,} B",
                      f"{s['tflite_gzip_bytes']:,} B", f"{s['wall_s']:.1f}s")
    console.print(table)
    e, v, g = r["evaluation"], m["validation"], r["guard"]
    word = "drop" if m["higher_is_better"] else "increase"
    if e["warning"]:
        console.print(f"[bold red]WARNING:[/bold red] {e['warning']}")
    console.print(
        f"{m['name']} on the test split ({e['test_split']}, {r['data']['test']} samples): "
        f"float {m['float']:.4f} -> int8 {m['int8']:.4f} ({word} {m['drop']:+.4f}); "
        f"validation split: {v['float']:.4f} -> {v['int8']:.4f} ({word} {v['drop']:+.4f})"
    )
    console.print(f"accuracy guard: shipped {g['shipped']} ({g['reason']})")
    d = r.get("distillation")
    if d and d.get("summary"):
        console.print(("[bold red]" if d.get("student_failed") else "") + d["summary"]
                      + ("[/bold red]" if d.get("student_failed") else ""))
    size = r["size"]
    console.print(
        f"size: .tflite {size['float_tflite_bytes']:,} B float -> {size['int8_tflite_bytes']:,} B int8; "
        f"gzip'd {size['float_tflite_gzip_bytes']:,} B -> {size['int8_tflite_gzip_bytes']:,} B"
    )
    pc = r.get("per_class")
    if pc and pc.get("flagged"):
        console.print(f"[bold]classes that lost most:[/bold] {', '.join(pc['flagged'])} (see report.md)")
    flagged = [e for e in (r.get("quantization_error") or {}).get("layers", []) if e["suggestion"]]
    if flagged:
        worst = max(flagged, key=lambda e: e["added_snr_db"])
        console.print(f"[bold]int8 error:[/bold] layer {worst['layer']} adds {worst['added_snr_db']:.1f} dB "
                      f"(SNR {worst['snr_db']:.1f} dB): {worst['suggestion']} (see report.html)")
    console.print(f"bundle: {result.bundle_dir}")


def print_prebuilt_summary(result) -> None:
    """What a build from an already converted .tflite ends with: the check, the score (or that
    none was measured), sizes, the bundle."""
    from rich.console import Console

    r = result.report
    m, model = r["metric"], r["model"]
    console = Console(highlight=False)
    console.print(f"edgeslim: {model['name']} -> {r['target']['name']}: already converted "
                  f"({model['input']['type']} in, {model['output']['type']} out; SHA-256 {model['sha256'][:16]}...), "
                  "no compression or conversion stage ran")
    if m["measured"]:
        tflm = f", {m['int8_tflm']:.4f} TFLite Micro" if m["int8_tflm"] is not None else ""
        console.print(f"{m['name']}: {m['int8']:.4f} LiteRT{tflm}, on {m['evaluated_on']} ({m['samples']} samples)")
    else:
        console.print(f"[bold]{m['note']}[/bold]")
    size = r["size"]
    line = f"size: .tflite {size['int8_tflite_bytes']:,} B (gzip'd {size['int8_tflite_gzip_bytes']:,} B)"
    cg = r.get("codegen")
    if cg:
        io = cg["io_bytes"]["input"] + cg["io_bytes"]["output"]
        line += (f"; C library arena {cg['arena_bytes']:,} B ({cg['arena_bytes'] + io:,} B with its input/output "
                 f"buffers, TFLite Micro {cg['tflm_arena_measured_bytes']:,} B)")
    console.print(line)
    console.print(f"bundle: {result.bundle_dir}")


def library_options(fn):
    """--kernels and --memory-plan: the C library's variant (--backend c)."""
    fn = click.option(
        "--memory-plan", type=click.Choice(["smallest", "layer-by-layer"]),
        help="With --backend c: smallest = fuse and run layers in place where that shrinks the arena "
             "(default); layer-by-layer = each layer whole (more RAM, less code: 1.9 KB less flash on "
             "the KWS DS-CNN for the M4). A budget search tries both (search.memory_plans).")(fn)
    return click.option(
        "--kernels", type=click.Choice(["optimized", "reference"]),
        help="With --backend c: optimized = the core's SIMD kernels (DSP, Helium) where it has them "
             "(default); reference = the scalar kernels on any core (less flash, several times the "
             "instructions). A budget search tries both (search.kernels) unless this is given.")(fn)


_SEARCH_FLAGS = [
    click.option("--max-flash", help="Budget search: the most flash the model may take, e.g. 24k "
                 "(k = 1024; --backend c: the C library's text+rodata+data; TFLite Micro: .tflite + "
                 "the profile's runtime). Needs `pip install edgeslim[search]`."),
    click.option("--max-ram", help="Budget search: the most RAM, e.g. 12k (--backend c: the static "
                 "memory plan's arena; TFLite Micro: the measured arena + margin)."),
    click.option("--max-macs", help="Budget search: the most multiply-accumulates per inference, "
                 "e.g. 1.2M (k = 1000, M = 10**6)."),
    click.option("--search-space", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="TOML with a [search] table: the values each knob takes (docs/search.md)."),
    click.option("--ray-address", help="Run the trials on an existing Ray cluster: auto or HOST:PORT "
                 "(default: a local Ray started and stopped here, limited to this machine's cores)."),
    click.option("--num-cpus", type=int, help="CPUs of the local Ray (default: all cores)."),
    click.option("--trial-cpus", type=float, default=1, show_default=True,
                 help="CPUs per trial (TensorFlow's threads are capped to it)."),
    click.option("--rungs", type=int, default=2, show_default=True,
                 help="Successive-halving rungs (the last trains longest)."),
    click.option("--eta", type=int, default=2, show_default=True,
                 help="Successive halving: keep the best 1/eta of each rung; epochs grow x eta."),
    click.option("--min-epochs", type=int, default=10, show_default=True,
                 help="Fine-tuning epochs per stage in the first rung (the DS-CNN keyword model of "
                      "docs/benchmarks.md needs 20 to recover within 1 point at 12,000 B)."),
    click.option("--max-trials", type=int, default=16, show_default=True,
                 help="Candidates trained at most (after the budgets pruned the space)."),
]

SEARCH_KEYS = ("max_flash", "max_ram", "max_macs", "search_space", "ray_address", "num_cpus",
               "trial_cpus", "rungs", "eta", "min_epochs", "max_trials")


def search_options(fn):
    """The budget-search flags (edgeslim build, edgeslim search)."""
    for opt in reversed(_SEARCH_FLAGS):
        fn = opt(fn)
    return fn


def run_search(model, data, *, target, recipe, flags: dict, search: dict, backend: str,
               out, trust_model, test_data, labels, name, pareto_set: bool,
               ignored: list[dict] | None = None, kernels: str | None = None,
               memory_plan: str | None = None):
    """Call edgeslim.search with the parsed flags; print what it chose. ``kernels`` and
    ``memory_plan`` (given): the only C library variant the search may ship."""
    import sys

    from rich.console import Console

    from edgeslim import recipe as recipe_mod
    from edgeslim.search import Budgets, SearchSpace, search as run

    budgets = Budgets.parse(max_flash=search["max_flash"], max_ram=search["max_ram"],
                            max_macs=search["max_macs"])
    space = SearchSpace.load(search["search_space"]) if search["search_space"] else None
    if kernels or memory_plan:
        import dataclasses

        from edgeslim.pipeline import check_backend
        from edgeslim.targets import load_target

        check_backend(load_target(target), backend, target, kernels=kernels or "optimized",
                      memory_plan=memory_plan or "smallest")
        space = space or SearchSpace()
        space = dataclasses.replace(space, **({"kernels": (kernels,)} if kernels else {}),
                                    **({"memory_plans": (memory_plan,)} if memory_plan else {}))
    max_drop = flags.get("max_drop")
    # The stages are the search's to choose: the flags that drop one are not used (and said so).
    ignored = list(ignored or []) + [
        {"setting": "--" + k.replace("_", "-"), "value": True, "from": "command line",
         "why": "the search chooses the stages (channels, prune, cluster)"}
        for k, v in sorted(flags.items()) if k.startswith("no_") and k != "no_guard" and v]
    flags = {k: v for k, v in flags.items() if not k.startswith("no_") or k == "no_guard"}
    table = recipe_mod.flags_to_table(**flags)
    res = run(model, data, target=target, budgets=budgets, max_drop=max_drop, backend=backend,
              out=out, recipe=recipe, flags=table, seed=flags.get("seed"), space=space,
              ray_address=search["ray_address"], num_cpus=search["num_cpus"],
              trial_resources={"cpu": search["trial_cpus"]}, rungs=search["rungs"],
              eta=search["eta"], min_epochs=search["min_epochs"], max_trials=search["max_trials"],
              write_pareto_set=pareto_set, ignored_flags=ignored, trust_model=trust_model,
              test_data=test_data,
              labels=labels, name=name, echo=click.echo, live=sys.stdout.isatty())
    s = res.summary
    console = Console(highlight=False)
    from rich.table import Table

    table = Table(title="Pareto set (validation drop, flash, RAM, MACs)")
    for col in ("candidate", "val drop", "flash", "RAM", "MACs", "epochs", "status"):
        table.add_column(col, justify="left" if col in ("candidate", "status") else "right")
    for c in sorted((c for c in s["candidates"] if c["pareto"]), key=lambda c: c["val_drop"]):
        f = c["figures"]
        table.add_row(c["name"], f"{c['val_drop']:.2f}",
                      *("-" if f.get(k) is None else f"{f[k]:,}" for k in ("flash", "ram", "macs")),
                      str(c["epochs"]), c["status"])
    console.print(table)
    w, v = s["winner"], s["verified"]
    console.print(f"search: {s['trials_run']} trials, {s['counts']}; {len(s['lost'])} lost; "
                  f"{s['wall_s']:.0f}s")
    console.print(f"shipped {w['name']}: validation drop {w['val_drop']:.2f} "
                  f"{s['budgets']['drop_unit']}; re-measured on the bundle: " + ", ".join(
                      f"{k} {c['measured']:,} <= {c['budget']:,}" if k != "drop" else
                      f"drop {c['measured']:.2f} <= {c['budget']:g}"
                      for k, c in v["checks"].items()))
    lib = w.get("library") or {}
    fastest = (w["figures"].get("variants") or [None])[0]
    if lib and fastest and (lib["kernels"], lib["memory_plan"]) != (fastest["kernels"],
                                                                     fastest["memory_plan"]):
        over = [f"{k} {fastest[k]:,} > {s['budgets'][k + '_bytes']:,}" for k in ("flash", "ram")
                if s["budgets"].get(k + "_bytes") is not None and fastest[k] > s["budgets"][k + "_bytes"]]
        console.print(f"C library: {lib['kernels']} kernels, {lib['memory_plan']} memory plan, the "
                      f"fastest that fits: {fastest['kernels']} kernels with the {fastest['memory_plan']} "
                      f"plan would need {'; '.join(over)}"
                      + (" (the reference kernels take several times the instructions; "
                         "--kernels optimized keeps them out)" if lib["kernels"] == "reference" else ""),
                      markup=False)
    if s.get("ignored"):
        console.print("ignored by the search: " + "; ".join(i["setting"] for i in s["ignored"]),
                      markup=False)  # "[prune] sparsity" is not a rich style
    console.print(f"bundle: {res.bundle_dir} (search.json, pareto.png)"
                  + (f"; Pareto set: {res.pareto_dir}" if res.pareto_dir else ""))
    return res
