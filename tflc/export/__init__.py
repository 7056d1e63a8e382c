"""C source for microcontrollers: `tflc export MODEL.tflite --format c -o OUT`.

    from tflc.export import export_c
    report = export_c("model.tflite", "out/", target="cortex-m4", name="kws")

Stages: `op_resolver` (exactly the model's ops), `arena` (measured in TFLite Micro, estimated by
`tflc.tflite.planner`, plus a margin), `budget` (RAM and flash against the target descriptor),
`c_source` (the model array), `verify` (byte-identical array, TFLite Micro vs LiteRT outputs),
and `export`, which runs them in that order. No TensorFlow is imported here or below.
"""

from tflc.export.package import ExportReport, export_c

__all__ = ["ExportReport", "export_c"]
