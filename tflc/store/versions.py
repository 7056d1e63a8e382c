"""What software and machine produced a result: the part of a manifest that explains drift.

A compile that no longer rebuilds byte-identically is almost always explained by a changed input
or a changed version of the converter stack, so every manifest records both. Versions come from
the installed distributions' metadata (`importlib.metadata`), never by importing TensorFlow: a
`tflc check` or `tflc bench` that records its result must stay free of TensorFlow's import cost.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata as metadata
import platform
import sys
from pathlib import Path

# Component -> the distribution names it may be installed under (the first one found wins).
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "tensorflow": (
        "tensorflow",
        "tensorflow-cpu",
        "tensorflow_cpu",
        "tensorflow-macos",
        "tensorflow-intel",
        "tf-nightly",
    ),
    "tf_keras": ("tf-keras", "tf_keras"),
    "keras": ("keras",),
    "tensorflow_model_optimization": (
        "tensorflow-model-optimization",
        "tensorflow_model_optimization",
    ),
    "ai_edge_litert": ("ai-edge-litert", "ai_edge_litert", "ai-edge-litert-nightly"),
    "tflite_micro": ("tflite-micro", "tflite_micro"),
    "flatbuffers": ("flatbuffers",),
    "numpy": ("numpy",),
}


def _installed_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


@functools.lru_cache(maxsize=1)
def tflc_source_digest() -> str:
    """A short hash of tflc's own Python sources.

    `__version__` stays the same across development commits, yet any edit to a stage can change
    the compiled bytes; this digest is what lets `tflc rebuild` say "tflc itself changed".
    """
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def collect_versions() -> dict[str, str | None]:
    """Versions of tflc, Python and the TensorFlow Lite stack; None for what is not installed."""
    from tflc.version import __version__

    versions: dict[str, str | None] = {
        "tflc": __version__,
        "tflc_source": tflc_source_digest(),
        "python": platform.python_version(),
    }
    for component, names in _DISTRIBUTIONS.items():
        versions[component] = _installed_version(names)
    # When TensorFlow is already loaded, the module in memory is the truth (an editable or
    # vendored build can differ from the metadata); reading it costs nothing.
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(getattr(tf, "__version__", None), str):
        versions["tensorflow"] = tf.__version__
    return versions


def collect_platform() -> dict[str, str]:
    """The machine a result was produced on (no host name: manifests get shared)."""
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
