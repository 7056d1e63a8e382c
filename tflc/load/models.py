"""Load: any Keras model a user brings, as one `LoadedModel`.

Users bring Keras 3 `.keras` files, tf_keras (Keras 2) `.h5` and `.keras` files, and SavedModel
folders, some written by TensorFlow releases years old. `load_model` tells them apart by content
(not only by suffix), refuses files that would execute code on load unless the user opts in
(Keras' own safe mode does the same for `.keras` files, but not for `.h5`), and reports every
problem as one line naming the file.

The result keeps the model object together with what the rest of the pipeline needs: input and
output specs with fixed shapes, the parameter count and the file's hash.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tflc.errors import BadInput, first_line
from tflc.fileio import sha256_file
from tflc.load.safety import parse_config, refuse_code, saved_model_configs, short_class_name, walk

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class IOSpec:
    """A model input or output: name, shape (batch first; None for free dimensions), dtype."""

    name: str
    shape: tuple
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class LoadedModel:
    """A model ready for the pipeline: the object itself plus its fixed-shape signature."""

    path: Path
    format: str  # "keras3" | "tf_keras" | "saved_model"
    model: object = field(repr=False)
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    param_count: int
    sha256: str

    @property
    def is_keras(self) -> bool:
        return self.format in ("keras3", "tf_keras")

    def with_model(self, model) -> LoadedModel:
        """The same model description around another (optimized) tf_keras model."""
        return replace(self, model=model, format="tf_keras", param_count=int(model.count_params()))

    def predict(self, inputs: list[np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
        """Run the float model on whole arrays (one per input); one array per output."""
        n = len(inputs[0])
        results: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for start in range(0, n, batch_size):
            batch = [np.asarray(x[start:start + batch_size], dtype=np.float32) for x in inputs]
            for i, out in enumerate(self._call(batch)):
                results[i].append(np.asarray(out))
        return [np.concatenate(parts) for parts in results]

    def _call(self, batch: list[np.ndarray]) -> list:
        if self.format == "saved_model":
            outputs = self.model(**{spec.name: x for spec, x in zip(self.inputs, batch)})
            return [outputs[spec.name] for spec in self.outputs]
        outputs = self.model(batch if len(batch) > 1 else batch[0], training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def load_model(
    path,
    custom_objects: list[str] | tuple[str, ...] = (),
    allow_unsafe: bool = False,
    input_shapes: dict[str, tuple] | None = None,
) -> LoadedModel:
    """Load a Keras 3 / tf_keras / SavedModel model and fix its input shapes (batch 1).

    `custom_objects` are `module:attr` strings (a class, a function, or a dict of them).
    `input_shapes` maps input name (or "" for the only input) to a full shape; it is required
    when an input has free dimensions other than the batch.
    """
    path = Path(path)
    kind = detect_format(path)
    from tflc.tf_env import import_tensorflow, quiet_native_output

    import_tensorflow()  # first: reading any model needs the compile extra, and this says so
    if kind == "saved_model":
        configs = saved_model_configs(path)
    else:
        configs = [parse_config(path, _keras_config_text(path))]
    refuse_code(path, configs, allow_unsafe)
    with quiet_native_output():
        objects = resolve_custom_objects(custom_objects)
        model, kind = _load(path, kind, objects, allow_unsafe, configs)
    inputs, outputs = _signature(model, kind)
    inputs = _fix_input_shapes(path, inputs, input_shapes or {})
    return LoadedModel(
        path=path,
        format=kind,
        model=model,
        inputs=inputs,
        outputs=outputs,
        param_count=_param_count(model, kind),
        sha256=sha256_file(path),
    )


def detect_format(path: Path) -> str:
    """'keras3', 'tf_keras' or 'saved_model', judged by content; BadInput for anything else."""
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder; pass a .keras, .h5 or SavedModel folder")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "saved_model"
        raise BadInput(f"{path}: a folder but not a SavedModel (no saved_model.pb inside)")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[4:8] == b"TFL3" or path.suffix == ".tflite":
        raise BadInput(
            f"{path}: already a TFLite model; `tflc compile` takes a Keras model. "
            f"To check it against a target: tflc check {path} --target cpu"
        )
    if head == HDF5_SIGNATURE:
        return "tf_keras"
    if head[:4] == b"PK\x03\x04":
        return _keras_zip_flavor(path)
    if path.suffix in (".h5", ".hdf5", ".keras"):
        raise BadInput(f"{path}: not a valid {path.suffix} file (truncated or not a Keras model)")
    raise BadInput(f"{path}: not a Keras model; expected a .keras or .h5 file or a SavedModel folder")


def _keras_zip_flavor(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
        raise BadInput(f"{path}: not a valid .keras file ({exc}); re-save the model with model.save()") from None
    major = str(meta.get("keras_version", "3")).split(".")[0]
    return "keras3" if major == "3" else "tf_keras"


def _keras_config_text(path: Path) -> bytes | str:
    """The model's architecture JSON, read without building the model."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.read("config.json")
        import h5py

        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path}: cannot read the model file ({exc}); it may be truncated or corrupt") from None
    if config is None:
        raise BadInput(f"{path}: an HDF5 file without a model (weights only?); save the whole model")
    return config if isinstance(config, bytes) else str(config)


