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


def precompiled(view) -> dict | None:
    """What a LiteRT compiler plugin compiled into a model (a tflc.tflite.reader.ModelView):
    {"manufacturer", "soc", "dispatch": [...]} from its LiteRtStamp metadata and DISPATCH_OP
    ops, or None for a portable model."""
    if not any(op.custom_code == "DISPATCH_OP" for op in view.main.operators):
        return None
    import re

    from tflc.aot.qualcomm import dispatch_ops

    stamp = view.metadata.get("LiteRtStamp")
    words = []
    if stamp is not None:
        words = [w.decode(errors="replace") for w in re.split(rb"\x00+", bytes(view.buffer(stamp))) if w]
    return {"manufacturer": words[0] if words else "", "soc": words[1] if len(words) > 1 else "",
            "dispatch": [d.to_dict() for d in dispatch_ops(view)]}
