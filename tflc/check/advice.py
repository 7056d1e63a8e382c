"""Rewrites that get an operator onto the target, suggested where a known one helps.

Advice is keyed by the rule an operator failed (a constraint name or a reason code) and, for
operators a target lacks, by the operator: both say what to change in the Keras model or in the
conversion, never what a particular target is (that lives in its descriptor). One piece of
advice is given once, listing every op it applies to.
"""

from __future__ import annotations

from dataclasses import dataclass

from tflc.check.spec import TargetSpec
from tflc.tflite.reader import ModelView


@dataclass
class Advice:
    """One rewrite and the ops (indices in the main subgraph) it helps."""

    ops: list[int]
    text: str

    def to_dict(self) -> dict:
        return {"ops": self.ops, "text": self.text}


# Failed constraint (or reason code) -> what to change.
BY_RULE = {
    "fused_activation_in": "Move the activation into its own layer (Activation(...)) or use ReLU / "
                           "ReLU6, which every backend can fuse into the preceding op.",
    "no_fused_activation": "Apply the activation as a separate layer after pooling/concatenation "
                           "instead of fusing it, or drop it if the next layer already has one.",
    "stride_range": "Reduce the stride (use stride 1 or 2 and add a pooling layer for the rest).",
    "dilation_max": "Replace the dilated convolution by a plain one (dilation_rate=1) or a stack "
                    "of small convolutions with the same receptive field.",
    "equal_dilation": "Use the same dilation_rate in both directions.",
    "per_tensor_weights": "Convert with per-tensor weights: `tflc compile --weights per-tensor`.",
    "static_shapes": "Give the model a fixed input shape with batch 1: "
                     "`tflc compile --static-batch` (and --input-shape for free dimensions).",
    "max_rank": "Reshape to at most 4 dimensions before this op (fold extra axes into the batch "
                "or channel axis).",
    "innermost_dims_only": "Keep batch 1 and put everything in the 3 innermost dimensions "
                           "(H, W, C); reshape 5-D or batched tensors away.",
    "softmax_beta": "Scale the logits before the softmax instead of using beta != 1.",
    "constant_weights": "Weights computed at run time cannot be mapped; make them Keras layer "
                        "weights (constants after conversion).",
    "constant_bias": "Keep the bias constant (use_bias=True in the layer, not a separate Add of a "
                     "computed tensor).",
    # "code:OP" entries apply to one operator only.
    "version:RESIZE_BILINEAR": "RESIZE_BILINEAR becomes version 3 when any bilinear resize in the "
                               "model uses half_pixel_centers=True (TF2's tf.image.resize and "
                               "UpSampling2D(interpolation='bilinear') do). Use "
                               "UpSampling2D(interpolation='nearest'), or "
                               "tf.compat.v1.image.resize_bilinear with half_pixel_centers=False "
                               "for every resize in the model.",
    "version": "The converter wrote a newer operator version than this runtime knows; the layer "
               "options that raise the version (see the runtime's op versioning) must change, "
               "or the runtime must be updated.",
}

# Operator a target lacks -> the usual rewrite in Keras.
BY_OP = {
    "LEAKY_RELU": "Replace LeakyReLU by ReLU (or PReLU where the target supports it).",
    "HARD_SWISH": "Replace hard-swish by ReLU6 (MobileNetV3 'minimalistic' variants do this).",
    "GELU": "Replace GELU by ReLU or a supported approximation.",
    "ELU": "Replace ELU by ReLU.",
    "LOG_SOFTMAX": "Drop the final (log-)softmax from the deployed model and apply it on the "
                   "host (argmax is unchanged).",
    "SOFTMAX": "If only the top class matters, drop the final softmax (argmax is unchanged).",
    "TRANSPOSE": "Avoid Permute/transpose layers: reorder the data before it enters the model or "
                 "restructure so channels stay last.",
    "SQUARED_DIFFERENCE": "Avoid squared-difference (e.g. from LayerNormalization); use "
                          "BatchNormalization, which folds into the convolution.",
    "RSQRT": "Avoid normalisation layers that compute 1/sqrt at run time (LayerNormalization); "
             "use BatchNormalization, which folds into the convolution.",
    "MEAN": "Use AveragePooling2D over the full spatial size instead of GlobalAveragePooling2D / "
            "reduce_mean.",
    "RESIZE_BILINEAR": "Use nearest-neighbour upsampling (UpSampling2D, the default) or a "
                       "Conv2DTranspose with stride 2.",
    "DIV": "Multiply by a constant reciprocal instead of dividing.",
}

FLOAT_OP = ("{ops}: computed in float in an otherwise integer model (the converter had no integer "
            "kernel for them and wrapped them in DEQUANTIZE/QUANTIZE). Replace the Keras layers "
            "that produce them with integer-friendly ones, or convert without --allow-float-ops "
            "to be told which layer it is.")


def advise(result, view: ModelView, spec: TargetSpec) -> list:
    """Advice for a CheckResult: one entry per distinct rewrite, naming the ops it helps."""
    wanted: dict[str, list[int]] = {}
    float_ops: list[int] = []
    integer_model = any(
        t.dtype in ("int8", "uint8", "int16") and not t.is_constant
        for sg in view.subgraphs for t in sg.tensors
    )
    for verdict in result.ops:
        if verdict.placement == "target" or verdict.subgraph != 0:
            continue
        codes = [r.code for r in verdict.reasons]
        if "unsupported_op" in codes and verdict.op in BY_OP:
            wanted.setdefault(BY_OP[verdict.op], []).append(verdict.index)
        for code in codes:
            text = BY_RULE.get(f"{code}:{verdict.op}") or BY_RULE.get(code)
            if text:
                wanted.setdefault(text, []).append(verdict.index)
        if integer_model and "dtype" in codes and _computes_in_float(view, verdict.index):
            float_ops.append(verdict.index)
    advice = []
    if float_ops:
        names = ", ".join(f"#{i} {view.main.operators[i].op}" for i in float_ops)
        advice.append(Advice(float_ops, FLOAT_OP.format(ops=names)))
    for text, ops in wanted.items():
        advice.append(Advice(sorted(set(ops)), text))
    return advice


def _computes_in_float(view: ModelView, index: int) -> bool:
    op = view.main.operators[index]
    if op.op in ("QUANTIZE", "DEQUANTIZE"):
        return False
    tensors = view.main.tensors
    return any(t >= 0 and tensors[t].is_float and not tensors[t].is_constant for t in op.outputs)
