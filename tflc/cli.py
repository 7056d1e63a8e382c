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


@main.command("compile")
@click.argument("model", type=click.Path(path_type=str))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Output folder (model.tflite, report.json).")
@click.option("--calibration-data", type=click.Path(), help=".npz (one array per input, or x), .npy, or a folder of images.")
@click.option("--calibration", type=click.Choice(["data", "random"]), default="data", show_default=True,
              help="'random' calibrates on synthetic data (accuracy will suffer).")
@click.option("--calibration-samples", type=int, default=200, show_default=True, help="Samples drawn (with --seed).")
@click.option("--random-range", default="0,1", show_default=True, help="LO,HI of synthetic calibration data.")
@click.option("--normalize", type=click.Choice(["unit", "symmetric", "raw"]), default="unit", show_default=True,
              help="Image folders: unit [0,1], symmetric [-1,1], raw [0,255].")
@click.option("--weights", type=click.Choice(["per-channel", "per-tensor"]), default="per-channel", show_default=True)
@click.option("--activations", type=click.Choice(["int8", "int16"]), default="int8", show_default=True,
              help="int16 is the 16x8 mode: int16 activations, int8 weights.")
@click.option("--io-type", type=click.Choice(["int8", "uint8", "int16", "float32"]), default=None,
              help="Type of the model's inputs and outputs [default: the activation type].")
@click.option("--static-batch", is_flag=True, help="Pin the batch dimension to 1 (delegates needing static shapes, e.g. Edge TPU).")
@click.option("--eval-data", type=click.Path(), help=".npz with x and y: accuracy of float vs int8 (fidelity without y).")
@click.option("--max-accuracy-drop", type=float, help="Exit 3 when int8 loses more than this many points.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--input-shape", "input_shape", multiple=True, help="NAME=1,H,W,C for inputs with free dimensions.")
@click.option("--custom-objects", multiple=True, help="module:attr providing custom layers (repeatable).")
@click.option("--allow-unsafe-code", is_flag=True, help="Load models whose Lambda layers run code from the file.")
@click.option("--allow-float-ops", is_flag=True, help="Keep float ops the converter could not lower (hybrid model).")
@click.option("--target", help="Check the result against this target (name or YAML path).")
@click.option("--strict", is_flag=True, help="With --target: a partial mapping fails (exit 3).")
@click.option("--export", "export_format", type=click.Choice(["c"]), help="With --target: also export C source to OUT/c.")
@click.option("--config", "pipeline_config", type=click.Path(), help="Optimization pipeline YAML (stages, budget).")
@click.option("--train-data", type=click.Path(), help="Training data for pipeline stages.")
@click.option("--prune", type=float, help="Shortcut: a prune stage to this sparsity (0-1).")
@click.option("--qat", is_flag=True, help="Shortcut: a quantization-aware training stage.")
@click.option("--cluster", type=int, help="Shortcut: a clustering stage with this many clusters.")
@click.option("--distill", "distill_student", type=click.Path(), help="Shortcut: distil into this student Keras file.")
@FORMAT_OPTION
def compile_command(model, out_dir, calibration_data, calibration, calibration_samples, random_range,
                    normalize, weights, activations, io_type, static_batch, eval_data, max_accuracy_drop, seed,
                    input_shape, custom_objects, allow_unsafe_code, allow_float_ops, target, strict, export_format,
                    pipeline_config, train_data, prune, qat, cluster, distill_student, fmt):
    """Compile a Keras model (.keras, .h5, SavedModel) into a fully-integer TFLite model."""
    import tflc
    from tflc.keras_io import parse_input_shapes

    pipeline = _pipeline_request(pipeline_config, prune, qat, cluster, distill_student)
    report = tflc.compile(
        model, out_dir, calibration_data=calibration_data, calibration=calibration,
        calibration_samples=calibration_samples, random_range=_parse_range(random_range),
        normalize=normalize, seed=seed, weights=weights, activations=activations, io_type=io_type,
        static_batch=static_batch,
        eval_data=eval_data, max_accuracy_drop=max_accuracy_drop,
        input_shapes=parse_input_shapes(input_shape), custom_objects=custom_objects,
        allow_unsafe_code=allow_unsafe_code, allow_float_ops=allow_float_ops, target=target, strict=strict, export=export_format,
        pipeline=pipeline, train_data=train_data,
        log=None if fmt == "json" else lambda message: click.echo(f"... {message}", err=True),
    )
    if fmt == "json":
        emit_json(report)
    else:
        click.echo(report.summary())
    if not report.passed:
        raise click.exceptions.Exit(3)


