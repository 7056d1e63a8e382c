"""A static estimate of TensorFlow Lite Micro's tensor arena, without running TFLite Micro.

TFLite Micro carves one caller-provided byte array (the "tensor arena") into two ends:

- the *head* holds every tensor that is neither a weight nor a variable, at offsets planned
  ahead of time by its GreedyMemoryPlanner from the tensors' lifetimes;
- the *tail* holds persistent bookkeeping, allocated downwards from the end: the allocator
  objects themselves, one TfLiteEvalTensor per tensor, one node/registration struct per
  operator, each operator's parsed options and the kernel's own data (per-channel multipliers
  and shifts for convolutions), and TfLiteTensor structs for the model's inputs and outputs.

While the arena is set up, short-lived "temp" allocations (TfLiteTensor structs a kernel looks at
in Prepare, the planner's own working arrays) also sit between head and tail, so the smallest
arena that works is the largest of several moments, not just head plus tail. `plan_memory`
replays that whole sequence: the same lifetimes (allocation scopes), the same greedy placement
(largest first, first gap that fits, ties broken the way TFLite Micro's bubble sort breaks them),
16-byte aligned sizes, tail allocations aligned downwards, and the same temp phases; then it
finds the smallest arena size for which every step succeeds, exactly as a bisection on
`arena_size` in the interpreter does.

Struct and kernel sizes are those of the x86-64 host build that the tflite-micro Python package
ships (64-bit pointers; built with compression support), so the figure is comparable with a
measurement in that interpreter (`tflc.export.arena`). On a 32-bit MCU the bookkeeping is
smaller; the export stage adds a stated margin instead of guessing per target. Operators missing
from `KERNEL_COSTS` get a generous default and are listed in `MemoryPlan.approximate_ops`.

`plan_or_note` is the entry callers use: it returns the plan, or no plan and one sentence saying
why (a graph TFLite Micro's allocator could not set up either), so that no caller has to guess
which exceptions the replay can raise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tflc.tflite.reader import ModelView, SubgraphInfo

ALIGNMENT = 16  # MicroArenaBufferAlignment()


@dataclass(frozen=True)
class KernelCost:
    """What one operator costs in the persistent tail, beyond its node/registration struct.

    `params`: bytes of the parsed builtin options struct (TfLite*Params), allocated with
    `params_align`; `op_data`: bytes the kernel's Init asks for (16-byte aligned);
    `per_channel`: how many int32-per-output-channel arrays Prepare allocates (multiplier and
    shift), and `per_channel_when`: 'always' or 'per_channel' (only when the weights are
    quantized per channel); `weights_input`: which input holds the weights, `channel_axis` the
    axis whose length is the channel count. `scratch`: the scratch buffers Prepare requests, each
    (what, bytes per unit, only for integer inputs) with `what` one of 'output_elements',
    'input_rank', 'input1_elements'. `temps`: the TfLiteTensors Prepare holds at its busiest
    moment, as 'i<n>' / 'o<n>' (default: every input and output once).
    """

    params: int = 0
    params_align: int = 4
    op_data: int = 0
    per_channel: int = 0
    per_channel_when: str = "always"
    weights_input: int = 1
    channel_axis: int = 0
    scratch: tuple[tuple[str, int, bool], ...] = ()
    temps: tuple[str, ...] | None = None


# MEAN / SUM: an int32 accumulator per output element (integer kernels), an index per input
# dimension, one per reduced axis.
_REDUCE_SCRATCH = (("output_elements", 4, True), ("input_rank", 4, False),
                   ("input1_elements", 4, False))

# Sizes on the x86-64 host build. Params from TFLite's builtin_op_data.h; op data from each
# reference kernel's OpData struct (checked against the RecordingMicroAllocator's report).
KERNEL_COSTS: dict[str, KernelCost] = {
    "CONV_2D": KernelCost(params=28, op_data=80, per_channel=2, channel_axis=0),
    "DEPTHWISE_CONV_2D": KernelCost(params=28, op_data=80, per_channel=2, channel_axis=3),
    "FULLY_CONNECTED": KernelCost(params=32, op_data=72, per_channel=2,
                                  per_channel_when="per_channel", channel_axis=0),
    "AVERAGE_POOL_2D": KernelCost(params=40, op_data=32),
    "MAX_POOL_2D": KernelCost(params=40, op_data=32),
    "RESHAPE": KernelCost(params=36),
    "SOFTMAX": KernelCost(params=8, params_align=8, op_data=80),
    "ADD": KernelCost(params=8, op_data=60),
    # Fitted with benchmarks/planner_kernel_costs.py (see benchmarks/results/).
    "MUL": KernelCost(params=4, op_data=36),
    "SUB": KernelCost(params=8, op_data=52),
    "CONCATENATION": KernelCost(params=8, op_data=80),
    "PAD": KernelCost(params=1, params_align=1, op_data=56),
    "LOGISTIC": KernelCost(op_data=16),
    "TANH": KernelCost(op_data=16),
    "LEAKY_RELU": KernelCost(params=4, op_data=24),
    "RELU": KernelCost(op_data=28),
    "RELU6": KernelCost(op_data=8),
    "HARD_SWISH": KernelCost(op_data=20),
    "RESIZE_NEAREST_NEIGHBOR": KernelCost(params=4),
    "RESIZE_BILINEAR": KernelCost(params=4),
    "TRANSPOSE": KernelCost(),
    "STRIDED_SLICE": KernelCost(params=24, op_data=84),
    "MAXIMUM": KernelCost(),
    "MINIMUM": KernelCost(),
    "MEAN": KernelCost(params=1, params_align=1, op_data=44, scratch=_REDUCE_SCRATCH,
                       temps=("i0", "o0", "i1", "i0", "i1", "o0")),
    "SUM": KernelCost(params=1, params_align=1, op_data=44, scratch=_REDUCE_SCRATCH,
                      temps=("i0", "o0", "i1", "i0", "i1", "o0")),
    "TRANSPOSE_CONV": KernelCost(params=20, op_data=88, per_channel=2, channel_axis=0,
                                 scratch=(("output_elements", 4, True),)),
    "QUANTIZE": KernelCost(op_data=32),
    "DEQUANTIZE": KernelCost(op_data=32),
}
DEFAULT_COST = KernelCost(params=40, op_data=96)

@dataclass(frozen=True)
class StructSizes:
    """Sizes of TFLite Micro's own bookkeeping structs for one ABI.

    The host figures (x86-64, LP64) were measured against the RecordingMicroAllocator of the
    tflite-micro Python interpreter, so the estimate equals its measurement. A Cortex-M build is
    ILP32: every pointer and size_t is 4 bytes, so the same structs are smaller there; their
    sizes follow from the same declarations with 4-byte pointers (noted per field). Kernel
    OpData and builtin options keep their host sizes: most hold only ints, and a pointer-holding
    one costs at most a few bytes more on the host, so the 32-bit figure stays on the safe side.
    """

    name: str
    startup: int                   # SingleArenaBufferAllocator + GreedyMemoryPlanner + MicroAllocator
    builtin_data_allocator: int    # vtable pointer + allocator pointer
    subgraph_allocations: int      # two pointers per subgraph (+ alignment)
    eval_tensor: int               # TfLiteEvalTensor: data, dims pointers + type
    node_and_registration: int     # TfLiteNode (6 pointers + int) + registration pointer
    tflite_tensor: int             # TfLiteTensor (static-memory build)
    affine_quantization: int       # scale, zero_point pointers + quantized_dimension
    scratch_buffer_handle: int     # one pointer
    scratch_request: int           # size_t bytes + int node index
    allocation_info: int           # size_t, pointer, three ints, a bool
    pointer: int


HOST_64 = StructSizes(name="x86-64 host (tflite-micro Python interpreter)", startup=448,
                      builtin_data_allocator=16, subgraph_allocations=24, eval_tensor=24,
                      node_and_registration=64, tflite_tensor=64, affine_quantization=24,
                      scratch_buffer_handle=8, scratch_request=16, allocation_info=32, pointer=8)
# The allocator objects are mostly pointers and size_t: about half their host size; rounded up.
CORTEX_M_32 = StructSizes(name="32-bit Cortex-M (ILP32)", startup=240, builtin_data_allocator=8,
                          subgraph_allocations=8, eval_tensor=12, node_and_registration=32,
                          tflite_tensor=40, affine_quantization=12, scratch_buffer_handle=4,
                          scratch_request=8, allocation_info=24, pointer=4)
ABIS = {"host": HOST_64, "cortex-m": CORTEX_M_32}

# Temporary structs while the arena is set up (ints only: the same on every ABI).
MAX_SCRATCH_BUFFERS_PER_OP = 12
PLANNER_BYTES_PER_BUFFER = 40

_CONTROL_FLOW = {
    "IF": ("then_subgraph_index", "else_subgraph_index"),
    "WHILE": ("cond_subgraph_index", "body_subgraph_index"),
    "CALL_ONCE": ("init_subgraph_index",),
}
_TYPE_BYTES = {"float32": 4, "int32": 4, "uint32": 4, "int8": 1, "uint8": 1, "int16": 2,
               "uint16": 2, "float16": 2, "bfloat16": 2, "int64": 8, "uint64": 8, "float64": 8,
               "bool": 1, "complex64": 8, "int4": 1}


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    return (value + alignment - 1) // alignment * alignment


def align_down(value: int, alignment: int = ALIGNMENT) -> int:
    return value // alignment * alignment


class PlanError(ValueError):
    """The model is shaped so that TFLite Micro's allocator could not set it up either."""


