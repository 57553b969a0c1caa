"""The feature cache (issue: compute each image once): grid searches that pay one pass.

Sections, each a function returning a :class:`Table` (markdown rows plus
their settings), runnable alone:

a. ``grid_c``: ``GridSearchCV(Pipeline([CNNFeatureExtractor, StandardScaler,
   LogisticRegression]))`` over C, against the baseline "extract once, then
   search on the features": sktransfer with the in-memory cache, with
   ``cache=False``, with the disk cache alone and with both, and a naive
   pipeline (a ``FunctionTransformer`` calling a hand-written Keras model's
   ``predict``).
b. ``grid_layer``: the same search over ``layer`` with C fixed, against one
   pass to the top plus the classifier on each layer's precomputed features;
   the grid in both orders (deepest first costs one pass, shallowest first
   a partial pass and then one to the top).
c. ``eager_parts``: one pass that computes only the requested cut
   (``cache=False``) against the cached pass, which also keeps the average
   and max pooled features of every block below the cut.
d. ``stage1_epochs``: stage 1 of ``FineTunedCNNClassifier`` per epoch, trained
   on cached features against trained through the frozen network.
e. ``fine_tune_search``: ``GridSearchCV`` over ``trainable_blocks`` x
   ``learning_rate`` with ``FineTunedCNNClassifier`` against scikeras'
   ``KerasClassifier`` around the same network.

Every row also gives the growth of the resident set size over the measured
block (``_common.PeakMemory``, sampled every 20 ms). Between measured
variants the feature cache, the built networks (and their cut-depth memory)
and the compiled trainers are cleared, so each variant starts cold; the
network is then built again *before* the clock starts (model building and
reading the weights are excluded from every row alike), while tracing the
first forward pass is included in every row alike (the naive pipeline's
``predict`` traces too).

    python benchmarks/bench_cache.py                  # every section, default sizes
    python benchmarks/bench_cache.py --sections a b --n-images 500
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

# Imported here so that their BLAS and OpenMP libraries are loaded before
# run_section limits their thread pools.
import sklearn.linear_model
import sklearn.model_selection  # noqa: F401
from sklearn.base import BaseEstimator, TransformerMixin

from _common import PeakMemory, machine

BACKBONE = "efficientnet_lite0"
SEED = 0
C_GRID = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
LAYER_GRID = [-1, -2, -3, -4]


# ---------------------------------------------------------------- helpers


@dataclass
class Table:
    """A markdown table: a title, its settings (a paragraph) and rows."""

    title: str
    settings: str
    header: list
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def add(self, *cells) -> None:
        self.rows.append("| " + " | ".join(str(c) for c in cells) + " |")

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", self.settings, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "---|" * len(self.header))
        lines += self.rows
        if self.notes:
            lines += [""] + self.notes
        return "\n".join(lines)


def fashion(n_images: int):
    """``n_images`` Fashion-MNIST training images, ``n_images // 10`` per class.

    The same draw as ``sktransfer demo`` (100 per class is the demo's
    training set), shuffled once so that folds are not ordered by class.
    """
    per_class = max(1, n_images // 10)
    X, y = demo_training_set(per_class)
    order = np.random.default_rng(SEED).permutation(len(y))
    return X[order], y[order]


def demo_training_set(per_class: int):
    """The training images ``sktransfer demo`` draws from Fashion-MNIST."""
    from sktransfer._demo import load_builtin_data

    data = load_builtin_data("fashion-mnist", per_class, SEED, download=False)
    train = data.splits[0][0]
    return data.X[train], data.y[train]


def cold() -> None:
    """Forget every feature, built network (with its cut depths) and trainer."""
    import keras

    from sktransfer import _network, _training, cache

    cache.clear()
    _network.clear_cache()
    _training.clear_trainers()
    keras.backend.clear_session()
    gc.collect()


def build_network(input_size: int) -> None:
    """Build (and keep in sktransfer's network cache) the network, untimed."""
    from sktransfer import CNNFeatureExtractor

    dummy = np.zeros((1, 8, 8), dtype=np.uint8)
    CNNFeatureExtractor(BACKBONE, weights="imagenet", input_size=input_size).fit(dummy)


def measure(run, setup=None, repeats: int = 1):
    """Median wall time, largest RSS growth (MB) and the last result of ``run``.

    ``setup`` runs before every repeat, outside the clock.
    """
    times, growths, result = [], [], None
    for _ in range(repeats):
        if setup is not None:
            setup()
        gc.collect()
        with PeakMemory() as memory:
            start = time.perf_counter()
            result = run()
            times.append(time.perf_counter() - start)
        growths.append(memory.growth_mb)
    return statistics.median(times), max(growths), result


@contextmanager
def count_passes():
    """Counts images sent through the network for features (a list of one int).

    Wraps ``sktransfer._network.FeatureFunction.__call__`` for the block only:
    every forward pass of the extractor and of stage-1 features goes there,
    or, once an engine has converted the network, to the engine's batch
    function (``sktransfer._engines.compile_onnx``), wrapped too.
    """
    from sktransfer import _engines, _network

    counted = [0]
    original = _network.FeatureFunction.__call__

    def counting(self, batch):
        counted[0] += len(batch)
        return original(self, batch)

    _network.FeatureFunction.__call__ = counting
    _ENGINE_COUNTERS.append(counted)
    if not hasattr(_engines.compile_onnx, "counting"):
        _engines.compile_onnx = _counting_compile(_engines.compile_onnx)
    try:
        yield counted
    finally:
        _network.FeatureFunction.__call__ = original
        _ENGINE_COUNTERS.remove(counted)


#: The counters of the open ``count_passes`` blocks. A network converted in
#: one block keeps its engine function for the next, so engine batches are
#: counted for whichever blocks are open when they run.
_ENGINE_COUNTERS: list = []


def _counting_compile(compile_onnx):
    def compile_counting(onnx, engine):
        run = compile_onnx(onnx, engine)

        def counting_run(batch):
            for counted in _ENGINE_COUNTERS:
                counted[0] += len(batch)
            return run(batch)

        return counting_run

    compile_counting.counting = True
    return compile_counting


def extractor(input_size: int, **params):
    from sktransfer import CNNFeatureExtractor

    return CNNFeatureExtractor(
        BACKBONE, weights="imagenet", input_size=input_size, **params
    )


def logistic(**params):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, **params)