def _pipeline_request(config, prune, qat, cluster, distill):
    """A pipeline YAML path, or a dict built from the shortcut flags, or None."""
    flags = {k: v for k, v in {"prune": prune, "qat": qat or None, "cluster": cluster,
                                "distill": distill}.items() if v is not None}
    if config and flags:
        return {"config": config, "flags": flags}
    if flags:
        return {"flags": flags}
    return config


def _parse_range(text: str) -> tuple[float, float]:
    from tflc.errors import BadInput

    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise BadInput(f"--random-range {text!r}: expected LO,HI, for example 0,1") from None
    if not low < high:
        raise BadInput(f"--random-range {text!r}: LO must be below HI")
    return low, high


# ------------------------------------------------------------------------------- targets / check
# (tflc targets, tflc check: see tflc/check/)


@main.group("targets", invoke_without_command=True)
@FORMAT_OPTION
@click.pass_context
def targets_command(ctx, fmt: str) -> None:
    """List the deployment targets tflc knows (targets/*.yaml), one line each."""
    if ctx.invoked_subcommand is not None:
        return
    from tflc.check import list_targets

    specs = list_targets()
    if fmt == "json":
        emit_json([{"name": t.name, "kind": t.kind, "title": t.title, "runtime": str(t.runtime),
                    "ops": len(t.ops)} for t in specs])
        return
    for t in specs:
        click.echo(f"{t.name:<16} {t.kind:<4} {len(t.ops):>3} ops  {t.title}")


@targets_command.command("show")
@click.argument("name")
@FORMAT_OPTION
def targets_show_command(name: str, fmt: str) -> None:
    """Print one target (a name, or the path of your own descriptor) in full."""
    import yaml

    from tflc.check import load_target

    spec = load_target(name)
    if fmt == "json":
        emit_json(spec)
    else:
        click.echo(yaml.safe_dump(spec.to_dict(), sort_keys=False, width=100).rstrip())


def _coverage(_ctx, _param, value):
    if value is None:
        return None
    text = value.strip().rstrip("%")
    try:
        number = float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a fraction (0.8) or a percentage (80%)") from None
    number = number / 100 if value.strip().endswith("%") or number > 1 else number
    if not 0 <= number <= 1:
        raise click.BadParameter(f"{value!r} must lie between 0 and 1 (or 0% and 100%)")
    return number


@main.command("check")
@click.argument("model", type=click.Path())
@click.option("--target", "-t", required=True, help="Target name (see `tflc targets`) or a descriptor YAML path.")
@FORMAT_OPTION
@click.option("--min-coverage", callback=_coverage,
              help="Pass (exit 0) when at least this share of ops runs on the target, e.g. 0.9 or 90%.")
@click.pass_context
def check_command(ctx, model: str, target: str, fmt: str, min_coverage) -> None:
    """Per-operator verdicts for MODEL (.tflite) on a target, with memory and advice.

    Exit codes: 0 fully on target and within budget; 3 partially mapped, over budget or below
    --min-coverage; 2 bad input.
    """
    from tflc.check import check_model

    result = check_model(model, target)
    if fmt == "json":
        emit_json(result)
    else:
        click.echo(result.to_text())
    ctx.exit(result.exit_code(min_coverage))


# ---------------------------------------------------------------------------------------- export
# (tflc export: see tflc/export/)


