"""Target descriptors: the YAML schema, loading with `extends:`, and validation.

A target is data. `targets/NAME.yaml` says which dtypes and operators a backend runs (with
version ranges and named constraints from `constraints.py`), how a model is split between the
backend and the CPU, the memory it offers, the device it usually sits on, the runtime version the
facts hold for and where every fact comes from. Code never special-cases a target: adding one is
adding a YAML file, and a file can `extends:` another and override parts of it.

Everything a user can get wrong in a descriptor (a typo'd field, a wrong type, an unknown
constraint or parameter) is reported as one `BadInput` line naming the file, the field and what
is allowed, before any model is looked at.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tflc.check.normalize import SCHEMA as NORMALIZE_SCHEMA
from tflc.check.normalize import Normalization
from tflc.errors import BadInput
from tflc.fileio import read_yaml
from tflc.schema import DESCRIPTOR, check_schema, shown, suggestion, validate

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"

KINDS = ("cpu", "mcu", "npu", "tpu", "dsp", "gpu")
PARTITION_MODES = ("delegate", "dataflow_cut", "whole_model")
# Where the operators a target does not take run: the full TFLite CPU runtime ("cpu"), nowhere
# ("none": the runtime rejects the model), or another target's name (checked against that one).
FALLBACK_BUILTINS = ("cpu", "none")
EXPORT_FORMATS = ("c",)  # what `tflc export --format` writes
AOT_COMPILERS = ("qualcomm",)  # modules of tflc.aot that `tflc compile --aot` runs


@dataclass(frozen=True)
class MemoryBudget:
    """What the target offers, in bytes; None where the limit does not apply or is unknown.

    ram_bytes: memory for activations (the tensor arena on an MCU) plus runtime_overhead_bytes.
    flash_bytes: read-only storage for the model file plus kernel_code_bytes (runtime + app).
    parameter_cache_bytes: on-accelerator memory for weights (Edge TPU SRAM); parameters beyond
    it are streamed from host memory on every inference.
    """

    ram_bytes: int | None = None
    flash_bytes: int | None = None
    runtime_overhead_bytes: int = 0
    kernel_code_bytes: int | None = None
    parameter_cache_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DeviceFacts:
    """The typical device behind a target, for benchmarks and energy estimates."""

    board: str | None = None
    cores: int | None = None
    clock_mhz: float | None = None
    active_power_w: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PowerFacts:
    """Watts while inferring, idle (awake between inferences) and asleep (the deepest state that
    keeps the model in RAM): what `tflc profile` turns into energy per inference, the average
    power at a duty cycle (`--rate`) and battery life."""

    active_w: float | None = None
    idle_w: float | None = None
    sleep_w: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RuntimeInfo:
    """The runtime or compiler (and its version) that the descriptor's facts hold for.

    exports: the package formats `tflc export` can write for this runtime (`c`: TFLite Micro
    C++ sources); empty when the runtime loads .tflite files itself.
    static_batch: the runtime takes only static shapes, so `tflc compile --target` pins the
    batch to 1 (a free batch leaves SHAPE/STRIDED_SLICE/PACK chains it refuses).
    aot: the vendor compiler that compiles the model ahead of time for one SoC (`compiler`, a
    module of tflc.aot) and the SoC these facts were measured on (`soc`): `tflc compile --aot`.
    """

    name: str
    version: str
    exports: tuple[str, ...] = ()
    static_batch: bool = False
    aot: dict | None = None

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "exports": list(self.exports),
                "static_batch": self.static_batch} | ({"aot": dict(self.aot)} if self.aot else {})


@dataclass(frozen=True)
class DtypePolicy:
    """Tensor types the target computes with; an empty tuple means 'any'."""

    activations: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    bias: tuple[str, ...] = ()
    io: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ConstraintRef:
    """A named constraint from `tflc.check.constraints`, with the parameters the YAML gives it."""

    name: str
    params: dict = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict | str:
        return {self.name: dict(self.params)} if self.params else self.name


@dataclass(frozen=True)
class OpRule:
    """How a target runs one builtin operator."""

    op: str
    versions: tuple[int, int] | None = None  # inclusive range; None: any version
    constraints: tuple[ConstraintRef, ...] = ()
    dtypes: DtypePolicy | None = None  # overrides the target's policy for this op
    note: str | None = None

    def to_dict(self) -> dict:
        out: dict = {}
        if self.versions:
            out["versions"] = list(self.versions)
        if self.dtypes:
            out["dtypes"] = {k: v for k, v in self.dtypes.to_dict().items() if v}
        if self.constraints:
            out["constraints"] = [c.to_dict() for c in self.constraints]
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Partitioning:
    """How a graph is split between the target and its fallback.

    mode: `delegate` (any set of ops, grouped into partitions the way TFLite's delegate
    partitioner does), `dataflow_cut` (one accelerator segment: every op that depends, directly
    or transitively, on an op the target cannot map also runs on the fallback, as the Edge TPU
    compiler does) or `whole_model` (all or nothing: one op the target cannot run sends every
    op to the fallback; TFLite Micro, whose fallback is `none`).
    max_segments: how many target partitions are delegated (the largest first); None: all.
    min_segment_ops: partitions with fewer ops than this are not delegated (Hexagon: 2).
    fallback: `cpu`, `none`, or the name of the target that runs the remaining ops.
    leading_cpu_ops: ops that, when the target cannot map them and they read only model inputs
    (a float->int8 QUANTIZE), run on the CPU before the accelerator segment without cutting it.
    """

    mode: str = "delegate"
    max_segments: int | None = None
    min_segment_ops: int = 1
    fallback: str = "cpu"
    leading_cpu_ops: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = asdict(self)
        out["leading_cpu_ops"] = list(self.leading_cpu_ops)
        return out


@dataclass(frozen=True)
class ProvenanceEntry:
    """Where a group of facts comes from: a source (file, page, tool) and its version or commit."""

    source: str
    version: str | None = None
    covers: str | None = None  # which facts: "ops", "memory", "device", ...
    verified: bool = True

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class TargetSpec:
    """One deployment target, loaded from its descriptor (with `extends:` resolved)."""

    name: str
    title: str
    kind: str
    runtime: RuntimeInfo
    memory: MemoryBudget
    device: DeviceFacts
    dtypes: DtypePolicy
    partitioning: Partitioning
    constraints: tuple[ConstraintRef, ...]
    ops: dict[str, OpRule]
    provenance: tuple[ProvenanceEntry, ...]
    path: str | None = None
    extends: tuple[str, ...] = ()  # the chain of descriptors this one builds on, nearest first
    notes: tuple[str, ...] = ()
    # How the runtime rewrites the graph before partitioning (tflc.check.normalize).
    normalize: Normalization = field(default_factory=Normalization)
    power: PowerFacts = field(default_factory=PowerFacts)  # energy figures (tflc profile)
    # int8 and int16 (16x8) layers in one model, joined by requantizing QUANTIZE ops: what
    # `tflc compile --activations mixed` needs (which ops run in int16 is each op's dtypes)
    mixed_precision: bool = False

    def supports(self, op: str) -> bool:
        return op in self.ops

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "path": self.path,
            "extends": list(self.extends),
            "runtime": self.runtime.to_dict(),
            "memory": self.memory.to_dict(),
            "device": self.device.to_dict(),
            "power": self.power.to_dict(),
            "dtypes": self.dtypes.to_dict(),
            "mixed_precision": self.mixed_precision,
            "partitioning": self.partitioning.to_dict(),
            "constraints": [c.to_dict() for c in self.constraints],
            "ops": {name: rule.to_dict() for name, rule in sorted(self.ops.items())},
            "provenance": [p.to_dict() for p in self.provenance],
            "notes": list(self.notes),
            "normalize": self.normalize.to_dict(),
        }


# ------------------------------------------------------------------------------------ loading


def list_targets(directory: str | os.PathLike | None = None) -> list[TargetSpec]:
    """Every descriptor shipped with tflc (or in `directory`), sorted by name."""
    folder = Path(directory) if directory else TARGETS_DIR
    return [load_target(p) for p in sorted(folder.glob("*.yaml"))]


def load_target(name_or_path: str | os.PathLike | TargetSpec) -> TargetSpec:
    """A target by name (`cortex-m4`) or by the path of a descriptor file, validated.

    Raises BadInput naming the file and field when the descriptor is malformed, or listing the
    known targets when the name is unknown.
    """
    if isinstance(name_or_path, TargetSpec):
        return name_or_path
    path = _locate(str(name_or_path), base=None)
    raw, chain = _resolve(path, seen=())
    return _build(raw, path, chain)


def _locate(ref: str, base: Path | None) -> Path:
    candidate = Path(ref)
    looks_like_path = ref.endswith((".yaml", ".yml")) or os.sep in ref or "/" in ref
    if looks_like_path:
        if not candidate.is_absolute() and base is not None:
            candidate = base / candidate
        if candidate.is_dir():
            raise BadInput(f"{candidate}: is a folder; a target is a name (see `tflc targets`) or "
                           "the path of one .yaml descriptor file")
        if not candidate.is_file():
            raise BadInput(f"{candidate}: no such target descriptor file")
        return candidate
    if base is not None and (base / f"{ref}.yaml").is_file():
        return base / f"{ref}.yaml"
    builtin = TARGETS_DIR / f"{ref}.yaml"
    if builtin.is_file():
        return builtin
    if base is None and candidate.is_dir():
        raise BadInput(f"{ref}: is a folder, not a target; a target is a name (see `tflc "
                       "targets`) or the path of one .yaml descriptor file")
    known = ", ".join(sorted(p.stem for p in TARGETS_DIR.glob("*.yaml")))
    raise BadInput(f"unknown target '{ref}' (known: {known}); or pass the path of a .yaml descriptor")


def _read_yaml(path: Path) -> dict:
    data = read_yaml(path, "target descriptor")
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a target descriptor must be a YAML mapping of fields")
    return data


def _resolve(path: Path, seen: tuple[Path, ...]) -> tuple[dict, tuple[str, ...]]:
    """The descriptor's fields merged over the chain of descriptors it extends."""
    path = path.resolve()
    if path in seen:
        cycle = " -> ".join(p.name for p in (*seen, path))
        raise BadInput(f"{path}: `extends` forms a cycle ({cycle})")
    data = _read_yaml(path)
    validate(data, _FILE_SCHEMA, str(path), DESCRIPTOR)
    parent = data.pop("extends", None)
    if parent is None:
        return data, ()
    parent_path = _locate(parent, base=path.parent)
    base, chain = _resolve(parent_path, (*seen, path))
    base.pop("name", None)
    merged = _merge(base, data)
    if isinstance(base.get("provenance"), list) and isinstance(data.get("provenance"), list):
        merged["provenance"] = _inherited_provenance(base["provenance"], data) + data["provenance"]
    return merged, (_display_name(parent_path), *chain)