def quiet():
    """Silence convergence and deprecation chatter of the classifiers."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from sklearn.exceptions import ConvergenceWarning

        warnings.filterwarnings("ignore", category=ConvergenceWarning)
    except ImportError:  # pragma: no cover
        pass


class NaiveExtractor:
    """What one writes by hand: ``Model.predict`` of a Keras model, in a transformer.

    The same network (EfficientNet-Lite0 with its ImageNet weights, headless),
    its preprocessing (``Rescaling`` to [-1, 1]) and global average pooling,
    built once; every call resizes the grayscale images to RGB at
    ``input_size`` and runs ``predict`` on all of them.
    """

    def __init__(self, input_size: int, batch_size: int = 32):
        import keras

        from sktransfer.backbones._efficientnet_lite import EfficientNetLite

        self.input_size = input_size
        self.batch_size = batch_size
        base = EfficientNetLite(
            "lite0",
            include_top=False,
            weights="imagenet",
            input_shape=(input_size, input_size, 3),
        )
        inputs = keras.Input((input_size, input_size, 3))
        x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
        x = base(x, training=False)
        outputs = keras.layers.GlobalAveragePooling2D()(x)
        self.model = keras.Model(inputs, outputs)
        self.images = 0  # counted images through the network

    def pixels(self, X):
        import tensorflow as tf

        x = np.asarray(X, dtype=np.float32)
        if x.ndim == 3:
            x = np.repeat(x[..., None], 3, axis=-1)
        size = (self.input_size, self.input_size)
        return np.clip(
            tf.image.resize(x, size, method="bilinear", antialias=True).numpy(), 0, 255
        )

    def __call__(self, X):
        self.images += len(X)
        return self.model.predict(self.pixels(X), batch_size=self.batch_size, verbose=0)

    def transformer(self):
        """A FunctionTransformer of a plain function (as one writes it by hand).

        A function, not this object: scikit-learn's ``clone`` deep-copies
        the parameters it does not know, and a copied Keras model per
        candidate is not what a user writing a function at module level gets.
        """
        from sklearn.preprocessing import FunctionTransformer

        def features(X):
            return self(X)

        return FunctionTransformer(features)


def search_c(steps, X, y, C, cv):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = Pipeline([*steps, ("scaler", StandardScaler()), ("clf", logistic())])
    return GridSearchCV(pipe, {"clf__C": list(C)}, cv=cv, n_jobs=1).fit(X, y)


def best(search, key) -> str:
    """The best value of ``key`` and its mean CV accuracy."""
    value = search.best_params_[key]
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{shown} ({search.best_score_:.4f})"


def one_extraction_s(*, n_images, input_size, layer=-1, repeats=1):
    """Time of one extraction with cache=False on a freshly built network."""
    X, _ = fashion(n_images)

    def setup():
        cold()
        build_network(input_size)

    seconds, growth, F = measure(
        lambda: extractor(input_size, layer=layer, cache=False).fit(X).transform(X),
        setup,
        repeats,
    )
    return seconds, growth, F


# ---------------------------------------------------------------- a. grid over C


def grid_c(
    n_images=1000, input_size=64, cv=5, C=tuple(C_GRID), repeats=1, naive=True
) -> Table:
    """GridSearchCV over C of extractor + scaler + logistic regression."""
    quiet()
    X, y = fashion(n_images)
    n = len(y)
    n_fits = len(C) * cv + 1
    table = Table(
        f"a. GridSearchCV over C, {len(C)} values x {cv} folds",
        f"`GridSearchCV(Pipeline([CNNFeatureExtractor, StandardScaler, "
        f"LogisticRegression(max_iter=1000)]), {{C: {list(C)}}}, cv={cv}, n_jobs=1)`: "
        f"{n_fits} fits on {n} Fashion-MNIST training images (the demo's draw, "
        f"{n // 10} per class), {BACKBONE} (ImageNet) at {input_size}x{input_size}, "
        f"layer=-1, batch 32. Baseline = one extraction of the {n} images with "
        f"`cache=False` + the same search over `Pipeline([StandardScaler, "
        f"LogisticRegression])` on the precomputed features, both timed. Passes = "
        f"images through the network / {n}. Median of {repeats} run(s), each "
        f"from a cold cache (and an empty disk-cache folder) with the network "
        f"built beforehand. Target: the cached search <= 1.3x the baseline.",
        [
            "method",
            "wall (s)",
            "/ baseline",
            "/ one extraction",
            "passes",
            "best C (CV accuracy)",
            "peak RSS growth (MB)",
        ],
    )

    t_extract, m_extract, F = one_extraction_s(
        n_images=n_images, input_size=input_size, repeats=repeats
    )
    t_clf, m_clf, search = measure(lambda: search_c([], F, y, C, cv), None, repeats)
    baseline = t_extract + t_clf
    table.add(
        "baseline: one extraction (cache=False)",
        f"{t_extract:.1f}",
        "-",
        "1.00",
        "1.0",
        "-",
        f"{m_extract:.0f}",
    )
    table.add(
        "baseline: the search on precomputed features",
        f"{t_clf:.1f}",
        "-",
        f"{t_clf / t_extract:.2f}",
        "0",
        best(search, "clf__C"),
        f"{m_clf:.0f}",
    )
    table.add(
        "**baseline total**",
        f"{baseline:.1f}",
        "1.00",
        f"{baseline / t_extract:.2f}",
        "1.0",
        "-",
        "-",
    )

    folder = tempfile.mkdtemp(prefix="sktransfer-bench-")
    variants = [
        ("sktransfer, cache=True (in memory)", dict(cache=True)),
        ("sktransfer, cache=False", dict(cache=False)),
        (
            "sktransfer, disk cache only (cache=False, memory=empty folder)",
            dict(cache=False, memory=folder),
        ),
        (
            "sktransfer, both (cache=True, memory=empty folder)",
            dict(cache=True, memory=folder),
        ),
    ]
    try:
        for name, params in variants:

            def setup():
                cold()
                shutil.rmtree(folder, ignore_errors=True)
                os.makedirs(folder)
                build_network(input_size)

            with count_passes() as counted:
                seconds, growth, search = measure(
                    lambda params=params: search_c(
                        [("features", extractor(input_size, **params))], X, y, C, cv
                    ),
                    setup,
                    repeats,
                )
            passes = counted[0] / n / repeats
            table.add(
                name,
                f"{seconds:.1f}",
                f"{seconds / baseline:.2f}",
                f"{seconds / t_extract:.2f}",
                f"{passes:.1f}",
                best(search, "clf__C"),
                f"{growth:.0f}",
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    if naive:
        holder = {}

        def setup():
            cold()
            holder["naive"] = NaiveExtractor(input_size)

        seconds, growth, search = measure(
            lambda: search_c(
                [("features", holder["naive"].transformer())], X, y, C, cv
            ),
            setup,
            repeats,
        )
        passes = holder["naive"].images / n
        table.add(
            "naive: FunctionTransformer + hand-written Keras model, Model.predict",
            f"{seconds:.1f}",
            f"{seconds / baseline:.2f}",
            f"{seconds / t_extract:.2f}",
            f"{passes:.1f}",
            best(search, "clf__C"),
            f"{growth:.0f}",
        )
        # Same network, same features (up to float noise): checked, not timed.
        difference = float(np.abs(holder["naive"](X[:64]) - F[:64]).max())
        table.notes.append(
            f"The naive extractor's features differ from sktransfer's by at most "
            f"{difference:.1e} (same network, preprocessing and resize)."
        )
        del holder
    cold()
    return table


# ---------------------------------------------------------------- b. grid over layer


class LayerColumns(TransformerMixin, BaseEstimator):
    """The columns of one layer among the features of several (for the baseline)."""

    def __init__(self, layer=-1, columns=None):
        self.layer = layer
        self.columns = columns

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        start, stop = self.columns[self.layer]
        return X[:, start:stop]


def grid_layer(
    n_images=1000, input_size=64, cv=5, layers=tuple(LAYER_GRID), C=0.01, repeats=1
) -> Table:
    """GridSearchCV over ``layer`` with C fixed."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    quiet()
    X, y = fashion(n_images)
    n = len(y)
    layers = list(layers)
    table = Table(
        f"b. GridSearchCV over layer, {len(layers)} values x {cv} folds",
        f"`GridSearchCV(Pipeline([CNNFeatureExtractor, StandardScaler, "
        f"LogisticRegression(C={C:g})]), {{layer: {layers}}}, cv={cv}, n_jobs=1)`: "
        f"{len(layers) * cv + 1} fits on {n} Fashion-MNIST training images, "
        f"{BACKBONE} (ImageNet) at {input_size}x{input_size}. Baseline = one "
        f"forward pass to the top with `cache=False` giving the features of every "
        f"layer of the grid (`layer={layers}`) + the same search over a column "
        f"selection of those precomputed features (the same {len(layers) * cv + 1} "
        f"fits). Passes = images through the network / {n} (a pass to a lower "
        f"block counts as much as one to the top). Median of {repeats} run(s), "
        f"each from a cold cache with the network built beforehand. Target: <= "
        f"1.3x the baseline.",
        [
            "method",
            "wall (s)",
            "/ baseline",
            "passes",
            "best layer (CV accuracy)",
            "peak RSS growth (MB)",
        ],
    )

    def setup():
        cold()
        build_network(input_size)

    def all_layers():
        model = extractor(input_size, layer=layers, cache=False).fit(X)
        return model, model.transform(X)

    t_pass, m_pass, (model, F) = measure(all_layers, setup, repeats)
    widths = [shape[-1] for shape in model.layer_shapes_]  # avg pooling: channels
    offsets = np.concatenate([[0], np.cumsum(widths)])
    columns = {
        layer: (int(offsets[i]), int(offsets[i + 1])) for i, layer in enumerate(layers)
    }

    def baseline_search():
        pipe = Pipeline(
            [
                ("select", LayerColumns(columns=columns)),
                ("scaler", StandardScaler()),
                ("clf", logistic(C=C)),
            ]
        )
        return GridSearchCV(pipe, {"select__layer": layers}, cv=cv, n_jobs=1).fit(F, y)

    t_clf, m_clf, search = measure(baseline_search, None, repeats)
    baseline = t_pass + t_clf
    names = ", ".join(
        f"{layer}: {name}" for layer, name in zip(layers, model.layer_names_)
    )
    table.add(
        "baseline: one pass to the top, every layer (cache=False)",
        f"{t_pass:.1f}",
        "-",
        "1.0",
        "-",
        f"{m_pass:.0f}",
    )
    table.add(
        "baseline: the search on precomputed features",
        f"{t_clf:.1f}",
        "-",
        "0",
        best(search, "select__layer"),
        f"{m_clf:.0f}",
    )
    table.add("**baseline total**", f"{baseline:.1f}", "1.00", "1.0", "-", "-")

    def ours(order):
        pipe = Pipeline(
            [
                ("features", extractor(input_size, layer=order[0], cache=True)),
                ("scaler", StandardScaler()),
                ("clf", logistic(C=C)),
            ]
        )
        grid = {"features__layer": order}
        return GridSearchCV(pipe, grid, cv=cv, n_jobs=1).fit(X, y)

    for label, order in [
        (f"sktransfer, cache=True (in memory), layer={layers}", layers),
        (f"the same, grid in the other order, layer={layers[::-1]}", layers[::-1]),
    ]:
        with count_passes() as counted:
            seconds, growth, search = measure(partial(ours, order), setup, repeats)
        table.add(
            label,
            f"{seconds:.1f}",
            f"{seconds / baseline:.2f}",
            f"{counted[0] / n / repeats:.1f}",
            best(search, "features__layer"),
            f"{growth:.0f}",
        )
    table.notes.append(f"Layers: {names}.")
    cold()
    return table


