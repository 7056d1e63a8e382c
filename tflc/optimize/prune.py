"""The `prune` stage: TF-MOT magnitude pruning while fine-tuning, then `strip_pruning`.

Each chosen layer is wrapped with `prune_low_magnitude` and its schedule:

  - polynomial (default): sparsity grows from `initial_sparsity` to `sparsity` between
    `begin_step` and `end_step` (default: 75% of the fine-tuning steps, so the last quarter
    trains at full sparsity), masks updated every `frequency` steps (default: 4 per epoch);
  - constant: the full sparsity from `begin_step` on;
  - structure "N:M": at most N non-zero weights in every M consecutive input-channel weights
    (TF-MOT's m-by-n mode; 2:4 is what sparse kernels accelerate), for Conv2D and Dense;
  - `sparsities` {layer: sparsity}: each named layer its own final sparsity (what `tflc
    search` gives a candidate), the other layers stay dense;
  - sparsity `auto`: each layer gets its own final sparsity, picked from the sensitivity
    analysis so the overall sparsity reaches `target_sparsity` at the least accuracy cost.

The zeros are real: `strip_pruning` leaves plain layers whose kernels hold them, and the
pipeline measures them again in the int8 flatbuffer (see measure.py).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

from tflc.errors import BadInput
from tflc.optimize.layers import select_layers, wrapped_copy, zero_fractions
from tflc.optimize.training import fit
from tflc.tf_env import import_tfmot

_STRUCTURED_TYPES = ("Conv2D", "Dense")


@dataclass
class PruneInfo:
    layers: dict[str, float]  # layer -> final sparsity asked for
    measured: dict[str, float]  # layer -> zero fraction in the Keras kernels after stripping
    schedule: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"layers": self.layers, "measured_keras": self.measured, "schedule": self.schedule,
                "warnings": self.warnings}


def prunable(layer) -> bool:
    tfmot = import_tfmot()
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    return isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or \
        prune_registry.PruneRegistry.supports(layer)


def prune(model, config, data, task, seed: int, what: str = "prune", auto_sparsities=None):
    """Prune a copy of `model` while fine-tuning on `data`; returns (model, PruneInfo).

    `auto_sparsities` (layer -> sparsity) is required when the config says `sparsity: auto`;
    the pipeline computes it with `sensitivity.choose_sparsities`.
    """
    tfmot = import_tfmot()
    if config.structure:
        supports = lambda layer: prunable(layer) and type(layer).__name__ in _STRUCTURED_TYPES  # noqa: E731
    else:
        supports = prunable
    targets = _targets(model, config, supports, what, auto_sparsities)

    steps_per_epoch = _steps_per_epoch(data, config.train.batch_size)
    total_steps = steps_per_epoch * config.train.epochs
    frequency = config.frequency or max(1, steps_per_epoch // 4)
    end_step = config.end_step or config.begin_step + max(
        frequency, (int(0.75 * total_steps) - config.begin_step) // frequency * frequency)
    warnings = []
    if config.begin_step >= total_steps:
        raise BadInput(f"{what}.begin_step: {config.begin_step} is past the end of fine-tuning "
                       f"({total_steps} steps: {config.train.epochs} epochs x {steps_per_epoch}); "
                       "lower it or train more epochs")
    if end_step > total_steps and config.schedule == "polynomial" and not config.structure:
        warnings.append(f"end_step {end_step} is past the last training step ({total_steps}); "
                        "the final sparsity will not be reached")

    def schedule_for(sparsity):
        if config.structure or config.schedule == "constant":
            return tfmot.sparsity.keras.ConstantSparsity(
                sparsity, begin_step=config.begin_step, frequency=frequency)
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=min(config.initial_sparsity, sparsity * 0.99), final_sparsity=sparsity,
            begin_step=config.begin_step, end_step=end_step, power=config.power,
            frequency=frequency)

    m_by_n = None
    if config.structure:
        kept, block = config.structure
        m_by_n = (block - kept, block)  # TF-MOT counts the zeros: (2, 4) = 2 zeros in every 4

    def wrap(layer):
        if layer.name in targets:
            return tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedule_for(targets[layer.name]), sparsity_m_by_n=m_by_n)
        return layer

    wrapped = wrapped_copy(model, wrap, what, "prune")
    fit(wrapped, data, config.train, task, seed, description=what,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    measured = zero_fractions(stripped, targets)
    for name, wanted in targets.items():
        if measured.get(name, 0.0) < wanted - 0.05 and not config.structure:
            warnings.append(f"layer {name} reached {measured[name]:.0%} sparsity, not the "
                            f"{wanted:.0%} asked for; train more epochs or lower end_step")
    schedule = {
        "kind": "m_by_n" if config.structure else config.schedule,
        "begin_step": config.begin_step,
        "end_step": end_step if config.schedule == "polynomial" and not config.structure else None,
        "frequency": frequency,
        "steps": total_steps,
    }
    return stripped, PruneInfo(layers=targets, measured=measured, schedule=schedule,
                               warnings=warnings)


def _targets(model, config, supports, what: str, auto_sparsities) -> dict[str, float]:
    """Layer -> final sparsity: named one by one (`sparsities`), from the sensitivity analysis
    (`auto`), fixed by an N:M structure, or one sparsity for the selected layers."""
    if config.sparsities:
        from tflc.optimize.config import LayerSelection

        names = select_layers(model, LayerSelection(names=list(config.sparsities)), supports,
                              f"{what}.sparsities")
        targets = {}
        for name in names:  # a name's first matching pattern gives its sparsity
            wanted = next(v for p, v in config.sparsities.items() if fnmatch.fnmatchcase(name, p))
            if wanted > 0:
                targets[name] = wanted
        if not targets:
            raise BadInput(f"{what}.sparsities: every layer named is at sparsity 0; name one "
                           "above 0 or remove this stage")
        return targets
    names = select_layers(model, config.layers, supports, what, spare_types=("DepthwiseConv2D",))
    if config.auto:
        targets = {n: s for n, s in (auto_sparsities or {}).items() if n in names and s > 0}
        if not targets:
            raise BadInput(f"{what}: `sparsity: auto` found no layer it can prune within the "
                           "accuracy budget; lower target_sparsity or raise the budget")
        return targets
    if config.structure:
        return {n: 1 - config.structure[0] / config.structure[1] for n in names}
    return {n: config.sparsity for n in names}


def _steps_per_epoch(data, batch_size: int) -> int:
    if data.in_memory:
        return max(1, math.ceil(data.num_samples / batch_size))
    dataset = data.dataset if data.batched else data.dataset.batch(batch_size)
    count = int(dataset.cardinality())
    if count < 0:  # unknown (a generator): count one pass
        count = sum(1 for _ in dataset)
    return max(1, count)


def _keras():
    from tflc.tf_env import import_tf_keras

    return import_tf_keras()

