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

from tflc.errors import BadInput, TflcError
from tflc.version import __version__

# tflc.store.recording.KINDS, written out so `tflc --help` need not import the store
# (tests/store checks that the two lists are the same).
RECORD_KINDS = ["compile", "check", "bench", "export", "search", "profile", "deploy"]


class TflcGroup(click.Group):
    """A click group that turns tflc's exceptions into one clean line and an exit code.

    Click's own usage errors (a missing option, a bad choice) become one line too, with the
    command's `--help` named, instead of click's three-line usage block; a closed stdout (`tflc
    runs list | head -1`) ends the command quietly.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"tflc: error: {one_line(exc.format_message())}{where}", err=True)
            code = exc.exit_code
        except click.ClickException as exc:
            click.echo(f"tflc: error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except click.exceptions.Abort:
            click.echo("tflc: interrupted; nothing was written, earlier results are intact", err=True)
            code = 130
        except BrokenPipeError:
            code = _reader_went_away()
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        debug = bool(os.environ.get("TFLC_DEBUG")) or "--debug" in sys.argv[1:]
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except TflcError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"tflc: error: {one_line(exc.message)}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("tflc: interrupted; nothing was written, earlier results are intact", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            ctx.exit(_reader_went_away())
        except Exception as exc:  # the last line of defence: never a bare traceback
            if debug:
                traceback.print_exc()
            click.echo(
                f"tflc: internal error: {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the "
                "traceback)",
                err=True,
            )
            ctx.exit(1)


def one_line(text: str) -> str:
    """A message as one terminal line: control characters a file name may carry (a newline, an
    escape sequence) are shown escaped instead of acting on the terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in str(text))