# ---------------------------------------------------------------- c. eager parts


def eager_parts(n_images=1000, input_size=64, layers=(-1, -2), repeats=3) -> Table:
    """A pass computing only the cut against the cached pass (every block kept)."""
    from sktransfer import cache

    X, _ = fashion(n_images)
    n = len(X)
    table = Table(
        "c. Cost of the eager parts of a cached pass",
        f"`transform` of {n} Fashion-MNIST images, {BACKBONE} (ImageNet) at "
        f"{input_size}x{input_size}, batch 32: with `cache=False` the pass "
        f"computes only the requested cut; with `cache=True` (empty cache) it also "
        f"keeps the average and max pooled features of every block below the cut "
        f"and fingerprints and stores every row. A fresh network per layer (one "
        f"cut depth asked of it, so the pass stops at the cut), both functions "
        f"traced beforehand; median of {repeats}.",
        [
            "layer",
            "only the cut, cache=False (s)",
            "cut + every block's avg/max, cache=True (s)",
            "cached / plain",
            "parts kept",
            "cache KB / image",
            "peak RSS growth, plain / cached (MB)",
        ],
    )
    warm = X[: min(64, n)]
    for layer in layers:
        cold()
        build_network(input_size)
        plain = extractor(input_size, layer=layer, cache=False).fit(warm)
        cached = extractor(input_size, layer=layer, cache=True).fit(warm)
        plain.transform(warm)
        cached.transform(warm)  # traces the eager-parts function
        t_plain, m_plain, _ = measure(partial(plain.transform, X), None, repeats)
        t_cached, m_cached, _ = measure(
            partial(cached.transform, X), cache.clear, repeats
        )
        info = cache.info()
        table.add(
            f"{layer} ({layer_names(plain)})",
            f"{t_plain:.2f}",
            f"{t_cached:.2f}",
            f"{t_cached / t_plain:.2f}",
            f"{info['rows'] / n:.0f}",
            f"{info['bytes'] / n / 1024:.1f}",
            f"{m_plain:.0f} / {m_cached:.0f}",
        )
    cold()
    return table


