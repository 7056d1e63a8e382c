"""Importing TensorFlow the way tflc needs it, and only when a command needs it.

TF-MOT works only with tf_keras, and `tf.keras` is tf_keras only when TF_USE_LEGACY_KERAS=1 is
set before TensorFlow is first imported; every TensorFlow import in tflc goes through
`import_tensorflow()` so that this always holds. It also silences TensorFlow's C++ and absl log
noise unless the user asked for it (`--debug` or TF_CPP_MIN_LOG_LEVEL set by hand).

TensorFlow, tf_keras, Keras 3 and TF-MOT come with the `compile` extra, not with the core install
(check, export, bench). When one of them is missing, the import helpers here raise `BadInput`
with the one line that says so and how to install it:
`tflc compile needs TensorFlow, which is not installed: pip install 'tflc[compile]'`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

from tflc.errors import BadInput, PipelineError

INSTALL_COMPILE = "pip install 'tflc[compile]'"

_VERBOSE = False
_CONFIGURED = False


def set_verbose(verbose: bool) -> None:
    """`--debug` turns TensorFlow's own logging back on."""
    global _VERBOSE
    _VERBOSE = verbose


def _prepare_environment() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if os.environ["TF_USE_LEGACY_KERAS"] not in ("1", "true", "True"):
        raise PipelineError(
            "TF_USE_LEGACY_KERAS is set to something other than 1; tflc needs tf_keras "
            "(unset it or set TF_USE_LEGACY_KERAS=1)"
        )
    if not _VERBOSE:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _running_command() -> str:
    """`tflc compile` (the command line being run, as typed), or a generic subject from Python."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return "this part of tflc"
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["tflc", *reversed(names)])


def _compile_extra_missing(what: str, module: str, exc: ImportError) -> BadInput:
    """The one-line error for a package of the compile extra that cannot be imported."""
    command = _running_command()
    if isinstance(exc, ModuleNotFoundError) and exc.name == module:
        return BadInput(f"{command} needs {what}, which is not installed: {INSTALL_COMPILE}")
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return BadInput(f"{command} needs {what}, which is installed but fails to import ({reason}); "
                    f"reinstall it: {INSTALL_COMPILE}")


def import_tensorflow():
    """Return the `tensorflow` module, configured for tflc (legacy Keras, quiet logs).

    Also when something else (a user's custom-layer module) imported TensorFlow first. Without
    TensorFlow installed: `BadInput` naming the command and the `compile` extra.
    """
    global _CONFIGURED
    if "tensorflow" not in sys.modules:
        _prepare_environment()
        try:
            with quiet_native_output():
                import tensorflow  # noqa: F401
        except ImportError as exc:
            raise _compile_extra_missing("TensorFlow", "tensorflow", exc) from None
    tf = sys.modules["tensorflow"]
    if _CONFIGURED:
        return tf
    _CONFIGURED = True
    if not _VERBOSE:
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"tensorflow.*")
        warnings.filterwarnings("ignore", module=r"tf_keras.*")
        warnings.filterwarnings("ignore", module=r"keras.*")
    return tf


def import_tf_keras():
    """Return the `tf_keras` module (Keras 2), with a clear message when it is missing."""
    import_tensorflow()
    try:
        import tf_keras
    except ImportError as exc:
        raise _compile_extra_missing("tf_keras", "tf_keras", exc) from None
    return tf_keras


def import_keras3():
    """Return Keras 3 (the `keras` package), which reads Keras 3 `.keras` files."""
    import_tensorflow()
    try:
        import keras
    except ImportError as exc:
        raise _compile_extra_missing("Keras 3", "keras", exc) from None
    return keras


def import_tfmot():
    """Return TF-MOT (`tensorflow_model_optimization`), imported after tf.keras means tf_keras."""
    import_tf_keras()
    try:
        with quiet_native_output():
            import tensorflow_model_optimization as tfmot
    except ImportError as exc:
        raise _compile_extra_missing(
            "TF-MOT (tensorflow-model-optimization)", "tensorflow_model_optimization", exc
        ) from None
    return tfmot


@contextlib.contextmanager
def quiet_native_output():
    """Hide what C++ code prints straight to the process's stdout/stderr file descriptors.

    The converter and calibrator print lines such as `fully_quantize: 0, inference_type: 6`
    with printf; Python-level redirection cannot catch them, so this swaps file descriptors 1
    and 2 for a temporary file, which is discarded: also when the block fails, since the error
    raised is what the user reads. To see that output, run with `--debug` (nothing is captured
    then), or set TFLC_SHOW_NATIVE_LOG=1 to have it replayed on stderr when the block fails.
    """
    if _VERBOSE:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if failed and os.environ.get("TFLC_SHOW_NATIVE_LOG"):
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace"))
