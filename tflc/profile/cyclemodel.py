"""A per-op cycle model for Cortex-M (TFLite Micro-class runtimes), for targets without a board.

Why a model: no MCU is attached here, and the per-op profiler of TFLite Micro needs firmware.
The model is the simplest one the published figures can pin down: cycles per MAC for each
MAC-heavy op class (standard conv, depthwise conv, fully connected), fitted by least squares on
the MLPerf Tiny v1.1 closed-division results of the NUCLEO-L4R5ZI (Cortex-M4F, 120 MHz), plus
an assumed (not fitted) 2 cycles per output byte for ops without MACs (copies, pools,
elementwise, softmax). Four published points and three fitted numbers: the error on each point is
reported, never hidden. It is an estimate, and every figure it produces is labelled so.

The calibration runtime is ST's X-CUBE-AI (STM32Cube.AI), the runtime of that MLPerf Tiny v1.1
submission, NOT TensorFlow Lite Micro with CMSIS-NN: expect TFLite Micro to be slower. On other
cores (Cortex-M7, Cortex-M55) the same cycle counts are used at the target's clock; they were not
calibrated there (the M7's dual issue and the M55's Helium vector unit make them pessimistic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
CYCLES_PER_OTHER_BYTE = 2.0  # assumed, not fitted: ops without MACs move bytes
SOURCE = ("MLPerf Tiny v1.1 (closed division), ST NUCLEO-L4R5ZI (Cortex-M4F, 120 MHz), "
          "runtime ST X-CUBE-AI")
CLOCK_MHZ = 120.0


@dataclass(frozen=True)
class CalibrationPoint:
    """One published measurement, with the MACs per class counted from the reference model."""

    model: str
    inferences_per_s: float
    macs: tuple[int, int, int]   # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED (tflc's count)
    other_bytes: int             # output bytes of the ops without MACs

    @property
    def cycles(self) -> float:
        return CLOCK_MHZ * 1e6 / self.inferences_per_s


# Throughputs as published (MLPerf Tiny v1.1 results table, NUCLEO-L4R5ZI); MACs counted by
# tflc.profile.counts on the MLPerf Tiny reference int8 models (kws_ref_model_int8,
# vww_96_int8, resnet8_int8, ad01_int8).
POINTS = (
    CalibrationPoint("kws (DS-CNN)", 15.9, (2368000, 288000, 768), 140),
    CalibrationPoint("vww (MobileNetV1 0.25, 96x96)", 8.4, (6690816, 798336, 512), 514),
    CalibrationPoint("ic (ResNet-8)", 4.7, (12500992, 0, 640), 28810),
    CalibrationPoint("ad (FC autoencoder)", 146.0, (0, 0, 264192), 0),
)


def fit(points=POINTS) -> np.ndarray:
    """Cycles per MAC for each class in CLASSES (least squares over the points)."""
    a = np.array([p.macs for p in points], dtype=float)
    y = np.array([p.cycles - CYCLES_PER_OTHER_BYTE * p.other_bytes for p in points])
    coefficients, *_ = np.linalg.lstsq(a, y, rcond=None)
    return np.maximum(coefficients, 0.0)


COEFFICIENTS = fit()


def predict_cycles(macs_by_class, other_bytes: int, coefficients=COEFFICIENTS) -> float:
    return float(np.dot(coefficients, macs_by_class) + CYCLES_PER_OTHER_BYTE * other_bytes)


def calibration_errors() -> list[dict]:
    """Per published point: measured and modelled cycles and the relative error."""
    rows = []
    for p in POINTS:
        model = predict_cycles(p.macs, p.other_bytes)
        rows.append({"model": p.model, "published_ms": round(p.cycles / CLOCK_MHZ / 1e3, 3),
                     "estimated_ms": round(model / CLOCK_MHZ / 1e3, 3),
                     "error": round(model / p.cycles - 1.0, 4)})
    return rows


def op_cycles(op: str, macs: int, output_bytes: int) -> float:
    """Estimated cycles of one op on the calibration core."""
    if op in CLASSES and macs:
        vector = [macs if op == name else 0 for name in CLASSES]
        return predict_cycles(vector, 0)
    return CYCLES_PER_OTHER_BYTE * output_bytes


def describe() -> str:
    errors = ", ".join(f"{row['model'].split()[0]} {row['error'] * 100:+.1f}%"
                       for row in calibration_errors())
    per_mac = ", ".join(f"{name} {value:.2f}" for name, value in zip(CLASSES, COEFFICIENTS))
    return (f"estimate: cycle model calibrated on {SOURCE}; cycles/MAC {per_mac}; "
            f"{CYCLES_PER_OTHER_BYTE:g} cycles per output byte of other ops (assumed); "
            f"error on the calibration points: {errors}")