def plan_or_note(view: ModelView, subgraph: int = 0) -> tuple[MemoryPlan | None, str | None]:
    """`plan_memory`, guarded: (plan, None), or (None, a sentence saying why there is none).

    The estimate is optional for `tflc check` (its verdicts stand without it) and required for
    an export, so callers decide what a missing plan means; both read the same reason.
    """
    try:
        return plan_memory(view, subgraph), None
    except PlanError as exc:
        return None, f"no arena estimate: {exc}"
    except (IndexError, KeyError, ValueError, ZeroDivisionError, RecursionError) as exc:
        return None, ("no arena estimate: the planner cannot follow this graph "
                      f"({type(exc).__name__}: {exc})")


@dataclass
class PlannedBuffer:
    """One buffer in the non-persistent head: a tensor or a kernel's scratch buffer."""

    subgraph: int
    tensor: int            # tensor index, or -1 for a scratch buffer
    name: str
    size: int              # bytes, 16-byte aligned as TFLite Micro plans them
    first_used: int        # allocation scope (0 = subgraph start, op i = scope i + 1)
    last_used: int
    offset: int = -1


@dataclass
class MemoryPlan:
    """Where activations go and how big TFLite Micro's tensor arena must be.

    `arena_bytes`: the smallest `arena_size` that lets TFLite Micro's host build allocate the
    model. `head_bytes` (= `peak_activation_bytes`): the planned activation region.
    `persistent_bytes`: the tail at the end. `limited_by`: which moment of the setup needs the
    most memory ('final layout', 'memory planning', 'prepare of op N').
    """

    arena_bytes: int
    peak_activation_bytes: int
    head_bytes: int
    persistent_bytes: int
    limited_by: str
    approximate_ops: list[str] = field(default_factory=list)
    buffers: list[PlannedBuffer] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("buffers")
        return data