def _reader_went_away() -> int:
    """The program reading our output closed the pipe: stop writing, and let Python's final
    flush go to /dev/null instead of printing a second error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


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
# (tflc compile: see tflc/compiler.py and tflc/options.py)


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
@click.option("--activations", type=click.Choice(["int8", "int16", "mixed"]), default="int8", show_default=True,
              help="int16 is the 16x8 mode: int16 activations, int8 weights. mixed: int8, with the layers "
                   "that gain most in 16x8 (measured one by one) promoted within --int16-budget.")
@click.option("--int16-budget", type=float, default=None, metavar="SHARE",
              help="With --activations mixed: the most of the model's compute (MACs, 0-1) that may run in "
                   "16x8 kernels [default: 0.25]; on a --target with a RAM budget the arena must fit it too.")
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
@click.option("--ptq", type=click.Choice(["minmax", "percentile", "mse", "kl", "auto"]), default=None,
              help="Activation ranges: the converter's min-max (default), percentile, MSE or KL per tensor; "
                   "auto tries each, with and without bias correction, on --eval-data and keeps the best.")
@click.option("--bias-correction", is_flag=True,
              help="Correct each conv/dense layer's mean int8 output error in its bias (calibration set).")
@click.option("--cross-layer-equalization", is_flag=True,
              help="Even out per-channel weight ranges of conv/depthwise -> conv/dense pairs (ReLU between) "
                   "before quantizing; the float function is unchanged.")
@click.option("--adaround", type=click.IntRange(1, 1000), is_flag=False, flag_value=8, default=None,
              metavar="[SWEEPS]",
              help="Choose each conv/dense weight's rounding (up or down) to lower the layer's output error "
                   "on the calibration set (greedy, SWEEPS passes, 8 when not given).")
@click.option("--target", help="Check the result against this target (name or YAML path).")
@click.option("--strict", is_flag=True, help="With --target: a partial mapping fails (exit 3).")
@click.option("--export", "export_format", type=click.Choice(["c"]), help="With --target: also export C source to OUT/c.")
@click.option("--aot", "aot", multiple=True, metavar="SOC",
              help="With --target qualcomm-htp: also write OUT/model_SOC.tflite, compiled ahead of time for this SoC (repeatable).")
@click.option("--config", "pipeline_config", type=click.Path(), help="Optimization pipeline YAML (stages, budget).")
@click.option("--train-data", type=click.Path(), help="Training data for pipeline stages.")
@click.option("--prune", help="Shortcut: a prune stage to this sparsity (0-1), or 'auto'.")
@click.option("--prune-structure", help="Shortcut: structured N:M pruning, e.g. 2:4.")
@click.option("--qat", is_flag=True, help="Shortcut: a quantization-aware training stage.")
@click.option("--qat-skip-unsupported", is_flag=True, help="QAT: leave layers TF-MOT cannot quantize in float.")
@click.option("--cluster", type=int, help="Shortcut: a clustering stage with this many clusters.")
@click.option("--distill", "distill_student", type=click.Path(), help="Shortcut: distil into this student Keras file.")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Fine-tuning epochs of every pipeline stage (overrides the config's).")
@FORMAT_OPTION
def compile_command(model, out_dir, calibration_data, calibration, calibration_samples, random_range,
                    normalize, weights, activations, int16_budget, io_type, static_batch, eval_data, max_accuracy_drop, seed,
                    input_shape, custom_objects, allow_unsafe_code, allow_float_ops, target, strict, export_format,
                    aot, pipeline_config, train_data, prune, prune_structure, qat, qat_skip_unsupported,
                    cluster, distill_student, epochs, ptq, bias_correction,
                    cross_layer_equalization, adaround, fmt):
    """Compile a Keras model (.keras, .h5, SavedModel) into a fully-integer TFLite model."""
    import tflc
    from tflc.load.models import parse_input_shapes
    from tflc.options import CompileOptions

    options = CompileOptions(
        calibration_data=calibration_data, calibration=calibration,
        calibration_samples=calibration_samples, random_range=_parse_range(random_range),
        normalize=normalize, seed=seed, weights=weights, activations=activations,
        int16_budget=int16_budget, io_type=io_type, static_batch=static_batch, allow_float_ops=allow_float_ops,
        input_shapes=parse_input_shapes(input_shape), custom_objects=custom_objects,
        allow_unsafe_code=allow_unsafe_code, eval_data=eval_data,
        max_accuracy_drop=max_accuracy_drop, target=target, strict=strict, export=export_format,
        aot=aot, pipeline=pipeline_config, train_data=train_data, prune=prune,
        prune_structure=prune_structure, qat=qat, qat_skip_unsupported=qat_skip_unsupported,
        cluster=cluster, distill=distill_student, epochs=epochs,
        ptq=ptq, bias_correction=bias_correction,
        cross_layer_equalization=cross_layer_equalization, adaround=adaround,
    )
    log = None if fmt == "json" else (lambda message: click.echo(f"... {message}", err=True))
    report = tflc.compile(model, out_dir, options, log=log)
    if fmt == "json":
        emit_json(report)
    else:
        click.echo(report.summary())
    if not report.passed:
        raise click.exceptions.Exit(3)


def _parse_range(text: str) -> tuple[float, float]:

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


@targets_command.command("constraints")
@FORMAT_OPTION
def targets_constraints_command(fmt: str) -> None:
    """The constraints a descriptor can name: parameters (type, default) and the sentence shown."""
    from tflc.check.constraints import vocabulary
    from tflc.check.table import render_vocabulary

    if fmt == "json":
        emit_json([c.to_dict() for c in vocabulary()])
    else:
        click.echo(render_vocabulary(vocabulary()))


def _coverage(_ctx, _param, value):
    if value is None:
        return None
    text = value.strip().rstrip("%")
    try:
        number = float(text)
    except ValueError:
        raise BadInput(f"--min-coverage {value!r}: not a fraction (0.8) or a percentage (80%)") from None
    number = number / 100 if value.strip().endswith("%") or number > 1 else number
    if not 0 <= number <= 1:  # also refuses nan
        raise BadInput(f"--min-coverage {value!r}: must lie between 0 and 1 (or 0% and 100%)")
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
    from tflc.api import check

    result = check(model, target, min_coverage=min_coverage)
    if fmt == "json":
        emit_json(result)
    else:
        click.echo(result.to_text())
        if result.artifact_id:  # the run registry's id for this result (tflc runs show ID)
            click.echo(f"artifact  {result.artifact_id}")
    ctx.exit(result.exit_code(min_coverage))


# ---------------------------------------------------------------------------------------- export
# (tflc export: see tflc/export/)


@main.command("export")
@click.argument("model", type=click.Path())
@click.option("--package", "package_format", type=click.Choice(["c"]), default="c", show_default=True,
              help="Package format: C++ source for TensorFlow Lite Micro.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (with --layout arduino: the Arduino library folder).")
@click.option("--target", "-t", help="Check ops and RAM/flash budgets against this target (name or YAML).")
@click.option("--name", default="model", show_default=True, help="C identifier prefixing every symbol.")
@click.option("--layout", type=click.Choice(["plain", "arduino"]), default="plain", show_default=True)
@click.option("--no-measure", is_flag=True, help="Skip measuring the arena in TFLite Micro (static estimate only).")
@click.option("--no-verify", is_flag=True, help="Skip running TFLite Micro against LiteRT on sample inputs.")
@click.option("--input-guard", is_flag=True, help="Also write NAME_input_guard.h/.c: per-input "
              "saturation counters and a range monitor against the calibration profile.")
@click.option("--profile", type=click.Path(), help="The calibration profile for --input-guard "
              "[default: profile.json beside MODEL, which every tflc compile writes].")
@FORMAT_OPTION
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as --format json.")
def export_command(model, package_format, out_dir, target, name, layout, no_measure, no_verify,
                   input_guard, profile, fmt, as_json) -> None:
    """Write MODEL (.tflite, or NAME@current) as a TFLite Micro package of C++ sources.

    OUT gets NAME_model_data.h/.cc (the model array), NAME_op_resolver.h (exactly the model's
    ops), NAME_arena.h (the tensor arena size: measured in TFLite Micro plus a stated margin),
    README.md and export_report.json, replacing an earlier package as a whole. Exit codes: 0
    written and within budget; 3 over the target's RAM or flash budget (package still
    written); 2 bad input (nothing written); 1 TFLite Micro failed.
    """
    from tflc.api import export

    if profile and not input_guard:
        raise BadInput("--profile is read by --input-guard; add --input-guard or drop --profile")
    report = export(model, out_dir, target=target, name=name, layout=layout,
                    measure=not no_measure, verify=not no_verify, input_guard=input_guard,
                    profile=profile)
    if fmt == "json" or as_json:
        emit_json(report)
    else:
        click.echo(report.to_text())
        if report.artifact_id:  # the run registry's id for this result (tflc runs show ID)
            click.echo(f"artifact  {report.artifact_id}")
    failure = report.gate_failure()
    if failure is not None:
        raise failure


# ----------------------------------------------------------------------------------------- bench
# (tflc bench: see tflc/bench/)


def _key_values(_ctx, param, values) -> dict:
    pairs = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise BadInput(f"{param.opts[-1]} {text!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


@main.command("bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--device", "-d", "devices", multiple=True, default=("local",), show_default=True,
              help="local, ssh://user@host[:port], or a host alias from your ssh_config; "
              "?python=PATH after it names that device's Python. Repeat for a fleet: the "
              "devices run in parallel, one column each.")
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
@click.option("--max-runs", type=click.IntRange(min=1), default=100000, show_default=True,
              help="But never more timed runs than this per model and trial.")
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
def bench_command(models, devices, target, python, threads, warmup, runs, min_duration, max_runs,
                  repeat, delegate, delegate_options, inputs, eval_data, return_outputs, runtime,
                  seed, timeout_s, retries, ssh_config, ssh_options, remote_tmp, output,
                  fmt) -> None:
    """Time MODEL(s) (.tflite, or a registry reference such as kws@current) on a device.

    Several models run interleaved (A B A B ...) in one invocation; the table shows each figure
    with its ratio to the first model. Several --device run in parallel (a fleet), one column
    per device. Exit codes: 0 measured (on every device); 1 the device failed (in a fleet: at
    least one did; the others' results are still printed and written); 2 bad input.
    """
    from tflc.api import bench

    result = bench(
        models, list(devices), target=target, python=python,
        threads=threads, warmup=warmup, runs=runs, min_duration_s=min_duration,
        max_runs=max_runs, repeat=repeat, delegate=delegate, delegate_options=delegate_options,
        inputs=inputs, eval_data=eval_data,
        seed=seed, return_outputs=return_outputs, runtime=runtime, timeout_s=timeout_s,
        retries=retries, ssh_config=ssh_config, ssh_options=ssh_options, remote_tmp=remote_tmp,
        output=output)
    if len(devices) > 1:
        _show_fleet(result, fmt)
        return
    from tflc.bench.summary import render_table

    if fmt == "json":
        emit_json(result)
    else:
        click.echo(render_table(result))
        if result.artifact_id:  # the run registry's id for this result (tflc runs show ID)
            click.echo(f"artifact  {result.artifact_id}")


def _show_fleet(fleet, fmt) -> None:
    """The fleet's table (or JSON); a failed device then makes the exit code 1, in one line
    naming every device that failed, after the others' figures are out."""
    from tflc.bench.summary import render_fleet_table
    from tflc.errors import PipelineError

    if fmt == "json":
        emit_json(fleet)
    else:
        click.echo(render_fleet_table(fleet))
        for outcome in fleet.devices:
            if outcome.ok and outcome.result.artifact_id:
                click.echo(f"artifact  {outcome.result.artifact_id}  {outcome.device}")
    if fleet.failed:
        reasons = "; ".join(f"{o.device}: {o.error.message}" for o in fleet.failed)
        raise PipelineError(f"{len(fleet.failed)} of {len(fleet.devices)} devices failed "
                            f"({reasons})")


# --------------------------------------------------------------------------------------- profile
# (tflc profile: see tflc/profile/)


@main.command("profile")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--target", "-t", required=True, help="Target name (see `tflc targets`) or a descriptor YAML path.")
@click.option("--device", "-d", help="Measure on this device (local, ssh://user@host[:port], an ssh_config alias) "
              "[default: here for CPU targets; vela or the cycle model for NPU and MCU targets].")
@click.option("--python", help="Python on the device [default: python3 over SSH, this Python locally].")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1, max=10**6), default=100, show_default=True,
              help="Timed runs per op model (more until --min-duration, but at most 1000 or --runs).")
