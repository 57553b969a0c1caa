"""Heat maps of where a CNN looks: Grad-CAM and class activation maps.

Two methods, one contract. Both weight the channels of the deepest cut
layer's output map by how much each channel raises a class's score, sum
them, keep the positive part (ReLU), and return one map per image in
[0, 1], resized to that image's own size:

* **Grad-CAM** (Selvaraju et al., 2017) for :class:`FineTunedCNNClassifier`:
  the channel weights are the gradients of the class logit with respect to
  the cut layer's output, averaged over positions. It works whatever sits on
  top of the cut (any pooling, a hidden layer).
* **CAM** (Zhou et al., 2016) for a pipeline of :class:`CNNFeatureExtractor`
  and a linear classifier: with global average pooling a class's score is a
  linear function of the channel means, so the map is the channels weighted
  by the classifier's coefficients (with a scaler in between folded in). No
  gradient and no second network is needed.

Maps are computed at the cut layer's resolution batch by batch (memory is
bounded by ``batch_size``), then resized once at the end.
"""

from __future__ import annotations

import numpy as np

from . import _compiled, _inputs
from ._network import network_of

#: Transformers allowed between the extractor and the linear classifier of a
#: pipeline: each is an affine map per feature, which folds into the weights.
_SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler")


def grad_cam(classifier, X, target=None) -> np.ndarray | list[np.ndarray]:
    """Grad-CAM maps of a fitted :class:`FineTunedCNNClassifier`.

    See :meth:`FineTunedCNNClassifier.explain`, which calls it.
    """
    return grad_cam_and_predictions(classifier, X, target)[0]


def grad_cam_and_predictions(classifier, X, target=None):
    """Grad-CAM maps and the predicted class indices (-1 where unreadable)."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(classifier)
    images = _inputs.as_images(X, on_error=classifier.on_error)
    targets = check_target(target, classifier.classes_, len(images))
    compute = _grad_cam_function(classifier)
    cams, predicted = _run(
        images,
        classifier.input_size_,
        classifier.batch_size,
        lambda pixels, chosen: [out.numpy() for out in compute(pixels, chosen)],
        targets,
    )
    return fit_to_images(cams, images, classifier.input_size_), predicted


def _grad_cam_function(classifier):
    """The compiled Grad-CAM pass of a fitted classifier, made once per network."""
    return _compiled.function(
        classifier.model_,
        "grad_cam",
        lambda model: _grad_cam_pass(
            model, classifier.layer_names_, classifier.input_size_
        ),
    )


def _grad_cam_pass(model, layer_names: list[str], input_size):
    """Grad-CAM of a fitted network: (pixels, targets) -> (maps, predicted).

    The pass holds sub-models of the network's layers, never the network
    itself (see :mod:`sktransfer._compiled`).
    """
    import keras

    from .backbones._tensorflow import tensorflow

    tf = tensorflow()
    # The nested backbone's outputs, as tensors of the outer graph, are the
    # pooling layer's inputs (one per cut layer, in layer_names order).
    cuts = model.get_layer("pooling").input
    cuts = list(cuts) if isinstance(cuts, (list, tuple)) else [cuts]
    deepest = _deepest(model, layer_names) if len(cuts) > 1 else 0
    # Split at the cut so the tape can watch the maps: a tape records only
    # what depends on watched tensors, and a frozen backbone has no
    # trainable variables that would be watched for us.
    lower = keras.Model(model.inputs, cuts)
    upper = keras.Model(cuts, model.get_layer("logits").output)
    height, width = input_size

    def compute(pixels, targets):
        # training=False: augmentation off, dropout off, BatchNorm frozen.
        all_maps = lower(pixels, training=False)
        all_maps = list(all_maps) if isinstance(all_maps, (list, tuple)) else [all_maps]
        maps = all_maps[deepest]
        with tf.GradientTape() as tape:
            tape.watch(maps)
            logits = tf.cast(upper(all_maps, training=False), tf.float32)
            predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
            chosen = tf.where(targets < 0, predicted, targets)
            # Images are independent in inference mode, so the gradient of
            # the sum is each image's own gradient.
            score = tf.reduce_sum(tf.gather(logits, chosen, batch_dims=1))
        grads = tf.cast(tape.gradient(score, maps), tf.float32)
        maps = tf.cast(maps, tf.float32)
        channel_weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(channel_weights * maps, axis=-1))
        return cams, predicted

    return tf.function(
        compute,
        input_signature=[
            tf.TensorSpec((None, height, width, 3), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ],
        autograph=False,  # no Python control flow on tensors
    )


def _deepest(model, layer_names: list[str]) -> int:
    """Index in ``layer_names`` of the cut layer deepest in the backbone."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            positions = {inner.name: i for i, inner in enumerate(layer.layers)}
            if all(name in positions for name in layer_names):
                depths = [positions[name] for name in layer_names]
                return depths.index(max(depths))
    raise ValueError(
        f"The classifier's network has no nested backbone with the layers "
        f"{layer_names}; refit it with this version of sktransfer."
    )