def resolve_custom_objects(specs) -> dict:
    """Turn `module:attr` strings into the dict Keras' loaders take."""
    objects: dict = {}
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise BadInput(f"--custom-objects {spec!r}: expected module:attr, for example mylayers:MyLayer")
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")  # let users name a module in the current folder
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise BadInput(f"--custom-objects {spec}: cannot import it ({exc})") from None
        if isinstance(value, dict):
            objects.update(value)
        else:
            objects[getattr(value, "__name__", attr)] = value
    return objects


_UNKNOWN_OBJECT = re.compile(
    r"(?:Unknown (?:layer|object|class)[^'\"]*['\"]?|Could not locate class ['\"]?)(\w+)"
)


def _load(path: Path, kind: str, objects: dict, allow_unsafe: bool, configs: list):
    from tflc.tf_env import import_keras3, import_tf_keras

    try:
        if kind == "keras3":
            keras = import_keras3()
            model = keras.saving.load_model(path, custom_objects=objects, compile=False,
                                            safe_mode=not allow_unsafe)
        elif kind == "tf_keras":
            tf_keras = import_tf_keras()
            kwargs = {"safe_mode": not allow_unsafe} if path.suffix == ".keras" else {}
            model = tf_keras.models.load_model(path, custom_objects=objects, compile=False, **kwargs)
        else:
            model, kind = _load_saved_model(path, objects)
    except (TypeError, ValueError, OSError, KeyError, AttributeError, ImportError, RuntimeError) as exc:
        _raise_load_error(path, exc, _unknown_classes(configs, objects, kind))
    return model, kind


def _unknown_classes(configs: list, objects: dict, kind: str) -> list[str]:
    """Class names in the architecture that neither Keras nor --custom-objects provide."""
    if not configs:
        return []
    from tflc.tf_env import import_keras3, import_tf_keras

    keras = import_keras3() if kind == "keras3" else import_tf_keras()
    known_modules = [keras.layers, keras.models, keras.initializers, keras.regularizers,
                     keras.constraints, keras.activations, keras.optimizers, keras.losses,
                     keras.metrics, keras]
    unknown = []
    names = [node.get("class_name") for config in configs for node, _ in walk(config)]
    for name in dict.fromkeys(n for n in names if isinstance(n, str)):
        short = short_class_name({"class_name": name})
        if short in objects or name in objects or short in ("Functional", "Sequential", "Model"):
            continue
        if short.startswith("__") or any(hasattr(module, short) for module in known_modules):
            continue
        unknown.append(short)
    return unknown


def _load_saved_model(path: Path, objects: dict):
    """A Keras SavedModel loads as tf_keras (so optimization stages apply); otherwise its signature."""
    from tflc.tf_env import import_tensorflow, import_tf_keras

    try:
        return import_tf_keras().models.load_model(path, custom_objects=objects, compile=False), "tf_keras"
    except Exception:  # not a Keras SavedModel, or one tf_keras cannot revive: use the raw graph
        pass
    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(path))
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" not in signatures:
        raise BadInput(f"{path}: the SavedModel has no 'serving_default' signature to convert")
    signature = signatures["serving_default"]
    signature._tflc_owner = loaded  # keep the variables alive
    return signature, "saved_model"


