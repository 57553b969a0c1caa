"""FineTunedCNNClassifier: fine tuning of a pretrained CNN as a classifier."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
import weakref
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
)

from . import _compiled, _depth, _engines, _features, _fit_tasks, _inputs, _lr_find, _stages, _training
from ._labels import check_labels
from ._parameters import BACKBONE_CONSTRAINTS, CACHE_CONSTRAINTS, BackboneMixin
from .cache import check_memory


class FineTunedCNNClassifier(
    _fit_tasks.CallbackSupportMixin, ClassifierMixin, BackboneMixin, BaseEstimator
):
    """Fine tuning of a pretrained CNN, as a scikit-learn classifier.

    The second approach of transfer learning, done right by default. Stage 1
    trains a new top (pooling, dropout, optional hidden layer, softmax) on the
    frozen network cut at ``layer``; stage 2 unfreezes the top
    ``trainable_blocks`` blocks and trains them with the small
    ``learning_rate``. BatchNorm layers stay in inference mode throughout,
    augmentation is applied only in training, and early stopping restores
    the best weights by validation loss, on a stratified split taken only
    from the data given to ``fit`` (cross-validation never leaks a test fold
    into early stopping).

    Rule of thumb: little data, keep ``trainable_blocks`` at 0-1; more data,
    unfreeze more; data far from ImageNet, cut lower (``layer=-2``). Grid
    search ``trainable_blocks`` and ``learning_rate`` to decide, or let
    ``layer="auto"`` and ``trainable_blocks="auto"`` apply the rule to the
    training images.

    Parameters
    ----------
    backbone : str, keras.Model or path, default="efficientnet_lite0"
        As in :class:`CNNFeatureExtractor`. A ``keras.Model`` is copied with
        its weights for every fit; the model you pass is never modified.
    weights : {"imagenet"} or None or path, default="imagenet"
        As in :class:`CNNFeatureExtractor`.
    layer : int, str, list or "auto", default=-1
        Where to cut the network (a block index, a layer name, or a list).
        ``"auto"``: the best of the top four blocks for a logistic
        regression on their features, by cross-validation on the training
        images, as in :class:`CNNFeatureExtractor` (its pass fills the
        cache stage 1 trains from).
    pooling : {"avg", "max", "avgmax", "flatten"} or int, default="avg"
        How the cut point's map becomes the top's input.
    input_size : int or (height, width), default=None
        Size images are resized to; the backbone's native size if None.
    preprocessing : {"auto", "tf", "torch", "caffe"}, callable or None, \
