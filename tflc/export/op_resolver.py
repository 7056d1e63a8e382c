"""The TFLite Micro op resolver a model needs: exactly its ops, nothing more.

TFLite Micro links only the kernels an application registers in a
`tflite::MicroMutableOpResolver<N>`; registering too few makes AllocateTensors fail on the device,
registering too many wastes flash. `resolver_ops` lists the model's operators in the order
they first appear, each with the `MicroMutableOpResolver` method that registers it (builtin
operators and TFLite Micro's signal-library custom operators), and refuses a model that uses
an operator TFLite Micro has no kernel for. `render_op_resolver_header` writes
the C++ header.
"""

from __future__ import annotations

from dataclasses import dataclass

from tflc.errors import BadInput
from tflc.export.c_source import user_text
from tflc.tflite.reader import ModelView

# Builtin operator -> MicroMutableOpResolver method (tensorflow/lite/micro/
# micro_mutable_op_resolver.h at tflite-micro commit 90b983c2, the version of targets/cortex-m4.yaml).
RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast",
    "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEPTH_TO_SPACE": "AddDepthToSpace", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2",
    "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll", "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear", "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound", "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth", "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt", "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum",
    "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}


# TFLite Micro's own signal library (tflite-micro signal/micro/kernels, the audio front ends such
# as micro_speech's preprocessor): custom code -> the MicroMutableOpResolver method that calls
# AddCustom(code, tflite::tflm_signal::Register_...()) (micro_mutable_op_resolver.h, same commit).
# The application links the signal library's kernel sources with TFLite Micro's.
SIGNAL_METHODS: dict[str, str] = {
    "SignalDelay": "AddDelay", "SignalEnergy": "AddEnergy",
    "SignalFftAutoScale": "AddFftAutoScale", "SignalFilterBank": "AddFilterBank",
    "SignalFilterBankLog": "AddFilterBankLog",
    "SignalFilterBankSpectralSubtraction": "AddFilterBankSpectralSubtraction",
    "SignalFilterBankSquareRoot": "AddFilterBankSquareRoot", "SignalFramer": "AddFramer",
    "SignalIrfft": "AddIrfft", "SignalOverlapAdd": "AddOverlapAdd", "SignalPCAN": "AddPCAN",
    "SignalRfft": "AddRfft", "SignalStacker": "AddStacker", "SignalWindow": "AddWindow",
}


@dataclass(frozen=True)
class ResolverOp:
    op: str        # builtin operator name, e.g. CONV_2D
    method: str    # MicroMutableOpResolver method, e.g. AddConv2D
    count: int     # how many operators of the model use it


def resolver_ops(view: ModelView, model_name: str = "the model") -> list[ResolverOp]:
    """The model's ops in first-use order, with their resolver methods.

    TFLite Micro's signal-library custom ops (`SIGNAL_METHODS`) count as TFLite Micro's own.
    Raises BadInput naming every operator TFLite Micro lacks (and other custom operators, whose
    kernels only the application can provide).
    """
    histogram = view.op_histogram()
    order: list[str] = []
    for op in view.operators:
        if op.op not in order:
            order.append(op.op)
    methods = {**RESOLVER_METHODS, **SIGNAL_METHODS}
    custom = sorted({op.custom_code or op.op for op in view.operators
                     if op.is_custom and (op.custom_code or op.op) not in SIGNAL_METHODS})
    missing = [name for name in order if name not in methods and not _is_custom(view, name)]
    if missing:
        raise BadInput(
            f"{model_name}: TFLite Micro has no kernel for {', '.join(missing)}; "
            "rewrite those layers with supported ops (see `tflc targets show cortex-m4`) "
            "or run the model on a target with a fallback CPU"
        )
    if custom:
        raise BadInput(
            f"{model_name}: custom operator(s) {', '.join(custom)} need kernels only your "
            "application can provide; register them with AddCustom() yourself, or convert "
            "without custom ops"
        )
    return [ResolverOp(name, methods[name], histogram[name]) for name in order]


def _is_custom(view: ModelView, name: str) -> bool:
    return any(op.is_custom and op.op == name for op in view.operators)


def render_op_resolver_header(ops: list[ResolverOp], name: str) -> str:
    """C++ header: `NAME_OpResolver` (a MicroMutableOpResolver sized to the op count) and
    `NAME_RegisterOps()` that adds exactly these ops."""
    guard = f"{name.upper()}_OP_RESOLVER_H_"
    lines = [
        "// Generated by tflc: the TFLite Micro op resolver for this model, exactly its ops.",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
        "",
        f"// {len(ops)} op(s): " + user_text(", ".join(f"{o.op} x{o.count}" for o in ops)),
        *(["// Signal* ops are TFLite Micro's signal library (tflite-micro signal/micro/kernels):",
           "// build its kernel sources with TFLite Micro's."]
          if any(o.op in SIGNAL_METHODS for o in ops) else []),
        f"constexpr unsigned int k{_camel(name)}OpCount = {len(ops)};",
        f"using {name}_OpResolver = tflite::MicroMutableOpResolver<k{_camel(name)}OpCount>;",
        "",
        "// Registers every op the model uses; returns the first failure, else kTfLiteOk.",
        f"inline TfLiteStatus {name}_RegisterOps({name}_OpResolver& resolver) {{",
    ]
    for o in ops:
        lines.append(f"  if (resolver.{o.method}() != kTfLiteOk) return kTfLiteError;")
    lines += ["  return kTfLiteOk;", "}", "", f"#endif  // {guard}", ""]
    return "\n".join(lines)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Model"
