"""Qualcomm's real HTP compiler as an oracle: which ops of a model go to the NPU of one SoC.

The plugin partitions the whole model (tflc.aot.qualcomm.partition_soc: LiteRT's Qualcomm
plugin over QAIRT's host libraries, `apply_plugin_main --cmd=partition`, the selection that
`--cmd=apply` then compiles); its DISPATCH_OP ops hold what the NPU runs, the ops left in the
main graph run on the CPU. Partitioning asks QNN to validate each op for the SoC, so it is the
compiler's own per-op answer, in seconds where preparing the QNN graph of a large float model
takes minutes (the AOT tests run the full compile). A model LiteRT cannot load at all (a
fused LSTM with variable tensors) is judged op by op: each op alone
(tflc.profile.cut.single_op_model), by whether its one-op model becomes a dispatch op (noted in
the answer).

Answers are cached like the other oracles' (by the model's bytes, the SoC, the plugin's and
QAIRT's versions and ORACLE_VERSION), under CACHE/oracles/qnn-<soc>/.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tflc.aot import qualcomm
from tflc.errors import TflcError

from .corpus import CACHE

# oracle name -> (SoC, target descriptor compared with it)
ORACLE_VERSION = 2  # raise it when judge() or tflc.aot.qualcomm.placement changes its answers
SOCS = {"qnn-sm8650": ("SM8650", "qualcomm-htp"), "qnn-sm7325": ("SM7325", "qualcomm-htp-sm7325"),
        "qnn-sm8450": ("SM8450", "qualcomm-htp-sm8450"), "qnn-sm8550": ("SM8550", "qualcomm-htp-sm8550"),
        "qnn-sm8750": ("SM8750", "qualcomm-htp-sm8750")}


def available() -> str:
    """'' when the compiler runs here, else why not (a skip reason)."""
    try:
        qualcomm.toolchain()
    except Exception as exc:  # BadInput: not installed, not x86-64 Linux, no gcc
        return str(exc)
    return ""


def _versions(tool) -> str:
    return ":".join([*(f"{k}={v}" for k, v in sorted(tool.versions.items())),
                     f"oracle {ORACLE_VERSION}"])


def answers(oracle: str, models: dict[str, Path], cache: Path = CACHE, log=None) -> dict[str, dict]:
    """{model: {"truth": {index: bool|None} or None, "note": text, "whole": bool}}, cached."""
    soc = SOCS[oracle][0]
    tool = qualcomm.toolchain()
    versions = _versions(tool)
    found = {}
    for name, path in sorted(models.items()):
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data + soc.encode() + versions.encode()).hexdigest()[:24]
        cached = cache / "oracles" / oracle / f"{digest}.json"
        if cached.exists():
            found[name] = json.loads(cached.read_text())
            continue
        try:
            answer = judge(data, soc, tool)
        except TflcError as exc:  # a file tflc's reader refuses: nothing to compare
            answer = {"truth": None, "note": str(exc)[:300], "whole": False}
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(answer))
        found[name] = answer
        if log:
            log(f"{oracle} {name}: {answer['note'] or 'compiled whole'}")
    return found


def judge(data: bytes, soc: str, tool) -> dict:
    result = qualcomm.partition_soc(data, soc, tool=tool)
    if result.ok:
        truth = {str(k): v for k, v in result.placement.items()}
        on = sum(1 for v in result.placement.values() if v)
        note = ""
        if result.selected is not None and result.selected != on:
            note = f"the plugin says it selected {result.selected} ops; {on} matched by name"
        return {"truth": truth, "note": note, "whole": True, "partitions": result.partitions}
    return _op_by_op(data, soc, tool, result.error)


def _op_by_op(data: bytes, soc: str, tool, error: str) -> dict:
    from tflc.profile import cut
    from tflc.tflite.reader import read_model

    model = cut.unpack(data)
    truth: dict[str, bool | None] = {}
    for op in read_model(data).main.operators:
        piece = cut.single_op_model(model, 0, op.index)
        if piece is None:
            truth[str(op.index)] = None
            continue
        one = qualcomm.partition_soc(piece, soc, tool=tool)
        truth[str(op.index)] = bool(one.ok and one.dispatch)
    return {"truth": truth, "whole": False,
            "note": f"the plugin stopped on the whole model ({error[:200]}); judged op by op"}
