"""The flatbuffers verifier LiteRT runs before anything else, in Python, for the TFLite schema.

LiteRT refuses a file as "not a valid Flatbuffer buffer" when any table, vtable, field, vector or
string of the model lies outside the file, is misaligned, or a string lacks its terminating zero,
even in parts nothing reads later (a name, an unused option). The reader's accessors only look at
what they need, so without this walk such a file would pass. The checks follow `flatbuffers::
Verifier` (VerifyTableStart, VerifyField, VerifyOffset, VerifyVectorOrString, VerifyString) with
alignment checking on, and the limits it keeps (64 levels of nesting, a million tables).

The schema comes from the `tflite` package's generated classes: each accessor is called once on
a tracing stand-in for its table, which records the field's vtable slot and kind (scalar of a
width, string, table, vector of scalars, strings or tables, union), so no schema file is needed.
"""

from __future__ import annotations

import importlib
import struct
from dataclasses import dataclass

import flatbuffers

MAX_DEPTH = 64
MAX_TABLES = 1_000_000

# Union fields and the enum naming their member tables, by (table class, accessor).
_UNIONS = {
    ("Operator", "BuiltinOptions"): "BuiltinOptions",
    ("Operator", "BuiltinOptions2"): "BuiltinOptions2",
    ("QuantizationParameters", "Details"): "QuantizationDetails",
    ("DimensionMetadata", "ArraySegments"): "SparseIndexVector",
    ("DimensionMetadata", "ArrayIndices"): "SparseIndexVector",
}


class Invalid(Exception):
    """A structural defect, with the byte position and what is wrong there."""


@dataclass(frozen=True)
class Field:
    name: str  # the accessor's name in the generated class
    slot: int  # byte offset of the field's entry in the vtable
    kind: str  # scalar, string, table, union, scalars, strings, tables, struct
    width: int = 0  # bytes of a scalar or of a scalar vector's element
    table: type | None = None  # the class of a table field or of a vector's tables
    union: tuple = ()  # (name of the type accessor, {type code: class}) for unions


def verify_model(data, model_class) -> None:
    """Raise `Invalid` unless `data` is a structurally valid flatbuffer with a `model_class` root."""
    _Walk(data).root(model_class)