@click.option("--min-duration", type=click.FloatRange(min=0, max=3600), default=0.03, show_default=True,
              help="Seconds each op model is timed for at least.")
@click.option("--rate", type=float, help="Inferences per second: average power and battery life at that duty cycle.")
@click.option("--battery", help="MAH@V, e.g. 1000@3.7: battery life at --rate.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1, max=7 * 86400), default=600.0,
              show_default=True, help="Seconds before the device run counts as hung.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True,
              help="Table, the documented JSON, or a self-contained HTML report.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the report to this file instead of stdout.")
@click.option("--ssh-config", type=click.Path(dir_okay=False), help="ssh_config file (ssh -F).")
@click.option("--ssh-option", "ssh_options", multiple=True, help="Extra OpenSSH option KEY=VALUE (ssh -o, repeatable).")
@click.option("--remote-tmp", help="Folder on the device for the temporary files [default: $TMPDIR or /tmp].")
def profile_command(models, target, device, python, threads, runs, min_duration, rate, battery, timeout_s,
                    fmt, output, ssh_config, ssh_options, remote_tmp) -> None:
    """Where MODEL's time, memory and energy go, op by op, on a target (several: side by side).

    Exit codes: 0 profiled; 1 the device failed; 2 bad input (corrupt model, unknown target).
    """
    from tflc import api
    from tflc.fileio import atomic_write_text
    from tflc.profile import render

    results = api.profile(list(models), target, output=output, device=device, python=python,
                          threads=threads, runs=runs, min_duration_s=min_duration, rate=rate,
                          battery=battery, timeout_s=timeout_s, ssh_config=ssh_config,
                          ssh_options=tuple(ssh_options), remote_tmp=remote_tmp)
    text = render(results, fmt)
    if output:
        atomic_write_text(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
    for result in results:
        if result.artifact_id:
            click.echo(f"artifact  {result.artifact_id}  ({result.model})", err=True)


# ----------------------------------------------------------------------------- search
# (tflc search: see tflc/search/)


def _size_option(_ctx, param, value):
    """--max-arena / --max-flash: bytes, or a size like 256KiB."""
    if value is None:
        return None
    from pathlib import Path

    from tflc.check.spec import parse_bytes

    flag = "--" + param.name.replace("_", "-")
    try:
        return parse_bytes(value.replace(" ", ""), Path(flag), flag)
    except TflcError:
        raise click.BadParameter(f"{value!r}: expected bytes or a size like 256KiB") from None


@main.command("search")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--target", "-t", required=True, help="Target whose budgets every candidate must meet.")
@click.option("--train-data", required=True, type=click.Path(), help=".npz with x and y (or a class-folder tree): each candidate is trained on it.")
@click.option("--eval-data", required=True, type=click.Path(), help=".npz with x and y: int8 accuracy of each candidate.")
@click.option("--calibration-data", type=click.Path(), help="Calibration samples [default: 200 training samples].")
@click.option("--trials", type=click.IntRange(min=1, max=100000), default=20, show_default=True, help="Trials in the study (a resumed study counts its finished ones).")
@click.option("--workers", type=click.IntRange(min=1, max=256), default=1, show_default=True, help="Trials in parallel on this machine (one training thread each).")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Run trials as Ray tasks on the cluster at ADDRESS (e.g. 127.0.0.1:6379).")
@click.option("--max-arena", callback=_size_option, help="Largest tensor arena (bytes or 256KiB).")
@click.option("--max-flash", callback=_size_option, help="Largest .tflite (bytes or 1MiB).")
@click.option("--max-latency-ms", type=float, help="Largest latency: the profile's estimate, or measured on --device.")
@click.option("--max-accuracy-drop", type=float, help="Points of int8 accuracy a candidate may lose against the seed's.")
@click.option("--device", "-d", help="Measure each candidate's latency there (local, ssh://...).")
@click.option("--builder", metavar="MODULE:FUNCTION", help="build(hp) returning a Keras model: replaces the automatic architecture space.")
@click.option("--no-compression", is_flag=True, help="Search the architecture only (no sparsity, clusters, QAT).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["int8", "int16", "mixed"]), help="Activation precisions to try (repeatable): int8, int16 (16x8), mixed (int8 with 16x8 where it pays; targets whose descriptor allows it) [default: int8 and int16, and mixed where the target allows it].")
@click.option("--epochs", type=click.IntRange(min=1, max=10000), default=10, show_default=True, help="Training epochs of each candidate (from scratch).")
@click.option("--fine-tune-epochs", type=click.IntRange(min=1, max=10000), default=2, show_default=True, help="Epochs of each compression stage.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--study-name", help="Name of the Optuna study [default: from the model, data, target and settings].")
@click.option("-o", "--output", "out_dir", default="search", show_default=True, type=click.Path(), help="Folder for search.json, pareto.png, report.html, trials/, recommended/.")
@click.option("--custom-objects", multiple=True, help="module:attr providing custom layers (repeatable).")
@click.option("--allow-unsafe-code", is_flag=True, help="Load models whose Lambda layers run code from the file.")
@FORMAT_OPTION
def search_command(model, target, train_data, eval_data, calibration_data, trials, workers, ray_address,
                   max_arena, max_flash, max_latency_ms, max_accuracy_drop, device, builder, no_compression,
                   precisions, epochs, fine_tune_epochs, seed, study_name, out_dir, custom_objects,
                   allow_unsafe_code, fmt):
    """Search architectures and compression of MODEL under TARGET's budgets: the Pareto front.

    Exit codes: 0 a front was found; 3 no candidate met the budgets; 2 bad input; 130 interrupted
    (run the same command again to resume: finished trials are kept).
    """
    from pathlib import Path

    import tflc.api
    from tflc.errors import GateFailed
    from tflc.search.core import SearchOptions, pareto_table

    options = SearchOptions(
        model=model, target=target, train_data=train_data, eval_data=eval_data, out_dir=out_dir,
        calibration_data=calibration_data, trials=trials, workers=workers, ray=ray_address,
        max_arena=max_arena, max_flash=max_flash, max_latency_ms=max_latency_ms,
        max_accuracy_drop=max_accuracy_drop, device=device, builder=builder,
        compression=not no_compression, precisions=tuple(precisions),
        epochs=epochs, fine_tune_epochs=fine_tune_epochs, seed=seed, study_name=study_name,
        custom_objects=tuple(custom_objects), allow_unsafe_code=allow_unsafe_code)
    try:
        result = tflc.api.search(options, log=lambda line: click.echo(line, err=True))
    except KeyboardInterrupt:
        click.echo("tflc: interrupted; finished trials are kept in the study: run the same command "
                   "to resume", err=True)
        raise click.exceptions.Exit(130) from None
    if fmt == "json":
        emit_json(json.loads(Path(out_dir, "search.json").read_text()))
    else:
        click.echo(pareto_table(result))
        click.echo(f"wrote {Path(out_dir) / 'search.json'}, pareto.png, report.html")
    if not result.pareto:
        raise GateFailed("no candidate met the budgets and completed: see search.json for each "
                         "trial's reason")


# ----------------------------------------------------------------------------- optimize pipeline
# (tflc sensitivity: see tflc/optimize/)


@main.command("sensitivity")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--eval-data", required=True, type=click.Path(),
              help=".npz with x and y, a folder of class subfolders, or module:function.")
@click.option("--sparsities", default="0.25,0.5,0.75,0.9", show_default=True,
              help="Sparsities each layer is pruned to, alone.")
@click.option("--no-quantize", is_flag=True, help="Skip the quantize-one-layer analysis.")
@click.option("--normalize", type=click.Choice(["unit", "symmetric", "raw"]), default="unit", show_default=True,
              help="Image folders: unit [0,1], symmetric [-1,1], raw [0,255].")
@click.option("-o", "--output", "out_dir", default="sensitivity", show_default=True,
              type=click.Path(), help="Folder for sensitivity.png and sensitivity.json.")
@click.option("--custom-objects", multiple=True, help="module:attr providing custom layers (repeatable).")
@click.option("--allow-unsafe-code", is_flag=True, help="Load models whose Lambda layers run code from the file.")
@FORMAT_OPTION
def sensitivity_command(model, eval_data, sparsities, no_quantize, normalize, out_dir,
                        custom_objects, allow_unsafe_code, fmt):
    """Accuracy drop per layer when it alone is pruned (at each sparsity) or quantized to int8."""
    from tflc.optimize.sensitivity import sensitivity_report

    try:
        levels = [float(v) for v in sparsities.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"--sparsities {sparsities!r}: expected numbers such as 0.5,0.75,0.9") from None
    result = sensitivity_report(model, eval_data, out_dir, levels, quantize=not no_quantize,
                                custom_objects=custom_objects, allow_unsafe_code=allow_unsafe_code,
                                normalize=normalize)
    if fmt == "json":
        emit_json(result)
        return
    click.echo(result.table())
    click.echo(f"wrote {os.path.join(out_dir, 'sensitivity.png')} and sensitivity.json")


# ---------------------------------------------------------------------------- runs and releases
# (tflc runs, promote, rollback, rebuild: see tflc/store/)


def _use_registry(_ctx, _param, value):
    # Every store call reads TFLC_REGISTRY, so one flag reaches records and references alike.
    if value:
        os.environ["TFLC_REGISTRY"] = value
    return value


REGISTRY_OPTION = click.option(
    "--registry", type=click.Path(file_okay=False), expose_value=False, is_eager=True,
    callback=_use_registry, help="Run registry folder [default: $TFLC_REGISTRY or ./.tflc].",
)
# Also before any command (`tflc --registry PATH compile ...`), for the commands that record.
REGISTRY_OPTION(main)


def _runs_table(rows: list[list], headers: list[str]) -> None:
    """Plain aligned columns; the last column is never padded."""
    cells = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    for row in [headers, *cells]:
        padded = [v.ljust(w) for v, w in zip(row[:-1], widths, strict=False)]
        click.echo("  ".join([*padded, row[-1]]))


def _runs_filters(func):
    for option in reversed([
        click.option("--kind", type=click.Choice(RECORD_KINDS)),
        click.option("--model", help="Part of the model path, its name, or a release name."),
        click.option("--target", help="Target name."),
        click.option("--tag", help="Only artifacts with this tag."),
        click.option("--since", help="Recorded on or after this UTC date (2024-05-31[T12:00])."),
        click.option("--until", help="Recorded on or before this UTC date."),
    ]):
        func = option(func)
    return func


def _headline_metrics(record) -> str:
    """A few numbers that tell runs apart at a glance, by kind."""
    metrics = record.manifest.get("metrics") or {}
    picks = [("sizes.int8_tflite_bytes", "{:,} B"), ("evaluation.int8_accuracy", "acc {:.2f}%"),
             ("evaluation.accuracy_drop", "drop {:+.2f}"), ("coverage", "coverage {:.0%}"),
             ("memory.arena_bytes", "arena {:,} B"), ("arena.recommended_bytes", "arena {:,} B"),
             ("latency_ms.p50", "p50 {:.3f} ms"),
             ("accuracy", "acc {:.2f}%"), ("macs", "{:,} MACs"), ("arena_bytes", "arena {:,} B")]
    out = []
    for key, fmt in picks:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(fmt.format(value))
    return ", ".join(out[:3])


@main.group("runs")
def runs_group() -> None:
    """The run registry: every compile, check, bench and export result, with what produced it."""


@runs_group.command("list")
@_runs_filters
@click.option("--limit", type=int, default=50, show_default=True, help="Newest N (0: all).")
@FORMAT_OPTION
@REGISTRY_OPTION
def runs_list_command(kind, model, target, tag, since, until, limit, fmt) -> None:
    """Recorded artifacts, newest first."""
    from tflc.store import Registry

    registry = Registry()
    records = registry.list(kind=kind, model=model, target=target, tag=tag, since=since,
                            until=until, limit=limit or None)
    if fmt == "json":
        emit_json([{k: v for k, v in r.to_dict().items() if k != "manifest"}
                   | {"metrics": r.manifest.get("metrics")} for r in records])
        return
    if not records:
        click.echo(f"no runs recorded in {registry.root} match")
        return
    _runs_table([[r.id, r.kind, r.created[:19].replace("T", " "), r.model_name, r.target,
                  " ".join(r.releases + r.tags), _headline_metrics(r)] for r in records],
                ["ID", "KIND", "CREATED (UTC)", "MODEL", "TARGET", "RELEASES/TAGS", "METRICS"])


@runs_group.command("show")
@click.argument("artifact")
@FORMAT_OPTION
@REGISTRY_OPTION
def runs_show_command(artifact, fmt) -> None:
    """Everything recorded about one artifact (an id or a unique prefix of one, or NAME@current)."""
    from tflc.errors import PipelineError
    from tflc.store import Registry
    from tflc.store.diff import flatten

    registry = Registry()
    record = registry.get(_artifact_arg(registry, artifact))
    status = {name: registry.files.file_status(record.id, name, meta["sha256"])
              for name, meta in record.files.items()}
    if fmt == "json":
        emit_json(record.to_dict() | {"folder": str(registry.files.artifacts / record.id),
                                      "file_status": status})
        return
    m = record.manifest
    rows = [["artifact", f"{record.id} ({record.kind}, {record.created})"],
            ["folder", str(registry.files.artifacts / record.id)]]
    if record.releases or record.tags:
        rows.append(["releases/tags", " ".join(record.releases + record.tags)])
    for role, entry in (m.get("inputs") or {}).items():
        source = f" (from compile {entry['artifact']})" if entry.get("artifact") else ""
        sha = str(entry.get("sha256"))[:12]
        rows.append([f"input {role}", f"{entry.get('path')}  sha256 {sha}{source}"])
    if m.get("target"):
        sha = str(m["target"].get("sha256"))[:12]
        rows.append(["target", f"{m['target'].get('name')}  sha256 {sha}"])
    rows.append(["seed", m.get("seed")])
    for section in ("config", "versions", "platform", "metrics", "result"):
        for key, value in flatten(m.get(section) or {}, section).items():
            rows.append([key, value])
    for index, stage in enumerate(m.get("stages") or []):
        rows.append([f"stage {index + 1}", json.dumps(stage, default=str)[:160]])
    for name, meta in record.files.items():
        rows.append([f"file {name}",
                     f"{meta['size']:,} B  sha256 {meta['sha256'][:12]}  {status[name]}"])
    _runs_table(rows, ["FIELD", "VALUE"])
    broken = [n for n, s in status.items() if s != "ok"]
    if broken:
        raise PipelineError(f"artifact {record.id}: {', '.join(broken)} {status[broken[0]]} in "
                            f"{registry.files.artifacts / record.id}; `tflc runs repair` restores "
                            f"files whose stored copy is intact")


def _artifact_arg(registry, text: str) -> str:
    """An artifact id, a prefix of one, or NAME@current / NAME@previous."""
    if "@" in text:
        name, _, which = text.partition("@")
        return registry.release(name, which)
    return text


@runs_group.command("diff")
@click.argument("a")
@click.argument("b")
@FORMAT_OPTION
@REGISTRY_OPTION
def runs_diff_command(a, b, fmt) -> None:
    """What differs between two artifacts: inputs, configuration, target, versions, metrics."""
    from tflc.store import Registry
    from tflc.store.diff import diff_records

    registry = Registry()
    result = diff_records(registry.get(_artifact_arg(registry, a)),
                          registry.get(_artifact_arg(registry, b)))
    if fmt == "json":
        emit_json(result)
        return
    if not result.rows:
        click.echo(f"{result.a} and {result.b}: no differences in inputs, configuration, "
                   f"versions or metrics")
        return
    _runs_table([[r["key"], r["a"], r["b"]] for r in result.rows], ["KEY", result.a, result.b])


@runs_group.command("tag")
@click.argument("artifact")
@click.argument("tag")
@click.option("--remove", is_flag=True, help="Remove the tag instead.")
@REGISTRY_OPTION
def runs_tag_command(artifact, tag, remove) -> None:
    """Tag an artifact (tagged artifacts are never garbage-collected)."""
    from tflc.store import Registry

    registry = Registry()
    artifact_id = registry.tag(_artifact_arg(registry, artifact), tag, remove=remove)
    click.echo(f"{'untagged' if remove else 'tagged'} {artifact_id} {tag}")


@runs_group.command("gc")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--keep-days", type=float, default=14.0, show_default=True,
              help="Keep untagged, unreleased artifacts younger than this.")
