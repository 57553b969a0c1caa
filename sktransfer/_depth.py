"""Depth chosen from the data: a linear probe per block, and the rule of thumb.

``layer="auto"`` (both estimators) and ``trainable_blocks="auto"``
(:class:`~sktransfer.FineTunedCNNClassifier`) decide from the training
images what transfer learning's rule of thumb leaves to a person. Its four
quadrants:

==============  ==================================  ==============================
..              similar to ImageNet                 different from ImageNet
==============  ==================================  ==============================
small data      features of a high layer; train     features of a lower layer;
                nothing or the top block            train its top block at most
large data      fine-tune the top blocks            fine-tune more blocks (all)
==============  ==================================  ==============================

Similarity is measured: :func:`probe` fits a logistic regression on the
pooled features of each of the top blocks (one pass of the network gives
them all, and keeps them in the feature cache) and scores it by
cross-validation on the training images. The best block is the cut; when a
lower block beats the top one, the images differ from ImageNet's photos.
:func:`trainable_blocks_rule` then reads the number of images per class and
where the cut is.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from ._pooling import n_pooled

#: Blocks probed, counted from the top. One pass computes every block below
#: the top anyway; what grows with this number is the logistic regressions
#: (about 3 s a block on 1,000 images on 2 busy cores) and the chance that a
#: block wins by the probe's noise. The shallow blocks left out are edges
#: and colours at a high resolution: on Fashion-MNIST (EfficientNet-Lite0)
#: the fifth from the top scores 11 to 13 points under the best
#: (benchmarks/README.md, "Depth chosen from the data").
PROBED_BLOCKS = 4
#: The probe's values of C, chosen by the same cross-validation.
C_GRID = (0.01, 0.1, 1.0)
#: Iterations of each logistic regression: a probe of what the features
#: hold, not a converged fit (on separable features lbfgs would run for
#: minutes per fit to no change of accuracy).
MAX_ITER = 300
#: Folds of the probe's cross-validation (fewer when a class is smaller).
N_FOLDS = 3
#: The most images the probe's regressions fit on; more are subsampled,
#: evenly in each class, so that its cost stays seconds on large data.
MAX_PROBE_IMAGES = 3000
#: Fewer images in a class than this, and nothing is fine-tuned: a
#: stratified validation split for early stopping needs about 10 per class.
FEW_PER_CLASS = 10
#: From this many images per class on, data counts as large: more blocks
#: are unfrozen (the demo's threshold for suggesting more blocks).
MANY_PER_CLASS = 1000


def linear_probe(X, y, cv=None, *, refit: bool = True):
    """Logistic regression on standardised features, C chosen by ``cv``.

    The one linear classifier of the depth probe and of ``sktransfer demo``:
    a fitted :class:`~sklearn.model_selection.GridSearchCV` over ``C_GRID``,
    or with ``cv=None`` (too few images per class to choose) a pipeline
    fitted at C=1.0.
    """
    # Imported here: scikit-learn >= 1.9's estimators import sklearn.callback,
    # and importing sktransfer must work where that module is missing.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))
    if cv is not None:
        model = GridSearchCV(
            model, {"logisticregression__C": list(C_GRID)}, cv=cv, refit=refit, n_jobs=1
        )
    # One BLAS thread: on features of this size threads cost more than they
    # give, and on a busy machine they spin: one fit of the probe took 42 s
    # with 2 threads, 0.4 s with one (benchmarks/README.md, "Depth chosen
    # from the data").
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # see MAX_ITER
        return model.fit(X, y)


@dataclass(frozen=True)
class Probe:
    """What :func:`probe` measured, and the block it chose.

    Attributes
    ----------
    scores : dict
        Block index (``-1`` the top block, ``-2`` the one below, ...) ->
        mean cross-validated accuracy of the linear probe, top block first.
    layer : int
        The chosen block: the best score, the higher block on a tie.
    layer_name : str
    n_images, n_folds : int
        Images the probe fitted on, and folds of its cross-validation.
    seconds : float
        Time of the probe's regressions (the network's pass not counted:
        it is the pass ``transform`` would run, and is cached for it).
    columns : slice
        The chosen block's columns in the probed features.
    """

    scores: dict
    layer: int
    layer_name: str
    n_images: int
    n_folds: int
    seconds: float
    columns: slice

    def describe(self) -> str:
        """The choice and its evidence, in one sentence."""
        scores = ", ".join(f"{block}: {score:.3f}" for block, score in self.scores.items())
        return (
            f"layer {self.layer} ({self.layer_name}): the best of a linear probe of "
            f"the top {len(self.scores)} blocks (accuracy {scores}; {self.n_folds}-fold "
            f"cross-validation on {self.n_images} training images, {self.seconds:.1f} s)"
        )


def probe_blocks(network) -> list[int]:
    """The block indices the probe scores, top first: -1, -2, ..."""
    return list(range(-1, -min(PROBED_BLOCKS, len(network.blocks)) - 1, -1))


def check_probe_labels(y, estimator: str) -> None:
    """Refuse labels the probe cannot cross-validate, in the user's terms."""
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        raise ValueError(
            f"{estimator}(layer='auto') chooses the layer by cross-validation on the "
            f"training images, which needs at least 2 classes of at least 2 images "
            f"each; y has {len(counts)} class(es), the smallest with {counts.min()} "
            "image(s). Give more images, or a fixed layer (layer=-1)."
        )


