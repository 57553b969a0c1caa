"""The fine-tuning recipe: model, augmentation, data feeding and the trainer.

Done right by default, where a hand-written loop silently goes wrong:

* stage 1 trains the new top on the frozen network, so a random top never
  sends large gradients into pretrained weights;
* stage 2 unfreezes the top ``trainable_blocks`` blocks only, with a fresh
  optimizer at the small ``learning_rate``;
* BatchNorm layers stay in inference mode in every stage: they are never
  trainable (in Keras 3 a trainable BatchNorm would follow ``fit``'s
  ``training=True`` even inside a backbone called with ``training=False``),
  so their statistics never drift on a small data set;
* augmentation layers sit before preprocessing and are active only in
  training;
* early stopping watches the validation loss and restores the best weights.
"""

from __future__ import annotations

import functools
import math
import threading
from numbers import Integral

import numpy as np

from ._lru import LRUCache

AUGMENT_KEYS = ("flip", "rotation", "zoom", "translation", "contrast", "crop")
DEFAULT_AUGMENT = {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1, "translation": 0.1}
#: Named augmentation settings: ``augment=True`` is ``"light"``.
AUGMENT_PRESETS = {
    "light": DEFAULT_AUGMENT,
    # Stronger geometry and photometry, as in timm's recipes for small data
    # (without RandAugment's colour operations, which natural-photo backbones
    # tolerate but which change what some classes are, e.g. ripe vs unripe).
    "strong": {
        "flip": "horizontal", "rotation": 0.1, "zoom": 0.2, "translation": 0.15,
        "contrast": 0.2,
    },
}

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
#: The classifier's layers after pooling, in order (see :func:`build_model`).
TOP_LAYERS = ("dropout", "hidden", "hidden_dropout", "logits", "probabilities")


def check_augment(augment) -> dict:
    """The augmentation settings as a dict; ValueError naming bad keys/values."""
    if augment is False:
        return {}
    if augment is True:
        return dict(DEFAULT_AUGMENT)
    if isinstance(augment, str) and augment in AUGMENT_PRESETS:
        return dict(AUGMENT_PRESETS[augment])
    if not isinstance(augment, dict):
        raise ValueError(
            f"augment={augment!r} is not valid; use False, True (defaults "
            f"{DEFAULT_AUGMENT}), a preset {sorted(AUGMENT_PRESETS)} or a dict "
            f"with keys {AUGMENT_KEYS}."
        )
    unknown = set(augment) - set(AUGMENT_KEYS)
    if unknown:
        raise ValueError(
            f"augment has unknown keys {sorted(unknown)}; valid keys are {AUGMENT_KEYS}."
        )
    flip = augment.get("flip", False)
    if flip not in (False, None, "horizontal", "vertical", "horizontal_and_vertical"):
        raise ValueError(
            f"augment['flip']={flip!r}: use 'horizontal', 'vertical', "
            "'horizontal_and_vertical' or False."
        )
    for key in AUGMENT_KEYS[1:]:
        value = augment.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(
                f"augment[{key!r}]={value!r}: use a fraction in [0, 1) (0 turns it off)."
            )
    # Entries that are off are dropped: {"flip": False} is no augmentation,
    # so stage 2 may train on cached maps.
    return {key: value for key, value in augment.items() if value}


def augmentation_layers(augment: dict) -> list:
    """Keras random layers for ``augment`` (active only when training).

    No layer gets an explicit seed: layers given the same seed draw the same
    numbers, which would make zoom, shift and crop move together. Their
    seeds come from the global generator, which ``random_state`` seeds.
    """
    import keras

    layers = []
    if augment.get("flip"):
        layers.append(keras.layers.RandomFlip(augment["flip"]))
    if augment.get("rotation"):
        layers.append(keras.layers.RandomRotation(augment["rotation"]))
    if augment.get("zoom"):
        layers.append(keras.layers.RandomZoom(augment["zoom"]))
    if augment.get("translation"):
        t = augment["translation"]
        layers.append(keras.layers.RandomTranslation(t, t))
    if augment.get("crop"):
        # A random crop resized back is a zoom-in at a random place: a zoom
        # into [0, crop] keeps the image size at inference (no center crop).
        c = augment["crop"]
        layers.append(keras.layers.RandomZoom((-c, 0.0)))
    if augment.get("contrast"):
        layers.append(
            keras.layers.RandomContrast(augment["contrast"], value_range=(0, 255))
        )
    return layers