# ------------------------------------------------------------------------------- lifetimes


def _tensor_bytes(tensor) -> int:
    """TfLiteEvalTensorByteLength: elements times the type's size (int4 is stored unpacked)."""
    return tensor.num_elements * _TYPE_BYTES.get(tensor.dtype, 4)


class _Lifetimes:
    """TFLite Micro's AllocationInfoBuilder: first/last allocation scope of every buffer.

    Control-flow operators (IF, WHILE, CALL_ONCE) open a scope per called subgraph, walked
    before the operator's inputs are marked used, as TFLite Micro does.
    """

    def __init__(self, view: ModelView):
        self.view = view
        self.scope = 0
        self.first: dict[tuple[int, int], int] = {}
        self.last: dict[tuple[int, int], int] = {}
        self.op_scopes: dict[tuple[int, int], tuple[int, int]] = {}
        self.calling: list[int] = []  # subgraphs being walked, outermost first

    def _created(self, key, scope):
        self.first.setdefault(key, scope)

    def mark(self, s: int) -> None:
        if s in self.calling:
            raise PlanError(f"subgraph {s} calls itself (through subgraphs "
                            f"{' -> '.join(map(str, self.calling))}); TFLite Micro cannot plan it")
        self.calling.append(s)
        self._mark(s)
        self.calling.pop()

    def _mark(self, s: int) -> None:
        sg = self.view.subgraphs[s]
        for t in sg.inputs:
            self._created((s, t), self.scope)
            self.last[(s, t)] = self.scope
        for op in sg.operators:
            self.scope += 1
            for t in op.outputs:
                if t >= 0:
                    self._created((s, t), self.scope)
            start = self.scope
            for option in _CONTROL_FLOW.get(op.op, ()):
                callee = op.options.get(option)
                if isinstance(callee, int) and 0 <= callee < len(self.view.subgraphs):
                    self.scope += 1
                    self.mark(callee)
            for t in op.inputs:
                if t >= 0:
                    self.last[(s, t)] = self.scope
            for t in op.outputs:
                if t >= 0:
                    self.last[(s, t)] = self.scope
            self.op_scopes[(s, op.index)] = (start, self.scope)
        for t in sg.outputs:
            self._created((s, t), self.scope)
            self.last[(s, t)] = self.scope