@FORMAT_OPTION
@REGISTRY_OPTION
def runs_gc_command(dry_run, keep_days, fmt) -> None:
    """Remove artifacts no tag or release refers to, and files nothing refers to."""
    from tflc.store import Registry
    from tflc.store.maintenance import gc

    report = gc(Registry(), keep_days=keep_days, dry_run=dry_run)
    if fmt == "json":
        emit_json(report)
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(report.artifacts)} artifact(s), {report.orphan_blobs} unreferenced "
               f"file(s) ({report.bytes_freed:,} B) and {report.orphan_folders} stray folder(s)")
    for artifact_id in report.artifacts:
        click.echo(f"  {artifact_id}")


@runs_group.command("export")
@_runs_filters
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write to this file instead of stdout.")
@REGISTRY_OPTION
def runs_export_command(kind, model, target, tag, since, until, fmt, output) -> None:
    """All matching records as one flat row each (CSV for spreadsheets, JSON for dashboards)."""
    from tflc.fileio import _json_default
    from tflc.store import Registry
    from tflc.store.diff import export_row, to_csv, write_export

    records = Registry().list(kind=kind, model=model, target=target, tag=tag, since=since,
                              until=until)
    rows = [export_row(r) for r in records]
    if fmt == "csv":
        text = to_csv(rows)
    else:
        text = json.dumps(rows, indent=2, default=_json_default) + "\n"
    if output:
        write_export(output, text)
        click.echo(f"wrote {len(rows)} record(s) to {output}", err=True)
    else:
        click.echo(text, nl=False)


