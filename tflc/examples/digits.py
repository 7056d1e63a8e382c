"""The bundled example: a small CNN trained on scikit-learn's digits (8x8 greyscale, 10 classes).

Everything is offline: scikit-learn ships the 1,797 labelled images. `make demo` runs
`python -m tflc.examples.digits build/digits`, which writes

    model.keras      the trained float model (tf_keras format; `--keras3` for a Keras 3 file)
    calib.npz        `x`: 200 training images, for post-training calibration
    train.npz        `x`, `y`: the training split, for the compression pipeline
    eval.npz         `x`, `y`: the held-out split, never seen in training or calibration

Tests build their tiny models through the same functions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tflc.fileio import atomic_write_bytes

INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10


def load_split(seed: int = 0, test_fraction: float = 0.25):
    """Digits as float32 images in [0, 1], shape (N, 8, 8, 1), split with a fixed seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def build_cnn(keras, width: int = 16):
    """A tiny CNN: two convolutions, pooling, one dense layer. `keras` is tf_keras or Keras 3."""
    layers = keras.layers
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(width * 2, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def train(keras, x, y, epochs: int = 15, seed: int = 0, width: int = 16):
    """Train `build_cnn` deterministically (seeded, op determinism on)."""
    from tflc.tf_env import import_tensorflow

    tf = import_tensorflow()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = build_cnn(keras, width)
    model.compile(optimizer=keras.optimizers.Adam(0.005), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model


def write_example(out_dir: str | Path, keras3: bool = False, epochs: int = 15, seed: int = 0) -> Path:
    """Train the example model and write it with its data files into `out_dir`."""
    from tflc.tf_env import import_keras3, import_tf_keras

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = load_split(seed)
    keras = import_keras3() if keras3 else import_tf_keras()
    model = train(keras, x_train, y_train, epochs=epochs, seed=seed)
    tmp = out / ".model.tmp.keras"
    model.save(tmp)
    tmp.replace(out / "model.keras")
    _save_npz(out / "calib.npz", x=x_train[:200])
    _save_npz(out / "train.npz", x=x_train, y=y_train)
    _save_npz(out / "eval.npz", x=x_test, y=y_test)
    return out


def _save_npz(path: Path, **arrays) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--keras3", action="store_true", help="save a Keras 3 .keras file")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_example(args.out_dir, keras3=args.keras3, epochs=args.epochs, seed=args.seed)
    print(f"wrote {out}/model.keras, calib.npz, train.npz, eval.npz")


if __name__ == "__main__":
    main()