def tensor_lifetimes(view: ModelView, scratch: list[tuple[int, int, int]] = ()) -> list[PlannedBuffer]:
    """The buffers TFLite Micro plans, in the order it hands them to its planner.

    Every tensor of every subgraph that has no constant data, is not a variable and is not
    empty is planned; one no operator touches keeps the lifetime (-1, -1), as in TFLite Micro.
    `scratch` lists kernel scratch requests as (subgraph, op index, bytes); they follow.
    """
    marks = _Lifetimes(view)
    marks.mark(0)
    buffers = []
    for sg in view.subgraphs:
        for t in sg.tensors:
            size = _tensor_bytes(t)
            if t.is_constant or t.is_variable or size == 0:
                continue
            key = (sg.index, t.index)
            first = marks.first.get(key, -1)
            buffers.append(PlannedBuffer(sg.index, t.index, t.name, align_up(size), first,
                                         marks.last.get(key, first)))
    for s, op_index, size in scratch:
        first, last = marks.op_scopes.get((s, op_index), (-1, -1))
        buffers.append(PlannedBuffer(s, -1, f"scratch of op {op_index}", align_up(size), first, last))
    return buffers


def greedy_plan(buffers: list[PlannedBuffer]) -> int:
    """Place buffers like TFLite Micro's GreedyMemoryPlanner; set offsets, return the peak.

    Largest first; each goes into the first gap (in offset order) between buffers alive at the
    same time that is big enough, else after the last of them.
    """
    if not buffers:
        return 0
    # TFLite Micro fills its sort array from the back and bubble-sorts it by size, descending
    # and stable, so among equal sizes the buffer added last is placed first.
    order = sorted(reversed(range(len(buffers))), key=lambda i: -buffers[i].size)
    placed: list[PlannedBuffer] = []  # kept sorted by offset
    for i in order:
        want = buffers[i]
        candidate = 0
        for other in placed:
            if other.first_used > want.last_used or want.first_used > other.last_used:
                continue
            if other.offset - candidate >= want.size:
                break
            candidate = max(candidate, other.offset + other.size)
        want.offset = candidate
        pos = 0
        while pos < len(placed) and placed[pos].offset <= candidate:
            pos += 1
        placed.insert(pos, want)
    return max(b.offset + b.size for b in buffers)


# -------------------------------------------------------------------------- arena replay


class _OutOfArena(Exception):
    def __init__(self, phase: str):
        self.phase = phase


