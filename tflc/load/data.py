"""Load: data for calibration, evaluation and training, checked against the model.

Calibration data decides every activation scale in the int8 model, and labelled data decides
every accuracy figure, so both are validated before any slow work, by one check
(`check_samples`): one array per model input, numbers (not strings), sample shapes that fit the
inputs (the error says expected vs got), the same number of samples everywhere, no NaN or inf
(one of them silently ruins a scale), and labels that are class indices inside the model's
output.

Sources, chosen by what the user passes:

    data.npz          one array per input (named after it) or a single `x`; labels in `y`
    data.npy          one array, for one-input models (calibration only: it has no labels)
    images/           calibration: every image below it; labelled: one subfolder per class
                      (classes in sorted folder order); resized to the input and scaled as
                      `--normalize` says: unit [0, 1], symmetric [-1, 1], raw [0, 255]
    pkg.mod:function  labelled data only: a function returning a tf.data.Dataset of (x, y),
                      batched or not (`path/to/file.py:function` works too)

Array files are read with their headers checked against the file's size first, so a file that
claims 10^11 samples is refused in a millisecond instead of exhausting memory; pickled objects are
never loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import zipfile
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
    """Samples for a model's inputs: arrays in memory (`x`, one per input, and labels `y` if
    any), or a tf.data pipeline (`dataset`) yielding (x, y) for training."""

    source: str
    x: list[np.ndarray] | None = None
    y: np.ndarray | None = None
    sha256: str | None = None
    dataset: object | None = None  # tf.data.Dataset yielding (x, y)
    batched: bool = False

    def __len__(self) -> int:
        return len(self.x[0])

    @property
    def in_memory(self) -> bool:
        return self.x is not None

    @property
    def num_samples(self) -> int | None:
        return len(self.x[0]) if self.in_memory else None

    def to_dict(self) -> dict:
        return {"source": self.source, "samples": len(self), "sha256": self.sha256,
                "labelled": self.y is not None}

    def fit_inputs(self, batch_size: int):
        """What `model.fit` takes: (x, y, batch_size, shuffle) for arrays, else a dataset.

        Shuffling follows the global seed the stage sets (training.set_seed)."""
        if self.in_memory:
            x = self.x[0] if len(self.x) == 1 else list(self.x)
            return {"x": x, "y": self.y, "batch_size": batch_size, "shuffle": True}
        dataset = self.dataset if self.batched else self.dataset.batch(batch_size)
        return {"x": dataset}

    def sample_inputs(self, count: int) -> list[np.ndarray]:
        """The first `count` samples' inputs, one array per model input (calibration, checks)."""
        if self.in_memory:
            return [a[:count] for a in self.x]
        return materialize(self, limit=count).x


# --------------------------------------------------------------------------- entry functions


def load_calibration(path, inputs, count: int = 200, seed: int = 0, normalize: str = "unit") -> SampleSet:
    """Read calibration data for `inputs` (IOSpecs), keeping `count` samples drawn with `seed`."""
    path = Path(path)
    if path.is_dir():
        if len(inputs) != 1:
            raise BadInput(f"{path}: an image folder can only calibrate a one-input model")
        samples = SampleSet(str(path), [load_images(path, inputs[0], normalize)], None, sha256_file(path))
    else:
        samples = _load_arrays(path, inputs, labels=False)
    check_samples(samples, inputs)
    return _subsample(samples, count, seed)