def class_activation_maps(pipeline, X, target=None) -> np.ndarray | list[np.ndarray]:
    """Class activation maps (CAM) of an extractor + linear classifier pipeline.

    The CAM of class k weights the channels of the cut layer's output map by
    the linear classifier's coefficients for k (with a ``StandardScaler``,
    ``MinMaxScaler`` or ``MaxAbsScaler`` in between folded into the
    weights), sums them, keeps the positive part, normalises each map to
    [0, 1] and resizes it to its image. With ``pooling="avg"`` this is
    exact: the class score is the average of the map plus the intercept.
    With ``pooling="max"`` it is an approximation (the score only sees each
    channel's maximum, while the map shows every position's contribution).

    Parameters
    ----------
    pipeline : Pipeline
        A fitted pipeline whose first step is a :class:`CNNFeatureExtractor`
        with ``pooling="avg"`` or ``"max"`` and one cut layer, optionally
        followed by scalers, and whose last step is a linear classifier with
        ``coef_`` (``LogisticRegression``, ``LinearSVC``,
        ``RidgeClassifier``, ``SGDClassifier``, ...). A fitted search
        (``GridSearchCV``) of such a pipeline is read through its
        ``best_estimator_``.
    X : array-like of images, file paths or PIL images
        As for :class:`CNNFeatureExtractor`.
    target : label, array-like of labels or None, default=None
        The class each map explains: None for each image's predicted class,
        one label (a value of ``classes_``) for all images, or one label per
        image.

    Returns
    -------
    maps : ndarray of shape (n_images, height, width), float32, or list
        Heat maps in [0, 1], aligned with the images: an array when all
        images share one size (e.g. a numeric array), else a list of 2-D
        arrays, one per image at its own size. A map is all zeros where no
        position raises the class's score, and NaN for an image that could
        not be read (``on_error="nan"``).

    See Also
    --------
    FineTunedCNNClassifier.explain : Grad-CAM of a fine-tuned classifier.
    GradCAMDisplay : The maps drawn over their images.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sktransfer import CNNFeatureExtractor
    >>> from sktransfer.inspection import class_activation_maps
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_pipeline(
    ...     CNNFeatureExtractor(backbone="mobilenet_v2", weights=None,
    ...                         input_size=32, layer=-2),
    ...     LogisticRegression(),
    ... ).fit(images, [0, 1] * 3)
    >>> class_activation_maps(pipe, images, target=1).shape
    (6, 32, 32)
    """
    return cam_and_predictions(pipeline, X, target)[0]


def cam_and_predictions(pipeline, X, target=None):
    """Class activation maps and the predicted class indices (-1 where unreadable)."""
    extractor, weights, intercepts, classes = linear_parts(pipeline)
    images = _inputs.as_images(X, on_error=extractor.on_error)
    targets = check_target(target, classes, len(images))
    network = network_of(extractor)
    # The network's own compiled forward pass to the cut layer, unpooled.
    forward = network.feature_function(
        [(extractor.layer_names_[0], "flatten")],
        extractor.preprocessing,
        extractor.jit_compile,
    )
    shape = extractor.layer_shapes_[0]
    pool = np.mean if extractor.pooling_ == "avg" else np.max

    def compute(pixels, chosen):
        maps = forward(pixels).reshape(-1, *shape)
        scores = pool(maps, axis=(1, 2)) @ weights.T + intercepts
        predicted = scores.argmax(axis=1).astype(np.int32)
        chosen = np.where(chosen < 0, predicted, chosen)
        cams = np.einsum("khwc,kc->khw", maps, weights[chosen])
        return np.maximum(cams, 0.0), predicted

    cams, predicted = _run(
        images, extractor.input_size_, extractor.batch_size, compute, targets
    )
    return fit_to_images(cams, images, extractor.input_size_), predicted


