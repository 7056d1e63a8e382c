"""The `distill` stage: train a student to match a teacher's softened outputs.

The loss mixes two terms (Hinton et al., "Distilling the Knowledge in a Neural Network"):

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))   soft labels
    (1 - alpha) * cross-entropy(y, student)                           hard labels

A high temperature T spreads the teacher's probability over the wrong-but-plausible classes,
which is what a smaller student learns most from; T^2 keeps the soft term's gradients on the
same scale as the hard one's. Models that end in softmax (or sigmoid) give probabilities, not
logits; log-probabilities differ from the logits only by a per-sample constant, which softmax
ignores, so they stand in for logits exactly.

The teacher is the pipeline's input float model unless the config names one; the student is a
given Keras file, or the model as the previous stage left it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tflc.errors import BadInput
from tflc.optimize.layers import copy_model
from tflc.optimize.training import Task, describe_task, loss_for, make_optimizer, set_seed


@dataclass
class DistillInfo:
    teacher: str
    student: str
    temperature: float
    alpha: float
    teacher_params: int
    student_params: int

    def to_dict(self) -> dict:
        return dict(vars(self))


def distill(teacher, student, config, data, seed: int, teacher_name: str = "input model",
            student_name: str = "previous stage's model"):
    """Train a copy of `student` against `teacher` on `data`; returns (student, DistillInfo)."""
    from tflc.optimize.training import progress_bar
    from tflc.tf_env import import_tensorflow, import_tf_keras

    tf = import_tensorflow()
    keras = import_tf_keras()
    teacher_task = describe_task(teacher, teacher_name)
    student_task = describe_task(student, student_name)
    _check_compatible(teacher, student, teacher_task, student_task, student_name)
    student = copy_model(student)
    temperature, alpha = float(config.temperature), float(config.alpha)
    hard_loss = loss_for(student_task)

    def soft(outputs, task: Task):
        logits = _logits(tf, outputs, task)
        return tf.nn.softmax(logits / temperature)

    def log_soft(outputs, task: Task):
        return tf.nn.log_softmax(_logits(tf, outputs, task) / temperature)

    class Distiller(keras.Model):
        """Trains `student` only; the teacher runs in inference mode."""

        def __init__(self):
            super().__init__()
            self.student = student

        def call(self, inputs, training=False):
            return self.student(inputs, training=training)

        def train_step(self, batch):
            x, y = batch
            target = soft(teacher(x, training=False), teacher_task)
            with tf.GradientTape() as tape:
                outputs = self.student(x, training=True)
                kl = tf.reduce_sum(
                    target * (tf.math.log(target + 1e-8) - log_soft(outputs, student_task)), axis=-1)
                loss = (alpha * temperature ** 2 * tf.reduce_mean(kl)
                        + (1.0 - alpha) * hard_loss(y, outputs))
                loss += tf.add_n(self.student.losses) if self.student.losses else 0.0
            variables = self.student.trainable_variables
            grads = tape.gradient(loss, variables)
            self.optimizer.apply_gradients(zip(grads, variables, strict=True))
            return {"loss": loss}

    set_seed(seed)
    trainer = Distiller()
    trainer.compile(optimizer=make_optimizer(config.train))
    trainer.fit(**data.fit_inputs(config.train.batch_size), epochs=config.train.epochs, verbose=0,
                callbacks=[progress_bar("distill")])
    info = DistillInfo(teacher=teacher_name, student=student_name, temperature=temperature,
                       alpha=alpha, teacher_params=int(teacher.count_params()),
                       student_params=int(student.count_params()))
    return student, info


def _logits(tf, outputs, task: Task):
    """Logits (up to a per-sample constant) of a model's output; binary -> two-class logits."""
    if task.binary:
        z = tf.math.log(outputs / (1.0 - outputs + 1e-7) + 1e-7) if task.probabilities else outputs
        return tf.concat([tf.zeros_like(z), z], axis=-1)
    if task.probabilities:
        return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0))
    return outputs


def _check_compatible(teacher, student, teacher_task, student_task, student_name: str) -> None:
    teacher_inputs = [tuple(t.shape[1:]) for t in teacher.inputs]
    student_inputs = [tuple(t.shape[1:]) for t in student.inputs]
    if teacher_inputs != student_inputs:
        raise BadInput(f"distill: the student {student_name} takes inputs {student_inputs} but the "
                       f"teacher takes {teacher_inputs}; they must read the same data")
    if teacher_task.classes != student_task.classes:
        raise BadInput(f"distill: the student {student_name} has {student_task.classes} outputs but "
                       f"the teacher has {teacher_task.classes}; they must predict the same classes")