def load_labelled(source, inputs, num_classes: int | None = None, *, role: str = "--eval-data",
                  normalize: str = "unit", require_labels: bool = True) -> SampleSet:
    """Labelled data (a .npz path, a folder of class subfolders, `module:function`, or a
    SampleSet already loaded) checked against the model's `inputs` (IOSpecs) and, when
    `num_classes` is given (1 = one binary unit), its labels against the output.

    Evaluation data may come without `y` (`require_labels=False`): then tflc measures output
    fidelity instead of accuracy.
    """
    if isinstance(source, SampleSet):
        data = source
    elif isinstance(source, (str, os.PathLike)):
        data = _load_source(str(source), inputs, role, normalize, require_labels)
    else:
        raise BadInput(f"{role}: expected a .npz file, an image folder or module:function, "
                       f"got {type(source).__name__}")
    if require_labels and data.in_memory and data.y is None:
        raise BadInput(f"{data.source}: no labels; {role} needs an array named y (and x)")
    if data.in_memory:
        check_samples(data, inputs)
        data.x = [np.asarray(a, dtype=np.float32) if a.dtype != np.float32 else a for a in data.x]
        if data.y is not None and num_classes is not None:
            data.y = check_labels(data.source, data.y, num_classes)
    else:
        _check_dataset(data, inputs, num_classes)
    return data


def random_calibration(inputs, count: int = 200, seed: int = 0, low: float = 0.0, high: float = 1.0) -> SampleSet:
    """Synthetic calibration data, uniform in [low, high]; accuracy will suffer, and we say so."""
    rng = np.random.default_rng(seed)
    x = [rng.uniform(low, high, size=(count,) + tuple(spec.shape[1:])).astype(np.float32) for spec in inputs]
    return SampleSet(f"random uniform [{low}, {high}], seed {seed}", x, None, None)


def output_classes(outputs) -> int | None:
    """How many classes labels may name for a model's first output (1: one binary unit), or
    None when its last dimension is free."""
    if not outputs or not outputs[0].shape:
        return None
    last = outputs[0].shape[-1]
    return int(last) if last else None


def materialize(data: SampleSet, limit: int | None = None) -> SampleSet:
    """Pull a dataset into memory (evaluation sets, calibration samples)."""
    if data.in_memory:
        if limit is None:
            return data
        return SampleSet(data.source, [a[:limit] for a in data.x],
                         None if data.y is None else data.y[:limit], data.sha256)
    xs, ys, count = [], [], 0
    dataset = data.dataset if data.batched else data.dataset.batch(256)
    for x, y in dataset:
        x = list(x) if isinstance(x, (list, tuple)) else [x]
        xs.append([np.asarray(a) for a in x])
        ys.append(np.asarray(y))
        count += len(ys[-1])
        if limit is not None and count >= limit:
            break
    if not ys:
        raise BadInput(f"{data.source}: the dataset yielded no samples")
    x = [np.concatenate([batch[i] for batch in xs]) for i in range(len(xs[0]))]
    y = np.concatenate(ys)
    if limit is not None:
        x, y = [a[:limit] for a in x], y[:limit]
    return SampleSet(data.source, x, y)


# ----------------------------------------------------------------------------------- sources


def _load_source(text: str, inputs, role: str, normalize: str, require_labels: bool) -> SampleSet:
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_class_folders(path, inputs, normalize)
    if path.exists():
        return _load_arrays(path, inputs, labels=require_labels)
    if ":" in text and not text.endswith((".npz", ".npy", "/")):
        return _load_callable(text, role)
    raise BadInput(f"{role} {text}: no such file or folder; give a .npz with x and y, a folder "
                   "with one subfolder of images per class, or module:function")