def linear_parts(pipeline):
    """The extractor, folded class weights (k, c), intercepts (k,) and classes."""
    from sklearn.utils.validation import check_is_fitted

    from ._extractor import CNNFeatureExtractor

    pipeline = getattr(pipeline, "best_estimator_", pipeline)
    steps = [step for _, step in getattr(pipeline, "steps", [])]
    steps = [step for step in steps if step not in (None, "passthrough")]
    expected = (
        "a fitted Pipeline of a CNNFeatureExtractor, optionally "
        f"{', '.join(_SCALERS)}, and a linear classifier with coef_ (e.g. "
        "make_pipeline(CNNFeatureExtractor(), StandardScaler(), "
        "LogisticRegression()))"
    )
    if type(pipeline).__name__ == "FineTunedCNNClassifier":
        raise TypeError(
            "class_activation_maps takes a pipeline of CNNFeatureExtractor and a "
            "linear classifier; for a FineTunedCNNClassifier use its explain(X) "
            "method (Grad-CAM)."
        )
    if len(steps) < 2 or not isinstance(steps[0], CNNFeatureExtractor):
        raise TypeError(
            f"class_activation_maps needs {expected}; got {type(pipeline).__name__}"
            + (f" with steps {[type(s).__name__ for s in steps]}." if steps else ".")
        )
    extractor, scalers, classifier = steps[0], steps[1:-1], steps[-1]
    check_is_fitted(extractor)
    check_is_fitted(classifier)
    if len(extractor.layer_names_) != 1 or extractor.pooling_ not in ("avg", "max"):
        raise ValueError(
            "class_activation_maps needs one weight per channel of one cut "
            "layer: a CNNFeatureExtractor with pooling='avg' (exact) or 'max' "
            f"(approximate) and a single layer; this one has pooling="
            f"{extractor.pooling_!r} and layer={extractor.layer!r} (cut at "
            f"{extractor.layer_names_}). Refit it with pooling='avg' and one "
            "layer, or use FineTunedCNNClassifier.explain (Grad-CAM works with "
            "any pooling and cut)."
        )
    unsupported = [
        type(s).__name__ for s in scalers if type(s).__name__ not in _SCALERS
    ]
    if unsupported or not hasattr(classifier, "coef_"):
        problem = (
            f"steps {unsupported} between the extractor and the classifier are "
            f"not supported (only {', '.join(_SCALERS)}, whose scaling folds into "
            "the weights)"
            if unsupported
            else f"its final step {type(classifier).__name__} has no coef_ (it is "
            "not a linear classifier)"
        )
        raise TypeError(f"class_activation_maps needs {expected}; {problem}.")

    channels = extractor.layer_shapes_[0][-1]
    # Each scaler is z = f * scale + offset per feature; compose them.
    scale = np.ones(channels)
    offset = np.zeros(channels)
    for scaler in scalers:
        step_scale, step_offset = _affine(scaler, channels)
        scale, offset = scale * step_scale, offset * step_scale + step_offset
    coef = classifier.coef_
    coef = np.asarray(coef.toarray() if hasattr(coef, "toarray") else coef, dtype=float)
    if coef.shape[-1] != channels:
        raise ValueError(
            f"{type(classifier).__name__}.coef_ has {coef.shape[-1]} features but "
            f"the extractor gives {channels}; was the pipeline fitted as a whole?"
        )
    intercept = np.broadcast_to(
        np.asarray(getattr(classifier, "intercept_", 0.0), dtype=float), (len(coef),)
    )
    weights = coef * scale
    intercepts = coef @ offset + intercept
    if len(coef) == 1:
        # Binary: one score for classes_[1]; classes_[0] has its opposite.
        weights = np.vstack([-weights, weights])
        intercepts = np.array([-intercepts[0], intercepts[0]])
    return extractor, weights.astype(np.float32), intercepts, classifier.classes_


