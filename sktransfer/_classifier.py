"""FineTunedCNNClassifier: fine tuning of a pretrained CNN as a classifier."""

from __future__ import annotations

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
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
)

from . import _callbacks, _compiled, _engines, _features, _inputs, _training
from ._base import BACKBONE_CONSTRAINTS, CACHE_CONSTRAINTS, BackboneMixin
from .cache import check_memory


class FineTunedCNNClassifier(
    _callbacks.CallbackSupportMixin, ClassifierMixin, BackboneMixin, BaseEstimator
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
    search ``trainable_blocks`` and ``learning_rate`` to decide.

    Parameters
    ----------
    backbone : str, keras.Model or path, default="efficientnet_lite0"
        As in :class:`CNNFeatureExtractor`. A ``keras.Model`` is copied with
        its weights for every fit; the model you pass is never modified.
    weights : {"imagenet"} or None or path, default="imagenet"
        As in :class:`CNNFeatureExtractor`.
    layer : int, str or list, default=-1
        Where to cut the network (a block index, a layer name, or a list).
    pooling : {"avg", "max", "avgmax", "flatten"} or int, default="avg"
        How the cut point's map becomes the top's input.
    input_size : int or (height, width), default=None
        Size images are resized to; the backbone's native size if None.
    preprocessing : {"auto", "tf", "torch", "caffe"}, callable or None, \
default="auto"
        As in :class:`CNNFeatureExtractor`.
    trainable_blocks : int or "all", default=1
        How many top blocks of the cut network are unfrozen in stage 2: 0
        trains the new top only (feature extraction trained end to end),
        ``"all"`` the whole network.
    learning_rate : float, default=1e-4
        Learning rate of stage 2 (fine tuning): small, so the pretrained
        weights are adjusted, never destroyed.
    head_learning_rate : float, default=1e-3
        Learning rate of stage 1 (the new top on the frozen network).
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
    augment : bool or dict, default=True
        Random training-time augmentation. True: ``{"flip": "horizontal",
        "rotation": 0.05, "zoom": 0.1, "translation": 0.1}``; a dict may set
        ``flip`` ("horizontal", "vertical", "horizontal_and_vertical"),
        ``rotation`` (fraction of a full turn), ``zoom``, ``translation``,
        ``contrast`` and ``crop`` (fractions); False for none.
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
        Training curves per stage: ``{"head": {"loss": [...],
        "val_loss": [...], ...}, "fine_tune": {...}}``.
    layer_names_ : list of str
        The Keras layers the network is cut at.
    input_size_ : tuple of int
    trainable_blocks_ : int
        Blocks unfrozen in stage 2.

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
        "trainable_blocks": [Interval(Integral, 0, None, closed="left"), StrOptions({"all"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "head_learning_rate": [Interval(Real, 0, None, closed="neither")],
        "head_epochs": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "optimizer": [StrOptions(set(_training.OPTIMIZERS))],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "hidden_units": [None, Interval(Integral, 1, None, closed="left")],
        "augment": ["boolean", dict],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "early_stopping": ["boolean"],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "random_state": ["random_state"],
        "augment_head": ["boolean", StrOptions({"auto"})],
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
        y = _check_labels(y)
        weights = _check_sample_weights(sample_weight, y)
        images = _inputs.as_images(X, on_error="raise")
        check_memory(self.memory)
        if len(images) != len(y):
            raise ValueError(f"X has {len(images)} images but y has {len(y)} labels.")

        # A failed refit must not leave a mix of old and new fitted state.
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("__")]:
            delattr(self, name)
        seed = _seed(self.random_state)

        network = self._check_backbone_params()
        self.layer_names_ = network.resolve_layers(self.layer)
        self.trainable_blocks_ = _training.check_trainable_blocks(
            self.trainable_blocks, network, self.layer_names_
        )
        self.input_size_ = network.input_size
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        targets = encoder.transform(y).astype(np.int32)
        weights = self._combined_weights(y, weights)

        train, validation = self._split(targets, seed)
        fine_tune = self.trainable_blocks_ > 0 and self.epochs > 0
        augment_head = bool(augment) and (
            not fine_tune if self.augment_head == "auto" else self.augment_head
        )
        boundary = None  # stage 2 trains on cached maps of this frozen layer
        if fine_tune and not augment:
            boundary = self._maps_boundary(network, len(images))
        # Every task is known before training, so progress bars have totals.
        tasks = _callbacks.FitTasks(
            self, X, y, sample_weight=sample_weight,
            n_tasks=sum([not augment_head, True, boundary is not None, fine_tune]),
        )

        def split_batches(take, workers=2):
            """Batches of the training and the validation images (None if none).

            ``take(indices)`` gives the network's input for those images.
            """
            return tuple(
                None
                if indices is None
                else _training.batches(
                    take, indices, targets, weights_, self.batch_size,
                    shuffle=shuffle, seed=seed, workers=workers,
                )
                for indices, weights_, shuffle in (
                    (train, weights, True), (validation, None, False)
                )
            )

        def pixels(indices):  # read on demand: memory bounded by the batch
            return images.take(indices, self.input_size_)[0]

        if augment_head:
            head_data = split_batches(pixels)
        else:
            # The bottleneck recipe: the frozen network's pooled features are
            # computed once (or found in the cache, shared with every other
            # candidate of a grid search) and the top trains on them.
            features = self._features(
                network, self.layer_names_, self.pooling, images,
                progress=tasks.batches("features"),
            )
            head_data = split_batches(features.__getitem__, workers=1)

        trainer = _training.trainer_for(
            network,
            self.layer_names_,
            self.trainable_blocks_,
            self.optimizer,
            seed,
            dict(
                pooling=self.pooling,
                preprocessing=self.preprocessing,
                n_classes=len(self.classes_),
                dropout=self.dropout,
                hidden_units=self.hidden_units,
                augment=augment,
            ),
        )
        stage = dict(patience=self.patience, verbose=self.verbose)
        with trainer.lock:
            trainer.reset()
            head_stage = "head" if augment_head else "head_features"
            head = tasks.stage("head", self.head_epochs, trainer.inference_copy)
            self.history_ = {
                "head": _training.run_stage(
                    trainer.stage_model(head_stage, self.head_learning_rate),
                    *head_data, epochs=self.head_epochs, callbacks=[head], **stage,
                )
            }
            if fine_tune and not head.stop_fit:
                if boundary is None:
                    stage_name = "fine_tune"
                    data = split_batches(pixels)
                else:
                    # No augmentation: the frozen network below the unfrozen
                    # blocks gives the same maps every epoch; compute them once.
                    stage_name = f"fine_tune_maps:{boundary}"
                    maps = self._features(
                        network, [boundary], "flatten", images,
                        progress=tasks.batches("maps"), maps=True,
                    )
                    shape = network.layer_shape(boundary)
                    data = split_batches(
                        lambda chosen: maps[chosen].reshape(-1, *shape), workers=1
                    )
                report = tasks.stage("fine_tune", self.epochs, trainer.inference_copy)
                self.history_["fine_tune"] = _training.run_stage(
                    trainer.stage_model(stage_name, self.learning_rate),
                    *data, epochs=self.epochs, callbacks=[report], **stage,
                )
            self.model_ = trainer.inference_copy()
        tasks.end()
        return self

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

    def _maps_boundary(self, network, n_images: int):
        """The frozen layer whose maps stage 2 can train on, or None.

        Only when those maps of all images take at most a quarter of the
        feature cache's memory limit: while they are computed they exist
        about three times (the pass's output, the cache's rows, the stage's
        array), and they must not evict the cache's other rows.
        """
        from .cache import memory_cache

        boundary = _training.frozen_boundary(
            network, self.layer_names_, self.trainable_blocks_
        )
        if boundary is None:
            return None
        nbytes = 4 * n_images * int(np.prod(network.layer_shape(boundary)))
        return boundary if nbytes <= memory_cache().max_bytes // 4 else None

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
                stacklevel=3,
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
        return _inputs.map_batches(
            self._function(output),
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


def _forward_function(model, output: str, engine, input_size):
    """The compiled pass of a fitted network to one output, run by ``engine``.

    ``output`` is "probabilities" or "logits"; the function maps (k, h, w, 3)
    float32 pixels to (k, n_classes) float32.
    """
    import keras

    from ._tensorflow import tensorflow

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


def _check_labels(y) -> np.ndarray:
    if y is None:
        raise ValueError(
            "FineTunedCNNClassifier requires y to be passed, but the target y is None."
        )
    _check_label_types(y)
    y = np.asarray(y)
    if y.ndim != 1 and y.shape[1:] != (1,):
        # column_or_1d would refuse these too, without saying that multilabel
        # and multi-output targets are what is not supported.
        raise ValueError(
            f"y must be a 1-D array of class labels, one per image, got shape "
            f"{y.shape}. Multilabel and multi-output targets are not supported."
        )
    # A column (n, 1) is accepted with scikit-learn's DataConversionWarning.
    y = column_or_1d(y, warn=True)
    if len(y) == 0:
        raise ValueError("y is empty: at least one labelled image per class is needed.")
    missing = _missing_labels(y)
    if len(missing):
        raise ValueError(
            f"y has missing labels (NaN or None) at indices {missing[:10].tolist()}; "
            "every image needs a label."
        )
    check_classification_targets(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(
            f"y has only one class ({classes.tolist()[0]!r}); a classifier needs at "
            "least 2."
        )
    return y


def _check_label_types(y) -> None:
    """Refuse a mix of string and number labels before NumPy merges them.

    ``np.asarray([1, "1", "b"])`` turns 1 into "1", silently merging two
    classes; scikit-learn's ``unique_labels`` refuses such a mix, and so do we.
    """
    values = y.ravel() if isinstance(y, np.ndarray) else y
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":
        return
    try:
        values = list(values)
    except TypeError:
        return  # not a sequence: check_classification_targets says so
    strings = [v for v in values if isinstance(v, (str, bytes, np.str_))]
    if strings and len(strings) < len(values):
        other = next(v for v in values if not isinstance(v, (str, bytes, np.str_)))
        if other is None or (isinstance(other, float) and other != other):
            return  # a missing label, reported as such
        raise ValueError(
            f"y mixes string labels ({strings[0]!r}) with labels of another type "
            f"({other!r} of type {type(other).__name__}), which would merge classes "
            "such as 1 and '1'. Use one type for all labels, e.g. y = [str(v) for v "
            "in y]."
        )


def _missing_labels(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "f":
        return np.flatnonzero(np.isnan(y))
    if y.dtype.kind == "O":
        return np.flatnonzero([v is None or (isinstance(v, float) and v != v) for v in y])
    return np.array([], dtype=int)


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
