"""`edgeslim targets` lists the target profiles; `edgeslim targets show NAME` prints one."""

from __future__ import annotations

import click


def _table(targets):
    from rich.console import Console
    from rich.table import Table

    from edgeslim.targets import format_size

    table = Table(title="edgeslim targets")
    for col in ("name", "kind", "cpu", "clock", "RAM", "flash", "runtime", "description"):
        table.add_column(col)
    for t in targets:
        name = t.name if t.name == t.profile else f"{t.name} (= {t.profile})"
        table.add_row(name, t.kind, t.core or t.cpu, f"{t.clock_mhz:g} MHz" if t.clock_mhz else "-",
                      format_size(t.ram_bytes), format_size(t.flash_bytes), t.runtime, t.description)
    Console(width=160).print(table)


def _show(t) -> None:
    from edgeslim.targets import format_size

    click.echo(f"{t.name}" + (f" (= {t.profile})" if t.name != t.profile else ""))
    click.echo(f"  {t.description}")
    click.echo(f"  kind: {t.kind}   runtime: {t.runtime}   source: {t.source}")
    if t.inherits:
        click.echo(f"  inherits: {' <- '.join(t.inherits)}")
    click.echo(f"  cpu: {t.cpu}{' ' + t.core if t.core else ''}, {t.clock_mhz} MHz, features: "
               f"{', '.join(t.features) or '-'}")
    if t.kind == "mcu":
        click.echo(f"  RAM {format_size(t.ram_bytes)} ({t.ram_reserved_bytes} B reserved, arena budget "
                   f"{t.arena_budget_bytes} B), flash {format_size(t.flash_bytes)} "
                   f"(runtime estimate {t.runtime_flash_bytes} B)")
        click.echo(f"  arena margin: {t.arena_margin:.0%} on top of the measured arena")
        click.echo(f"  build: {t.build.get('cflags', '')}")
    else:
        click.echo(f"  memory: {format_size(t.ram_bytes)}")
    for v in t.variants:
        click.echo(f"  variant {v.name}: {v.delegate}, {v.precision}, {v.model}"
                   + (" (default)" if v.name == t.default_variant else ""))
    click.echo(f"  tensor types: {', '.join(sorted(t.tensor_types))}; fused activations: "
               f"{', '.join(sorted(t.fused_activations))}")
    click.echo(f"  ops ({len(t.ops)}): {', '.join(sorted(t.ops))}")
    click.echo(f"  16x8 ops ({len(t.int16_ops)}): {', '.join(sorted(t.int16_ops)) or 'none (no 16x8)'}")
    click.echo(f"  float layers: {'allowed' if t.allows_float else 'refused (fully-integer runtime)'}")
    for op, text in sorted(t.op_constraints.items()):
        click.echo(f"    {op}: {text}")
    stages = t.recipe.get("build", {}).get("stages", [])
    click.echo(f"  default recipe: {' -> '.join(stages) or '-'}")
    for section in stages:
        cfg = t.recipe.get(section, {})
        click.echo(f"    [{section}] " + ", ".join(f"{k} = {v}" for k, v in cfg.items()))


@click.group(name="targets", invoke_without_command=True)
@click.pass_context
def command(ctx):
    """List the target profiles (`edgeslim targets show NAME` for one)."""
    if ctx.invoked_subcommand is None:
        from edgeslim.targets import list_targets

        _table(list_targets())


@command.command("show")
@click.argument("name")
@click.option("--ram", default=None, help="Override the RAM budget, e.g. 192k (k = 1024).")
@click.option("--flash", default=None, help="Override the flash budget, e.g. 512k.")
def show(name, ram, flash):
    """Print one target profile (a name or a path to a .toml)."""
    from edgeslim.targets import load_target

    _show(load_target(name, ram=ram, flash=flash))