def inference_model(model, output: str = "probabilities"):
    """The trained classifier to ``output`` without its augmentation layers.

    Random layers pass images through unchanged at inference, but their
    ops stay in an exported graph, and ONNX has none for some of them. The
    classifier is one chain of layers (see :func:`build_model`), so it is
    rebuilt from the same layers (shared weights) minus the random ones.
    """
    import keras

    random_layers = (
        keras.layers.RandomFlip,
        keras.layers.RandomRotation,
        keras.layers.RandomZoom,
        keras.layers.RandomTranslation,
        keras.layers.RandomContrast,
    )
    pixels = keras.Input(model.inputs[0].shape[1:], name="pixels")
    x = pixels
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, *random_layers)):
            continue
        x = layer(x, training=False)
        if layer.name == output:
            break
    return keras.Model(pixels, x, name=f"{model.name}_{output}")


def make_optimizer(name: str, learning_rate: float, weight_decay=None, scales=None):
    """A Keras optimizer; ``scales`` multiplies the rate of some variables.

    ``weight_decay`` is Keras' decoupled weight decay (None: the optimizer's
    default, 0.004 for AdamW, none for the others); biases and BatchNorm or
    normalization parameters are never decayed. ``scales``: pairs
    (variable, factor of the learning rate) (layer-wise decay); others get 1.
    """
    import keras

    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
    }
    kwargs = {"momentum": 0.9} if name == "sgd" else {}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    if scales:
        optimizer = _scaled_class(classes[name])(learning_rate, **kwargs)
        optimizer.rate_scales = {optimizer._var_key(v): f for v, f in scales}
    else:
        optimizer = classes[name](learning_rate, **kwargs)
    if optimizer.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


@functools.cache
def _scaled_class(base):
    """``base`` with a learning rate scaled per variable.

    Keras 3 optimizers take one rate; ``update_step`` receives it for each
    variable (the backends all call it per variable), so a factor looked up
    by the optimizer's own variable key gives each block its rate. The lookup
    happens while the train step is traced: no cost per step.
    """

    class Scaled(base):
        rate_scales: dict = {}

        def update_step(self, gradient, variable, learning_rate):
            scale = self.rate_scales.get(self._var_key(variable), 1.0)
            if scale != 1.0:
                learning_rate = learning_rate * scale
            return super().update_step(gradient, variable, learning_rate)

    Scaled.__name__ = Scaled.__qualname__ = f"LayerScaled{base.__name__}"
    return Scaled


def layer_rate_scales(backbone, network, layer_names, k: int, decay: float) -> list:
    """Learning-rate factors of the top ``k`` blocks' variables: ``decay ** depth``.

    The top block gets ``decay``, the one below ``decay ** 2``, and so on; the
    new top (outside the backbone) keeps the full rate. Lower blocks hold
    more general features, so they move less (layer-wise rate decay, as in
    BEiT and fastai's discriminative rates).
    """
    if decay == 1.0 or k == 0:
        return []
    boundaries = _block_boundaries(network, layer_names)
    positions = layer_positions(backbone)
    ends = [positions[name] for name in boundaries]
    scales = []  # (variable, factor): Keras variables are not hashable
    for position, layer in enumerate(backbone.layers):
        # The block a layer belongs to: the first boundary at or above it.
        block = next((i for i, end in enumerate(ends) if position <= end), None)
        if block is None:
            continue
        depth = len(ends) - block  # 1 for the top block
        if depth > k:
            continue
        scales += [(variable, decay**depth) for variable in layer.trainable_variables]
    return scales


def classification_loss(label_smoothing: float):
    """The loss on integer labels, with labels smoothed by ``label_smoothing``.

    Smoothing mixes each one-hot target with the uniform distribution, so
    the new top is not pushed towards ever larger logits on a few images.
    """
    if not label_smoothing:
        return "sparse_categorical_crossentropy"
    import keras

    def smoothed_crossentropy(y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        targets = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            targets, y_pred, label_smoothing=label_smoothing
        )

    return smoothed_crossentropy


def scheduled_rate(schedule: str, base: float, step: int, total: int) -> float:
    """The learning rate at ``step`` (0-based) of ``total`` steps of a stage.

    ``"cosine"``: linear warm-up from 0 over the first 10 % of the steps,
    then half a cosine down to 0 at the last planned step. ``"one_cycle"``
    (fastai's ``fit_one_cycle``): from ``base / 25`` up to ``base`` over the
    first 25 % along a cosine, then down to ``base / 250000``.
    """
    if schedule == "constant" or total <= 1:
        return base
    progress = step / (total - 1)
    if schedule == "cosine":
        warmup = 0.1
        if progress < warmup:
            return base * (step + 1) / (warmup * (total - 1) + 1)
        return base * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))
    start, end, peak = base / 25, base / 25 / 1e4, 0.25
    if progress < peak:
        return start + (base - start) * 0.5 * (1 - math.cos(math.pi * progress / peak))
    phase = (progress - peak) / (1 - peak)
    return end + (base - end) * 0.5 * (1 + math.cos(math.pi * phase))