@runs_group.command("verify")
@click.argument("artifacts", nargs=-1)
@FORMAT_OPTION
@REGISTRY_OPTION
def runs_verify_command(artifacts, fmt) -> None:
    """Check that every recorded file still has its recorded sha256 (exit 1 naming any that not)."""
    from tflc.store import Registry
    from tflc.store.maintenance import verify

    registry = Registry()
    report = verify(registry, [_artifact_arg(registry, a) for a in artifacts] or None)
    if fmt == "json":
        emit_json(report)
    else:
        click.echo(f"checked {report.checked} artifact(s): "
                   + ("all files intact" if report.ok else f"{len(report.problems)} problem(s)"))
        for p in report.problems:
            click.echo(f"  {p['artifact']}  {p['file']}  {p['status']}  {p['path']}")
    _echo_warnings(report.warnings)
    if not report.ok:
        raise click.exceptions.Exit(1)


def _echo_warnings(warnings: list[str]) -> None:
    """Warnings go to stderr in every format, one line each, so JSON on stdout stays clean."""
    for warning in warnings:
        click.echo(f"tflc: warning: {warning}", err=True)


@runs_group.command("repair")
@FORMAT_OPTION
@REGISTRY_OPTION
def runs_repair_command(fmt) -> None:
    """Rebuild a damaged or deleted database from the manifests, restore damaged files."""
    from tflc.store import Registry
    from tflc.store.maintenance import repair

    report = repair(Registry())
    if fmt == "json":
        emit_json(report)
    else:
        if report.database_moved_to:
            click.echo(f"the damaged database was moved to {report.database_moved_to}")
        click.echo(f"reindexed {len(report.reindexed)} artifact(s), replayed "
                   f"{report.events_replayed} tag/release event(s), restored "
                   f"{len(report.restored)} file(s)")
        for item in report.unrecoverable:
            click.echo(f"  cannot restore {item['artifact']} {item['file']}: {item['reason']}")
    _echo_warnings(report.warnings)
    if report.unrecoverable:
        raise click.exceptions.Exit(1)


