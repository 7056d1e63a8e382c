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
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tflc.errors import BadInput
from tflc.fileio import read_yaml

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"

KINDS = ("cpu", "mcu", "npu", "tpu", "dsp", "gpu")
PARTITION_MODES = ("delegate", "dataflow_cut", "whole_model")
# Where the operators a target does not take run: the full TFLite CPU runtime ("cpu"), nowhere
# ("none": the runtime rejects the model), or another target's name (checked against that one).
FALLBACK_BUILTINS = ("cpu", "none")
EXPORT_FORMATS = ("c",)  # what `tflc export --format` writes


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
class RuntimeInfo:
    """The runtime or compiler (and its version) that the descriptor's facts hold for.

    exports: the package formats `tflc export` can write for this runtime (`c`: TFLite Micro
    C++ sources); empty when the runtime loads .tflite files itself.
    """

    name: str
    version: str
    exports: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "exports": list(self.exports)}


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
            "dtypes": self.dtypes.to_dict(),
            "partitioning": self.partitioning.to_dict(),
            "constraints": [c.to_dict() for c in self.constraints],
            "ops": {name: rule.to_dict() for name, rule in sorted(self.ops.items())},
            "provenance": [p.to_dict() for p in self.provenance],
            "notes": list(self.notes),
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
    _check_fields(data, _TOP_FIELDS, path, "")
    parent = data.pop("extends", None)
    if parent is None:
        return data, ()
    if not isinstance(parent, str):
        raise BadInput(f"{path}: field 'extends' must be a target name or a descriptor path")
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

_TOP_FIELDS = {
    "name": "the target's name (defaults to the file name)",
    "extends": "name or path of a descriptor this one builds on",
    "title": "one line saying what the target is",
    "kind": f"one of {', '.join(KINDS)}",
    "runtime": "mapping with name and version",
    "device": "mapping with board, cores, clock_mhz, active_power_w",
    "memory": "mapping with ram_bytes, flash_bytes, runtime_overhead_bytes, kernel_code_bytes, "
              "parameter_cache_bytes",
    "dtypes": "mapping with activations, weights, bias, io (lists of dtype names)",
    "partitioning": "mapping with mode, max_segments, fallback, leading_cpu_ops",
    "constraints": "list of constraints applied to every operator",
    "ops": "mapping of operator name to its rule (versions, constraints, dtypes, note)",
    "provenance": "list of {source, version, covers, verified}",
    "notes": "list of remarks shown with `tflc targets show`",
    "anchors": "YAML anchors (&name) reused further down the file; not read otherwise",
}
_RUNTIME_FIELDS = {"name": "runtime name", "version": "version the facts hold for",
                   "exports": f"list of package formats tflc export writes for it ({', '.join(EXPORT_FORMATS)})"}
_DEVICE_FIELDS = {"board": "text", "cores": "integer", "clock_mhz": "number",
                  "active_power_w": "number", "notes": "text"}
_MEMORY_FIELDS = {k: "bytes (an integer or a size like '256 KiB')" for k in (
    "ram_bytes", "flash_bytes", "runtime_overhead_bytes", "kernel_code_bytes",
    "parameter_cache_bytes")} | {"notes": "text"}
_DTYPE_FIELDS = {k: "list of dtype names" for k in ("activations", "weights", "bias", "io")}
_PARTITION_FIELDS = {"mode": f"one of {', '.join(PARTITION_MODES)}",
                     "max_segments": "integer or null", "min_segment_ops": "integer",
                     "fallback": "cpu, none or a target name",
                     "leading_cpu_ops": "list of operator names"}
_OP_FIELDS = {"versions": "[min, max] or a single version", "constraints": "list of constraints",
              "dtypes": "mapping like the top-level dtypes", "note": "text",
              "custom": "true for a custom operator (keyed by its custom code)"}
_PROVENANCE_FIELDS = {"source": "text", "version": "text", "covers": "text",
                      "verified": "true or false"}
DTYPES = ("float32", "float16", "bfloat16", "float64", "int4", "int8", "uint8", "int16",
          "uint16", "int32", "uint32", "int64", "uint64", "bool", "string", "complex64")


def _check_fields(data: dict, allowed: dict, path: Path, where: str) -> None:
    for key in data:
        if key not in allowed:
            near = _closest(str(key), allowed)
            hint = f"; did you mean '{near}'?" if near else ""
            raise BadInput(
                f"{path}: unknown field '{where}{key}'{hint} (allowed: {', '.join(allowed)})"
            )


def _closest(word: str, options) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return found[0] if found else None


