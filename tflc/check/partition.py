"""Which operators end up on the target once the graph is split, and why the others do not.

Knowing that a backend supports an operator is not enough: runtimes split a graph into
partitions, and the split moves supported operators off the accelerator too. Three rules cover
the backends tflc describes (chosen by a descriptor's `partitioning.mode`):

- `delegate`: TFLite's delegate mechanism. Every supported op can be delegated; the graph is cut
  into alternating target / CPU partitions the way TFLite's partitioner groups nodes (as many
  ready nodes of one kind as possible, then switch). `max_segments` keeps only the largest N
  target partitions (the GPU delegate delegates one by default); the rest fall back.
- `dataflow_cut`: the Edge TPU compiler's rule. Everything that depends, directly or
  transitively, on an op the accelerator cannot map runs on the CPU, while parallel branches
  that do not depend on it stay. Ops named in `leading_cpu_ops` (a float->int8 QUANTIZE, a
  CAST) that read only model inputs, constants or the outputs of such leading ops (a CAST then
  a QUANTIZE at the input) run on the CPU before the segment without cutting it.
- `whole_model`: the backend takes the model whole or not at all (TFLite Micro, which has no
  partitioner): one op it cannot run sends every op, in every subgraph, to the fallback.

The functions take plain data (operators, which of them the target supports) and return plain
data, so they are easy to test on hand-made graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tflc.check.spec import Partitioning
from tflc.tflite.reader import SubgraphInfo


@dataclass
class Placement:
    """The outcome of partitioning one subgraph.

    on_target: indices of ops that run on the target. segments: target partitions (lists of op
    indices, execution order) that are actually delegated. moved: op index -> why a supported op
    still runs off the target, as (reason text, index of the op that caused it or None).
    """

    on_target: set[int] = field(default_factory=set)
    segments: list[list[int]] = field(default_factory=list)
    moved: dict[int, tuple[str, int | None]] = field(default_factory=dict)


def place_model(subgraphs: list[SubgraphInfo], supported: list[dict[int, bool]],
                rule: Partitioning, target_name: str) -> list[Placement]:
    """Apply the descriptor's partitioning rule to every subgraph (`supported[k]` is subgraph k's).

    Only `whole_model` looks across subgraphs: an op missing anywhere keeps the whole model off.
    """
    if rule.mode == "whole_model":
        return _whole_model(subgraphs, supported, target_name)
    return [place(sg, ok, rule, target_name) for sg, ok in zip(subgraphs, supported)]


def _whole_model(subgraphs: list[SubgraphInfo], supported: list[dict[int, bool]],
                 target_name: str) -> list[Placement]:
    blocker = next(((sg, i) for sg, ok in zip(subgraphs, supported)
                    for i in sorted(ok) if not ok[i]), None)
    if blocker is None:
        return [Placement(on_target=set(ok), segments=[sorted(ok)] if ok else [])
                for ok in supported]
    where, index = blocker
    label = f"#{index}" if where.index == 0 else f"#{where.index}:{index}"
    placements = []
    for sg, ok in zip(subgraphs, supported):
        text = (f"supported, but {target_name} takes the model whole or not at all, and op "
                f"{label} ({where.operators[index].op}) cannot run there")
        cause = index if sg.index == where.index else None
        placements.append(Placement(moved={i: (text, cause) for i in ok if ok[i]}))
    return placements


def place(sg: SubgraphInfo, supported: dict[int, bool], rule: Partitioning,
          target_name: str) -> Placement:
    """Apply a per-subgraph partitioning rule (`delegate` or `dataflow_cut`) to one subgraph."""
    if rule.mode == "dataflow_cut":
        placement = _dataflow_cut(sg, supported, rule, target_name)
    else:
        placement = Placement(on_target={i for i, ok in supported.items() if ok})
    groups = independent_partitions(sg, placement.on_target)
    target_groups = [g for g, on in groups if on]
    if rule.mode == "delegate" and rule.min_segment_ops > 1:
        for group in [g for g in target_groups if len(g) < rule.min_segment_ops]:
            target_groups.remove(group)
            for i in group:
                placement.on_target.discard(i)
                placement.moved[i] = (
                    f"supported, but its partition has {len(group)} op(s) and {target_name} "
                    f"delegates only partitions of at least {rule.min_segment_ops}; it runs on "
                    "the CPU",
                    None,
                )
    if rule.mode == "delegate" and rule.max_segments is not None and len(target_groups) > rule.max_segments:
        kept = sorted(target_groups, key=len, reverse=True)[: rule.max_segments]
        for group in target_groups:
            if any(group is k for k in kept):
                continue
            for i in group:
                placement.on_target.discard(i)
                placement.moved[i] = (
                    f"supported, but {target_name} delegates only the largest "
                    f"{rule.max_segments} partition(s) and this op is in a smaller one "
                    f"({len(group)} ops); it runs on the CPU",
                    None,
                )
        target_groups = sorted(kept, key=lambda g: g[0])
    placement.segments = target_groups
    return placement


def _dataflow_cut(sg: SubgraphInfo, supported: dict[int, bool], rule: Partitioning,
                  target_name: str) -> Placement:
    consumers = sg.consumers()
    model_inputs = set(sg.inputs)
    tensors = sg.tensors

    # The CPU prefix: leading ops the target cannot map that read only model inputs, constants
    # or the outputs of earlier prefix ops. They run before the segment and cut nothing.
    prefix_outputs = set(model_inputs)
    prefix: set[int] = set()
    for op in sg.operators:
        if (op.op in rule.leading_cpu_ops and not supported.get(op.index, False)
                and all(t < 0 or t in prefix_outputs or tensors[t].is_constant for t in op.inputs)):
            prefix.add(op.index)
            prefix_outputs.update(t for t in op.outputs if t >= 0)

    cut_sources = [
        op.index for op in sg.operators
        if not supported.get(op.index, False) and op.index not in prefix
    ]
    # Every op downstream of a cut source runs on the CPU; remember the first source reaching it.
    cause: dict[int, int] = {}
    for source in cut_sources:
        stack = [source]
        while stack:
            i = stack.pop()
            for t in sg.operators[i].outputs:
                for j in consumers.get(t, ()):
                    if j not in cause and j not in cut_sources:
                        cause[j] = source
                        stack.append(j)
    placement = Placement()
    for op in sg.operators:
        if not supported.get(op.index, False):
            continue
        if op.index in cause:
            src = sg.operators[cause[op.index]]
            placement.moved[op.index] = (
                f"supported, but runs on the CPU: it depends on op #{src.index} ({src.op}), which "
                f"{target_name} cannot map, and everything downstream of an unmapped op leaves "
                "the accelerator",
                src.index,
            )
        else:
            placement.on_target.add(op.index)
    return placement


def independent_partitions(sg: SubgraphInfo, on_target: set[int]) -> list[tuple[list[int], bool]]:
    """Group ops into alternating target / non-target partitions, as TFLite's partitioner does.

    Take every op of the current kind whose inputs are ready (and those that become ready),
    until none is left; then switch kind. Returns (op indices in execution order, is_target)
    per partition. Linear in the graph size (a ready queue per kind, as in Kahn's sort).
    """
    producers = sg.producers()
    ops = sg.operators
    if not ops:
        return []
    waiting = {}
    dependents: dict[int, list[int]] = {}
    for op in ops:
        deps = {producers[t] for t in op.inputs if t in producers and producers[t] != op.index}
        waiting[op.index] = len(deps)
        for d in deps:
            dependents.setdefault(d, []).append(op.index)
    ready = {True: [], False: []}
    for op in ops:
        if waiting[op.index] == 0:
            ready[op.index in on_target].append(op.index)
    groups: list[tuple[list[int], bool]] = []
    kind = ops[0].index in on_target
    placed = 0
    while ready[True] or ready[False]:
        group = []
        queue = ready[kind]
        while queue:
            i = queue.pop()
            group.append(i)
            for j in dependents.get(i, ()):
                waiting[j] -= 1
                if waiting[j] == 0:
                    ready[j in on_target].append(j)
        if group:
            groups.append((sorted(group), kind))
            placed += len(group)
        kind = not kind
    if placed < len(ops):  # a cycle (corrupt graph): whatever is left, one op per partition
        done = {i for g, _ in groups for i in g}
        groups += [([op.index], op.index in on_target) for op in ops if op.index not in done]
    return groups