@runs_group.command("releases")
@click.argument("name", required=False)
@FORMAT_OPTION
@REGISTRY_OPTION
def runs_releases_command(name, fmt) -> None:
    """Release history: which artifact each name pointed to, and when."""
    from tflc.store import Registry

    history = Registry().release_history(name)
    if fmt == "json":
        emit_json(history)
        return
    if not history:
        click.echo("no releases yet: `tflc promote ID --as NAME` makes one")
        return
    _runs_table([[h["name"], h["artifact_id"], h["status"], h["promoted"][:19].replace("T", " "),
                  (h["rolled_back"] or "")[:19].replace("T", " ")] for h in history],
                ["NAME", "ARTIFACT", "STATUS", "PROMOTED (UTC)", "ROLLED BACK"])


@main.command("promote")
@click.argument("artifact")
@click.option("--as", "name", required=True, help="Release name; NAME@current then resolves to it.")
@FORMAT_OPTION
@REGISTRY_OPTION
def promote_command(artifact, name, fmt) -> None:
    """Mark an artifact as the released version of NAME (its model must be intact)."""
    from tflc.store import Registry
    from tflc.store.refs import artifact_file

    registry = Registry()
    artifact_id = registry.resolve_id(artifact)
    artifact_file(registry, artifact_id, None, artifact)  # refuse a damaged or model-less artifact
    change = registry.promote(artifact_id, name)
    if fmt == "json":
        emit_json(change)
    elif not change.changed:
        click.echo(f"{name}@current is already {change.current}")
    else:
        click.echo(f"{name}@current -> {change.current}"
                   + (f" (previous: {change.previous})" if change.previous else ""))


