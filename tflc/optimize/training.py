"""Fine-tuning and scoring a classifier, shared by every stage.

The stages differ in how they wrap the model (pruning masks, clusters, fake quantization, a
teacher); they all train it the same way: the stage's optimizer and learning rate, a loss that
matches the model's output (probabilities or logits), seeded shuffling, and one progress bar per
stage on stderr (shown on a terminal only). Accuracy is top-1 on class-index labels, in percent
like `tflc.convert.evaluate` reports it, so drops are in percentage points everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tflc.errors import BadInput


@dataclass(frozen=True)
class Task:
    """What the model's single output is: `classes` units, probabilities or raw logits."""

    classes: int  # output units; 1 = a binary classifier with one sigmoid/logit unit
    probabilities: bool  # the output ends in softmax/sigmoid

    @property
    def binary(self) -> bool:
        return self.classes == 1


def describe_task(model, source: str = "the model") -> Task:
    """Read the classifier's output layer: how many classes, and whether it applies softmax."""
    if len(model.outputs) != 1:
        raise BadInput(f"{source}: has {len(model.outputs)} outputs; the compression pipeline "
                       "trains single-output classifiers")
    shape = tuple(model.outputs[0].shape)
    if len(shape) != 2 or shape[-1] is None:
        raise BadInput(f"{source}: the output has shape {shape}; the pipeline trains classifiers "
                       "whose output is (batch, classes)")
    layer = model.outputs[0]._keras_history.layer
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "") or type(layer).__name__.lower()
    probabilities = name in ("softmax", "sigmoid") or type(layer).__name__ == "Softmax"
    return Task(classes=int(shape[-1]), probabilities=probabilities)


def set_seed(seed: int) -> None:
    """Seed Python, numpy and TensorFlow so a stage trains the same way twice."""
    from tflc.tf_env import import_tf_keras

    import_tf_keras().utils.set_random_seed(int(seed))


def loss_for(task: Task):
    from tflc.tf_env import import_tf_keras

    losses = import_tf_keras().losses
    if task.binary:
        return losses.BinaryCrossentropy(from_logits=not task.probabilities)
    return losses.SparseCategoricalCrossentropy(from_logits=not task.probabilities)


def make_optimizer(settings):
    from tflc.tf_env import import_tf_keras

    optimizers = import_tf_keras().optimizers
    make = {"adam": optimizers.Adam, "sgd": optimizers.SGD, "rmsprop": optimizers.RMSprop}
    return make[settings.optimizer](learning_rate=settings.learning_rate)


def fit(model, data, settings, task: Task, seed: int, description: str, callbacks=()):
    """Compile `model` for `task` and train it for the stage's epochs, with a progress bar."""
    set_seed(seed)
    model.compile(optimizer=make_optimizer(settings), loss=loss_for(task))
    inputs = data.fit_inputs(settings.batch_size)
    model.fit(**inputs, epochs=settings.epochs, verbose=0,
              callbacks=[*callbacks, progress_bar(description)])
    return model


def predict(model, x: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Model outputs for in-memory inputs, in batches, without Keras' own progress output."""
    from tflc.tf_env import import_tensorflow

    tf = import_tensorflow()
    outputs = []
    for start in range(0, len(x[0]), batch_size):
        batch = [tf.convert_to_tensor(a[start:start + batch_size]) for a in x]
        result = model(batch[0] if len(batch) == 1 else batch, training=False)
        outputs.append(np.asarray(result))
    return np.concatenate(outputs)


def accuracy(model, x: list[np.ndarray], y: np.ndarray, task: Task) -> float:
    return accuracy_of_outputs(predict(model, x), y, task)


def accuracy_of_outputs(outputs: np.ndarray, y: np.ndarray, task: Task) -> float:
    from tflc.convert.evaluate import top1_accuracy

    return top1_accuracy(outputs, y, probabilities=task.probabilities)


def progress_bar(description: str):
    """A Keras callback drawing one tqdm bar over all batches of all epochs (stderr, TTY only)."""
    from tqdm import tqdm

    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()

    class _Progress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.bar = None

        def on_train_begin(self, logs=None):
            steps, epochs = self.params.get("steps"), self.params.get("epochs", 1)
            total = steps * epochs if steps else None
            # disable=None: drawn on a terminal, silent in logs, CI and pipes.
            self.bar = tqdm(total=total, desc=description, unit="batch", leave=False,
                            disable=None, dynamic_ncols=True)

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and "loss" in logs and batch % 10 == 0:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

        def on_epoch_end(self, epoch, logs=None):
            self.bar.set_description(f"{description} (epoch {epoch + 1}/{self.params['epochs']})")

        def on_train_end(self, logs=None):
            self.bar.close()

    return _Progress()