def _schedule_callback(schedule: str, epochs: int):
    import keras

    class Schedule(keras.callbacks.Callback):
        """Sets the optimizer's rate before every batch of the stage."""

        def on_train_begin(self, logs=None):
            self.base = float(self.model.optimizer.learning_rate)
            self.step = 0

        def on_train_batch_begin(self, batch, logs=None):
            total = epochs * self.params["steps"]
            rate = scheduled_rate(schedule, self.base, self.step, total)
            self.model.optimizer.learning_rate = rate
            self.step += 1

        def on_train_end(self, logs=None):
            self.model.optimizer.learning_rate = self.base

    return Schedule()


def layer_positions(model) -> dict[str, int]:
    return {layer.name: i for i, layer in enumerate(model.layers)}


def n_blocks_below(network, layer_names: list[str]) -> int:
    """Number of blocks of the network cut at ``layer_names`` (deepest counts)."""
    return len(_block_boundaries(network, layer_names))


def _block_boundaries(network, layer_names: list[str]) -> list[str]:
    positions = layer_positions(network.model)
    deepest = max(layer_names, key=positions.__getitem__)
    below = [b.name for b in network.blocks if positions[b.name] < positions[deepest]]
    return below + [deepest]


def check_trainable_blocks(trainable_blocks, network, layer_names) -> int:
    """The number of blocks to unfreeze; ValueError with the valid range."""
    n = n_blocks_below(network, layer_names)
    if trainable_blocks == "all":
        return n
    if (
        isinstance(trainable_blocks, Integral)
        and not isinstance(trainable_blocks, bool)
        and 0 <= trainable_blocks <= n
    ):
        return int(trainable_blocks)
    raise ValueError(
        f"trainable_blocks={trainable_blocks!r} is out of range: the network cut "
        f"at {layer_names} has {n} blocks ({_block_boundaries(network, layer_names)}), "
        f"so use an int from 0 (train the new top only) to {n}, or 'all'."
    )


def frozen_boundary(network, layer_names, k: int) -> str | None:
    """The layer below the top ``k`` blocks, if everything above depends on it only.

    Stage 2 without augmentation can then train on this layer's cached
    output maps instead of running the frozen lower network every epoch.
    None when nothing is frozen (``k`` = all blocks, or 0) or when a cut
    point lies below the boundary (``layer=[-1, -3]`` with ``k=1``).
    """
    boundaries = _block_boundaries(network, layer_names)
    if not 0 < k < len(boundaries):
        return None
    boundary = boundaries[len(boundaries) - k - 1]
    positions = layer_positions(network.model)
    if any(positions[name] <= positions[boundary] for name in layer_names):
        return None
    return boundary