def layer_names(model) -> str:
    return ", ".join(model.layer_names_)


# ---------------------------------------------------------------- d. stage-1 epochs


def stage1_epochs(
    per_class=100, input_size=128, layer=-2, network_epochs=2, cached_epochs=20
) -> Table:
    """Stage-1 seconds per epoch: cached features against through the network."""
    from sktransfer import FineTunedCNNClassifier
    X, y = demo_training_set(per_class)
    n = len(y)
    batch = 32
    common = dict(
        backbone=BACKBONE,
        weights="imagenet",
        layer=layer,
        input_size=input_size,
        trainable_blocks=0,
        early_stopping=False,
        random_state=SEED,
        batch_size=batch,
    )
    routes = {
        "cached features (augment=False)": dict(augment=False),
        "through the network (augment={'contrast': 1e-4}, augment_head=True)": dict(
            augment={"contrast": 1e-4}, augment_head=True
        ),
    }
    table = Table(
        "d. Fine tuning, stage 1: seconds per epoch",
        f"`FineTunedCNNClassifier(trainable_blocks=0, early_stopping=False, "
        f"random_state=0)` on the demo's training images ({n} Fashion-MNIST "
        f"images, {per_class} per class), {BACKBONE} (ImageNet) at "
        f"{input_size}x{input_size}, layer={layer}, batch {batch}. Cached route: "
        f"`augment=False` (stage 1 trains on the pooled features, found in the "
        f"cache). Network route: `augment=False` would force the cached route, "
        f"so a negligible augmentation, `augment={{'contrast': 1e-4}}` with "
        f"`augment_head=True`, sends every epoch through the frozen network. "
        f"Seconds per epoch = (fit with E+K epochs - fit with E epochs) / K, on a "
        f"warm trainer (built and traced by an earlier fit) and, for the cached "
        f"route, a warm cache: fixed costs of a fit cancel. One run each. "
        f"Target: the network route >= 10x the cached route per epoch.",
        [
            "stage-1 route",
            "E, K",
            "fit, E epochs (s)",
            "fit, E+K epochs (s)",
            "s / epoch",
            "peak RSS growth (MB)",
        ],
    )

    per_epoch = {}
    for name, params in routes.items():
        cold()
        build_network(input_size)
        cached_route = params["augment"] is False
        K = cached_epochs if cached_route else network_epochs
        E = 2 if cached_route else 1

        def fit(epochs, images=X, labels=y, params=params):
            return FineTunedCNNClassifier(**common, **params, head_epochs=epochs).fit(
                images, labels
            )

        if cached_route:
            # The first fit computes the features (one pass) and traces.
            t_first, m_first, _ = measure(partial(fit, 1))
            table.add(
                "cached features: first fit (builds the trainer, the pass, 1 epoch)",
                "1, -",
                f"{t_first:.1f}",
                "-",
                "-",
                f"{m_first:.0f}",
            )
        else:
            # Trace on a subset with the same batch shapes (full batches and
            # the same last partial batch), not on a full epoch.
            k = 2 * batch + n % batch
            subset = np.concatenate(
                [np.flatnonzero(y == c)[: k // 10 + 1] for c in np.unique(y)]
            )[:k]
            fit(1, X[subset], y[subset])
        t_short, m_short, _ = measure(partial(fit, E))
        t_long, m_long, _ = measure(partial(fit, E + K))
        per_epoch[name] = (t_long - t_short) / K
        table.add(
            name,
            f"{E}, {K}",
            f"{t_short:.1f}",
            f"{t_long:.1f}",
            f"{per_epoch[name]:.3f}",
            f"{max(m_short, m_long):.0f}",
        )
    cached_s, network_s = per_epoch.values()
    table.add(
        "**through the network / cached**",
        "-",
        "-",
        "-",
        f"**{network_s / cached_s:.1f}x**" if cached_s > 0 else "-",
        "-",
    )
    cold()
    return table


# ---------------------------------------------------------------- e. fine-tuning search


def fine_tune_search(
    n_images=300,
    input_size=64,
    cv=3,
    trainable_blocks=(0, 1),
    learning_rates=(1e-3, 1e-4),
    head_epochs=3,
    epochs=2,
    scikeras=True,
) -> Table:
    """GridSearchCV over trainable_blocks x learning_rate: sktransfer vs scikeras."""
    from sklearn.model_selection import GridSearchCV

    from sktransfer import FineTunedCNNClassifier
    from sktransfer._inputs import as_images

    quiet()
    X, y = fashion(n_images)
    n = len(y)
    grid = {
        "trainable_blocks": list(trainable_blocks),
        "learning_rate": list(learning_rates),
    }
    n_fits = len(trainable_blocks) * len(learning_rates) * cv + 1
    table = Table(
        "e. GridSearchCV over trainable_blocks x learning_rate: sktransfer vs scikeras",
        f"{n} Fashion-MNIST training images ({n // 10} per class), {BACKBONE} "
        f"(ImageNet) at {input_size}x{input_size}, layer=-1, grid "
        f"trainable_blocks={list(trainable_blocks)} x learning_rate="
        f"{list(learning_rates)}, cv={cv}, n_jobs=1 ({n_fits} fits), batch 32, no "
        f"augmentation, no early stopping, seed 0. sktransfer: two stages, "
        f"{head_epochs} epoch(s) of the new top at 1e-3 (on cached features), "
        f"then {epochs} epoch(s) of the top `trainable_blocks` blocks at "
        f"`learning_rate` (none when 0, so `learning_rate` changes nothing). "
        f"scikeras fits once: each candidate builds the network "
        f"(reading the weights) and trains the new top *and* its top "
        f"`trainable_blocks` blocks (BatchNorm frozen) together for "
        f"{head_epochs + epochs} epochs at `learning_rate`, on in-memory arrays "
        f"resized beforehand (not timed; sktransfer resizes the images itself, "
        f"timed). One run each.",
        [
            "method",
            "wall (s)",
            "best params",
            "best CV accuracy",
            "peak RSS growth (MB)",
        ],
    )

    def ours():
        clf = FineTunedCNNClassifier(
            BACKBONE,
            weights="imagenet",
            input_size=input_size,
            head_epochs=head_epochs,
            epochs=epochs,
            head_learning_rate=1e-3,
            batch_size=32,
            augment=False,
            early_stopping=False,
            random_state=SEED,
        )
        return GridSearchCV(clf, grid, cv=cv, n_jobs=1).fit(X, y)

    def setup():
        cold()
        build_network(input_size)

    seconds, growth, search = measure(ours, setup)
    params = search.best_params_
    table.add(
        "sktransfer FineTunedCNNClassifier (2 stages)",
        f"{seconds:.1f}",
        f"trainable_blocks={params['trainable_blocks']}, "
        f"learning_rate={params['learning_rate']:g}",
        f"{search.best_score_:.4f}",
        f"{growth:.0f}",
    )

    if scikeras:
        from sktransfer.backbones import blocks

        block_names = blocks(BACKBONE, input_size)
        cold()
        source = as_images(X)
        P = source.load(0, len(source), (input_size, input_size))[0]
        estimator = scikeras_classifier(input_size, block_names, head_epochs + epochs)
        keras_grid = {
            "model__trainable_blocks": list(trainable_blocks),
            "model__learning_rate": list(learning_rates),
        }
        seconds, growth, search = measure(
            lambda: GridSearchCV(estimator, keras_grid, cv=cv, n_jobs=1).fit(P, y)
        )
        params = search.best_params_
        table.add(
            f"scikeras KerasClassifier (1 stage, {head_epochs + epochs} epochs)",
            f"{seconds:.1f}",
            f"trainable_blocks={params['model__trainable_blocks']}, "
            f"learning_rate={params['model__learning_rate']:g}",
            f"{search.best_score_:.4f}",
            f"{growth:.0f}",
        )
    cold()
    return table


def scikeras_classifier(input_size: int, block_names, epochs: int):
    """scikeras' KerasClassifier around the model of bench_fine_tuning.py.

    ``model__trainable_blocks``: how many top blocks of the network are
    trainable (BatchNorm frozen), as sktransfer's ``trainable_blocks``;
    ``model__learning_rate``: Adam's learning rate for the single stage.
    """
    from scikeras.wrappers import KerasClassifier

    return KerasClassifier(
        model=_scikeras_model,
        model__input_size=input_size,
        model__block_names=tuple(block_names),
        model__trainable_blocks=0,
        model__learning_rate=1e-3,
        epochs=epochs,
        batch_size=32,
        verbose=0,
        random_state=SEED,
    )


def _scikeras_model(input_size, block_names, trainable_blocks, learning_rate):
    import keras

    from bench_fine_tuning import lite0_model

    model, base = lite0_model(input_size, trainable_top_block=False)
    set_top_blocks(base, block_names, trainable_blocks)
    model.compile(
        keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def set_top_blocks(base, block_names, k: int) -> None:
    """Unfreeze the layers above the ``k``-th block from the top (BatchNorm frozen)."""
    import keras

    base.trainable = k > 0
    first = -1
    if k > 0:
        names = [layer.name for layer in base.layers]
        first = -1 if k >= len(block_names) else names.index(block_names[-1 - k])
    for position, layer in enumerate(base.layers):
        layer.trainable = (
            k > 0
            and position > first
            and not isinstance(layer, keras.layers.BatchNormalization)
        )


# ---------------------------------------------------------------- command line

SECTIONS = {
    "a": "grid_c",
    "b": "grid_layer",
    "c": "eager_parts",
    "d": "stage1_epochs",
    "e": "fine_tune_search",
}


def section_kwargs(args) -> dict:
    """Keyword arguments of each section from the command-line sizes."""
    return {
        "a": dict(
            n_images=args.n_images,
            input_size=args.input_size,
            cv=args.cv,
            repeats=args.repeats,
            naive=not args.no_naive,
        ),
        "b": dict(
            n_images=args.n_images,
            input_size=args.input_size,
            cv=args.cv,
            repeats=args.repeats,
        ),
        "c": dict(
            n_images=args.n_images,
            input_size=args.input_size,
            repeats=args.eager_repeats,
        ),
        "d": dict(
            per_class=args.per_class,
            input_size=args.head_input_size,
            network_epochs=args.network_epochs,
            cached_epochs=args.cached_epochs,
        ),
        "e": dict(
            n_images=args.search_images,
            input_size=args.input_size,
            cv=args.search_cv,
            head_epochs=args.head_epochs,
            epochs=args.epochs,
            scikeras=not args.no_scikeras,
        ),
    }


def add_arguments(parser) -> None:
    parser.add_argument(
        "--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS)
    )
    parser.add_argument("--n-images", type=int, default=1000, help="a, b, c")
    parser.add_argument("--input-size", type=int, default=64, help="a, b, c, e")
    parser.add_argument("--cv", type=int, default=5, help="a, b")
    parser.add_argument("--repeats", type=int, default=1, help="a, b (expensive)")
    parser.add_argument("--eager-repeats", type=int, default=3, help="c")
    parser.add_argument(
        "--no-naive", action="store_true", help="a: skip the naive pipeline"
    )
    parser.add_argument("--per-class", type=int, default=100, help="d")
    parser.add_argument("--head-input-size", type=int, default=128, help="d")
    parser.add_argument(
        "--network-epochs", type=int, default=2, help="d: K, network route"
    )
    parser.add_argument(
        "--cached-epochs", type=int, default=20, help="d: K, cached route"
    )
    parser.add_argument("--search-images", type=int, default=300, help="e")
    parser.add_argument("--search-cv", type=int, default=3, help="e")
    parser.add_argument("--head-epochs", type=int, default=3, help="e")
    parser.add_argument("--epochs", type=int, default=2, help="e")
    parser.add_argument("--no-scikeras", action="store_true", help="e: skip scikeras")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="threads of scikit-learn's BLAS/OpenMP pools (0: leave them)",
    )


def run_section(letter: str, kwargs: dict, blas_threads: int | None = 1) -> Table:
    """Run one section with scikit-learn's BLAS/OpenMP pools at ``blas_threads``.

    None leaves them as they are. On 2 cores busy with other work,
    two-thread OpenBLAS spin-waits: a LogisticRegression fit took 1.15 s
    against 0.035 s with one thread, which drowns what this suite measures,
    the forward passes.
    """
    from threadpoolctl import threadpool_limits

    if blas_threads is None:
        return globals()[SECTIONS[letter]](**kwargs)
    with threadpool_limits(blas_threads):
        return globals()[SECTIONS[letter]](**kwargs)


def threads_note(blas_threads) -> str:
    if blas_threads is None:
        return "scikit-learn's BLAS/OpenMP thread pools left at their defaults."
    return (
        f"scikit-learn's BLAS/OpenMP thread pools limited to {blas_threads} "
        "thread(s) (threadpoolctl); TensorFlow's own pools untouched."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args()
    kwargs = section_kwargs(args)
    threads = args.blas_threads or None
    print(f"Machine: {machine()}\n\n{threads_note(threads)}\n", flush=True)
    for letter in args.sections:
        start = time.perf_counter()
        table = run_section(letter, kwargs[letter], threads)
        print(table.markdown(), flush=True)
        print(f"\n({time.perf_counter() - start:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
