"""Labelled data for training and evaluating inside the compression pipeline.

Three forms, chosen by what the user passes:

    data.npz          `x` and `y` (or one array per model input name, plus `y`)
    images/           one subfolder per class, images inside (classes in sorted folder order,
                      resized to the model's input and scaled as `normalize` says, like
                      calibration image folders: unit [0, 1], symmetric [-1, 1], raw [0, 255])
    pkg.mod:function  a function returning a tf.data.Dataset of (x, y), batched or not
                      (`path/to/file.py:function` works too)

.npz files and the image decoding are `tflc.load.data`'s; this module adds labels by folder, datasets
from code, and the checks a trainer needs. Everything is checked against the model before any
training starts: sample shapes against the model's inputs, labels against the number of classes
its output has, so a mismatch is one clear line instead of an error deep inside `fit`. Labels are
class indices (or one-hot rows).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tflc.errors import BadInput


@dataclass
class TrainingData:
    """Labelled samples in memory (`x`, `y`) or a tf.data pipeline (`dataset`)."""

    source: str
    x: list[np.ndarray] | None = None
    y: np.ndarray | None = None
    dataset: object | None = None  # tf.data.Dataset yielding (x, y)
    batched: bool = False

    @property
    def in_memory(self) -> bool:
        return self.x is not None

    @property
    def num_samples(self) -> int | None:
        return len(self.y) if self.y is not None else None

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


def load_labelled_data(source, inputs, num_classes: int, role: str = "--train-data",
                       normalize: str = "unit") -> TrainingData:
    """Load labelled data (a .npz path, an image folder, `module:function`, or arrays with .x/.y)
    and check it against the model's `inputs` (keras_io IOSpecs) and its number of classes."""
    if isinstance(source, TrainingData):
        data = source
    elif hasattr(source, "x") and hasattr(source, "y") and not isinstance(source, (str, Path)):
        x = list(source.x) if isinstance(source.x, (list, tuple)) else [source.x]
        data = TrainingData(source=getattr(source, "source", None) or f"{role} (arrays)",
                            x=[np.asarray(a) for a in x],
                            y=None if source.y is None else np.asarray(source.y))
    elif isinstance(source, (str, os.PathLike)):
        data = _load_source(str(source), inputs, role, normalize)
    else:
        raise BadInput(f"{role}: expected a .npz file, an image folder or module:function, "
                       f"got {type(source).__name__}")
    if data.in_memory:
        _check_arrays(data, inputs, num_classes)
    else:
        _check_dataset(data, inputs, num_classes)
    return data


def materialize(data: TrainingData, limit: int | None = None) -> TrainingData:
    """Pull a dataset into memory (evaluation sets, calibration samples)."""
    if data.in_memory:
        if limit is None:
            return data
        return TrainingData(source=data.source, x=[a[:limit] for a in data.x], y=data.y[:limit])
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
    return TrainingData(source=data.source, x=x, y=y)


# ------------------------------------------------------------------------------------ sources


def _load_source(text: str, inputs, role: str, normalize: str) -> TrainingData:
    from tflc.load import data as data_io

    path = Path(text).expanduser()
    if path.is_dir():
        return _load_image_folder(path, inputs, normalize)
    if path.exists():
        samples = data_io.load_labelled(path, inputs)
        return TrainingData(source=str(path), x=samples.x, y=samples.y)
    if ":" in text and not text.endswith((".npz", "/")):
        return _load_callable(text, role)
    raise BadInput(f"{role} {text}: no such file or folder; give a .npz with x and y, a folder "
                   "with one subfolder of images per class, or module:function")


def _load_image_folder(root: Path, inputs, normalize: str) -> TrainingData:
    """One subfolder per class; the images are read the way calibration folders are."""
    from tflc.load import data as data_io

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BadInput(f"{root}: no class subfolders; expected one subfolder of images per class "
                       "(the folder name is the class, in sorted order)")
    if len(inputs) != 1:
        raise BadInput(f"{root}: an image folder can only train a one-input model")
    images, labels = [], []
    for label, name in enumerate(classes):
        pixels = data_io.load_images(root / name, inputs[0], normalize)
        images.append(pixels)
        labels.append(np.full(len(pixels), label, np.int64))
    return TrainingData(source=str(root), x=[np.concatenate(images)], y=np.concatenate(labels))


def _load_callable(text: str, role: str) -> TrainingData:
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
    return TrainingData(source=text, dataset=dataset)


# ------------------------------------------------------------------------------------- checks


def _check_arrays(data: TrainingData, inputs, num_classes: int) -> None:
    if len(data.x) != len(inputs):
        raise BadInput(f"{data.source}: holds {len(data.x)} input array(s) but the model has "
                       f"{len(inputs)} inputs ({', '.join(s.name for s in inputs)})")
    if data.y is None:
        raise BadInput(f"{data.source}: has no labels `y`; the pipeline needs labelled data")
    count = len(data.y)
    for array, spec in zip(data.x, inputs, strict=True):
        what = "x" if len(inputs) == 1 else spec.name
        _check_shape(data.source, spec, tuple(array.shape[1:]), what)
        if len(array) != count:
            raise BadInput(f"{data.source}: {len(array)} samples in the inputs but {count} labels "
                           "in y; they must match")
        if not np.issubdtype(array.dtype, np.number):
            raise BadInput(f"{data.source}: input data has dtype {array.dtype}; expected numbers")
    data.x = [np.asarray(a, dtype=np.float32) if a.dtype != np.float32 else a for a in data.x]
    data.y = _check_labels(data.source, data.y, num_classes)


def _check_shape(source: str, spec, shape: tuple, what: str) -> None:
    expected = tuple(spec.shape[1:])
    fits = len(shape) == len(expected) and all(
        e is None or e == s for e, s in zip(expected, shape, strict=True))
    if not fits:
        shown = "(" + ", ".join("any" if d is None else str(d) for d in expected) + ")"
        raise BadInput(f"{source}: {what} has samples of shape {tuple(shape)} but the model's input "
                       f"'{spec.name}' expects {shown}; reshape the data to match")


def _check_labels(source: str, y, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
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


def _check_dataset(data: TrainingData, inputs, num_classes: int) -> None:
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
        _check_shape(data.source, want, dims, "x")
    label_spec = data.dataset.element_spec[1]
    label_rank = label_spec.shape.rank
    if label_rank == (2 if data.batched else 1) and label_spec.shape[-1] == num_classes > 2:
        from tflc.tf_env import import_tensorflow

        tf = import_tensorflow()  # one-hot rows -> class indices, as for arrays
        data.dataset = data.dataset.map(lambda x, y: (x, tf.argmax(y, axis=-1)))
    # Labels are checked on the first batch: cheap, and catches the usual off-by-one class ids.
    sample = materialize(data, limit=256)
    _check_labels(data.source, sample.y, num_classes)