def _load_class_folders(root: Path, inputs, normalize: str) -> SampleSet:
    """One subfolder per class; the images are read the way calibration folders are."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BadInput(f"{root}: no class subfolders; expected one subfolder of images per class "
                       "(the folder name is the class, in sorted order)")
    if len(inputs) != 1:
        raise BadInput(f"{root}: an image folder can only train a one-input model")
    images, labels = [], []
    for label, name in enumerate(classes):
        pixels = load_images(root / name, inputs[0], normalize)
        images.append(pixels)
        labels.append(np.full(len(pixels), label, np.int64))
    return SampleSet(str(root), [np.concatenate(images)], np.concatenate(labels), sha256_file(root))


def _load_callable(text: str, role: str) -> SampleSet:
    module_name, _, function_name = text.rpartition(":")
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if spec is None or not Path(module_name).is_file():
                raise ModuleNotFoundError(module_name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BadInput(f"{role} {text}: cannot import {module_name!r} ({exc})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise BadInput(f"{role} {text}: {module_name} has no function {function_name!r}")
    from tflc.tf_env import import_tensorflow

    tf = import_tensorflow()
    dataset = function()
    if not isinstance(dataset, tf.data.Dataset):
        raise BadInput(f"{role} {text}: returned {type(dataset).__name__}, expected a "
                       "tf.data.Dataset of (x, y)")
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise BadInput(f"{role} {text}: the dataset must yield (x, y) pairs; it yields {spec}")
    return SampleSet(text, dataset=dataset)


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


def _load_arrays(path: Path, inputs, labels: bool) -> SampleSet:
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    names = [spec.name for spec in inputs]
    if path.suffix == ".npy":
        if labels:
            raise BadInput(f"{path}: labelled data needs labels; use an .npz with arrays x and y")
        if len(inputs) != 1:
            raise BadInput(f"{path}: a .npy holds one array but the model has inputs {names}; use an .npz")
        return SampleSet(str(path), [read_npy_file(path)], None, sha256_file(path))
    if path.suffix != ".npz":
        raise BadInput(f"{path}: unsupported data file; use .npz, .npy or a folder of images")
    arrays = read_npz_file(path)
    y = arrays.pop("y", None)
    if labels and y is None:
        raise BadInput(f"{path}: no labels; labelled data needs an array named y (and x)")
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
    return SampleSet(str(path), x, y, sha256_file(path))


def read_npy_file(path: Path) -> np.ndarray:
    """One .npy array, its header checked against the file's size before anything is allocated."""
    try:
        with open(path, "rb") as handle:
            return _read_npy(handle, path.stat().st_size, str(path))
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the data file ({exc.strerror or exc})") from None


