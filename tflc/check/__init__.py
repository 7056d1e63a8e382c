"""Per-operator verdicts for a deployment target: `tflc check`.

    from tflc.check import load_target, list_targets, check_model
    result = check_model("model.tflite", "edgetpu")   # CheckResult; result.to_dict() is the JSON

Stages: `spec` loads and validates target descriptors (targets/*.yaml), `constraints` holds the
named conditions descriptors refer to, `partition` decides which ops run on the target once the
graph is split, `check` puts it together with memory budgets, and `advice` suggests rewrites.
No TensorFlow is imported here or below.
"""

from tflc.check.spec import (
    DeviceFacts,
    MemoryBudget,
    RuntimeInfo,
    TargetSpec,
    list_targets,
    load_target,
)

__all__ = ["DeviceFacts", "MemoryBudget", "RuntimeInfo", "TargetSpec", "check_model",
           "list_targets", "load_target"]


def check_model(model, target):
    """Check a .tflite model (path, bytes or ModelView) against a target (name, path or
    TargetSpec); returns a `tflc.check.verdicts.CheckResult`. Imported lazily: listing targets
    does not load the model reader."""
    from tflc.check.verdicts import check_model as _check_model

    return _check_model(model, target)
