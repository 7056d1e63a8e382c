"""Load: calibration and evaluation data, checked against the model's inputs.

Calibration data decides every activation scale in the int8 model, so it is validated before
any slow work: shapes and dtypes must fit the model's inputs (the error says expected vs got),
and NaN or inf values are refused, since one of them silently ruins a scale.

Accepted files: `.npz` (one array per input, named after the input, or a single array `x`),
`.npy` (one-input models), and a folder of images (png/jpg) resized to the input shape and
normalised as `--normalize` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tflc.errors import BadInput
from tflc.fileio import sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
NORMALIZATIONS = {
    # name: (offset, divisor) so that value = (pixel - offset) / divisor
    "unit": (0.0, 255.0),  # [0, 1], the usual `Rescaling(1/255)` convention
    "symmetric": (127.5, 127.5),  # [-1, 1], MobileNet-style preprocessing
    "raw": (0.0, 1.0),  # [0, 255] as floats, for models that normalise inside
}


@dataclass
class SampleSet:
    """Arrays for a model's inputs (one per input, same length), with labels if any."""

    x: list[np.ndarray]
    y: np.ndarray | None
    source: str
    sha256: str | None

    def __len__(self) -> int:
        return len(self.x[0])

    def to_dict(self) -> dict:
        return {"source": self.source, "samples": len(self), "sha256": self.sha256,
                "labelled": self.y is not None}


def load_calibration(path, inputs, count: int = 200, seed: int = 0, normalize: str = "unit") -> SampleSet:
    """Read calibration data for `inputs` (IOSpecs), keeping `count` samples drawn with `seed`."""
    path = Path(path)
    if path.is_dir():
        if len(inputs) != 1:
            raise BadInput(f"{path}: an image folder can only calibrate a one-input model")
        samples = SampleSet([load_images(path, inputs[0], normalize)], None, str(path), sha256_file(path))
    else:
        samples = _load_arrays(path, inputs, labels=False)
    _validate(samples, inputs, str(path))
    return _subsample(samples, count, seed)


def load_labelled(path, inputs, require_labels: bool = True) -> SampleSet:
    """Read an evaluation (or training) `.npz` holding `x` (or one array per input) and `y`.

    Evaluation data may come without `y`: then tflc measures output fidelity instead of accuracy.
    """
    path = Path(path)
    samples = _load_arrays(path, inputs, labels=require_labels)
    _validate(samples, inputs, str(path))
    return samples


def random_calibration(inputs, count: int = 200, seed: int = 0, low: float = 0.0, high: float = 1.0) -> SampleSet:
    """Synthetic calibration data, uniform in [low, high]; accuracy will suffer, and we say so."""
    rng = np.random.default_rng(seed)
    x = [rng.uniform(low, high, size=(count,) + tuple(spec.shape[1:])).astype(np.float32) for spec in inputs]
    return SampleSet(x, None, f"random uniform [{low}, {high}], seed {seed}", None)


def _load_arrays(path: Path, inputs, labels: bool) -> SampleSet:
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    names = [spec.name for spec in inputs]
    try:
        if path.suffix == ".npy":
            if labels:
                raise BadInput(f"{path}: evaluation data needs labels; use an .npz with arrays x and y")
            if len(inputs) != 1:
                raise BadInput(f"{path}: a .npy holds one array but the model has inputs {names}; use an .npz")
            return SampleSet([np.load(path, allow_pickle=False)], None, str(path), sha256_file(path))
        if path.suffix != ".npz":
            raise BadInput(f"{path}: unsupported data file; use .npz, .npy or a folder of images")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise BadInput(f"{path}: cannot read the data file ({exc})") from None
    y = arrays.pop("y", None)
    if labels and y is None:
        raise BadInput(f"{path}: no labels; evaluation data needs an array named y (and x)")
    if all(name in arrays for name in names):
        x = [arrays[name] for name in names]
    elif "x" in arrays and len(inputs) == 1:
        x = [arrays["x"]]
    elif len(arrays) == 1 and len(inputs) == 1:
        x = [next(iter(arrays.values()))]
    else:
        raise BadInput(
            f"{path}: arrays {sorted(arrays)} do not match the model's inputs {names}; "
            f"name one array per input{' or use x for the only input' if len(inputs) == 1 else ''}"
        )
    return SampleSet(x, y, str(path), sha256_file(path))


def load_images(folder: Path, spec, normalize: str) -> np.ndarray:
    """Every image below `folder`, resized to `spec` (an IOSpec) and scaled as `normalize` says."""
    from PIL import Image

    if normalize not in NORMALIZATIONS:
        raise BadInput(f"--normalize {normalize}: expected one of {', '.join(NORMALIZATIONS)}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInput(f"{folder}: no images (png, jpg, bmp) found in the folder")
    if len(spec.shape) != 4 or spec.shape[-1] not in (1, 3):
        raise BadInput(f"{folder}: images need an input of shape (1, H, W, 1 or 3), the model has {spec.shape}")
    _, height, width, channels = spec.shape
    offset, divisor = NORMALIZATIONS[normalize]
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                image = image.convert("L" if channels == 1 else "RGB").resize((width, height))
                pixels = np.asarray(image, dtype=np.float32)
        except OSError as exc:
            raise BadInput(f"{file}: cannot read the image ({exc})") from None
        images.append(((pixels - offset) / divisor).reshape(height, width, channels))
    return np.stack(images)


def _validate(samples: SampleSet, inputs, source: str) -> None:
    lengths = {len(x) for x in samples.x}
    if not samples.x or 0 in lengths:
        raise BadInput(f"{source}: the data set is empty; give at least one sample (200 recommended)")
    if len(lengths) > 1:
        raise BadInput(f"{source}: inputs have different numbers of samples {sorted(lengths)}")
    for array, spec in zip(samples.x, inputs):
        expected = tuple(spec.shape[1:])
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise BadInput(f"{source}: input {spec.name!r} has dtype {array.dtype}, expected numbers (float32)")
        if tuple(array.shape[1:]) != expected:
            raise BadInput(
                f"{source}: input {spec.name!r} expects samples of shape {_fmt(expected)} "
                f"(array (N, {', '.join(map(str, expected))})), got an array of shape {_fmt(array.shape)}"
            )
        bad = int(np.count_nonzero(~np.isfinite(array))) if np.issubdtype(array.dtype, np.floating) else 0
        if bad:
            raise BadInput(f"{source}: input {spec.name!r} holds {bad} NaN or inf values; clean the data first")
    if samples.y is not None and len(samples.y) != len(samples.x[0]):
        raise BadInput(f"{source}: {len(samples.y)} labels for {len(samples.x[0])} samples")


def _subsample(samples: SampleSet, count: int, seed: int) -> SampleSet:
    n = len(samples)
    if count <= 0:
        raise BadInput(f"--calibration-samples {count}: must be at least 1")
    if n > count:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
        samples.x = [x[keep] for x in samples.x]
        samples.y = samples.y[keep] if samples.y is not None else None
    samples.x = [np.ascontiguousarray(x, dtype=np.float32) for x in samples.x]
    return samples


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


