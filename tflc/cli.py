"""The `tflc` command line: parse, call one library function, print.

Every command's work lives in the library (the same functions a Python user calls); this module
only turns flags into arguments and results into text or JSON. Errors raised as `TflcError`
become one line on stderr and the error's exit code; anything unexpected becomes one line too,
with the traceback only under `--debug`.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click

from tflc import __version__
from tflc.errors import TflcError


class TflcGroup(click.Group):
    """A click group that turns tflc's exceptions into one clean line and an exit code."""

    def invoke(self, ctx):
        debug = bool(os.environ.get("TFLC_DEBUG")) or "--debug" in sys.argv[1:]
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except TflcError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"tflc: error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("tflc: interrupted; nothing was written, earlier results are intact", err=True)
            ctx.exit(130)
        except Exception as exc:  # the last line of defence: never a bare traceback
            if debug:
                traceback.print_exc()
            click.echo(
                f"tflc: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                err=True,
            )
            ctx.exit(1)


def emit_json(obj) -> None:
    """Print a result dataclass (or dict) as JSON, the same text report files hold."""
    from tflc.fileio import _json_default

    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    click.echo(json.dumps(data, indent=2, default=_json_default))


FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Human-readable table, or the result as JSON.",
)


@click.group(cls=TflcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tflc")
@click.option("--debug", is_flag=True, help="Show tracebacks and TensorFlow's own logs.")
def main(debug: bool) -> None:
    """tflc: compile Keras models into verified, fully-integer TFLite models for edge targets.

    The pipeline: compile (load, optimize, convert, verify, evaluate) -> check (per-operator
    verdicts for a target) -> export (C source for microcontrollers) / bench (on-device timing).
    """
    if debug:
        os.environ["TFLC_DEBUG"] = "1"
        from tflc.tf_env import set_verbose

        set_verbose(True)


# ---------------------------------------------------------------------------------------- compile
# (tflc compile: see tflc/compiler.py)


# ------------------------------------------------------------------------------- targets / check
# (tflc targets, tflc check: see tflc/check/)


# ---------------------------------------------------------------------------------------- export
# (tflc export: see tflc/export/)


# ----------------------------------------------------------------------------------------- bench
# (tflc bench: see tflc/bench/)


# ----------------------------------------------------------------------------- optimize pipeline
# (tflc sensitivity: see tflc/optimize/)


# ---------------------------------------------------------------------------- runs and releases
# (tflc runs, promote, rollback, rebuild: see tflc/store/)
