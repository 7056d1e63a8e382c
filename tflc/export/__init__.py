"""C source for microcontrollers: `tflc export MODEL.tflite --package c -o OUT`.

    from tflc.export import export_c
    report = export_c("model.tflite", "out/", target="cortex-m4", name="kws")
    if not report.passed:          # over the target's RAM or flash: the package is written
        raise report.gate_failure()  # GateFailed, exit 3 (or record it instead)

Stages: `op_resolver` (exactly the model's ops), `arena` (measured in TFLite Micro, estimated by
`tflc.tflite.planner`, plus a margin), `budget` (RAM and flash against the target descriptor),
`c_source` (the model array, and `user_text` for every user-chosen name in generated text),
`crosscheck` (byte-identical array, TFLite Micro vs LiteRT outputs), `staging` (the folder
written as one unit) and `package`, which runs them in that order. TFLite Micro runs only in a
child process (`_arena_probe.py`). No TensorFlow is imported here or below.
"""

from tflc.export.package import ExportReport, export_c

__all__ = ["ExportReport", "export_c"]
