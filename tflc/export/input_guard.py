"""The optional MCU input guard of a C package (`tflc export --input-guard`).

`NAME_input_guard.h/.c` (plain C99, callable from C++) hold, per model input, the calibrated
range of every feature (or, for inputs wider than the profile keeps per feature, of every
channel) from the compile's `profile.json`, and a function per input that a firmware calls
on the int8/uint8/int16 values it is about to feed the model:

    NAME_InputGuard guard;  NAME_InputGuard_Reset(&guard);
    if (NAME_InputGuard_Check0(&guard, input->data.int8)) { /* drift: degrade, report */ }

It counts the values at the integer range's limits (saturated low and high), the values outside
their feature's calibrated range, and over tumbling windows of the profile's window size it
raises `alarm` when the window's share of values at the limits exceeds the calibrated share by
more than the profile's threshold (chosen at compile time from the calibration samples' own
sampling noise). Only numbers reach the generated code; the profile's tensor names appear in
comments through `user_text`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tflc.errors import BadInput
from tflc.export.c_source import user_text

C_TYPES = {"int8": ("int8_t", -128, 127), "uint8": ("uint8_t", 0, 255),
           "int16": ("int16_t", -32768, 32767)}
PER_LINE = 16


def load_profile(model_path: Path, model_sha256: str, profile=None) -> tuple[dict, Path]:
    """The calibration profile for `model_path` (profile.json beside it, or `profile`),
    checked to belong to that model."""
    path = Path(profile) if profile is not None else model_path.parent / "profile.json"
    if path.is_dir():
        path = path / "profile.json"
    if not path.is_file():
        raise BadInput(f"--input-guard: no calibration profile at {path}; every `tflc compile` "
                       "writes profile.json beside model.tflite (pass it with --profile FILE)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{path}: not a calibration profile ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != "tflc-profile":
        raise BadInput(f"{path}: not a tflc calibration profile")
    if data.get("model_sha256") != model_sha256:
        raise BadInput(f"{path}: this calibration profile belongs to another model (sha256 "
                       f"{str(data.get('model_sha256'))[:12]}, the model's {model_sha256[:12]})")
    return data, path


def _array(ctype: str, name: str, values: list) -> list[str]:
    lines = [f"static const {ctype} {name}[{len(values)}] = {{"]
    for start in range(0, len(values), PER_LINE):
        lines.append("  " + ", ".join(str(int(v)) for v in values[start:start + PER_LINE]) + ",")
    lines.append("};")
    return lines


def render_input_guard(profile: dict, name: str) -> tuple[str, str]:
    """(header, source) of the input guard for the model `profile` describes."""
    upper = name.upper()
    window = int(profile["drift"]["window"])
    thresholds = profile["drift"]["thresholds"]
    increase = thresholds.get("at_limits_increase") or thresholds["saturation_increase"]
    inputs = profile["inputs"]
    per_input, arrays = [], []
    for k, entry in enumerate(inputs):
        if entry["dtype"] not in C_TYPES or not entry.get("limits"):
            raise BadInput(f"--input-guard: input {k} ({user_text(entry['name'])}) is "
                           f"{entry['dtype']}; the MCU input guard needs an int8, uint8 or int16 "
                           "input (compile with --io-type int8)")
        ctype, lo, hi = C_TYPES[entry["dtype"]]
        size = 1
        for dim in entry["shape"][1:]:
            size *= int(dim)
        features = entry.get("features")
        if features:
            low, high, period = features["low"], features["high"], size
        else:  # per channel: the calibrated 0.1% and 99.9% quantiles
            q = entry["quantiles"]["q"]
            low = [row[q.index(0.001)] for row in entry["quantiles"]["values"]]
            high = [row[q.index(0.999)] for row in entry["quantiles"]["values"]]
            period = len(low)
        low = [max(lo, min(hi, int(round(v)))) for v in low]
        high = [max(lo, min(hi, int(round(v)))) for v in high]
        ref = float(entry.get("at_limits_rate") or 0.0)
        limit_ppm = min(1_000_000, int(round((ref + float(increase)) * 1_000_000)))
        arrays += _array(ctype, f"{name}_input{k}_low", low)
        arrays += _array(ctype, f"{name}_input{k}_high", high)
        per_input.append({"k": k, "ctype": ctype, "lo": lo, "hi": hi, "size": size,
                          "period": period, "limit_ppm": limit_ppm, "ref": ref,
                          "name": user_text(entry["name"]), "dtype": entry["dtype"],
                          "per": "feature" if features else "channel"})
    n = len(inputs)
    guard = f"{upper}_INPUT_GUARD_H_"
    header = [
        f"/* {name}_input_guard.h: generated by tflc from the calibration profile of the model",
        f" * (sha256 {profile['model_sha256']}). See {name}_input_guard.c. */",
        f"#ifndef {guard}", f"#define {guard}", "",
        "#include <stddef.h>", "#include <stdint.h>", "",
        "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
        f"#define {upper}_INPUT_GUARD_INPUTS {n}",
        f"#define {upper}_INPUT_GUARD_WINDOW {window} /* samples per alarm window */",
    ]
    for p in per_input:
        header.append(f"#define {upper}_INPUT{p['k']}_VALUES {p['size']} /* {p['name']}, "
                      f"{p['dtype']} */")
    header += [
        "",
        "typedef struct {",
        f"  uint32_t samples[{n}];         /* samples checked, per input */",
        f"  uint32_t saturated_low[{n}];   /* values at the integer range's minimum */",
        f"  uint32_t saturated_high[{n}];  /* values at its maximum */",
        f"  uint32_t out_of_range[{n}];    /* values outside their calibrated [low, high] */",
        f"  uint32_t window_samples[{n}];  /* the current window */",
        f"  uint32_t window_saturated[{n}];",
        f"  uint32_t alarms[{n}];          /* windows whose saturation exceeded the threshold */",
        f"  uint8_t alarm[{n}];            /* the last full window did */",
        f"}} {name}_InputGuard;",
        "",
        f"void {name}_InputGuard_Reset({name}_InputGuard* guard);",
    ]
    for p in per_input:
        header += [
            f"/* Input {p['k']}: count {upper}_INPUT{p['k']}_VALUES values about to be fed to "
            "the model;",
            " * returns guard->alarm for this input (1: the last full window drifted). */",
            f"int {name}_InputGuard_Check{p['k']}({name}_InputGuard* guard, const {p['ctype']}* "
            "values);",
        ]
    header += ["", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
    source = [
        f"/* {name}_input_guard.c: generated by tflc. Per input: the calibrated range of each",
        " * feature (or channel) and the saturation threshold, from profile.json. */",
        f'#include "{name}_input_guard.h"', "", "#include <string.h>", "",
        *arrays, "",
        f"void {name}_InputGuard_Reset({name}_InputGuard* guard) {{",
        "  memset(guard, 0, sizeof(*guard));",
        "}", "",
    ]
    for p in per_input:
        k = p["k"]
        source += [
            f"/* input {k} ({p['name']}): range per {p['per']}; calibrated share at the limits "
            f"{p['ref']:.6f}, alarm above {p['limit_ppm']} per million */",
            f"int {name}_InputGuard_Check{k}({name}_InputGuard* guard, const {p['ctype']}* values) {{",
            "  uint32_t low_count = 0, high_count = 0, outside = 0;",
            "  size_t i;",
            f"  for (i = 0; i < {p['size']}u; ++i) {{",
            f"    const {p['ctype']} v = values[i];",
            f"    const size_t f = i % {p['period']}u;",
            f"    if (v <= {p['lo']}) ++low_count;",
            f"    if (v >= {p['hi']}) ++high_count;",
            f"    if (v < {name}_input{k}_low[f] || v > {name}_input{k}_high[f]) ++outside;",
            "  }",
            f"  guard->samples[{k}] += 1u;",
            f"  guard->saturated_low[{k}] += low_count;",
            f"  guard->saturated_high[{k}] += high_count;",
            f"  guard->out_of_range[{k}] += outside;",
            f"  guard->window_samples[{k}] += 1u;",
            f"  guard->window_saturated[{k}] += low_count + high_count;",
            f"  if (guard->window_samples[{k}] >= {upper}_INPUT_GUARD_WINDOW) {{",
            f"    const uint64_t values_in_window = (uint64_t){window}u * {p['size']}u;",
            f"    const uint8_t over = (uint64_t)guard->window_saturated[{k}] * 1000000u >"
            f" (uint64_t){p['limit_ppm']}u * values_in_window;",
            f"    guard->alarm[{k}] = over;",
            f"    guard->alarms[{k}] += over;",
            f"    guard->window_samples[{k}] = 0u;",
            f"    guard->window_saturated[{k}] = 0u;",
            "  }",
            f"  return guard->alarm[{k}];",
            "}", "",
        ]
    return "\n".join(header), "\n".join(source)