def _mapping(data: dict, key: str, path: Path, where: str = "") -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{path}: field '{where}{key}' must be a mapping, got {_kind(value)}")
    return value


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_bytes(value, path: Path, field_name: str) -> int | None:
    """An integer, or a size such as '640 KiB' / '2 MiB' / '8 MB', as a number of bytes."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadInput(f"{path}: field '{field_name}' must be bytes, got true/false")
    if isinstance(value, int):
        if value < 0:
            raise BadInput(f"{path}: field '{field_name}' must not be negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise BadInput(
            f"{path}: field '{field_name}' must be bytes as an integer or a size like '256 KiB' "
            f"(units B, KB, MB, GB, KiB, MiB, GiB), got {value!r}"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "b").lower()])


def _number(value, path: Path, field_name: str, integer: bool = False, at_least=None,
            above=None):
    """A finite number (an integer with `integer`) within the bounds a real device has."""
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (at_least is None or value >= at_least) and (above is None or value > above)
    if not ok:
        expected = "an integer" if integer else "a number"
        expected += f" of at least {at_least}" if at_least is not None else ""
        expected += f" above {above}" if above is not None else ""
        raise BadInput(f"{path}: field '{field_name}' must be {expected}, got {value!r}")
    return value


def _text(value, path: Path, field_name: str, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise BadInput(f"{path}: field '{field_name}' is required")
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise BadInput(f"{path}: field '{field_name}' must be text, got {_kind(value)}")
    return str(value)


def _dtype_policy(data: dict, path: Path, where: str) -> DtypePolicy:
    _check_fields(data, _DTYPE_FIELDS, path, where)
    lists = {}
    for key in _DTYPE_FIELDS:
        values = data.get(key) or []
        if not isinstance(values, list):
            raise BadInput(f"{path}: field '{where}{key}' must be a list of dtype names")
        for v in values:
            if v not in DTYPES:
                raise BadInput(
                    f"{path}: field '{where}{key}' names unknown dtype {v!r} (allowed: {', '.join(DTYPES)})"
                )
        lists[key] = tuple(values)
    return DtypePolicy(**lists)


def _constraint_refs(items, path: Path, where: str) -> tuple[ConstraintRef, ...]:
    from tflc.check import constraints as library

    if items is None:
        return ()
    if not isinstance(items, list):
        raise BadInput(f"{path}: field '{where}' must be a list of constraint names")
    refs = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item)), str):
            name, params = next(iter(item.items()))
            params = params or {}
            if not isinstance(params, dict):
                raise BadInput(
                    f"{path}: field '{where}[{i}]' ({name}) must map parameter names to values, "
                    f"got {_kind(params)}"
                )
        else:
            raise BadInput(
                f"{path}: field '{where}[{i}]' must be a constraint name or {{name: {{param: value}}}}"
            )
        library.validate_ref(name, params, path, f"{where}[{i}]")
        refs.append(ConstraintRef(name, dict(params)))
    return tuple(refs)


def _exports(value, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or any(v not in EXPORT_FORMATS for v in value):
        raise BadInput(f"{path}: field 'runtime.exports' must be a list of package formats "
                       f"({', '.join(EXPORT_FORMATS)}), got {value!r}")
    return tuple(value)


def _versions(value, path: Path, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and value[0] <= value[1]):
        return (value[0], value[1])
    raise BadInput(f"{path}: field '{where}' must be [min, max] op versions or one version, got {value!r}")


def _op_rules(data: dict, path: Path) -> dict[str, OpRule]:
    from tflc.check.constraints import BUILTIN_OPS

    rules = {}
    for name, body in data.items():
        where = f"ops.{name}."
        body = {} if body is True else body
        if not isinstance(body, dict):
            raise BadInput(f"{path}: field 'ops.{name}' must be a mapping (or {{}}), got {_kind(body)}")
        _check_fields(body, _OP_FIELDS, path, where)
        if not body.get("custom") and name not in BUILTIN_OPS:
            near = _closest(str(name), BUILTIN_OPS)
            hint = f"; did you mean '{near}'?" if near else ""
            raise BadInput(
                f"{path}: field 'ops.{name}' is not a TFLite builtin operator{hint} "
                "(use the BuiltinOperator name, e.g. CONV_2D, or set custom: true)"
            )
        rules[str(name)] = OpRule(
            op=str(name),
            versions=_versions(body.get("versions"), path, where + "versions"),
            constraints=_constraint_refs(body.get("constraints"), path, where + "constraints"),
            dtypes=_dtype_policy(_mapping(body, "dtypes", path, where), path, where + "dtypes.")
            if body.get("dtypes") is not None else None,
            note=_text(body.get("note"), path, where + "note"),
        )
    return rules


def _build(raw: dict, path: Path, chain: tuple[str, ...]) -> TargetSpec:
    name = _text(raw.get("name"), path, "name") or path.stem
    kind = _text(raw.get("kind"), path, "kind", required=True)
    if kind not in KINDS:
        raise BadInput(f"{path}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")

    runtime = _mapping(raw, "runtime", path)
    _check_fields(runtime, _RUNTIME_FIELDS, path, "runtime.")
    device = _mapping(raw, "device", path)
    _check_fields(device, _DEVICE_FIELDS, path, "device.")
    memory = _mapping(raw, "memory", path)
    _check_fields(memory, _MEMORY_FIELDS, path, "memory.")
    partition = _mapping(raw, "partitioning", path)
    _check_fields(partition, _PARTITION_FIELDS, path, "partitioning.")

    mode = partition.get("mode", "delegate")
    if mode not in PARTITION_MODES:
        raise BadInput(
            f"{path}: field 'partitioning.mode' must be one of {', '.join(PARTITION_MODES)}, got {mode!r}"
        )
    fallback = _text(partition.get("fallback", "cpu"), path, "partitioning.fallback")
    if fallback not in FALLBACK_BUILTINS:
        _locate(fallback, base=path.parent)  # a target name: it must exist
    leading = partition.get("leading_cpu_ops") or []
    if not isinstance(leading, list) or not all(isinstance(o, str) for o in leading):
        raise BadInput(f"{path}: field 'partitioning.leading_cpu_ops' must be a list of operator names")
    from tflc.check.constraints import BUILTIN_OPS

    for op in leading:
        if op not in BUILTIN_OPS:
            raise BadInput(f"{path}: field 'partitioning.leading_cpu_ops' names {op!r}, which is "
                           "not a TFLite builtin operator (e.g. QUANTIZE)")

    provenance = raw.get("provenance") or []
    if not isinstance(provenance, list) or not provenance:
        raise BadInput(f"{path}: field 'provenance' must be a non-empty list of {{source, version}}")
    entries = []
    for i, item in enumerate(provenance):
        if not isinstance(item, dict):
            raise BadInput(f"{path}: field 'provenance[{i}]' must be a mapping with source and version")
        _check_fields(item, _PROVENANCE_FIELDS, path, f"provenance[{i}].")
        verified = item.get("verified", True)
        if not isinstance(verified, bool):
            raise BadInput(f"{path}: field 'provenance[{i}].verified' must be true or false")
        entries.append(ProvenanceEntry(
            source=_text(item.get("source"), path, f"provenance[{i}].source", required=True),
            version=_text(item.get("version"), path, f"provenance[{i}].version"),
            covers=_text(item.get("covers"), path, f"provenance[{i}].covers"),
            verified=verified,
        ))
    notes = raw.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise BadInput(f"{path}: field 'notes' must be a list of text lines")

    return TargetSpec(
        name=name,
        title=_text(raw.get("title"), path, "title", required=True),
        kind=kind,
        runtime=RuntimeInfo(
            name=_text(runtime.get("name"), path, "runtime.name", required=True),
            version=_text(runtime.get("version"), path, "runtime.version", required=True),
            exports=_exports(runtime.get("exports"), path),
        ),
        memory=MemoryBudget(
            ram_bytes=parse_bytes(memory.get("ram_bytes"), path, "memory.ram_bytes"),
            flash_bytes=parse_bytes(memory.get("flash_bytes"), path, "memory.flash_bytes"),
            runtime_overhead_bytes=parse_bytes(memory.get("runtime_overhead_bytes"), path,
                                               "memory.runtime_overhead_bytes") or 0,
            kernel_code_bytes=parse_bytes(memory.get("kernel_code_bytes"), path,
                                          "memory.kernel_code_bytes"),
            parameter_cache_bytes=parse_bytes(memory.get("parameter_cache_bytes"), path,
                                              "memory.parameter_cache_bytes"),
        ),
        device=DeviceFacts(
            board=_text(device.get("board"), path, "device.board"),
            cores=_number(device.get("cores"), path, "device.cores", integer=True, at_least=1),
            clock_mhz=_number(device.get("clock_mhz"), path, "device.clock_mhz", above=0),
            active_power_w=_number(device.get("active_power_w"), path, "device.active_power_w",
                                   above=0),
        ),
        dtypes=_dtype_policy(_mapping(raw, "dtypes", path), path, "dtypes."),
        partitioning=Partitioning(
            mode=mode,
            max_segments=_number(partition.get("max_segments"), path, "partitioning.max_segments",
                                 integer=True, at_least=1),
            min_segment_ops=_number(partition.get("min_segment_ops", 1), path,
                                    "partitioning.min_segment_ops", integer=True, at_least=1),
            fallback=fallback,
            leading_cpu_ops=tuple(leading),
        ),
        constraints=_constraint_refs(raw.get("constraints"), path, "constraints"),
        ops=_op_rules(_mapping(raw, "ops", path), path),
        provenance=tuple(entries),
        path=str(path),
        extends=chain,
        notes=tuple(notes),
    )
