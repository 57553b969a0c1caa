"""Training as data: the stages of a fine-tuning fit, planned from the parameters.

:func:`plan` turns a :class:`~sktransfer.FineTunedCNNClassifier`'s
parameters into a tuple of :class:`Stage`; ``fit`` runs them in order
through one trainer (:mod:`sktransfer._training`), and keeps them as
``stages_``, which ``history_``, the training-curves display and the command
line read. A new stage (a second unfreezing step, a warm-up) is one more
:class:`Stage` in :func:`plan`'s result: nothing else names stages.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

#: Where a stage's inputs come from.
INPUTS = ("pixels", "features", "maps")
#: How a stage's learning rate moves (see ``_training.scheduled_rate``).
SCHEDULES = ("constant", "cosine", "one_cycle")


@dataclass(frozen=True)
class Stage:
    """One training stage: what trains, for how long, at what rate, on what.

    Parameters
    ----------
    name : str
        Its key in ``history_`` and the name of its task for scikit-learn
        callbacks.
    title : str
        How it reads in a legend or a summary.
    trainable_blocks : int
        Top blocks of the cut network trained together with the new top; 0
        trains the top only. BatchNorm layers never train.
    epochs : int
        The most epochs it runs (early stopping may end it sooner).
    learning_rate : float or "auto"
        The rate of a fresh optimizer, made for this stage. ``"auto"`` in a
        plan: ``fit`` replaces it, right before the stage runs, by the rate
        a range test chose (:mod:`sktransfer._lr_find`); a stage that never
        ran keeps it.
    inputs : {"pixels", "features", "maps"}
        ``"pixels"``: images read batch by batch every epoch, through the
        augmentation layers (active when ``augment`` is set) and the whole
        network. ``"features"``: the frozen network's pooled features,
        computed once (and cached); only for ``trainable_blocks=0``.
        ``"maps"``: the output maps of the frozen layer ``boundary``,
        computed once; the blocks above it train on them.
    boundary : str or None, default=None
        The frozen layer whose maps a ``"maps"`` stage trains on.
    schedule : {"constant", "cosine", "one_cycle"}, default="constant"
        How the rate moves over the stage's planned steps (see
        :func:`sktransfer._training.scheduled_rate`).
    layer_decay : float, default=1.0
        Each unfrozen block's rate is ``learning_rate * layer_decay ** d``,
        ``d`` = 1 for the top block, 2 for the next; the new top gets the
        full rate.
    label_smoothing : float, default=0.0
        Of the loss's targets.
    """

    name: str
    title: str
    trainable_blocks: int
    epochs: int
    learning_rate: float | str
    inputs: str = "pixels"
    boundary: str | None = None
    schedule: str = "constant"
    layer_decay: float = 1.0
    label_smoothing: float = 0.0

    def __post_init__(self):
        # Stages are also read back from saved models: a bad one is refused
        # here, whatever wrote it.
        checks = (
            isinstance(self.name, str) and bool(self.name),
            isinstance(self.title, str),
            _is_int(self.trainable_blocks) and self.trainable_blocks >= 0,
            _is_int(self.epochs) and self.epochs >= 0,
            self.learning_rate == "auto" or _is_real(self.learning_rate) and self.learning_rate > 0,
            self.inputs in INPUTS,
            (self.boundary is None) == (self.inputs != "maps")
            and (self.boundary is None or isinstance(self.boundary, str)),
            self.inputs != "features" or self.trainable_blocks == 0,
            self.schedule in SCHEDULES,
            _is_real(self.layer_decay) and 0 < self.layer_decay <= 1,
            _is_real(self.label_smoothing) and 0 <= self.label_smoothing < 1,
        )
        if not all(checks):
            raise ValueError(f"Not a valid training stage: {self!r}.")

    @property
    def key(self) -> tuple:
        """What its compiled model depends on: stages with one key share it."""
        return (
            self.trainable_blocks, self.inputs, self.boundary, self.layer_decay,
            self.label_smoothing,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def plan(estimator, network, n_images: int, augment: dict) -> tuple[Stage, ...]:
    """The stages of a fit, from the estimator's parameters.

    Stage 1 trains a new top on the frozen network: on its cached pooled
    features (the bottleneck recipe), or on augmented pixels when
    ``augment_head`` says so. Stage 2 unfreezes the top
    ``trainable_blocks_`` blocks at the small ``learning_rate``: on pixels
    when augmenting (every epoch sees new versions), otherwise on the
    cached maps of the frozen layer below those blocks, when they fit in
    memory.

    Parameters
    ----------
    estimator : FineTunedCNNClassifier
        With ``layer_names_`` and ``trainable_blocks_`` set.
    network : sktransfer._network.Network
        The cut network.
    n_images : int
        Images in the fit (training and validation).
    augment : dict
        The checked augmentation settings (empty: none).

    Returns
    -------
    stages : tuple of Stage
    """
    fine_tune = estimator.trainable_blocks_ > 0 and estimator.epochs > 0
    augment_head = bool(augment) and (
        not fine_tune if estimator.augment_head == "auto" else estimator.augment_head
    )
    recipe = dict(schedule=estimator.schedule, label_smoothing=estimator.label_smoothing)
    stages = [
        Stage(
            "head",
            "new top",
            trainable_blocks=0,
            epochs=estimator.head_epochs,
            learning_rate=estimator.head_learning_rate,
            inputs="pixels" if augment_head else "features",
            **recipe,
        )
    ]
    if not fine_tune:
        return tuple(stages)
    # Gradual unfreezing (ULMFiT): each step unfreezes more of the top
    # blocks; the last step trains all ``trainable_blocks_`` of them.
    k, n = estimator.trainable_blocks_, min(estimator.unfreeze_steps, estimator.trainable_blocks_)
    step_epochs = max(1, estimator.epochs // n)
    for step in range(1, n + 1):
        blocks = math.ceil(k * step / n)
        boundary = None
        if not augment:
            # The frozen network below the unfrozen blocks gives the same maps
            # every epoch: compute them once.
            boundary = maps_boundary(network, estimator.layer_names_, blocks, n_images)
        last = step == n
        stages.append(
            Stage(
                "fine_tune" if last else f"fine_tune_step{step}",
                "fine tuning" if n == 1 else f"fine tuning, step {step} of {n}",
                trainable_blocks=blocks,
                epochs=max(1, estimator.epochs - (n - 1) * step_epochs) if last else step_epochs,
                learning_rate=estimator.learning_rate,
                inputs="pixels" if boundary is None else "maps",
                boundary=boundary,
                layer_decay=estimator.layer_decay,
                **recipe,
            )
        )
    return tuple(stages)


def maps_boundary(network, layer_names, trainable_blocks: int, n_images: int):
    """The frozen layer whose maps a stage can train on, or None.

    Only when those maps of all images take at most a quarter of the
    feature cache's memory limit: while they are computed they exist about
    three times (the pass's output, the cache's rows, the stage's array),
    and they must not evict the cache's other rows.
    """
    from . import _training
    from .cache import memory_cache

    boundary = _training.frozen_boundary(network, layer_names, trainable_blocks)
    if boundary is None:
        return None
    nbytes = 4 * n_images * int(np.prod(network.layer_shape(boundary)))
    return boundary if nbytes <= memory_cache().max_bytes // 4 else None


def passes(stages) -> list[tuple[str, str | None]]:
    """The passes of the frozen network the stages train on, in order, once each."""
    return list(
        dict.fromkeys(
            (stage.inputs, stage.boundary) for stage in stages if stage.inputs != "pixels"
        )
    )