def _raise_load_error(path: Path, exc: Exception, unknown_classes: list[str]):
    text = str(exc)
    match = _UNKNOWN_OBJECT.search(text)
    unknown = unknown_classes[0] if unknown_classes else (match.group(1) if match else None)
    if unknown:
        raise BadInput(
            f"{path}: uses {unknown!r}, which is not a built-in Keras layer; "
            f"pass its definition with --custom-objects module:{unknown}"
        ) from None
    if "safe_mode" in text or "lambda" in text.lower() and "unsafe" in text.lower():
        raise BadInput(
            f"{path}: the model contains code (a Lambda layer) that would run on load; "
            "load it only if you trust the file, with --allow-unsafe-code"
        ) from None
    raise BadInput(f"{path}: cannot load the model ({first_line(exc)[:300]})") from None


def _signature(model, kind: str) -> tuple[list[IOSpec], list[IOSpec]]:
    if kind == "saved_model":
        _, kwargs = model.structured_input_signature
        inputs = [IOSpec(name, tuple(spec.shape.as_list()), spec.dtype.name) for name, spec in sorted(kwargs.items())]
        outputs = [IOSpec(name, tuple(spec.shape.as_list()), spec.dtype.name)
                   for name, spec in sorted(model.structured_outputs.items())]
        return inputs, outputs
    input_names = getattr(model, "input_names", None) or [_tensor_name(t) for t in model.inputs]
    output_names = getattr(model, "output_names", None) or [_tensor_name(t) for t in model.outputs]
    inputs = [IOSpec(n, _shape(t), _dtype(t)) for n, t in zip(input_names, model.inputs)]
    outputs = [IOSpec(n, _shape(t), _dtype(t)) for n, t in zip(output_names, model.outputs)]
    return inputs, outputs


def _tensor_name(tensor) -> str:
    name = getattr(tensor, "name", "") or "input"
    return name.split(":")[0]


def _shape(tensor) -> tuple:
    shape = tensor.shape
    return tuple(shape.as_list()) if hasattr(shape, "as_list") else tuple(shape)


def _dtype(tensor) -> str:
    dtype = tensor.dtype
    return getattr(dtype, "name", str(dtype))


def _fix_input_shapes(path: Path, inputs: list[IOSpec], given: dict) -> list[IOSpec]:
    """Batch becomes 1; other free dimensions must come from --input-shape."""
    known = {spec.name for spec in inputs}
    for name in given:
        if name and name not in known:
            raise BadInput(f"--input-shape {name}: the model has no input of that name (inputs: {', '.join(sorted(known))})")
    fixed = []
    for spec in inputs:
        shape = given.get(spec.name) or (given.get("") if len(inputs) == 1 else None)
        if shape is not None:
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(spec.shape):
                raise BadInput(
                    f"--input-shape {spec.name}: {len(shape)} dimensions given, the input has "
                    f"{len(spec.shape)} ({_fmt(spec.shape)})"
                )
        else:
            shape = (1,) + tuple(spec.shape[1:])
            if any(d is None for d in shape):
                raise BadInput(
                    f"{path}: input {spec.name!r} has free dimensions {_fmt(spec.shape)}; give a fixed "
                    f"shape with --input-shape {spec.name}=1,{','.join(str(d or 'N') for d in spec.shape[1:])}"
                )
        fixed.append(IOSpec(spec.name, shape, spec.dtype))
    return fixed


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _param_count(model, kind: str) -> int:
    if kind == "saved_model":
        owner = getattr(model, "_tflc_owner", None)
        variables = getattr(owner, "variables", []) if owner is not None else []
        return int(sum(np.prod(v.shape) for v in variables))
    return int(model.count_params())


def parse_input_shapes(values) -> dict[str, tuple]:
    """`--input-shape` values: `NAME=1,224,224,3` or, for a one-input model, `1,224,224,3`."""
    shapes = {}
    for value in values:
        name, _, dims = value.rpartition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise BadInput(f"--input-shape {value!r}: expected NAME=1,224,224,3 (integers)") from None
        if not shapes[name] or any(d <= 0 for d in shapes[name]):
            raise BadInput(f"--input-shape {value!r}: every dimension must be a positive integer")
    return shapes


