"""The `edgeslim` command line: thin click commands that parse, call the API, print.

Each command lives in edgeslim/commands/<name>.py; heavy imports (TensorFlow)
happen inside the command body so `edgeslim --help` is instant. Any
EdgeslimError becomes a one-paragraph message and exit code 2; a traceback is
shown only with --debug (accepted anywhere on the command line).
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from edgeslim import __version__
from edgeslim.errors import EdgeslimError

# command name -> module in edgeslim.commands defining `command`
COMMANDS = {
    "build": "build",
    "check": "check",
    "inspect": "inspect",
    "targets": "targets",
    "flash": "flash",
    "distill": "distill",
    "example": "example",
    "bench": "bench",
    "emulate": "emulate",
    "serve": "serve",
    "search": "search",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs or is listed."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        mod = COMMANDS.get(name)
        if mod is None:
            return None
        try:
            return importlib.import_module(f"edgeslim.commands.{mod}").command
        except ModuleNotFoundError as exc:
            if exc.name == f"edgeslim.commands.{mod}":
                return None
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeslimError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(exc.hint, err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug, or an input nobody foresaw: one paragraph, exit 2
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(unexpected_error_message(exc), err=True)
            ctx.exit(2)


def unexpected_error_message(exc: BaseException) -> str:
    """One paragraph for an error edgeslim did not anticipate (no traceback: --debug shows it)."""
    detail = " ".join(str(exc).split())
    if len(detail) > 300:
        detail = detail[:297] + "..."
    if isinstance(exc, MemoryError):
        what = "ran out of memory"
    elif isinstance(exc, RecursionError):
        what = "met an input nested too deeply to read"
    else:
        what = f"failed unexpectedly ({type(exc).__name__}{': ' + detail if detail else ''})"
    return (f"error: edgeslim {what}. Check the "
            "inputs of the command; run it again with --debug for the traceback, and report it "
            "if the inputs are fine.")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeslim")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """Compress a Keras model, convert it to int8 TFLite, fit it to a device, measure it."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or ctx.obj.get("debug", False)


def main(argv=None):
    # Before anything imports TensorFlow (Keras 3 imports it too): tf.keras must be
    # tf_keras for TFMOT, and TensorFlow's C++ log noise stays off the terminal.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args = [a for a in args if a != "--debug"]
        os.environ["EDGESLIM_DEBUG"] = "1"
    return cli.main(args=args, obj={"debug": debug}, prog_name="edgeslim")


if __name__ == "__main__":  # pragma: no cover
    main()