def _display_name(path: Path) -> str:
    return path.stem if path.parent.resolve() == TARGETS_DIR.resolve() else str(path)


def _merge(base: dict, override: dict) -> dict:
    """Mappings merge key by key (a null value deletes the key); anything else is replaced.

    Lists are replaced whole: a child that wants its parent's entries plus its own repeats them.
    `provenance` is the one exception (see `_inherited_provenance`), merged by `_resolve`.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _inherited_provenance(entries: list, child: dict) -> list:
    """The parent's provenance entries that still describe facts of the child.

    A child inherits facts, so it inherits their sources too: it lists only its own. An inherited
    entry is dropped when the child sets every field its `covers` names (a board datasheet once
    the child has its own device and memory); an entry whose `covers` is absent or not a list of
    field paths is kept.
    """
    return [e for e in entries if not (isinstance(e, dict) and _all_set(e.get("covers"), child))]


_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _all_set(covers, child: dict) -> bool:
    """Whether `covers` ('device, memory.ram_bytes') lists field paths that `child` all sets."""
    if not isinstance(covers, str):
        return False
    paths = [p.strip() for p in covers.split(",")]
    return all(_FIELD_PATH.match(p) and _sets(child, p.split(".")) for p in paths)


def _sets(data, keys: list[str]) -> bool:
    for key in keys:
        if not isinstance(data, dict) or data.get(key) is None:
            return False
        data = data[key]
    return True


# ----------------------------------------------------------------------------------- validation

DTYPES = ("float32", "float16", "bfloat16", "float64", "int4", "int8", "uint8", "int16",
          "uint16", "int32", "uint32", "int64", "uint64", "bool", "string", "complex64",
          "resource")  # resource: the handle of a variable (VAR_HANDLE, READ_VARIABLE)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _fields(properties: dict, required: tuple = ()) -> dict:
    """A mapping with exactly these fields: any other name is reported with a close spelling."""
    out = {"type": "object", "properties": properties, "additionalProperties": False}
    return out | ({"required": list(required)} if required else {})


def _list_of(item: dict, words: str, **more) -> dict:
    """A list whose bad items are reported as the list (`description`: `words`)."""
    return {"type": "array", "items": item, "description": words, **more}


_TEXT = {"type": ["string", "number"], "description": "text"}  # `version: 2.1` is text too
_BYTES = {"type": ["integer", "string"], "minimum": 0, "pattern": "(?i)" + _SIZE.pattern,
          "description": "bytes as an integer or a size like '256 KiB' "
                         "(units B, KB, MB, GB, KiB, MiB, GiB)"}
_DTYPES = _fields({key: _list_of({"enum": list(DTYPES)},
                                 f"a list of dtype names (allowed: {', '.join(DTYPES)})")
                   for key in ("activations", "weights", "bias", "io")})
_CONSTRAINTS = _list_of({"type": ["string", "object"], "minProperties": 1, "maxProperties": 1,
                         "description": "a constraint name or {name: {param: value}}"},
                        "a list of constraint names")
_OP_RULE = _fields({
    "versions": {"type": ["integer", "array"], "items": {"type": "integer"}, "minItems": 2,
                 "maxItems": 2, "description": "[min, max] op versions or one version"},
    "constraints": _CONSTRAINTS,
    "dtypes": _DTYPES,
    "note": _TEXT,
    "custom": {"type": "boolean"},  # a custom operator, keyed by its custom code
}) | {"description": "a mapping (or {})"}
_TOP = {
    "name": _TEXT,  # the target's name; defaults to the file name
    "extends": {"type": ["string", "null"], "description": "a target name or a descriptor path"},
    "title": _TEXT,
    "kind": {"enum": list(KINDS)},
    "runtime": _fields({
        "name": _TEXT, "version": _TEXT,  # the runtime the facts hold for
        "exports": _list_of({"enum": list(EXPORT_FORMATS)},
                            f"a list of package formats ({', '.join(EXPORT_FORMATS)})"),
        "static_batch": {"type": "boolean"},  # compile pins the batch to 1 for this runtime
        "aot": _fields({"compiler": {"enum": list(AOT_COMPILERS)}, "soc": _TEXT},
                       required=("compiler", "soc")),  # tflc compile --aot SOC
    }, required=("name", "version")),
    "device": _fields({"board": _TEXT, "cores": {"type": "integer", "minimum": 1},
                       "clock_mhz": {"type": "number", "exclusiveMinimum": 0},
                       "active_power_w": {"type": "number", "exclusiveMinimum": 0},
                       "notes": _TEXT}),
    "power": _fields({"active_w": {"type": "number", "exclusiveMinimum": 0},
                      "idle_w": {"type": "number", "minimum": 0},
                      "sleep_w": {"type": "number", "minimum": 0},
                      "notes": _TEXT}),  # watts while inferring, idle and asleep
    "memory": _fields({key: _BYTES for key in (
        "ram_bytes", "flash_bytes", "runtime_overhead_bytes", "kernel_code_bytes",
        "parameter_cache_bytes")} | {"notes": _TEXT}),
    "dtypes": _DTYPES,
    "mixed_precision": {"type": "boolean"},  # int8 and 16x8 layers in one model
    "partitioning": _fields({
        "mode": {"enum": list(PARTITION_MODES)},
        "max_segments": {"type": "integer", "minimum": 1},
        "min_segment_ops": {"type": "integer", "minimum": 1},
        "fallback": _TEXT,  # cpu, none or a target name
        "leading_cpu_ops": _list_of({"type": "string"}, "a list of operator names"),
    }),
    "constraints": _CONSTRAINTS,  # applied to every operator
    "ops": {"type": "object", "additionalProperties": _OP_RULE},
    "provenance": _list_of(
        _fields({"source": _TEXT, "version": _TEXT, "covers": _TEXT,
                 "verified": {"type": "boolean"}}, required=("source",))
        | {"description": "a mapping with source and version"},
        "a non-empty list of {source, version}", minItems=1),
    "notes": _list_of({"type": "string"}, "a list of text lines"),
    "normalize": NORMALIZE_SCHEMA,  # graph rewrites before partitioning (static weights)
    "anchors": {},  # YAML anchors (&name) reused further down the file; not read otherwise
}
SCHEMA = check_schema(_fields(_TOP, required=("kind", "title", "runtime", "provenance")))
"""A descriptor (its `extends:` chain merged) as JSON Schema: every field, type and bound."""
_FILE_SCHEMA = check_schema(_fields({key: {} for key in _TOP} | {"extends": _TOP["extends"]}))
"""One descriptor file before merging: known top-level fields, `extends` a name or path."""

# Sections whose null values mean "not set" (a null in a child has already removed the
# parent's entry). A null op stays: `ops: {CONV_2D: null}` in a root file is a mistake.
_NULL_MEANS_UNSET = ("runtime", "device", "memory", "dtypes", "partitioning")


def _without_nulls(raw: dict) -> dict:
    """The merged descriptor with unset (null) fields dropped and `OP: true` read as `OP: {}`."""
    out = {k: v for k, v in raw.items() if v is not None}
    for key in _NULL_MEANS_UNSET:
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if v is not None}
    if isinstance(out.get("ops"), dict):
        out["ops"] = {name: _op_body(body) for name, body in out["ops"].items()}
    if isinstance(out.get("provenance"), list):
        out["provenance"] = [{k: v for k, v in e.items() if v is not None}
                             if isinstance(e, dict) else e for e in out["provenance"]]
    return out


def _op_body(body):
    if body is True:
        return {}
    return {k: v for k, v in body.items() if v is not None} if isinstance(body, dict) else body


def parse_bytes(value, path: Path, field_name: str) -> int | None:
    """An integer, or a size such as '640 KiB' / '2 MiB' / '8 MB', as a number of bytes."""
    if value is None:
        return None
    validate({field_name: value}, {"properties": {field_name: _BYTES}}, str(path), DESCRIPTOR)
    if isinstance(value, int):
        return value
    number, unit = _SIZE.match(value).groups()
    return int(float(number) * _UNITS[(unit or "b").lower()])


def _text(value) -> str | None:
    return None if value is None else str(value)


def _dtype_policy(data: dict) -> DtypePolicy:
    return DtypePolicy(**{key: tuple(values) for key, values in data.items()})


def _constraint_refs(items, path: Path, where: str) -> tuple[ConstraintRef, ...]:
    """Each reference's name and parameters, checked against the constraint's signature."""
    from tflc.check import constraints as library

    refs = []
    for i, item in enumerate(items or ()):
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(next(iter(item)), str):
            name, params = next(iter(item.items()))
            params = params or {}
            if not isinstance(params, dict):
                raise BadInput(
                    f"{path}: field '{where}[{i}]' ({name}) must map parameter names to values, "
                    f"got {shown(params)}"
                )
        else:
            raise BadInput(
                f"{path}: field '{where}[{i}]' must be a constraint name or {{name: {{param: value}}}}"
            )
        library.validate_ref(name, params, path, f"{where}[{i}]")
        refs.append(ConstraintRef(name, dict(params)))
    return tuple(refs)


def _versions(value, path: Path, where: str) -> tuple[int, int] | None:
    """One version or [min, max] (shapes checked by the schema), with min <= max."""
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if value[0] > value[1]:
        raise BadInput(f"{path}: field '{where}' must be [min, max] op versions or one version, "
                       f"got {value!r}")
    return (value[0], value[1])


def _op_rules(data: dict, path: Path) -> dict[str, OpRule]:
    """Operator rules; a name that is no TFLite builtin must say it is a custom operator."""
    from tflc.check.constraints import BUILTIN_OPS

    rules = {}
    for name, body in data.items():
        where = f"ops.{name}."
        if not body.get("custom") and name not in BUILTIN_OPS:
            hint = suggestion(DESCRIPTOR, name, BUILTIN_OPS)
            raise BadInput(
                f"{path}: field 'ops.{name}' is not a TFLite builtin operator{hint} "
                "(use the BuiltinOperator name, e.g. CONV_2D, or set custom: true)"
            )
        rules[str(name)] = OpRule(
            op=str(name),
            versions=_versions(body.get("versions"), path, where + "versions"),
            constraints=_constraint_refs(body.get("constraints"), path, where + "constraints"),
            dtypes=_dtype_policy(body["dtypes"]) if body.get("dtypes") is not None else None,
            note=_text(body.get("note")),
        )
    return rules


def _partitioning(partition: dict, path: Path) -> Partitioning:
    """The partitioning section; a fallback target and the leading ops must exist."""
    from tflc.check.constraints import BUILTIN_OPS

    fallback = _text(partition.get("fallback", "cpu"))
    if fallback not in FALLBACK_BUILTINS:
        _locate(fallback, base=path.parent)  # a target name: it must exist
    leading = partition.get("leading_cpu_ops", [])
    for op in leading:
        if op not in BUILTIN_OPS:
            raise BadInput(f"{path}: field 'partitioning.leading_cpu_ops' names {op!r}, which is "
                           "not a TFLite builtin operator (e.g. QUANTIZE)")
    return Partitioning(
        mode=partition.get("mode", "delegate"),
        max_segments=partition.get("max_segments"),
        min_segment_ops=partition.get("min_segment_ops", 1),
        fallback=fallback,
        leading_cpu_ops=tuple(leading),
    )


def _memory(memory: dict, path: Path) -> MemoryBudget:
    sizes = {key: parse_bytes(memory.get(key), path, f"memory.{key}") for key in (
        "ram_bytes", "flash_bytes", "runtime_overhead_bytes", "kernel_code_bytes",
        "parameter_cache_bytes")}
    sizes["runtime_overhead_bytes"] = sizes["runtime_overhead_bytes"] or 0
    return MemoryBudget(**sizes)


def _normalization(data: dict | None, path: Path) -> Normalization:
    from tflc.check import normalize
    from tflc.check.constraints import BUILTIN_OPS

    return normalize.parse(data, path, BUILTIN_OPS, DTYPES)


def _build(raw: dict, path: Path, chain: tuple[str, ...]) -> TargetSpec:
    """The merged descriptor, validated against `SCHEMA`, as a TargetSpec."""
    raw = _without_nulls(raw)
    validate(raw, SCHEMA, str(path), DESCRIPTOR)
    runtime, device = raw["runtime"], raw.get("device", {})
    return TargetSpec(
        name=_text(raw.get("name")) or path.stem,
        title=_text(raw["title"]),
        kind=raw["kind"],
        runtime=RuntimeInfo(name=_text(runtime["name"]), version=_text(runtime["version"]),
                            exports=tuple(runtime.get("exports", ())),
                            static_batch=bool(runtime.get("static_batch", False)),
                            aot={k: _text(v) for k, v in runtime["aot"].items()}
                            if runtime.get("aot") else None),
        memory=_memory(raw.get("memory", {}), path),
        device=DeviceFacts(board=_text(device.get("board")), cores=device.get("cores"),
                           clock_mhz=device.get("clock_mhz"),
                           active_power_w=device.get("active_power_w")),
        power=PowerFacts(**{key: raw.get("power", {}).get(key)
                            for key in ("active_w", "idle_w", "sleep_w")}),
        dtypes=_dtype_policy(raw.get("dtypes", {})),
        mixed_precision=bool(raw.get("mixed_precision", False)),
        partitioning=_partitioning(raw.get("partitioning", {}), path),
        constraints=_constraint_refs(raw.get("constraints"), path, "constraints"),
        ops=_op_rules(raw.get("ops", {}), path),
        provenance=tuple(ProvenanceEntry(
            source=_text(e["source"]), version=_text(e.get("version")),
            covers=_text(e.get("covers")), verified=e.get("verified", True))
            for e in raw["provenance"]),
        path=str(path),
        extends=chain,
        notes=tuple(raw.get("notes", ())),
        normalize=_normalization(raw.get("normalize"), path),
    )