def _affine(scaler, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) of a fitted per-feature scaler: z = f * scale + offset."""
    name = type(scaler).__name__
    if name == "StandardScaler":
        scale = 1.0 / scaler.scale_ if scaler.scale_ is not None else np.ones(n)
        mean = scaler.mean_ if scaler.mean_ is not None and scaler.with_mean else 0.0
        return scale, -mean * scale
    if name == "MinMaxScaler":
        return scaler.scale_, scaler.min_
    return 1.0 / scaler.scale_, np.zeros(n)  # MaxAbsScaler


def check_target(target, classes: np.ndarray, n_images: int) -> np.ndarray:
    """Class indices (n_images,) int32 for ``target``; -1 means "predicted".

    ``target`` is None, one label of ``classes``, or one label per image.
    """
    if target is None:
        return np.full(n_images, -1, dtype=np.int32)
    index = {label: i for i, label in enumerate(classes.tolist())}
    scalar = np.ndim(target) == 0
    labels = [target] if scalar else list(np.asarray(target, dtype=object).ravel())
    if not scalar and (np.ndim(target) != 1 or len(labels) != n_images):
        raise ValueError(
            f"target has shape {np.shape(target)}; give one label for all images, "
            f"one label per image ({n_images}), or None for the predicted classes."
        )
    unknown = []
    chosen = np.empty(len(labels), dtype=np.int32)
    for position, label in enumerate(labels):
        label = label.item() if isinstance(label, np.generic) else label
        try:
            chosen[position] = index[label]
        except (KeyError, TypeError):
            unknown.append(label)
    if unknown:
        raise ValueError(
            f"target has labels {unknown[:5]!r} that are not classes of the "
            f"estimator; valid classes are {classes.tolist()} (or None for each "
            "image's predicted class)."
        )
    return np.broadcast_to(chosen, (n_images,)).copy() if scalar else chosen


def _run(images, size, batch_size, compute, targets):
    """Apply ``compute(pixels, targets)`` batch by batch.

    Returns the low-resolution maps (NaN for unreadable images) and the
    predicted class indices (-1 for unreadable images).
    """
    cams = None
    predicted = np.full(len(images), -1, dtype=np.int64)
    failed: list[int] = []
    for start, pixels, batch_failed in _inputs.iter_batches(images, size, batch_size):
        stop = start + len(pixels)
        batch_cams, batch_predicted = compute(pixels, targets[start:stop])
        if cams is None:
            cams = np.empty((len(images), *batch_cams.shape[1:]), dtype=np.float32)
        cams[start:stop] = batch_cams
        predicted[start:stop] = batch_predicted
        failed.extend(batch_failed)
    cams[failed] = np.nan
    predicted[failed] = -1
    _inputs.warn_failed(failed, images)
    return cams, predicted


def fit_to_images(cams: np.ndarray, images, fallback_size):
    """Low-resolution maps resized to each image's size, normalised to [0, 1].

    Returns an (n, h, w) array when all images share one size, else a list.
    """
    sizes = images.sizes(fallback_size)
    # Normalised before resizing too: the shared resize clips to [0, 255].
    cams = _normalise(cams)
    if len(set(sizes)) == 1:
        return _normalise(_resize(cams, sizes[0]))
    return [
        _normalise(_resize(cam[np.newaxis], size))[0] for cam, size in zip(cams, sizes)
    ]


def _resize(cams: np.ndarray, size) -> np.ndarray:
    # The package's single resize (bilinear, antialiased): heat maps line up
    # with images exactly as the network saw them.
    return _inputs.resize(cams[..., np.newaxis], size)[..., 0].astype(np.float32)


def _normalise(cams: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum; all-zero maps stay zero, NaN stays NaN."""
    with np.errstate(invalid="ignore"):
        top = cams.reshape(len(cams), -1).max(axis=1)
    top = np.where(top > 0, top, 1.0).reshape(-1, *([1] * (cams.ndim - 1)))
    return np.clip(cams / top, 0.0, 1.0).astype(np.float32)


def display_pixels(images, index: int, size) -> np.ndarray:
    """The image at ``index`` as float RGB in [0, 1] at ``size`` (for plots)."""
    pixels, _ = images.take(np.array([index]), size)
    return np.clip(pixels[0] / 255.0, 0.0, 1.0)
