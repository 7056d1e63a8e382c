"""tflc: a TensorFlow Lite edge compiler.

The pipeline reads as its modules: load (`load/`) -> optimize (`optimize/`) ->
convert (`convert/`) -> check (`check/`) -> export (`export/`) / bench (`bench/`).

Importing `tflc` is cheap: TensorFlow is imported only inside the functions that need it, so
`tflc check`, `tflc --help` and the device runner work without it.
"""

from tflc.version import __version__

__all__ = ["__version__", "compile"]


def __getattr__(name):
    # `tflc.compile(...)` without importing the compiler (and TensorFlow's helpers) at import time.
    if name == "compile":
        from tflc.api import compile as compile_and_record

        return compile_and_record
    raise AttributeError(f"module 'tflc' has no attribute {name!r}")