def _device_options(command):
    """--root, --python, --ssh-config and --ssh-option for the commands that reach a deployed
    device (deploy, telemetry, rollback --device)."""
    for option in reversed([
        click.option("--root", default="~/tflc-releases", show_default=True,
                     help="Folder on the device holding the releases (~/ is the device user's home)."),
        click.option("--python", help="Python on the device [default: python3 over SSH, this Python locally]."),
        click.option("--ssh-config", type=click.Path(dir_okay=False), help="ssh_config file (ssh -F)."),
        click.option("--ssh-option", "ssh_options", multiple=True,
                     help="Extra OpenSSH option KEY=VALUE (ssh -o, repeatable)."),
    ]):
        command = option(command)
    return command


@main.command("rollback")
@click.argument("name")
@click.option("--device", "-d", help="Roll back the release on this device instead of in the "
              "registry: its previous release becomes current (local, ssh://user@host[:port] or "
              "an ssh_config alias).")
@_device_options
@FORMAT_OPTION
@REGISTRY_OPTION
def rollback_command(name, device, root, python, ssh_config, ssh_options, fmt) -> None:
    """Make NAME's previous release current again (in the registry, or with --device on a device)."""
    if device is not None:
        from tflc.deploy import rollback_device

        done = rollback_device(name, device, root=root, python=python, ssh_config=ssh_config,
                               ssh_options=tuple(ssh_options))
        if fmt == "json":
            emit_json(done)
        else:
            click.echo(f"{done.device}: {name} current -> {done.current} (rolled back "
                       f"{done.replaced}); the registry's {name}@current is unchanged")
        return
    from tflc.store import Registry

    change = Registry().rollback(name)
    if fmt == "json":
        emit_json(change)
    else:
        click.echo(f"{name}@current -> {change.current} (rolled back {change.replaced})")


@main.command("deploy")
@click.argument("release")
@click.option("--device", "-d", required=True,
              help="local, ssh://user@host[:port] or an ssh_config alias (?python=PATH after it).")
@click.option("--fallback", help="The model the guard switches to under drift: a release "
              "(NAME@previous), a compile output folder or a .tflite [default: NAME@previous "
              "when there is one].")
@click.option("--no-fallback", is_flag=True, help="Deploy without a fallback model.")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, exists=True),
              help="JSON file of guard policy fields (tflc.runtime.Policy), kept in release.json.")
