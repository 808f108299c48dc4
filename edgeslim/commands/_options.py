"""Options and output shared by the commands that run a build (build, example)."""

from __future__ import annotations

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