def probe_layer_names(network) -> list[str]:
    """The layers whose features :func:`probe` takes, top block first."""
    if not network.blocks:
        raise ValueError(
            f"layer='auto' chooses among the blocks of the backbone, and {network.name} "
            "has none (no layer reduces the resolution). Give a Keras layer name "
            "as layer."
        )
    return [network.blocks[block].name for block in probe_blocks(network)]


def probe(network, features, y, pooling) -> Probe:
    """Score a linear probe on each of the top blocks; choose the best.

    Parameters
    ----------
    network : sktransfer._network.Network
    features : ndarray of shape (n_images, n_features)
        The pooled features of the training images at
        :func:`probe_layer_names`, concatenated in that order (one pass of
        the network, through the feature cache).
    y : ndarray of shape (n_images,)
        Class labels; every class with at least 2 images.
    pooling : str or int
        The pooling of ``features`` (it sets each block's width).

    Returns
    -------
    probe : Probe
    """
    blocks = probe_blocks(network)
    names = probe_layer_names(network)
    widths = [n_pooled(network.layer_shape(name), pooling) for name in names]
    offsets = np.concatenate([[0], np.cumsum(widths)])
    rows = _subsample(y, MAX_PROBE_IMAGES)
    features, y = features[rows], y[rows]
    n_folds = min(N_FOLDS, int(np.unique(y, return_counts=True)[1].min()))
    # Unshuffled, as scikit-learn's cv=int: the choice depends on the
    # images and their order only, never on a random draw.
    from sklearn.model_selection import StratifiedKFold

    cv = StratifiedKFold(n_folds)
    start = time.perf_counter()
    scores = {
        block: float(
            linear_probe(
                features[:, offsets[i] : offsets[i + 1]], y, cv, refit=False
            ).best_score_
        )
        for i, block in enumerate(blocks)
    }
    layer = choose(scores)
    chosen = blocks.index(layer)
    return Probe(
        scores, layer, names[chosen], len(y), n_folds, time.perf_counter() - start,
        slice(int(offsets[chosen]), int(offsets[chosen + 1])),
    )


def _subsample(y, most: int) -> np.ndarray:
    """Indices of at most ``most`` labels, evenly spaced within each class."""
    if len(y) <= most:
        return np.arange(len(y))
    fraction = most / len(y)
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        keep = max(2, round(len(members) * fraction))
        chosen.append(members[np.linspace(0, len(members) - 1, keep).astype(int)])
    return np.sort(np.concatenate(chosen))


def choose(scores: dict) -> int:
    """The block of the best score; of tied ones the highest (-1 before -2)."""
    best = max(scores.values())
    return max(block for block, score in scores.items() if score == best)


def cut_at_top(network, layer_names) -> bool:
    """Whether the deepest cut is the top block (or above it)."""
    from ._training import layer_positions

    positions = layer_positions(network.model)
    deepest = max(positions[name] for name in layer_names)
    return not network.blocks or deepest >= positions[network.blocks[-1].name]


def trainable_blocks_rule(per_class: int, top_cut: bool) -> tuple[int | str, str]:
    """Blocks to unfreeze, from the data's size and where the cut is.

    Parameters
    ----------
    per_class : int
        Training images in the smallest class.
    top_cut : bool
        Whether the network is cut at its top block: the probe found the
        images close to ImageNet's (or the user chose the top).

    Returns
    -------
    trainable_blocks : int or "all"
        As the parameter takes it.
    reason : str
        Why, in the rule of thumb's terms.

    Notes
    -----
    Measured for small data (benchmarks/README.md, the demo on
    Fashion-MNIST, 100 images per class, cut one block below the top): the
    top block fine-tuned scored 0.863, two blocks 0.853, the frozen
    features 0.862. For large data the numbers of blocks are the rule of
    thumb's, not measured here (no GPU): "the top blocks" taken as 2, and
    "all" where the data differ.
    """
    where = "the top block" if top_cut else "a lower block"
    if per_class < FEW_PER_CLASS:
        return 0, (
            f"trainable_blocks 0: {per_class} images in the smallest class are too "
            f"few to fine-tune (early stopping needs a validation split of about "
            f"{FEW_PER_CLASS} per class), so only the new top trains"
        )
    if per_class < MANY_PER_CLASS:
        return 1, (
            f"trainable_blocks 1: small data ({per_class} images in the smallest "
            f"class, under {MANY_PER_CLASS}) cut at {where}, so only the top block "
            "of the cut network is fine-tuned (small and "
            f"{'similar' if top_cut else 'different'}: more blocks would overfit)"
        )
    if top_cut:
        return 2, (
            f"trainable_blocks 2: large data ({per_class} images in the smallest "
            "class) cut at the top block (close to ImageNet's), so the top blocks "
            "are fine-tuned (large and similar)"
        )
    return "all", (
        f"trainable_blocks 'all': large data ({per_class} images in the smallest "
        "class) cut at a lower block (unlike ImageNet's), so the whole cut network "
        "is fine-tuned (large and different)"
    )
