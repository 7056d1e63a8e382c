"""One validator for the YAML tflc reads: JSON Schema (Draft 2020-12), one-line errors.

Target descriptors (`tflc/check/spec.py`) and pipeline configs (`tflc/optimize/config.py`) state
their fields as JSON Schema data and validate with `validate()`. The schema library finds what
is wrong; this module turns its best error into the one line a user reads, naming the file and
the field's path (`stages[1].prune.sparsity`, `ops.CONV_2D.constraints[0].stride_range.max`),
what was given and what is allowed, with a close spelling suggested for a misspelt name.

Two `Voice`s phrase the same facts: descriptors say "field 'memory.ram_bytes' must be ...",
pipeline configs "stages[0].prune.sparsity: expected ...". The wording differs (each is what its
users and tests already read); the mechanism, the paths, the suggestions and the rules (no bool
where a number is due, no NaN or infinity) are this module's, once.

A schema node may carry `description`: the words for what it allows, used instead of the words
built from its type and bounds, and the place errors inside it are reported (an item of a list
of text that is not text is reported as the list, "must be a list of text").
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

from jsonschema import Draft202012Validator, ValidationError, validators

from tflc.errors import BadInput

# ------------------------------------------------------------------------------ the validator


def _is_integer(_checker, value) -> bool:
    """Only ints: JSON Schema calls 2.0 an integer and Python calls True one; YAML users mean neither."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_checker, value) -> bool:
    """ints and floats, never booleans (a YAML `yes` is not a clock speed)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_type(validator, types, instance, schema):
    """The `type` keyword, plus: a number must be finite.

    NaN passes every bound (`nan < 0` and `nan > 1` are both false) and infinity is no device's
    value, so they are refused wherever a number is allowed, reported with the node's bounds.
    """
    yield from Draft202012Validator.VALIDATORS["type"](validator, types, instance, schema)
    wants_number = {"number", "integer"} & set([types] if isinstance(types, str) else types)
    if wants_number and isinstance(instance, float) and not math.isfinite(instance):
        yield ValidationError(f"{instance!r} is not finite", validator="finite")


_Validator = validators.extend(
    Draft202012Validator,
    validators={"type": _finite_type},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}),
)


def check_schema(schema: dict) -> dict:
    """The schema itself, checked against the metaschema: a typo in a schema fails at import."""
    _Validator.check_schema(schema)
    return schema


# ---------------------------------------------------------------------------------- phrasing


@dataclass(frozen=True)
class Voice:
    """How one kind of file words its errors (templates filled with the field's name, what is
    expected, what was given, the allowed names and a "did you mean" hint)."""

    nouns: dict  # JSON type -> words ("integer" -> "an integer")
    bounds: Callable[[dict], str]  # a schema's numeric bounds -> words (" of at least 1")
    wrong: str  # {field} {expected} {given}
    unknown: str  # {field} {hint} {allowed}
    choice: str  # {field} {given} {hint} {allowed}
    required: str  # {field} {expected}
    hint: str  # {near}


def _descriptor_bounds(schema: dict) -> str:
    words = []
    if "minimum" in schema:
        words.append(f" of at least {schema['minimum']}")
    if "exclusiveMinimum" in schema:
        words.append(f" above {schema['exclusiveMinimum']}")
    if "maximum" in schema:
        words.append(f" of at most {schema['maximum']}")
    if "exclusiveMaximum" in schema:
        words.append(f" below {schema['exclusiveMaximum']}")
    return " and".join(words)


def _config_bounds(schema: dict) -> str:
    """'>= 1', 'between 2 and 256' (integers), '(0, 1)' or '[0, 100]' (numbers)."""
    low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get(
        "maximum", schema.get("exclusiveMaximum"))
    low_open, high_open = "exclusiveMinimum" in schema, "exclusiveMaximum" in schema
    if low is None and high is None:
        return ""
    if schema.get("type") == "integer":
        return f" >= {low}" if high is None else f" between {low} and {high}"
    if high is None:
        return f" {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


_NOUNS = {"integer": "an integer", "number": "a number", "boolean": "true or false",
          "string": "text", "object": "a mapping", "array": "a list", "null": "null"}
DESCRIPTOR = Voice(
    nouns=_NOUNS,
    bounds=_descriptor_bounds,
    wrong="field '{field}' must be {expected}, got {given}",
    unknown="unknown field '{field}'{hint} (allowed: {allowed})",
    choice="field '{field}' must be one of the allowed values, got {given}{hint} (allowed: {allowed})",
    required="field '{field}' is required",
    hint="; did you mean '{near}'?",
)
CONFIG = Voice(
    nouns=_NOUNS | {"integer": "a whole number", "object": "a mapping of fields"},
    bounds=_config_bounds,
    wrong="{field}: expected {expected}, got {given}",
    unknown="{field}: unknown field{hint}; allowed: {allowed}",
    choice="{field}: got {given}{hint}; allowed values: {allowed}",
    required="{field}: expected {expected}, got nothing",
    hint=" (did you mean '{near}'?)",
)


def closest(word, options) -> str | None:
    """The option spelt most like `word` (difflib's ratio >= 0.6), or None."""
    found = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return found[0] if found else None


def suggestion(voice: Voice, word, options) -> str:
    """The voice's "did you mean" clause for `word`, or '' when nothing is close."""
    near = closest(word, options)
    return voice.hint.format(near=near) if near else ""


def field_path(parts) -> str:
    """['stages', 1, 'prune', 'sparsity'] -> 'stages[1].prune.sparsity'."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def shown(value) -> str:
    """A given value as the message shows it: short values as written, big ones by kind."""
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else ("a list" if isinstance(value, list) else text[:57] + "...")


def expected(voice: Voice, schema: dict, with_bounds: bool = True) -> str:
    """What a schema node allows, in the voice's words (its `description` when it has one)."""
    if "description" in schema:
        return schema["description"]
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    words = " or ".join(voice.nouns[t] for t in types) or "a different value"
    return words + (voice.bounds(schema) if with_bounds else "")


# ---------------------------------------------------------------------------------- reporting

_NO_INSTANCE_STEP = {"allOf", "anyOf", "oneOf", "if", "then", "else", "not", "$defs"}


def _reported_at(error: ValidationError, root: dict) -> tuple[list, dict]:
    """(instance path, schema node) where the error is reported.

    The deepest node with a `description` between the error and the named field that holds it
    (the error's own node when there is none): an item of "a list of text" that is not text is
    reported as the list, a value no alternative of a described `anyOf` takes as that node, and
    a named field always as itself. Walks the schema along `error.absolute_schema_path`,
    keeping the instance path in step.
    """
    path, node, at = [], root, None
    instance = list(error.absolute_path)
    steps = list(error.absolute_schema_path)[:-1]  # the last step is the failing keyword
    i = 0
    while i < len(steps):
        key = steps[i]
        if key in ("properties", "patternProperties"):
            node, i, at = node[key][steps[i + 1]], i + 2, None
            path.append(instance[len(path)])
        elif key == "additionalProperties":
            node, i, at = node[key], i + 1, None
            path.append(instance[len(path)])
        elif key in ("items", "contains"):
            node, i = node[key], i + 1
            path.append(instance[len(path)])
        elif key == "prefixItems" or (key in _NO_INSTANCE_STEP and i + 1 < len(steps)
                                      and isinstance(steps[i + 1], int)):
            node, i = node[key][steps[i + 1]], i + 2
            if key == "prefixItems":
                path.append(instance[len(path)])
        else:
            node, i = node[key], i + 1
        if isinstance(node, dict) and "description" in node:
            at = (list(path), node)
    return at or (instance, error.schema)


def _best(errors):
    """The error to report: the shallowest, an unknown field or a missing one before others.

    Shallow first because a wrong container explains the wrong things inside it; unknown fields
    first because a misspelt name also makes its value look missing or wrong.
    """
    def rank(error):
        return (-len(error.path), error.validator == "additionalProperties",
                error.validator == "required")
    return max(errors, key=rank, default=None)


def _unknown_key(error: ValidationError) -> str:
    known = error.schema.get("properties", {})
    return next(str(k) for k in error.instance if k not in known)


def message(error: ValidationError, root: dict, data, voice: Voice,
            name: Callable[[list], str] = field_path) -> str:
    """One line for one schema error in `data`, without the file name; `name` turns a field's
    path into the words that name it (a compile flag, for a config built from flags)."""
    kind = error.validator
    if kind == "additionalProperties":
        unknown = _unknown_key(error)
        allowed = list(error.schema.get("properties", {}))
        return voice.unknown.format(field=name([*error.absolute_path, unknown]),
                                    hint=suggestion(voice, unknown, allowed),
                                    allowed=", ".join(allowed))
    if kind == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        node = error.schema.get("properties", {}).get(missing, {})
        return voice.required.format(field=name([*error.absolute_path, missing]),
                                     expected=expected(voice, node))
    where, node = _reported_at(error, root)
    if kind == "enum" and node is error.schema:
        return voice.choice.format(field=name(where), given=shown(error.instance),
                                   hint=suggestion(voice, error.instance, error.validator_value),
                                   allowed=", ".join(str(v) for v in error.validator_value))
    return voice.wrong.format(field=name(where), given=shown(_at(data, where)),
                              expected=expected(voice, node, with_bounds=kind != "type"))


def _at(data, where: list):
    """The value at a path inside `data` (the error's own, or the node it is reported as)."""
    for key in where:
        data = data[key]
    return data


def first_error(data, schema: dict, voice: Voice,
                name: Callable[[list], str] = field_path) -> str | None:
    """The one-line message for the most telling problem in `data`, or None when it is valid."""
    best = _best(_Validator(schema).iter_errors(data))
    return None if best is None else message(best, schema, data, voice, name)


def validate(data, schema: dict, source: str | None, voice: Voice,
             name: Callable[[list], str] = field_path) -> None:
    """Raise BadInput `SOURCE: <message>` (just the message when `source` is None) when `data`
    does not match `schema`."""
    problem = first_error(data, schema, voice, name)
    if problem is not None:
        raise BadInput(problem if source is None else f"{source}: {problem}")