@click.option("--keep", default=3, show_default=True, type=int,
              help="Releases kept on the device (at least 2).")
@_device_options
@FORMAT_OPTION
@REGISTRY_OPTION
def deploy_command(release, device, fallback, no_fallback, policy_file, keep, root, python,
                   ssh_config, ssh_options, fmt) -> None:
    """Push RELEASE (NAME@current) with its profile, fallback and the guard runtime to a device.

    The release is staged in a temporary folder on the device, loaded there by the guard, and
    only then renamed into place and made current; the previous release is kept."""
    from tflc.deploy import deploy

    if fallback and no_fallback:
        raise BadInput("--fallback and --no-fallback: choose one")
    policy = None
    if policy_file:
        try:
            with open(policy_file, encoding="utf-8") as handle:
                policy = json.load(handle)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BadInput(f"{policy_file}: not a JSON policy ({exc})") from None
        if not isinstance(policy, dict):
            raise BadInput(f"{policy_file}: a JSON object of policy fields is needed")
    done = deploy(release, device, fallback=False if no_fallback else fallback, root=root,
                  python=python, policy=policy, keep=keep, ssh_config=ssh_config,
                  ssh_options=tuple(ssh_options))
    if fmt == "json":
        emit_json(done)
        return
    check = done.device_check
    click.echo(f"device      {done.device}: {check.get('runtime')} on Python {check.get('python')}"
               f", numpy {check.get('numpy')}")
    click.echo(f"release     {done.name} {done.artifact} -> {done.root}/{done.name}/current "
               f"(releases/{done.release}, {done.bytes / 1024:.1f} KiB)")
    click.echo(f"fallback    {done.fallback or 'none'}")
    click.echo(f"previous    {done.previous or 'none'}")
    click.echo("checked     the guard loaded the release and answered one sample on the device")
    where = f"{done.root}/{done.name}/current"
    click.echo(f"use         sys.path.insert(0, {where!r}); from tflc_runtime import Guard; "
               f"guard = Guard({where!r})")


@main.command("telemetry")
@click.argument("device")
@click.option("--name", help="Release name [default: every release on the device].")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Folder for telemetry.jsonl, summary.json and drift.png.")
@_device_options
@FORMAT_OPTION
def telemetry_command(device, name, out_dir, root, python, ssh_config, ssh_options, fmt) -> None:
    """Fetch and summarize the guard's telemetry from DEVICE: drift over time, fallback events."""
    from tflc.deploy import fetch_telemetry
    from tflc.deploy.device import format_time, sparkline

    summary = fetch_telemetry(device, name=name, root=root, output_dir=out_dir, python=python,
                              ssh_config=ssh_config, ssh_options=tuple(ssh_options))
    if fmt == "json":
        emit_json(summary)
        return
    click.echo(f"device      {summary.device} ({len(summary.files)} telemetry files)")
    for release, data in summary.releases.items():
        counts = data["counts"] or {}
        click.echo(f"release     {release}: {data['sessions']} session(s), {data['samples']:,} "
                   f"samples, state {data['state'] or '-'}; nonfinite {counts.get('nonfinite', 0)}"
                   f", rejected {counts.get('rejected', 0)}, SLO breaches "
                   f"{counts.get('slo_breaches', 0)}")
        if data["drift"]:
            click.echo(f"drift       |{sparkline([p[1] for p in data['drift']])}| max "
                       f"{data['drift_max']:.3g}, last {data['drift_last']:.3g} (1 switches)")
        for event in data["events"]:
            reasons = ", ".join(event.get("reasons") or []) or "-"
            click.echo(f"event       {format_time(event.get('time'))} sample {event.get('sample')}:"
                       f" {event.get('event')} ({reasons}; score {event.get('drift_score')})")
    for note in summary.notes:
        click.echo(f"note        {note}")
    if summary.output_dir:
        click.echo(f"wrote       {summary.output_dir}/telemetry.jsonl, summary.json"
                   + (", drift.png" if summary.plot else ""))


@main.command("rebuild")
@click.argument("artifact")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Keep the rebuilt files here [default: a temporary folder].")
@click.option("--input", "inputs", multiple=True, metavar="ROLE=PATH",
              help="Read a moved input from PATH (roles: model, calibration_data, eval_data, ...).")
@click.option("--anyway", is_flag=True, help="Rebuild even when an input or the target changed.")
@FORMAT_OPTION
@REGISTRY_OPTION
def rebuild_command(artifact, out_dir, inputs, anyway, fmt) -> None:
    """Rerun a recorded compile and verify a byte-identical .tflite.

    Exit codes: 0 identical; 3 different, or not rebuilt because an input changed (each
    difference is named); 2 an input is missing.
    """
    from tflc.store import Registry
    from tflc.store.rebuild import rebuild

    overrides = {}
    for item in inputs:
        role, sep, path = item.partition("=")
        if not sep or not role or not path:
            raise BadInput(f"--input {item!r}: expected ROLE=PATH, "
                           f"e.g. calibration_data=data/calib.npz")
        overrides[role] = path
    registry = Registry()
    report = rebuild(_artifact_arg(registry, artifact), registry.root, out_dir=out_dir,
                     inputs=overrides, anyway=anyway)
    if fmt == "json":
        emit_json(report)
    else:
        click.echo(f"rebuild {report.artifact_id}: {report.verdict}")
        for difference in report.differences:
            click.echo(f"  differs: {difference}")
    if report.identical:
        return
    missing = any(i["status"] == "missing" for i in report.inputs)
    raise click.exceptions.Exit(2 if missing else 3)