class _Arena:
    """TFLite Micro's SingleArenaBufferAllocator over [0, size): head up, tail down, temp between."""

    def __init__(self, size: int):
        self.head = self.temp = 0
        self.tail = size

    def persistent(self, nbytes: int, alignment: int, phase: str) -> None:
        start = align_down(self.tail - nbytes, alignment)
        if start < self.head:
            raise _OutOfArena(phase)
        self.tail = start

    def allocate_temp(self, nbytes: int, alignment: int, phase: str) -> None:
        start = align_up(self.temp, alignment)
        if self.tail - start < nbytes:
            raise _OutOfArena(phase)
        self.temp = start + nbytes

    def reset_temp(self) -> None:
        self.temp = self.head

    def resize_head(self, nbytes: int, phase: str) -> None:
        if self.tail < nbytes:
            raise _OutOfArena(phase)
        self.head = self.temp = nbytes

    def available(self) -> int:
        return align_down(self.tail) - align_up(self.temp)


@dataclass
class _OpSetup:
    """What one operator allocates while the interpreter is set up."""

    subgraph: int
    index: int
    params: tuple[int, int] | None          # (bytes, alignment)
    op_data: int
    per_channel_bytes: list[int]            # each a 16-aligned persistent array
    temp_tensors: list[int]                 # channel counts of the TfLiteTensors Prepare looks at
    scratch: list[int]


def _quant_channels(tensor) -> int:
    return len(tensor.quantization.scales) if tensor.quantization is not None else 0


def _op_setup(view: ModelView, sg: SubgraphInfo, op) -> tuple[_OpSetup, bool]:
    known = op.op in KERNEL_COSTS
    cost = KERNEL_COSTS.get(op.op, DEFAULT_COST)
    per_channel = []
    if cost.per_channel and len(op.inputs) > cost.weights_input and op.inputs[cost.weights_input] >= 0:
        weights = sg.tensors[op.inputs[cost.weights_input]]
        if cost.per_channel_when == "always" and weights.shape:
            # Convolutions size the arrays by the weights' output channels, float or not.
            channels = weights.shape[cost.channel_axis % len(weights.shape)]
            per_channel = [4 * channels] * cost.per_channel
        elif _quant_channels(weights) > 1:
            per_channel = [4 * _quant_channels(weights)] * cost.per_channel
    if cost.temps is None:
        held = [t for t in (*op.inputs, *op.outputs) if t >= 0]
    else:
        held = [_operand(op, k) for k in cost.temps]
    temps = [_quant_channels(sg.tensors[t]) for t in held if t >= 0]
    params = (cost.params, cost.params_align) if cost.params else None
    return _OpSetup(sg.index, op.index, params, cost.op_data, per_channel, temps,
                    _scratch(sg, op, cost)), known


def _operand(op, key: str) -> int:
    """The tensor index behind 'i1' / 'o0', or PlanError when the op lacks that operand."""
    operands, role = (op.inputs, "input") if key[0] == "i" else (op.outputs, "output")
    k = int(key[1:])
    if k >= len(operands):
        raise PlanError(f"op #{op.index} ({op.op}) has {len(operands)} {role}(s), but TFLite "
                        f"Micro's {op.op} kernel reads {role} {k}")
    return operands[k]


def _scratch(sg: SubgraphInfo, op, cost: KernelCost) -> list[int]:
    """Bytes of each scratch buffer the kernel requests in Prepare."""
    inputs = [sg.tensors[t] if t >= 0 else None for t in op.inputs]
    first = inputs[0] if inputs else None
    integer = bool(op.outputs) and sg.tensors[op.outputs[0]].dtype in ("int8", "int16")
    units = {
        "output_elements": sg.tensors[op.outputs[0]].num_elements if op.outputs else 0,
        "input_rank": len(first.shape) if first is not None else 0,
        "input1_elements": inputs[1].num_elements if len(inputs) > 1 and inputs[1] else 0,
    }
    return [units[what] * size for what, size, integer_only in cost.scratch
            if integer or not integer_only]