default="auto"
        As in :class:`CNNFeatureExtractor`.
    trainable_blocks : int, "all" or "auto", default=1
        How many top blocks of the cut network are unfrozen in stage 2: 0
        trains the new top only (feature extraction trained end to end),
        ``"all"`` the whole network. ``"auto"`` follows the rule of thumb,
        from the training images in the smallest class and the cut: under
        10, 0 (too few for early stopping's validation split); under 1,000
        (small data), 1; from 1,000 on (large data), 2 when the cut is the
        top block (similar to ImageNet) and ``"all"`` when it is lower
        (different: ``layer="auto"`` found a lower block better, or you
        cut there).
    learning_rate : float or "auto", default=1e-4
        Learning rate of stage 2 (fine tuning): small, so the pretrained
        weights are adjusted, never destroyed. ``"auto"``: found by a
        learning-rate range test (as fastai's ``lr_find``) on the training
        images, after stage 1 trained and right before stage 2 runs: up to
        100 batches at rates growing from 1e-7 to 1, the weights and
        optimizer put back afterwards; the rate where the loss falls
        fastest is chosen (where its longest descent has lost half its
        drop), or the default 1e-4, with a warning, when the loss never
        falls clearly. The curve
        is kept in ``lr_find_`` and the rate in ``stages_``; the same
        ``random_state`` chooses the same rate.
    head_learning_rate : float or "auto", default=1e-3
        Learning rate of stage 1 (the new top on the frozen network);
        ``"auto"`` as for ``learning_rate``, before stage 1 (cheap on the
        cached features), with the default 1e-3 as fallback.
    head_epochs : int, default=10
        Maximum epochs of stage 1.
    epochs : int, default=10
        Maximum epochs of stage 2 (0 skips it).
    batch_size : int, default=32
    optimizer : {"adam", "adamw", "sgd", "rmsprop"}, default="adam"
        A fresh optimizer is made for each stage (SGD with momentum 0.9).
    dropout : float, default=0.2
        Dropout before the softmax (and after the hidden layer).
    hidden_units : int or None, default=None
        Units of a ReLU dense layer before the softmax; None for none.
    augment : bool, {"light", "strong"} or dict, default=True
        Random training-time augmentation. True or ``"light"``: ``{"flip":
        "horizontal", "rotation": 0.05, "zoom": 0.1, "translation": 0.1}``;
        ``"strong"``: ``{"flip": "horizontal", "rotation": 0.1, "zoom": 0.2,
        "translation": 0.15, "contrast": 0.2}``; a dict may set
        ``flip`` ("horizontal", "vertical", "horizontal_and_vertical"),
        ``rotation`` (fraction of a full turn), ``zoom``, ``translation``,
        ``contrast`` and ``crop`` (fractions); False for none.
    schedule : {"constant", "cosine", "one_cycle"}, default="constant"
        How each stage's learning rate moves over its planned steps:
        ``"cosine"`` warms up linearly over the first 10 % of the steps, then
        decays along half a cosine to 0; ``"one_cycle"`` is fastai's
        ``fit_one_cycle`` (from 1/25 of the rate up to it over 25 % of the
        steps, then down to almost 0).
    layer_decay : float in (0, 1], default=1.0
        Layer-wise learning-rate decay (discriminative rates): in fine
        tuning, the top unfrozen block trains at ``learning_rate *
        layer_decay``, the one below at ``learning_rate * layer_decay ** 2``,
        and so on; the new top at ``learning_rate``. Lower blocks hold more
        general features, so they move less.
    label_smoothing : float in [0, 1), default=0.0
        Mixes each one-hot target with the uniform distribution in the loss.
    weight_decay : float or None, default=None
        Keras' decoupled weight decay for the optimizer; None keeps the
        optimizer's default (0.004 for ``"adamw"``, none for the others).
        Biases and normalization parameters are never decayed.
    unfreeze_steps : int, default=1
        Gradual unfreezing: fine tuning runs in this many stages, each
        unfreezing more of the top ``trainable_blocks`` blocks (the last all
        of them); the earlier steps get ``epochs // unfreeze_steps`` epochs
        each and the last the rest. 1 unfreezes them all at once.
    test_time_augmentation : bool, default=False
        Predict from the average of the logits of each image and of its
        horizontal mirror: use it when a mirrored image keeps its class
        (as ``augment``'s horizontal flip assumes). Twice the prediction time.
    validation_fraction : float, default=0.1
        Fraction of the training images held out (stratified) for early
        stopping; used only when ``early_stopping=True``.
    early_stopping : bool, default=True
        Stop each stage when the validation loss stops improving for
        ``patience`` epochs, and restore the best weights.
    patience : int, default=3
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes (keys are labels), multiplied into
        ``sample_weight``.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, shuffling, augmentation, dropout and the
        new top's initialisation (through ``keras.utils.set_random_seed``):
        the same value gives the same predictions on the CPU.
    on_error : {"raise", "nan"}, default="raise"
        For unreadable files in ``predict_proba``/``decision_function``: raise,
        or NaN rows with a warning. ``fit`` always raises.
    precision : {"float32", "mixed_float16", "mixed_bfloat16", "bfloat16"}, \
default="float32"
        As in :class:`CNNFeatureExtractor`; ``"bfloat16"`` applies to
        inference only (the frozen network's features, predictions): the
        network trains in float32.
    engine : {"auto", "tensorflow", "onnxruntime", "openvino"}, default="auto"
        What runs inference, as in :class:`CNNFeatureExtractor`: the frozen
        network whose features and maps the stages train on, and the
        trained network in ``predict_proba``, ``decision_function`` and
        ``predict``. Training is TensorFlow's (and Grad-CAM's
        ``explain``). The trained network is converted after ``fit``: at
        the first prediction with an explicit engine; with ``"auto"`` once
        TensorFlow has predicted for as long as the conversion takes, so
        the many small predictions of a grid search never pay for one.
    augment_head : bool or "auto", default="auto"
        Whether ``augment`` also applies in stage 1. False is the bottleneck
        recipe of the Keras blog: the new top trains on the pooled features
        of the unaugmented images, computed once and cached (shared by every
        candidate of a grid search with the same backbone and cut), so a
        stage-1 epoch costs almost nothing; augmentation then applies in
        stage 2. ``"auto"``: False when stage 2 runs (``trainable_blocks`` >
        0 and ``epochs`` > 0), True otherwise, so augmentation is never
        ignored. Without augmentation stage 1 always trains on cached
        features, and stage 2 on the cached output maps of the frozen layer
        below the unfrozen blocks (when those maps of all images fit in the
        cache's memory limit): the frozen network runs once, not every epoch.
    cache : bool, default=True
        As in :class:`CNNFeatureExtractor`: keep the stage-1 features in the
        process-wide cache.
    memory : None, str, path or joblib.Memory, default=None
        As in :class:`CNNFeatureExtractor`: also cache the stage-1 features
        on disk, shared by processes (the maps of stage 2 are kept in
        memory only).
    fingerprint : {"metadata", "content"}, default="metadata"
        As in :class:`CNNFeatureExtractor`.
    verbose : int, default=0
        Keras' epoch logs and progress bars when > 0.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, any hashable values (str, int, bool).
    model_ : keras.Model
        The trained network: RGB pixels in [0, 255] at ``input_size_`` ->
        class probabilities (its layer ``"logits"`` gives the scores).
    history_ : dict
        Training curves per stage that ran, keyed by the stage's name:
        ``{"head": {"loss": [...], "val_loss": [...], ...}, "fine_tune":
        {...}}``.
    stages_ : tuple of Stage
        The training stages as planned from the parameters, in order: each
        says what was trainable (``trainable_blocks``), for how many epochs
        at most, at what ``learning_rate``, and on what ``inputs``
        (``"pixels"``, augmented when ``augment`` is set; cached pooled
        ``"features"``; cached ``"maps"`` of a frozen ``boundary`` layer).
        A rate ``"auto"`` reads as the rate the range test chose.
    lr_find_ : dict
        The learning-rate range tests run, keyed by the stage's name (empty
        when no rate is ``"auto"``): ``{"fine_tune": {"learning_rates":
        [...], "losses": [...], "suggestion": float or None,
        "learning_rate": float}}``, the losses smoothed, ``suggestion`` None
        when the curve had no clear descent and ``learning_rate`` the rate
        used. :class:`~sktransfer.inspection.LearningRateFinderDisplay`
        draws them.
    layer_names_ : list of str
        The Keras layers the network is cut at.
    input_size_ : tuple of int
    trainable_blocks_ : int
        Blocks unfrozen in stage 2.
    layer_ : int
        With ``layer="auto"`` only: the chosen block (``-1`` the deepest).
    depth_scores_ : dict
        With ``layer="auto"`` only: block index -> mean cross-validated
        accuracy of its linear probe, top block first.
    depth_reason_ : str
        With ``layer="auto"`` or ``trainable_blocks="auto"`` only: each
        choice and its evidence, in words.

    See Also
    --------
    CNNFeatureExtractor : Features of a frozen network, for any classifier.

    Notes
    -----
    ``n_features_in_`` is not set: samples are images (or file paths), not
    rows of a fixed number of columns; ``input_size_`` gives the size images
    are resized to. ``warm_start`` is not offered: each fit starts again from
    the pretrained weights, because continuing from an earlier fine-tuned
    state would make a grid search's candidates depend on the order in which
    they ran. The fits that share an architecture reuse one compiled
    network, reset to its initial weights for every fit, so memory stays
    flat across the many fits of a grid search (TensorFlow keeps memory for
    every training step it traces; ``clear_session()`` does not return it).

    With scikit-learn >= 1.9, ``set_callbacks`` takes :mod:`sklearn.callback`
    callbacks: ``fit`` reports the stages ``"head"`` and ``"fine_tune"``
    (the keys of ``history_``) with a sub-task per epoch, and the passes
    that compute cached features with a sub-task per batch. At the end of
    every epoch and stage, ``fitted_estimator`` predicts with the network as
    it was then, and its ``history_`` holds the curves so far, so
    ``ScoringMonitor(scoring="accuracy")`` scores every epoch on ``X``.
    Callbacks set on an estimator travel with its clones (a grid search).
    With an older scikit-learn, ``set_callbacks`` raises an ImportError.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import FineTunedCNNClassifier
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    >>> labels = np.array(["cat", "dog"] * 6)
    >>> clf = FineTunedCNNClassifier(
    ...     backbone="mobilenet_v2", weights=None, input_size=32,
    ...     head_epochs=1, epochs=1, early_stopping=False, random_state=0,
    ... ).fit(images, labels)
    >>> clf.classes_.tolist()
    ['cat', 'dog']
    >>> clf.predict_proba(images).shape
    (12, 2)
    """

    _parameter_constraints: dict = {
        **BACKBONE_CONSTRAINTS,
        "layer": [StrOptions({"auto"}), *BACKBONE_CONSTRAINTS["layer"]],
        "trainable_blocks": [
            Interval(Integral, 0, None, closed="left"), StrOptions({"all", "auto"})
        ],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "head_learning_rate": [
            Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})
        ],
        "head_epochs": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "optimizer": [StrOptions(set(_training.OPTIMIZERS))],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "hidden_units": [None, Interval(Integral, 1, None, closed="left")],
        "augment": ["boolean", dict, StrOptions(set(_training.AUGMENT_PRESETS))],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "early_stopping": ["boolean"],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "random_state": ["random_state"],
        "augment_head": ["boolean", StrOptions({"auto"})],
        "schedule": [StrOptions(set(_stages.SCHEDULES))],
        "layer_decay": [Interval(Real, 0, 1, closed="right")],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [None, Interval(Real, 0, None, closed="left")],
        "unfreeze_steps": [Interval(Integral, 1, None, closed="left")],
        "test_time_augmentation": ["boolean"],
        **CACHE_CONSTRAINTS,
    }

    def __init__(
        self,
        backbone="efficientnet_lite0",
        *,
        weights="imagenet",
        layer=-1,
        pooling="avg",
        input_size=None,
        preprocessing="auto",
        trainable_blocks=1,
        learning_rate=1e-4,
        head_learning_rate=1e-3,
        head_epochs=10,
        epochs=10,
        batch_size=32,
        optimizer="adam",
        dropout=0.2,
        hidden_units=None,
        augment=True,
        validation_fraction=0.1,
        early_stopping=True,
        patience=3,
        class_weight=None,
        random_state=None,
        on_error="raise",
        precision="float32",
        engine="auto",
        augment_head="auto",
        schedule="constant",
        layer_decay=1.0,
        label_smoothing=0.0,
        weight_decay=None,
        unfreeze_steps=1,
        test_time_augmentation=False,
        cache=True,
        memory=None,
        fingerprint="metadata",
        verbose=0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.input_size = input_size
        self.preprocessing = preprocessing
        self.trainable_blocks = trainable_blocks
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.head_epochs = head_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.dropout = dropout
        self.hidden_units = hidden_units
        self.augment = augment
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.patience = patience
        self.class_weight = class_weight
        self.random_state = random_state
        self.on_error = on_error
        self.precision = precision
        self.engine = engine
        self.augment_head = augment_head
        self.schedule = schedule
        self.layer_decay = layer_decay
        self.label_smoothing = label_smoothing
        self.weight_decay = weight_decay
        self.unfreeze_steps = unfreeze_steps
        self.test_time_augmentation = test_time_augmentation
        self.cache = cache
        self.memory = memory
        self.fingerprint = fingerprint
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the new top, then fine-tune the top blocks.

        Parameters
        ----------
        X : array-like of images, file paths or PIL images
            As for :class:`CNNFeatureExtractor`; files are read batch by
            batch, every epoch.
        y : array-like of shape (n_images,)
            Class labels: any hashable values, at least two classes. A
            column of shape (n_images, 1) is accepted with a
            ``DataConversionWarning``, as in scikit-learn.
        sample_weight : float or array-like of shape (n_images,), default=None
            Non-negative weights of the images in the loss, not all zero; a
            float weighs every image the same.

        Returns
        -------
        self : FineTunedCNNClassifier
        """
        augment = _training.check_augment(self.augment)
        # Labels first: they are cheap to check and their errors are the
        # clearest (a single class, NaN, a continuous target).
        y = check_labels(y)
        weights = _check_sample_weights(sample_weight, y)
        images = _inputs.as_images(X, on_error="raise")
        check_memory(self.memory)
        if len(images) != len(y):
            raise ValueError(f"X has {len(images)} images but y has {len(y)} labels.")

        self._forget_fit()  # a failed refit must not leave a mix of old and new state
        seed = _seed(self.random_state)
        network = self._fit_network(images, y)
        targets, weights = self._fit_classes(y, weights)
        self.stages_ = _stages.plan(self, network, len(images), augment)
        data = _StageData(self, network, images, targets, weights, seed)
        # Every task is known before training, so progress bars have totals.
        tasks = _fit_tasks.FitTasks(
            self, X, y, sample_weight=sample_weight,
            n_tasks=len(self.stages_) + len(_stages.passes(self.stages_)),
        )
        trainer = self._trainer(network, augment, seed)
        self.history_, self.lr_find_ = {}, {}
        with trainer.lock:
            trainer.reset()
            for stage in self.stages_:
                batches = data.batches(stage, tasks)
                stage = self._resolve_learning_rate(stage, trainer, batches[0])
                report = tasks.stage(stage.name, stage.epochs, trainer.inference_copy)
                self.history_[stage.name] = _training.run_stage(
                    trainer.stage_model(stage), *batches, epochs=stage.epochs,
                    callbacks=[report], patience=self.patience, verbose=self.verbose,
                    schedule=stage.schedule,
                )
                if report.stop_fit:  # a callback asked that no later stage run
                    break
            self.model_ = trainer.inference_copy()
        tasks.end()
        return self

    def _resolve_learning_rate(self, stage, trainer, train):
        """``stage``, with the rate of a range test if its rate is ``"auto"``.

        Records the test in ``lr_find_`` and the rate in ``stages_``.
        """
        if stage.learning_rate != "auto":
            return stage
        parameter = "head_learning_rate" if stage.name == "head" else "learning_rate"
        fallback = inspect.signature(type(self)).parameters[parameter].default
        # Any number: the range test sets the rate of every step.
        model = trainer.stage_model(dataclasses.replace(stage, learning_rate=fallback))
        self.lr_find_[stage.name] = _lr_find.find(
            model, train, parameter=parameter, fallback=fallback, stage=stage.title
        )
        chosen = dataclasses.replace(
            stage, learning_rate=self.lr_find_[stage.name]["learning_rate"]
        )
        self.stages_ = tuple(chosen if s is stage else s for s in self.stages_)
        return chosen

    def _forget_fit(self) -> None:
        """Drop every fitted attribute."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("__")]:
            delattr(self, name)

    def _fit_network(self, images, y):
        """The cut network; sets ``layer_names_``, ``trainable_blocks_``, ``input_size_``.

        The ``"auto"`` depths are chosen here, from the training images.
        """
        network = self._check_backbone_params()
        reasons = []
        if isinstance(self.layer, str) and self.layer == "auto":
            _depth.check_probe_labels(y, "FineTunedCNNClassifier")
            names = _depth.probe_layer_names(network)
            features = self._features(network, names, self.pooling, images)
            probe = _depth.probe(network, features, y, self.pooling)
            self.layer_ = probe.layer
            self.depth_scores_ = probe.scores
            self.layer_names_ = [probe.layer_name]
            reasons.append(probe.describe())
        else:
            self.layer_names_ = network.resolve_layers(self.layer)
        trainable_blocks = self.trainable_blocks
        if trainable_blocks == "auto":
            per_class = int(np.unique(y, return_counts=True)[1].min())
            trainable_blocks, reason = _depth.trainable_blocks_rule(
                per_class, _depth.cut_at_top(network, self.layer_names_)
            )
            if trainable_blocks != "all":  # a small network may have fewer
                n = _training.n_blocks_below(network, self.layer_names_)
                trainable_blocks = min(trainable_blocks, n)
            reasons.append(reason)
        self.trainable_blocks_ = _training.check_trainable_blocks(
            trainable_blocks, network, self.layer_names_
        )
        if reasons:
            self.depth_reason_ = "; ".join(reasons)
        self.input_size_ = network.input_size
        return network

    def _trainer(self, network, augment: dict, seed):
        """The (cached) trainer of this architecture: the classifier, compiled."""
        return _training.trainer_for(
            network, self.layer_names_, self.optimizer, self.weight_decay, seed,
            dict(
                pooling=self.pooling,
                preprocessing=self.preprocessing,
                n_classes=len(self.classes_),
                dropout=self.dropout,
                hidden_units=self.hidden_units,
                augment=augment,
            ),
        )

    def _fit_classes(self, y, sample_weight):
        """Targets 0..n_classes-1 and per-image weights; sets ``classes_``."""
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        targets = encoder.transform(y).astype(np.int32)
        return targets, self._combined_weights(y, sample_weight)

    def _features(self, network, layers, pooling, images, progress=None, maps=False):
        """Pooled features of the frozen network, through the feature cache.

        ``maps=True`` asks for the unpooled maps of stage 2: kept in memory
        only (too large for the disk cache) and without the eager extras.
        """
        return _features.features(
            network,
            layers,
            pooling,
            images,
            preprocessing=self.preprocessing,
            jit_compile=False,
            batch_size=self.batch_size,
            cache=self.cache,
            memory=None if maps else self.memory,
            fingerprint=self.fingerprint,
            verbose=self.verbose,
            progress=progress,
            eager=not maps,
            engine=self._engine(),
        )

    def _combined_weights(self, y, sample_weight):
        if self.class_weight is None:
            return sample_weight
        if isinstance(self.class_weight, dict):
            unknown = set(self.class_weight) - set(self.classes_.tolist())
            if unknown:
                raise ValueError(
                    f"class_weight has labels {sorted(map(str, unknown))} that are "
                    f"not in y; the classes are {self.classes_.tolist()}."
                )
        per_class = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        per_image = per_class[np.searchsorted(self.classes_, y)]
        return per_image if sample_weight is None else per_image * sample_weight

    def _split(self, targets, seed):
        """Stratified train/validation indices (validation None if not used)."""
        indices = np.arange(len(targets))
        if not self.early_stopping:
            return indices, None
        splitter = StratifiedShuffleSplit(
            n_splits=1, test_size=self.validation_fraction, random_state=seed
        )
        try:
            train, validation = next(splitter.split(indices, targets))
        except ValueError as exc:
            warnings.warn(
                f"Early stopping is off for this fit: a stratified validation "
                f"split of validation_fraction={self.validation_fraction} is not "
                f"possible with {len(targets)} images ({exc}). Give more images, "
                "a larger validation_fraction, or early_stopping=False.",
                UserWarning,
                stacklevel=4,
            )
            return indices, None
        return train, validation

    def _function(self, output: str):
        """A compiled forward pass of the trained model to one output.

        Made once per fitted network and engine and kept with the network
        (:mod:`sktransfer._compiled`), so predicting leaves ``vars(self)``
        unchanged.
        """
        engine = self._engine()
        return _compiled.function(
            self.model_,
            (output, engine),
            lambda model: _forward_function(model, output, engine, self.input_size_),
        )

    def _forward(self, X, output: str) -> np.ndarray:
        check_is_fitted(self)
        images = _inputs.as_images(X, on_error=self.on_error)
        function = self._function(output)
        if self.test_time_augmentation:
            function = _flip_averaged(self._function("logits"), output)
        return _inputs.map_batches(
            function,
            images,
            self.input_size_,
            self.batch_size,
            len(self.classes_),
            verbose=self.verbose,
        )

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of images, file paths or PIL images

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes), float32
            Columns ordered as ``classes_``; rows sum to 1 (NaN for
            unreadable files with ``on_error="nan"``).
        """
        return self._forward(X, "probabilities")

    def decision_function(self, X):
        """Class scores before the softmax (logits).

        Parameters
        ----------
        X : array-like of images, file paths or PIL images

        Returns
        -------
        scores : ndarray of shape (n_images, n_classes), or (n_images,) for
            two classes (the score of ``classes_[1]`` relative to
            ``classes_[0]``, as scikit-learn's binary classifiers).
        """
        logits = self._forward(X, "logits")
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array-like of images, file paths or PIL images

        Returns
        -------
        labels : ndarray of shape (n_images,)
        """
        proba = self.predict_proba(X)
        unreadable = np.flatnonzero(np.isnan(proba).any(axis=1))
        if len(unreadable):
            raise ValueError(
                f"No class can be predicted for the unreadable images at indices "
                f"{unreadable[:10].tolist()}; use predict_proba (NaN rows) or fix "
                "the files."
            )
        return self.classes_[proba.argmax(axis=1)]

    def explain(self, X, target=None) -> np.ndarray | list[np.ndarray]:
        """Grad-CAM heat maps: where in each image the network sees a class.

        The gradients of the class's logit with respect to the output map of
        the deepest cut layer (the last of ``layer_names_``), averaged over
        positions, weight that map's channels; their sum, kept where
        positive (ReLU) and normalised per image, is resized to the image.
        Runs in inference mode (no augmentation, no dropout) in batches of
        ``batch_size``.

        Parameters
        ----------
        X : array-like of images, file paths or PIL images
        target : label, array-like of labels or None, default=None
            The class each map explains: None for each image's predicted
            class, one label (a value of ``classes_``) for all images, or
            one label per image.

        Returns
        -------
        maps : ndarray of shape (n_images, height, width), float32, or list
            Heat maps in [0, 1], aligned with the images: an array when all
            images share one size (e.g. a numeric array), else a list of 2-D
            arrays, one per image at its own size. A map is all zeros where
            nothing raises the class's score, and NaN for an image that
            could not be read (``on_error="nan"``).

        See Also
        --------
        sktransfer.inspection.GradCAMDisplay : The maps drawn over the images.

        Examples
        --------
        >>> import numpy as np
        >>> from sktransfer import FineTunedCNNClassifier
        >>> rng = np.random.default_rng(0)
        >>> images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
        >>> clf = FineTunedCNNClassifier(
        ...     backbone="mobilenet_v2", weights=None, input_size=32, layer=-2,
        ...     head_epochs=1, epochs=0, early_stopping=False, random_state=0,
        ... ).fit(images, ["cat", "dog"] * 3)
        >>> maps = clf.explain(images, target="dog")
        >>> maps.shape, bool(maps.min() >= 0 and maps.max() <= 1)
        ((6, 32, 32), True)
        """
        from ._gradcam import grad_cam

        return grad_cam(self, X, target)

    def __getstate__(self):
        state = self.__dict__.copy()
        if "model_" in state:
            from ._serialization import model_to_bytes

            state["model_"] = model_to_bytes(state["model_"])
        return state

    def __setstate__(self, state):
        if isinstance(state.get("model_"), bytes):
            from ._serialization import model_from_bytes

            state["model_"] = model_from_bytes(state["model_"])
        super().__setstate__(state)

    def __copy__(self):
        # Shallow, as copy.copy should be: without this, copying would go
        # through __getstate__ and serialise the network (seconds). scikit-learn
        # copies the estimator this way for every callback's fitted_estimator.
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.input_tags.positive_only = True  # pixel values are 0-255
        tags.classifier_tags.multi_class = True
        tags.non_deterministic = self.random_state is None
        return tags


class _StageData:
    """The training and validation batches of each stage of one fit.

    Pixels are read on demand (memory bounded by the batch); a pass of the
    frozen network (pooled features, or the maps of a frozen layer) is
    computed the first time a stage needs it, then shared by later stages.
    """

    def __init__(self, classifier, network, images, targets, weights, seed):
        self.classifier = classifier
        self.network = network
        self.images = images
        self.targets = targets
        self.weights = weights
        self.seed = seed
        self.train, self.validation = classifier._split(targets, seed)
        self.computed = {}

    def batches(self, stage, tasks) -> tuple:
        """(training batches, validation batches or None) for ``stage``."""
        if stage.inputs == "pixels":
            size = self.classifier.input_size_
            return self._split_batches(lambda chosen: self.images.take(chosen, size)[0])
        key = (stage.inputs, stage.boundary)
        if key not in self.computed:
            self.computed[key] = self._pass(stage, tasks)
        return self._split_batches(self.computed[key], workers=1)

    def _pass(self, stage, tasks):
        """``take(indices)`` over one pass of the frozen network."""
        classifier = self.classifier
        if stage.inputs == "features":
            # The bottleneck recipe: the frozen network's pooled features are
            # computed once (or found in the cache, shared with every other
            # candidate of a grid search) and the top trains on them.
            features = classifier._features(
                self.network, classifier.layer_names_, classifier.pooling, self.images,
                progress=tasks.batches("features"),
            )
            return features.__getitem__
        maps = classifier._features(
            self.network, [stage.boundary], "flatten", self.images,
            progress=tasks.batches("maps"), maps=True,
        )
        shape = self.network.layer_shape(stage.boundary)
        return lambda chosen: maps[chosen].reshape(-1, *shape)

    def _split_batches(self, take, workers=2):
        return tuple(
            None
            if indices is None
            else _training.batches(
                take, indices, self.targets, weights, self.classifier.batch_size,
                shuffle=shuffle, seed=self.seed, workers=workers,
            )
            for indices, weights, shuffle in (
                (self.train, self.weights, True), (self.validation, None, False)
            )
        )


def _flip_averaged(logits, output: str):
    """A forward pass averaging the logits of each image and of its mirror.

    Averaging logits (not probabilities) keeps ``predict``,
    ``predict_proba`` and ``decision_function`` consistent with each other.
    """

    from scipy.special import softmax

    def forward(batch):
        mean = (logits(batch) + logits(np.ascontiguousarray(batch[:, :, ::-1]))) / 2
        if output == "logits":
            return mean
        return softmax(mean, axis=1).astype(np.float32)

    return forward


def _forward_function(model, output: str, engine, input_size):
    """The compiled pass of a fitted network to one output, run by ``engine``.

    ``output`` is "probabilities" or "logits"; the function maps (k, h, w, 3)
    float32 pixels to (k, n_classes) float32.
    """
    import keras

    from .backbones._tensorflow import tensorflow

    tf = tensorflow()
    # Weakly: a cached function must not keep its network (its key) alive.
    # The logits sub-model holds the layers, not the network.
    network = weakref.ref(model)
    logits = (
        keras.Model(model.input, model.get_layer("logits").output)
        if output == "logits"
        else None
    )

    def forward(x):
        target = network() if logits is None else logits
        return tf.cast(target(x, training=False), tf.float32)

    height, width = input_size
    compiled = tf.function(
        forward,
        input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)],
        autograph=False,  # a plain model call: nothing to convert
    )

    def run(batch):
        return compiled(batch).numpy()

    if engine.name == "tensorflow":
        return run
    return _engines.EngineFunction(
        run,
        lambda: _training.inference_model(network(), output),
        engine,
        input_size,
        model.count_params(),
    )


def _seed(random_state) -> int | None:
    if random_state is None:
        return None
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _check_sample_weights(sample_weight, y: np.ndarray):
    """scikit-learn's sample_weight checks, with the shape error in our terms.

    None stays None rather than becoming ones: training then runs without
    weights, exactly as before weights were supported.
    """
    if sample_weight is None:
        return None
    try:
        return _check_sample_weight(
            sample_weight, y, dtype=np.float32, ensure_non_negative=True
        )
    except ValueError:
        if np.shape(sample_weight) not in ((), (len(y),)):
            raise ValueError(
                f"sample_weight has shape {np.shape(sample_weight)}; expected "
                f"({len(y)},), one weight per image and label."
            ) from None
        raise
