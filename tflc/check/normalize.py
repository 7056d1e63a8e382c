"""Graph normalization: the graph a runtime really judges, before it is partitioned.

Runtimes rewrite a model before they decide what to take. XNNPACK and the GPU delegate treat the
output of a `DEQUANTIZE` of a constant fp16 (or int8) tensor, and of a `DENSIFY` of a constant
sparse tensor, as static weights: they unpack the data once when the model is prepared, the
consumer's "weights must be constant" rule holds, and the unpacking node is no op of its own.
A descriptor says which producers its runtime treats so (`normalize.static_weights`) and where
such a node then runs (`placement`):

- `with_consumers` (XNNPACK): the node goes with its consumers, on the target unless one of them
  is an op the target does not take (then the node runs on the CPU, which needs its output).
- `whole_graph` (the GPU delegate's fp16 partition helper): on the target only when every other
  op is; in a partial delegation the node stays on the CPU and the delegated consumers read the
  fp16 constant directly.

A producer qualifies when it has one input and one output, its input is a constant or the output
of another qualifying producer (`DENSIFY` then `DEQUANTIZE` of fp16 sparse weights), its input's
dtype is one the entry lists, and an integer input carries quantization parameters.

Custom operators a runtime implements itself are ordinary `ops` entries with `custom: true`,
keyed by their custom code, with their own constraints.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tflc.errors import BadInput
from tflc.tflite.reader import SubgraphInfo

PLACEMENTS = ("with_consumers", "whole_graph")

# The descriptor's `normalize` section as JSON Schema (spec.py validates it with the rest).
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "static_weights": {
            "type": "array",
            "description": "a list of {op, input_dtypes, placement}",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["op"],
                "properties": {
                    "op": {"type": "string"},
                    "input_dtypes": {"type": "array", "items": {"type": "string"},
                                     "description": "a list of dtype names"},
                    "placement": {"enum": list(PLACEMENTS)},
                    "note": {"type": ["string", "number"], "description": "text"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class StaticWeightRule:
    """A producer whose output the runtime treats as a constant weight."""

    op: str
    input_dtypes: tuple[str, ...] = ()  # empty: any
    placement: str = "with_consumers"
    note: str | None = None

    def to_dict(self) -> dict:
        out = {"op": self.op, "input_dtypes": list(self.input_dtypes), "placement": self.placement}
        return out | ({"note": self.note} if self.note else {})


@dataclass(frozen=True)
class Normalization:
    """What a runtime rewrites before partitioning (empty: it judges the graph as written)."""

    static_weights: tuple[StaticWeightRule, ...] = ()

    def to_dict(self) -> dict:
        return {"static_weights": [r.to_dict() for r in self.static_weights]}


def parse(data: dict | None, path, builtin_ops, dtypes) -> Normalization:
    """The validated `normalize` section (shapes already checked by the schema) as data."""
    rules = []
    for i, entry in enumerate((data or {}).get("static_weights") or ()):
        if entry["op"] not in builtin_ops:
            raise BadInput(f"{path}: field 'normalize.static_weights[{i}].op' names "
                           f"{entry['op']!r}, which is not a TFLite builtin operator (e.g. DEQUANTIZE)")
        for d in entry.get("input_dtypes") or ():
            if d not in dtypes:
                raise BadInput(f"{path}: field 'normalize.static_weights[{i}].input_dtypes' names "
                               f"unknown dtype {d!r} (allowed: {', '.join(dtypes)})")
        rules.append(StaticWeightRule(op=entry["op"],
                                      input_dtypes=tuple(entry.get("input_dtypes") or ()),
                                      placement=entry.get("placement", "with_consumers"),
                                      note=None if entry.get("note") is None else str(entry["note"])))
    return Normalization(tuple(rules))


@dataclass
class NormalizedGraph:
    """One subgraph as the runtime sees it.

    subgraph: the same operators, with the outputs of static-weight producers marked constant.
    producers: op index -> the rule that makes it a static-weight producer.
    static_tensors: tensor indices that are constant only after normalization (no data here).
    """

    subgraph: SubgraphInfo
    producers: dict[int, StaticWeightRule] = field(default_factory=dict)
    static_tensors: frozenset[int] = frozenset()


def normalize(rules: Normalization, sg: SubgraphInfo) -> NormalizedGraph:
    """Find the static-weight producers of `sg` (in execution order, so chains resolve)."""
    if not rules.static_weights:
        return NormalizedGraph(sg)
    by_op: dict[str, StaticWeightRule] = {}
    for rule in rules.static_weights:
        by_op.setdefault(rule.op, rule)
    producers: dict[int, StaticWeightRule] = {}
    static: set[int] = set()
    for op in sg.operators:
        rule = by_op.get(op.op)
        if rule is None or len(op.inputs) != 1 or len(op.outputs) != 1:
            continue
        src, out = op.inputs[0], op.outputs[0]
        if src < 0 or out < 0:
            continue
        t = sg.tensors[src]
        if not (t.is_constant or src in static):
            continue
        if rule.input_dtypes and t.dtype not in rule.input_dtypes:
            continue
        if t.dtype in ("int8", "uint8", "int16") and t.quantization is None:
            continue  # nothing to dequantize with
        producers[op.index] = rule
        static.add(out)
    if not producers:
        return NormalizedGraph(sg)
    tensors = [replace(t, is_constant=True) if t.index in static else t for t in sg.tensors]
    return NormalizedGraph(replace(sg, tensors=tensors), producers, frozenset(static))


def producer_support(graph: NormalizedGraph, supported: dict[int, bool]) -> dict[int, tuple[bool, int | None]]:
    """Whether each static-weight producer is taken, given the verdicts of the other ops.

    Returns op index -> (taken, the consumer that keeps it on the CPU or None).
    """
    sg = graph.subgraph
    consumers = sg.consumers()
    others_all = all(ok for i, ok in supported.items() if i not in graph.producers)
    out = {}
    for index, rule in graph.producers.items():
        readers = [j for t in sg.operators[index].outputs for j in consumers.get(t, ())]
        if rule.placement == "whole_graph":
            out[index] = (others_all, None)
            continue
        # A reader that is itself a producer never refuses it (DENSIFY feeding DEQUANTIZE).
        refusing = [j for j in readers if j not in graph.producers and not supported.get(j, False)]
        out[index] = (not refusing, refusing[0] if refusing else None)
    return out
