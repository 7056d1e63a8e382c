"""Refuse model files that would run code when loaded, by reading their configuration as data.

A Keras `Lambda` layer stores Python bytecode (tf_keras) or source (Keras 3 `__lambda__`) in the
model's configuration, and deserialising the layer runs it. Keras 3's safe mode refuses that for
`.keras` files, but tf_keras `.h5` files and SavedModel folders have no such guard. So before
any loader touches the file, the architecture is parsed as JSON (never searched as text: JSON
allows spaces and `\\u` escapes anywhere) and every layer is walked, nested models, wrappers
(`TimeDistributed`, `Bidirectional`) and layer arguments included. A configuration that cannot
be read is refused too: what cannot be inspected is not loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tflc.errors import BadInput

# Class names whose deserialisation runs code stored in the file.
CODE_CLASSES = ("Lambda", "TFOpLambda", "__lambda__")


@dataclass(frozen=True)
class CodeLayer:
    """A place in a model's configuration that carries code."""

    class_name: str
    layer_name: str | None


def find_code(config) -> list[CodeLayer]:
    """Every layer (at any depth) of a parsed Keras configuration that carries code."""
    found = []
    for node, layer in walk(config):
        short = short_class_name(node)
        if short in CODE_CLASSES or node.get("function_type") == "lambda":
            found.append(CodeLayer(short or "Lambda", layer))
    return found


def walk(config):
    """Every mapping inside a parsed configuration, depth first, with the name of the nearest
    enclosing layer (a mapping's own `name`, or its config's)."""
    stack = [(config, None)]
    while stack:
        node, layer = stack.pop()
        if isinstance(node, dict):
            inner = node.get("config")
            name = node.get("name") or (inner.get("name") if isinstance(inner, dict) else None)
            layer = name if isinstance(name, str) else layer
            yield node, layer
            stack.extend((value, layer) for value in reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend((value, layer) for value in reversed(node))


def short_class_name(node: dict) -> str:
    """`keras.layers>Dense`, `Custom>MyLayer` or `keras.src.layers.Dense` -> the class's name."""
    return str(node.get("class_name", "")).split(">")[-1].split(".")[-1]


def refuse_code(path: Path, configs: list, allow_unsafe: bool) -> None:
    """BadInput naming the first code-carrying layer, unless the user opted in."""
    if allow_unsafe:
        return
    for config in configs:
        code = find_code(config)
        if code:
            first = code[0]
            where = f" ({first.layer_name!r})" if first.layer_name else ""
            raise BadInput(
                f"{path}: the model contains a {first.class_name} layer{where}, whose code would "
                "run when the file is loaded; load it only if you trust the file, with "
                "--allow-unsafe-code")


def parse_config(path: Path, text: str | bytes, what: str = "architecture"):
    """The model's JSON configuration; unreadable means refused, never loaded regardless."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInput(f"{path}: the model's {what} is not readable JSON, so tflc cannot check it "
                       "for code before loading; re-save the model with model.save()") from None


def saved_model_configs(path: Path) -> list:
    """The Keras layer configurations stored with a SavedModel folder, read without loading it:
    `keras_metadata.pb` (TF 2.5 and later) or, in older folders, the user objects' metadata in
    `saved_model.pb`'s object graph. A folder with neither holds no Keras layers (a plain
    TensorFlow graph, which loads as ops without running Python)."""
    from tflc.tf_env import import_tensorflow

    import_tensorflow()  # the protobuf classes below come with TensorFlow
    from google.protobuf.message import DecodeError
    metadata = path / "keras_metadata.pb"
    try:
        if metadata.exists():
            from tf_keras.protobuf import saved_metadata_pb2

            message = saved_metadata_pb2.SavedMetadata()
            message.ParseFromString(metadata.read_bytes())
            texts = [node.metadata for node in message.nodes]
            source = "keras_metadata.pb"
        else:
            from tensorflow.core.protobuf import saved_model_pb2

            model = saved_model_pb2.SavedModel()
            model.ParseFromString((path / "saved_model.pb").read_bytes())
            texts = [node.user_object.metadata
                     for graph in model.meta_graphs for node in graph.object_graph_def.nodes
                     if node.WhichOneof("kind") == "user_object" and node.user_object.metadata]
            source = "saved_model.pb"
    except (DecodeError, OSError) as exc:
        raise BadInput(f"{path}: cannot read the SavedModel's metadata ({exc}); tflc does not load "
                       "what it cannot check for code") from None
    return [parse_config(path, text, f"layer metadata in {source}") for text in texts if text]