def _replay(view: ModelView, setups: list[_OpSetup], buffers_count: int, head: int,
            size: int, abi: StructSizes = HOST_64) -> int:
    """Run TFLite Micro's allocation sequence in an arena of `size` bytes; return the tail size.

    Raises _OutOfArena naming the step that did not fit.
    """
    arena = _Arena(size)
    arena.persistent(abi.startup, 8, "allocator setup")
    arena.persistent(abi.builtin_data_allocator, 8, "allocator setup")
    arena.resize_head(abi.scratch_request * MAX_SCRATCH_BUFFERS_PER_OP, "allocator setup")
    n_subgraphs = len(view.subgraphs)
    arena.persistent(abi.subgraph_allocations * n_subgraphs, 8, "model setup")
    for sg in view.subgraphs:
        arena.persistent(abi.eval_tensor * len(sg.tensors), 8, "tensor structs")
    for sg in view.subgraphs:
        arena.persistent(abi.node_and_registration * len(sg.operators), 8, "operator structs")
    for op in setups:
        if op.params:
            arena.persistent(op.params[0], op.params[1], f"options of op {op.index}")
    for op in setups:
        if op.op_data:
            arena.persistent(op.op_data, ALIGNMENT, f"init of op {op.index}")
    requests = 0
    for op in setups:
        phase = f"prepare of op {op.index}"
        for channels in op.temp_tensors:
            arena.allocate_temp(abi.tflite_tensor, 8, phase)
            if channels:
                arena.allocate_temp(abi.affine_quantization, 8, phase)
                arena.allocate_temp(4 + 4 * channels, 4, phase)
        for nbytes in op.per_channel_bytes:
            arena.persistent(nbytes, ALIGNMENT, phase)
        requests += len(op.scratch)
        arena.reset_temp()
        arena.resize_head(abi.scratch_request * (requests + MAX_SCRATCH_BUFFERS_PER_OP), phase)
    if requests:
        arena.persistent(abi.scratch_buffer_handle * requests, 8, "scratch buffer handles")
    phase = "memory planning"
    arena.allocate_temp(abi.pointer * n_subgraphs, 8, phase)
    total_tensors = sum(len(sg.tensors) for sg in view.subgraphs)
    arena.allocate_temp(abi.allocation_info * (total_tensors + requests), 8, phase)
    if buffers_count > arena.available() // PLANNER_BYTES_PER_BUFFER:
        raise _OutOfArena(phase)
    arena.reset_temp()
    arena.resize_head(0, phase)
    phase = "final layout"
    arena.resize_head(head, phase)
    sg = view.subgraphs[0]
    for group in (sg.inputs, sg.outputs):
        arena.persistent(abi.pointer * len(group), ALIGNMENT, phase)
        for t in group:
            arena.persistent(abi.tflite_tensor, 8, phase)
            channels = _quant_channels(sg.tensors[t])
            if channels:
                arena.persistent(abi.affine_quantization, 8, phase)
                arena.persistent(4 + 4 * channels, 4, phase)
    return size - arena.tail


def plan_memory(view: ModelView, subgraph: int = 0, abi: StructSizes = HOST_64) -> MemoryPlan:
    """Static estimate of the tensor arena TFLite Micro needs for the model in `view`.

    TFLite Micro plans all subgraphs in one arena starting from the main one, so `subgraph`
    only selects which subgraph's buffers are reported in `buffers`. `abi` says whose arena:
    `HOST_64` (the default) is the one the host's tflite-micro interpreter measures,
    `CORTEX_M_32` a 32-bit microcontroller's, whose bookkeeping structs are smaller.
    """
    setups, approximate = [], []
    for sg in view.subgraphs:
        for op in sg.operators:
            setup, known = _op_setup(view, sg, op)
            setups.append(setup)
            if not known and op.op not in approximate:
                approximate.append(op.op)
    scratch = [(op.subgraph, op.index, b) for op in setups for b in op.scratch]
    buffers = tensor_lifetimes(view, scratch)
    head = greedy_plan(buffers)

    def fits(size: int) -> str | None:
        try:
            _replay(view, setups, len(buffers), head, size, abi)
        except _OutOfArena as exc:
            return exc.phase
        return None

    low, high = 0, max(4096, 2 * head)
    while fits(high) is not None:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle) is None:
            high = middle
        else:
            low = middle
    tail = _replay(view, setups, len(buffers), head, high, abi)
    limited_by = fits(high - 1) or "final layout"
    return MemoryPlan(
        arena_bytes=high,
        peak_activation_bytes=head,
        head_bytes=head,
        persistent_bytes=tail,
        limited_by=limited_by,
        approximate_ops=approximate,
        buffers=[b for b in buffers if b.subgraph == subgraph],
    )