def build_model(network, layer_names, *, pooling, preprocessing, n_classes, dropout,
                hidden_units, augment):
    """The classifier: pixels -> augment -> preprocess -> cut backbone -> top.

    The backbone is a fresh copy of the cached network (``clone_model`` and
    its weights): training never touches the shared network nor a model the
    user passed, and no weights file is read again.

    Returns
    -------
    model : keras.Model
        Outputs class probabilities; its layer ``"logits"`` gives the scores.
    backbone : keras.Model
        The trainable cut backbone inside ``model``.
    """
    import keras

    from ._layers import Pooling
    from .backbones._preprocess import Preprocess

    source = network.model
    copy = keras.models.clone_model(source)
    copy.set_weights(source.get_weights())
    outputs = [copy.get_layer(name).output for name in layer_names]
    backbone = keras.Model(copy.inputs, outputs, name=f"{network.name}_backbone")

    height, width = network.input_size
    pixels = keras.Input((height, width, 3), name="pixels")
    x = pixels
    for layer in augmentation_layers(augment):
        x = layer(x)
    if callable(preprocessing):
        x = keras.layers.Lambda(preprocessing, name="preprocess")(x)
    elif preprocessing is not None:
        x = Preprocess(network.spec_name, preprocessing, name="preprocess")(x)
    # training=False: BatchNorm stays in inference mode in every stage.
    features = backbone(x, training=False)
    x = Pooling(pooling, name="pooling")(features)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    if hidden_units:
        x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="hidden_dropout")(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(
        logits
    )
    return keras.Model(pixels, probabilities, name="fine_tuned_classifier"), backbone


def set_trainable_blocks(backbone, network, layer_names, k: int) -> None:
    """Freeze the backbone but its top ``k`` blocks; BatchNorm always frozen.

    Keras 3 lets the outer ``training`` flag of ``fit`` override the
    ``training=False`` a nested model was called with, so a BatchNorm layer
    left trainable would normalise with batch statistics and update its
    moving averages. A non-trainable BatchNorm runs in inference mode
    whatever the flag: that is what keeps the pretrained statistics intact.
    """
    import keras

    boundaries = _block_boundaries(network, layer_names)
    positions = layer_positions(backbone)
    first = -1 if k >= len(boundaries) else positions[boundaries[len(boundaries) - k - 1]]
    backbone.trainable = k > 0
    for position, layer in enumerate(backbone.layers):
        layer.trainable = k > 0 and position > first
    # Also inside nested models (a user's model wrapping a keras.applications
    # base is one "layer" here).
    for layer in _all_layers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def batches(take, indices, y, sample_weight, batch_size, *, shuffle, seed, workers=2):
    """Batches ``(take(chosen), y[chosen][, sample_weight[chosen]])`` of ``indices``.

    A ``keras.utils.PyDataset``, so Keras prefetches batches in threads
    while the network trains; the order is reshuffled every epoch from a
    seeded generator. ``take`` reads images (memory bounded by the batch
    size, not by the data set) or slices cached features.
    """
    import keras

    class _Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=4)
            self.order = np.asarray(indices)
            self.rng = np.random.default_rng(seed)
            if shuffle:
                self.order = self.rng.permutation(self.order)

        def __len__(self):
            return math.ceil(len(self.order) / batch_size)

        error = None

        def __getitem__(self, index):
            chosen = self.order[index * batch_size : (index + 1) * batch_size]
            try:
                x = take(chosen)
            except Exception as exc:
                # TensorFlow re-raises it as an opaque InvalidArgumentError;
                # run_stage raises this one instead.
                self.error = exc
                raise
            if sample_weight is None:
                return x, y[chosen]
            return x, y[chosen], sample_weight[chosen]

        def on_epoch_end(self):
            if shuffle:
                self.order = self.rng.permutation(self.order)

    return _Batches()


#: Trainers (built, compiled classifiers) kept per process, least recently
#: used dropped first. Each holds one copy of its network's weights.
MAX_CACHED_TRAINERS = 4
_trainers = LRUCache(MAX_CACHED_TRAINERS)
_trainers_lock = threading.Lock()  # look up and build as one step


class Trainer:
    """A classifier built and compiled once, reset and reused by every fit.

    TensorFlow keeps native memory for every training step it traces, and
    ``clear_session()`` does not give it back (measured in
    benchmarks/README.md: tens of MB per fit for MobileNetV2). So the fits
    of a grid search that share an architecture share one trainer: each fit
    restores the variables' initial values (pretrained backbone, seeded top,
    seed-generator states) and zeroes the optimizers, then trains through the
    already traced steps. Memory then grows with the number of distinct
    architectures, not with the number of fits.

    The stages are Keras models over the same layers, each compiled once
    with its own optimizer, because the trainable variables of a traced step
    are fixed when it is traced.
    """

    def __init__(self, network, layer_names, optimizer, weight_decay, build_kwargs):
        self.lock = threading.Lock()
        self.network = network
        self.layer_names = layer_names
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.model, self.backbone = build_model(network, layer_names, **build_kwargs)
        self.initial = [variable.numpy() for variable in self.model.variables]
        self.stages = {}

    def reset(self) -> None:
        for variable, value in zip(self.model.variables, self.initial):
            variable.assign(value)

    def stage_model(self, stage):
        """The compiled model of a :class:`~sktransfer._stages.Stage`, reset.

        Its inputs are pixels (the whole classifier), pooled features (the
        top's layers) or the output maps of ``stage.boundary`` (the layers
        above it); its optimizer's state is zeroed and its rate set to the
        stage's. Stages with the same :attr:`~sktransfer._stages.Stage.key`
        share one compiled model, traced once.
        """
        import keras

        set_trainable_blocks(
            self.backbone, self.network, self.layer_names, stage.trainable_blocks
        )
        if stage.key not in self.stages:
            if stage.inputs == "features":
                model = self._top_model()
            elif stage.inputs == "maps":
                model = self._upper_model(stage.boundary)
            else:
                model = keras.Model(
                    self.model.inputs, self.model.outputs, name=f"{stage.name}_stage"
                )
            scales = layer_rate_scales(
                self.backbone, self.network, self.layer_names,
                stage.trainable_blocks, stage.layer_decay,
            )
            model.compile(
                make_optimizer(
                    self.optimizer, stage.learning_rate, self.weight_decay, scales
                ),
                loss=classification_loss(stage.label_smoothing),
                metrics=["accuracy"],
            )
            self.stages[stage.key] = model
        model = self.stages[stage.key]
        for variable in model.optimizer.variables:
            variable.assign(keras.ops.zeros_like(variable))
        model.optimizer.learning_rate = stage.learning_rate
        return model

    def _upper_model(self, boundary: str):
        """The classifier above ``boundary``, on that layer's output maps.

        Shares the classifier's layers, as :meth:`_top_model` does.
        """
        import keras

        tensor = self.backbone.get_layer(boundary).output
        upper = keras.Model(tensor, self.backbone.outputs, name="upper_backbone")
        maps = keras.Input(tuple(tensor.shape[1:]), name="maps")
        x = upper(maps, training=False)
        x = self.model.get_layer("pooling")(x)
        return keras.Model(maps, self._apply_top(x), name="fine_tune_maps_stage")

    def _apply_top(self, x):
        for name in TOP_LAYERS:
            try:
                layer = self.model.get_layer(name)
            except ValueError:  # no dropout or no hidden layer
                continue
            x = layer(x)
        return x

    def _top_model(self):
        """The classifier's layers after pooling, on pooled features.

        The layers are the classifier's own (shared, not copied): training
        this model trains the classifier's top.
        """
        import keras

        width = self.model.get_layer("pooling").output.shape[-1]
        features = keras.Input((width,), name="features")
        return keras.Model(features, self._apply_top(features), name="head_features_stage")

    def inference_copy(self):
        """An independent copy of the trained classifier (no optimizer)."""
        import keras

        copy = keras.models.clone_model(self.model)
        copy.set_weights(self.model.get_weights())
        return copy