# ----------------------------------------------------------------------------------------- bench
# (tflc bench: see tflc/bench/)


def _key_values(_ctx, param, values) -> dict:
    pairs = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{text!r} is not KEY=VALUE", param=param)
        pairs[key] = value
    return pairs


@main.command("bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--device", "-d", default="local", show_default=True,
              help="local, ssh://user@host[:port], or a host alias from your ssh_config.")
@click.option("--target", "-t", help="Target name or descriptor; its device.active_power_w gives "
              "an energy estimate.")
@click.option("--python", help="Python on the device, e.g. a venv with tflite-runtime "
              "[default: python3 over SSH, this Python locally].")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Untimed runs after the first inference.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed runs per model and trial.")
@click.option("--min-duration", type=click.FloatRange(min=0), default=0.0,
              help="Keep timing each model for at least this many seconds per trial.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials, each in fresh processes, for the run-to-run spread.")
@click.option("--delegate", default="default", show_default=True,
              help="none (builtin kernels), default (XNNPACK), or an external delegate library "
              "on the device such as libedgetpu.so.1.")
@click.option("--delegate-option", "delegate_options", multiple=True, callback=_key_values,
              help="KEY=VALUE for the external delegate (repeatable).")
@click.option("--inputs", "inputs", type=click.Path(dir_okay=False),
              help="Field data (.npz) to feed instead of random inputs; reports input saturation.")
@click.option("--eval-data", type=click.Path(dir_okay=False),
              help="Labelled .npz (x, y): top-1 accuracy on the device, agreement with the host.")
@click.option("--outputs", "return_outputs", is_flag=True,
              help="Include the outputs for the first input batch in the records.")
@click.option("--runtime", default="auto", show_default=True,
              type=click.Choice(["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"]),
              help="The interpreter package to use on the device.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1),
              help="Seconds before the run counts as hung [default: 600 + the minimum durations].")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Retries after a lost or refused connection (nothing else is retried).")
@click.option("--ssh-config", type=click.Path(dir_okay=False), help="ssh_config file (ssh -F).")
@click.option("--ssh-option", "ssh_options", multiple=True,
              help="Extra OpenSSH option KEY=VALUE (ssh -o, repeatable).")
@click.option("--remote-tmp", help="Folder on the device for the temporary files "
              "[default: $TMPDIR or /tmp].")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write the results (JSON) to this file.")
@FORMAT_OPTION
def bench_command(models, device, target, python, threads, warmup, runs, min_duration, repeat,
                  delegate, delegate_options, inputs, eval_data, return_outputs, runtime, seed,
                  timeout_s, retries, ssh_config, ssh_options, remote_tmp, output, fmt) -> None:
    """Time MODEL(s) (.tflite, or a registry reference such as kws@current) on a device.

    Several models run interleaved (A B A B ...) in one invocation; the table shows each figure
    with its ratio to the first model. Exit codes: 0 measured; 1 the device failed; 2 bad input.
    """
    from tflc.bench import bench
    from tflc.bench.compare import render_table
    from tflc.store import resolve_model_ref

    result = bench(
        [resolve_model_ref(m) for m in models], device, target=target, python=python,
        threads=threads, warmup=warmup, runs=runs, min_duration_s=min_duration, repeat=repeat,
        delegate=delegate, delegate_options=delegate_options, inputs=inputs, eval_data=eval_data,
        seed=seed, return_outputs=return_outputs, runtime=runtime, timeout_s=timeout_s,
        retries=retries, ssh_config=ssh_config, ssh_options=ssh_options, remote_tmp=remote_tmp)
    if output:
        result.write(output)
    if fmt == "json":
        emit_json(result)
    else:
        click.echo(render_table(result))


# ----------------------------------------------------------------------------- optimize pipeline
# (tflc sensitivity: see tflc/optimize/)


# ---------------------------------------------------------------------------- runs and releases
# (tflc runs, promote, rollback, rebuild: see tflc/store/)