class _Walk:
    def __init__(self, data):
        self.data, self.size, self.tables = data, len(data), 0

    def need(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or length >= self.size or pos > self.size - length:
            raise Invalid(f"{what} at byte {pos} ({length} bytes) lies outside the file")

    def aligned(self, pos: int, align: int, what: str) -> None:
        if pos % align:
            raise Invalid(f"{what} at byte {pos} is not aligned to {align} bytes")

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        self.aligned(pos, 4, what)
        return struct.unpack_from("<I", self.data, pos)[0]

    def offset(self, pos: int, what: str) -> int:
        """Follow a uoffset as VerifyOffset does: non-zero, non-negative, landing in the file."""
        o = self.u32(pos, what)
        if o == 0 or o >= 1 << 31:
            raise Invalid(f"{what} at byte {pos} holds the offset {o}")
        self.need(pos + o, 1, what)
        return pos + o

    def root(self, model_class) -> None:
        self.table(self.offset(0, "root offset"), model_class, 1)

    def table(self, pos: int, cls, depth: int) -> None:
        name = cls.__name__
        self.tables += 1
        if depth > MAX_DEPTH or self.tables > MAX_TABLES:
            raise Invalid(f"table {name} at byte {pos} nests too deep or there are too many tables")
        self.need(pos, 4, f"table {name}")
        self.aligned(pos, 4, f"table {name}")
        vtable = pos - struct.unpack_from("<i", self.data, pos)[0]
        self.need(vtable, 2, f"vtable of {name}")
        self.aligned(vtable, 2, f"vtable of {name}")
        vsize = struct.unpack_from("<H", self.data, vtable)[0]
        if vsize % 2:
            raise Invalid(f"vtable of {name} at byte {vtable} has an odd size {vsize}")
        self.need(vtable, vsize, f"vtable of {name}")
        for f in _fields(cls):
            if f.slot + 2 > vsize:
                continue
            rel = struct.unpack_from("<H", self.data, vtable + f.slot)[0]
            if rel:
                self.field(pos, pos + rel, f, cls, depth)

    def field(self, table: int, at: int, f: Field, cls, depth: int) -> None:
        what = f"{cls.__name__}.{f.name}"
        if f.kind == "scalar":
            self.need(at, f.width, what)
            self.aligned(at, f.width, what)
        elif f.kind == "struct":
            self.need(at, 1, what)
        elif f.kind == "union":
            self.union(table, at, f, cls, depth)
        else:
            self.reference(self.offset(at, what), f, what, depth)

    def reference(self, target: int, f: Field, what: str, depth: int) -> None:
        if f.kind == "table":
            self.table(target, f.table, depth + 1)
        elif f.kind == "string":
            self.string(target, what)
        else:
            width = f.width if f.kind == "scalars" else 4
            count = self.vector(target, width, what)
            if f.kind in ("strings", "tables"):
                for i in range(count):
                    element = target + 4 + 4 * i
                    item = element + struct.unpack_from("<I", self.data, element)[0]
                    if f.kind == "strings":
                        self.string(item, what)
                    else:
                        self.table(item, f.table, depth + 1)

    def vector(self, pos: int, width: int, what: str) -> int:
        count = self.u32(pos, what)
        if count >= (1 << 31) // max(width, 1):
            raise Invalid(f"{what}: a vector at byte {pos} claims {count} entries")
        self.need(pos, 4 + width * count, what)
        return count

    def string(self, pos: int, what: str) -> None:
        end = pos + 4 + self.vector(pos, 1, what)
        self.need(end, 1, what)
        if self.data[end] != 0:
            raise Invalid(f"{what}: the string at byte {pos} has no terminating zero")

    def union(self, table: int, at: int, f: Field, cls, depth: int) -> None:
        type_accessor, members = f.union
        holder = cls()
        holder.Init(self.data, table)
        member = members.get(getattr(holder, type_accessor)())
        what = f"{cls.__name__}.{f.name}"
        target = self.offset(at, what)
        if member is not None:  # an unknown member passes, as in the generated C++ verifiers
            self.table(target, member, depth + 1)


_SCHEMA: dict[type, list[Field]] = {}


def _fields(cls) -> list[Field]:
    """The fields of a generated table class, found by tracing each accessor once."""
    if cls not in _SCHEMA:
        _SCHEMA[cls] = [f for name in _accessors(cls) if (f := _trace(cls, name)) is not None]
    return _SCHEMA[cls]


_HELPER_SUFFIXES = ("AsNumpy", "Length", "IsNone", "BufferHasIdentifier")


def _accessors(cls) -> list[str]:
    names = []
    for name, fn in vars(cls).items():
        if not name[:1].isupper() or not callable(fn) or name == "Init" or name.startswith("GetRootAs"):
            continue
        if name.endswith(_HELPER_SUFFIXES) or fn.__code__.co_argcount not in (1, 2):
            continue
        names.append(name)
    return names


class _Tracer:
    """Stands in for `flatbuffers.table.Table` and records what one accessor asks of it."""

    Bytes = b""
    Pos = 0

    def __init__(self):
        self.slot, self.calls, self.width = None, [], 0

    def Offset(self, slot):
        self.slot = slot
        return 8

    def Get(self, flags, pos):
        self.calls.append("get")
        self.width = flags.bytewidth
        return 0

    def Vector(self, off):
        self.calls.append("vector")
        return 0

    def Indirect(self, off):
        self.calls.append("indirect")
        return 0

    def String(self, off):
        self.calls.append("string")
        return b""

    def Union(self, obj, off):
        self.calls.append("union")
        return obj


def _trace(cls, name: str) -> Field | None:
    obj = cls.__new__(cls)
    tracer = _Tracer()
    obj._tab = tracer
    fn = getattr(obj, name)
    try:
        result = fn(0) if fn.__code__.co_argcount == 2 else fn()
    except Exception:  # not a plain field accessor (the generated code does more): skip it
        return None
    if tracer.slot is None:
        return None
    calls, sub = tracer.calls, _generated_class(result)
    if "union" in calls:
        return _union_field(cls, name, tracer.slot)
    if "vector" in calls:
        if "string" in calls:
            return Field(name, tracer.slot, "strings")
        if sub is not None:
            return Field(name, tracer.slot, "tables", table=sub) if "indirect" in calls else None
        return Field(name, tracer.slot, "scalars", width=tracer.width) if "get" in calls else None
    if "string" in calls:
        return Field(name, tracer.slot, "string")
    if sub is not None:
        return Field(name, tracer.slot, "table", table=sub) if "indirect" in calls else Field(name, tracer.slot, "struct")
    if "get" in calls:
        return Field(name, tracer.slot, "scalar", width=tracer.width)
    return None


def _generated_class(result):
    tab = getattr(result, "_tab", None)
    return type(result) if isinstance(tab, flatbuffers.table.Table) else None


def _union_field(cls, name: str, slot: int) -> Field | None:
    enum_name = _UNIONS.get((cls.__name__, name))
    members: dict[int, type] = {}
    if enum_name:
        enum = getattr(importlib.import_module(f"tflite.{enum_name}"), enum_name)
        for member, code in vars(enum).items():
            if member.startswith("_") or member == "NONE":
                continue
            try:
                members[code] = getattr(importlib.import_module(f"tflite.{member}"), member)
            except (ImportError, AttributeError):
                continue
    return Field(name, slot, "union", union=(name + "Type", members))