def trainer_for(network, layer_names, optimizer, weight_decay, seed, build_kwargs):
    """The cached :class:`Trainer` of an architecture, built on first use."""
    import keras

    from ._network import preprocessing_key

    augment = build_kwargs["augment"]
    preprocessing = build_kwargs["preprocessing"]
    key = (
        id(network),
        tuple(layer_names),
        optimizer,
        weight_decay,
        seed,
        tuple(sorted(augment.items())),
        preprocessing_key(preprocessing),
        *(build_kwargs[k] for k in ("pooling", "n_classes", "dropout", "hidden_units")),
    )
    with _trainers_lock:
        entry = _trainers.get(key)
        if entry is not None and entry.network is network:
            return entry
        if seed is not None:
            # Seeded right before building: whether the backbone had to be
            # built first (drawing numbers) must not change the top's start.
            keras.utils.set_random_seed(seed)
        trainer = Trainer(network, layer_names, optimizer, weight_decay, build_kwargs)
        _trainers.put(key, trainer)
        return trainer


def clear_trainers() -> None:
    """Drop every cached trainer."""
    with _trainers_lock:
        _trainers.clear()


def build_training(model, batch) -> None:
    """Create a compiled model's optimizer and metrics variables, eagerly.

    Before its train step is traced: variables created while tracing keep
    memory alive. The hook is private Keras API, so it is optional (the
    optimizer alone is then built through its public ``build``).
    """
    if model.optimizer.built:
        return
    if hasattr(model, "_symbolic_build"):
        model._symbolic_build(data_batch=batch)
    else:
        model.optimizer.build(model.trainable_variables)


def run_stage(
    model, train, validation, *, epochs, patience, verbose, callbacks=(),
    schedule="constant",
) -> dict:
    """Fit a compiled stage model; returns the epoch history.

    ``callbacks`` (Keras callbacks) run after early stopping's, so at the end
    of training they see the best weights it restored.
    """
    import keras

    build_training(model, train[0])
    schedules = [] if schedule == "constant" else [_schedule_callback(schedule, epochs)]
    early_stopping = []
    if validation is not None:
        early_stopping.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True
            )
        )
    try:
        history = model.fit(
            train,
            validation_data=validation,
            epochs=epochs,
            callbacks=[*schedules, *early_stopping, *callbacks],
            verbose=verbose,
            # The batches reshuffle themselves from the fit's seed; Keras'
            # own shuffling of a PyDataset would draw from the global RNG.
            shuffle=False,
        )
    except Exception:
        for data in (train, validation):
            if getattr(data, "error", None) is not None:
                raise data.error from None
        raise
    return {key: [float(v) for v in values] for key, values in history.history.items()}