def read_npz_file(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, each member's header checked against its stored size."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[: -len(".npy")]
                with archive.open(info) as member:
                    arrays[name] = _read_npy(member, info.file_size, f"{path}: array {name!r}")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BadInput(f"{path}: cannot read the data file ({exc}); expected an .npz written by "
                       "numpy.savez") from None
    return arrays


def _read_npy(handle, size: int, where: str) -> np.ndarray:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = header(handle)
    except (ValueError, EOFError, SyntaxError) as exc:
        raise BadInput(f"{where}: not a numpy array file ({exc})") from None
    if dtype.hasobject:
        raise BadInput(f"{where}: holds Python objects, which tflc never unpickles; save numbers")
    needed = math.prod(shape) * dtype.itemsize
    if needed > size:
        raise BadInput(f"{where}: its header claims shape {shape} ({needed:,} bytes) but the file "
                       f"holds {size:,} bytes; the file is truncated or corrupt")
    data = bytearray(handle.read(needed))
    if len(data) < needed:
        raise BadInput(f"{where}: the file ends after {len(data):,} of {needed:,} data bytes; it is "
                       "truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _subsample(samples: SampleSet, count: int, seed: int) -> SampleSet:
    n = len(samples)
    if n > count:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
        samples.x = [x[keep] for x in samples.x]
        samples.y = samples.y[keep] if samples.y is not None else None
    samples.x = [np.ascontiguousarray(x, dtype=np.float32) for x in samples.x]
    return samples


# -------------------------------------------------------------------------------- the checks


def check_samples(samples: SampleSet, inputs) -> None:
    """The one check every in-memory data set passes before use (see the module doc)."""
    source = samples.source
    if len(samples.x) != len(inputs):
        raise BadInput(f"{source}: holds {len(samples.x)} input array(s) but the model has "
                       f"{len(inputs)} inputs ({', '.join(s.name for s in inputs)})")
    lengths = {len(x) for x in samples.x}
    if not samples.x or 0 in lengths:
        raise BadInput(f"{source}: the data set is empty; give at least one sample (200 recommended)")
    if len(lengths) > 1:
        raise BadInput(f"{source}: inputs have different numbers of samples {sorted(lengths)}")
    for array, spec in zip(samples.x, inputs, strict=True):
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise BadInput(f"{source}: input {spec.name!r} has dtype {array.dtype}, expected numbers (float32)")
        _check_shape(source, spec, tuple(array.shape[1:]), tuple(array.shape))
        bad = int(np.count_nonzero(~np.isfinite(array))) if np.issubdtype(array.dtype, np.floating) else 0
        if bad:
            raise BadInput(f"{source}: input {spec.name!r} holds {bad} NaN or inf values; clean the data first")
    if samples.y is not None and len(samples.y) != len(samples.x[0]):
        raise BadInput(f"{source}: {len(samples.y)} labels for {len(samples.x[0])} samples")


def _check_shape(source: str, spec, shape: tuple, array_shape: tuple | None = None) -> None:
    """Sample shape against the input's (a free dimension fits anything); an array's whole
    shape is shown when there is one, a dataset's element shape otherwise."""
    expected = tuple(spec.shape[1:])
    fits = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
    if fits:
        return
    shown = _fmt(expected)
    if array_shape is not None:
        raise BadInput(f"{source}: input {spec.name!r} expects samples of shape {shown} "
                       f"(array (N, {shown[1:-1]})), got an array of shape {_fmt(array_shape)}")
    raise BadInput(f"{source}: x has samples of shape {tuple(shape)} but the model's input "
                   f"'{spec.name}' expects {shown}; reshape the data to match")


def check_labels(source: str, y, num_classes: int) -> np.ndarray:
    """Labels as class indices 0..classes-1 (one-hot rows become indices); anything else is
    refused naming the file, so no accuracy is ever computed from labels that cannot be right."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise BadInput(f"{source}: y holds {y.dtype} values; expected class indices (whole numbers)")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise BadInput(f"{source}: y holds NaN or inf; expected class indices (whole numbers)")
    binary = num_classes == 1
    classes = 2 if binary else num_classes
    if y.ndim == 2 and y.shape[1] == classes and classes > 2:
        y = y.argmax(axis=1)  # one-hot rows -> class indices
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise BadInput(f"{source}: y has shape {y.shape}; expected one class index per sample "
                       f"(or one-hot rows of {classes})")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise BadInput(f"{source}: y holds non-integer values; expected class indices 0.."
                           f"{classes - 1}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise BadInput(f"{source}: y holds labels {int(y.min())}..{int(y.max())} but the model's "
                       f"output has {classes} classes (0..{classes - 1}); check the labels or the "
                       "model")
    return y


def _check_dataset(data: SampleSet, inputs, num_classes: int | None) -> None:
    x_spec, _ = data.dataset.element_spec
    specs = list(x_spec) if isinstance(x_spec, (list, tuple)) else [x_spec]
    if len(specs) != len(inputs):
        raise BadInput(f"{data.source}: the dataset yields {len(specs)} input(s) but the model has "
                       f"{len(inputs)}")
    first = specs[0].shape
    data.batched = first.rank is not None and first.rank == len(inputs[0].shape)
    for spec, want in zip(specs, inputs, strict=True):
        dims = tuple(spec.shape.as_list()[1:] if data.batched else spec.shape.as_list())
        if len(dims) == len(want.shape) - 1:  # free dimensions in the dataset fit anything
            dims = tuple(d if d is not None else w
                         for d, w in zip(dims, want.shape[1:], strict=True))
        _check_shape(data.source, want, dims)
    label_spec = data.dataset.element_spec[1]
    label_rank = label_spec.shape.rank
    if label_rank == (2 if data.batched else 1) and label_spec.shape[-1] == (num_classes or 0) > 2:
        from tflc.tf_env import import_tensorflow

        tf = import_tensorflow()  # one-hot rows -> class indices, as for arrays
        data.dataset = data.dataset.map(lambda x, y: (x, tf.argmax(y, axis=-1)))
    # Labels are checked on the first batch: cheap, and catches the usual off-by-one class ids.
    if num_classes is not None:
        check_labels(data.source, materialize(data, limit=256).y, num_classes)


def _fmt(shape) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"
