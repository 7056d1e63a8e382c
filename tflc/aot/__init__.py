"""Ahead-of-time compilation for NPUs through vendors' real compilers (LiteRT compiler plugins).

`qualcomm`: Qualcomm's HTP through LiteRT's Qualcomm compiler plugin and QAIRT's x86-64 host
libraries (from the onnxruntime-qnn wheel). No TensorFlow.
"""

from __future__ import annotations


def _module(compiler: str):
    if compiler == "qualcomm":
        from tflc.aot import qualcomm

        return qualcomm
    from tflc.errors import BadInput

    raise BadInput(f"unknown ahead-of-time compiler {compiler!r} (known: qualcomm)")


def toolchain_for(compiler: str):
    """The compiler's toolchain, or BadInput naming what to install."""
    return _module(compiler).toolchain()


def compile_for(compiler: str, data: bytes, soc: str):
    """Compile .tflite bytes for one SoC; an AotResult (`.ok`, `.data`, `.error`, `.summary()`)."""
    return _module(compiler).compile_soc(data, soc)
