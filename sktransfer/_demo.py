"""``sktransfer demo``: transfer learning against raw pixels, on real data.

On Fashion-MNIST (100 training images per class, the 10,000 test images) or,
where it is not installed, scikit-learn's digits, the demo fits

(a) logistic regression on raw pixels, the baseline;
(b) CNNFeatureExtractor + logistic regression for several cut depths of a
    pretrained backbone, with a small grid search over C by cross-validation
    on the training images;
(c) FineTunedCNNClassifier: a new top trained on the frozen backbone's
    cached features (the pass of (b) filled the cache, so its 60 epochs cost
    seconds), then its top block fine-tuned at a small learning rate with
    augmentation, early stopping on a validation split of the training images;

then prints one results table and writes a figure (accuracy per layer and
the confusion matrix of the best pipeline).

One forward pass extracts every layer at once (``layer=[...]``), and the grid
search runs on those features: the network, the whole cost, runs once per
image.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._classifier import FineTunedCNNClassifier
from ._extractor import CNNFeatureExtractor
from ._pooling import n_pooled
from .datasets import _locate, load_digits, load_fashion_mnist

DEFAULT_LAYERS = (-1, -2, -3)
_C_GRID = [0.01, 0.1, 1.0]


@dataclass
class Result:
    method: str
    layer: str
    accuracy: float
    seconds: float
    params: str = ""


def load_demo_data(dataset: str, samples_per_class: int, seed: int):
    """Train images (``samples_per_class`` per class) and the test images."""
    if dataset == "auto":
        try:
            _locate(None, "test", download=False)  # finds the files, reads nothing
            dataset = "fashion-mnist"
        except FileNotFoundError:
            dataset = "digits"
    rng = np.random.default_rng(seed)
    if dataset == "fashion-mnist":
        train = load_fashion_mnist(subset="train")
        test = load_fashion_mnist(subset="test")
        X_pool, y_pool, X_test, y_test = train.images, train.target, test.images, test.target
        names = train.target_names
    elif dataset == "digits":
        digits = load_digits()
        order = rng.permutation(len(digits.target))
        half = len(order) // 2
        X_pool, y_pool = digits.images[order[:half]], digits.target[order[:half]]
        X_test, y_test = digits.images[order[half:]], digits.target[order[half:]]
        names = digits.target_names
    else:
        raise ValueError(f"dataset={dataset!r}: use 'fashion-mnist', 'digits' or 'auto'.")
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(y_pool == label), samples_per_class, replace=False)
            for label in np.unique(y_pool)
        ]
    )
    return dataset, X_pool[chosen], y_pool[chosen], X_test, y_test, names


def _search(X, y, seed):
    """Scaled logistic regression, C chosen by 3-fold CV on the training set."""
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    search = GridSearchCV(
        pipe,
        {"logisticregression__C": _C_GRID},
        cv=StratifiedKFold(3, shuffle=True, random_state=seed),
        n_jobs=1,
    )
    return search.fit(X, y)


def run_demo(
    *,
    dataset: str = "auto",
    backbone: str = "efficientnet_lite0",
    weights="imagenet",
    layers=DEFAULT_LAYERS,
    samples_per_class: int = 100,
    input_size=128,
    output_dir: str = "sktransfer-demo",
    seed: int = 0,
    verbose: int = 1,
    figure: bool = True,
    fine_tune: bool = True,
    fine_tune_layer: int = -2,
    trainable_blocks: int = 1,
    head_epochs: int = 60,
    epochs: int = 10,
    learning_rate: float = 3e-4,
):
    """Run the demo; returns the results and the path of the figure."""
    say = print if verbose else (lambda *a, **k: None)
    dataset, X_train, y_train, X_test, y_test, names = load_demo_data(
        dataset, samples_per_class, seed
    )
    say(
        f"Data: {dataset}, {len(X_train)} training images "
        f"({samples_per_class} per class), {len(X_test)} test images."
    )
    results = []

    start = time.perf_counter()
    flat_train = X_train.reshape(len(X_train), -1) / 255.0
    flat_test = X_test.reshape(len(X_test), -1) / 255.0
    search = _search(flat_train, y_train, seed)
    results.append(
        Result(
            "raw pixels + logistic regression",
            "-",
            accuracy_score(y_test, search.predict(flat_test)),
            time.perf_counter() - start,
            f"C={search.best_params_['logisticregression__C']}",
        )
    )

    start = time.perf_counter()
    extractor = CNNFeatureExtractor(
        backbone, weights=weights, layer=list(layers), input_size=input_size, verbose=verbose
    )
    say(f"Extracting features of {backbone} at layers {list(layers)} (one pass):")
    F_train = extractor.fit_transform(X_train)
    F_test = extractor.transform(X_test)
    extract_seconds = time.perf_counter() - start
    widths = [n_pooled(shape, extractor.pooling) for shape in extractor.layer_shapes_]
    offsets = np.concatenate([[0], np.cumsum(widths)])
    best = None
    for index, (layer, name) in enumerate(zip(layers, extractor.layer_names_)):
        start = time.perf_counter()
        columns = slice(offsets[index], offsets[index + 1])
        search = _search(F_train[:, columns], y_train, seed)
        predicted = search.predict(F_test[:, columns])
        result = Result(
            f"{backbone} features + logistic regression",
            f"{layer} ({name})",
            accuracy_score(y_test, predicted),
            time.perf_counter() - start + extract_seconds / len(layers),
            f"C={search.best_params_['logisticregression__C']}",
        )
        results.append(result)
        if best is None or result.accuracy > best[0].accuracy:
            best = (result, predicted)

    if fine_tune:
        start = time.perf_counter()
        say(
            f"Fine tuning {backbone} cut at layer {fine_tune_layer}: new top for up "
            f"to {head_epochs} epochs, then the top {trainable_blocks} block(s) for "
            f"up to {epochs} epochs:"
        )
        clf = FineTunedCNNClassifier(
            backbone,
            weights=weights,
            layer=fine_tune_layer,
            input_size=input_size,
            trainable_blocks=trainable_blocks,
            head_epochs=head_epochs,
            epochs=epochs,
            learning_rate=learning_rate,
            augment={"flip": "horizontal", "translation": 0.05, "zoom": 0.05},
            random_state=seed,
            verbose=verbose,
        ).fit(X_train, y_train)
        predicted = clf.predict(X_test)
        result = Result(
            f"{backbone} fine-tuned (FineTunedCNNClassifier)",
            f"{fine_tune_layer} ({clf.layer_names_[0]}), top {trainable_blocks} "
            "block(s) trained",
            accuracy_score(y_test, predicted),
            time.perf_counter() - start,
            f"{len(clf.history_['head']['loss'])}+"
            f"{len(clf.history_.get('fine_tune', {}).get('loss', []))} epochs",
        )
        results.append(result)
        if result.accuracy > best[0].accuracy:
            best = (result, predicted)

    say("")
    say(format_table(results))
    figure_path = None
    if figure:
        os.makedirs(output_dir, exist_ok=True)
        figure_path = os.path.join(output_dir, "demo.png")
        write_figure(figure_path, results, confusion_matrix(y_test, best[1]), names, best[0])
        say(f"\nFigure written to {os.path.abspath(figure_path)}")
    return results, figure_path


def format_table(results: list[Result]) -> str:
    """The results as a markdown table."""
    lines = [
        "| method | layer | test accuracy | time (s) | chosen |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.method} | {r.layer} | {r.accuracy:.4f} | {r.seconds:.1f} | {r.params} |"
        for r in results
    ]
    return "\n".join(lines)


def write_figure(path, results, matrix, names, best) -> None:
    """Accuracy per method/layer and the best pipeline's confusion matrix."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "The demo's figure needs matplotlib: pip install 'sktransfer[demo]' "
            "(or pass --no-figure)."
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    labels = ["raw pixels"] + [
        "fine-tuned" if "fine-tuned" in r.method else f"layer {r.layer.split(' ')[0]}"
        for r in results[1:]
    ]
    accuracies = [r.accuracy for r in results]
    colours = ["#999999"] + [
        "#d62728" if "fine-tuned" in r.method else "#1f77b4" for r in results[1:]
    ]
    bars = left.bar(range(len(results)), accuracies, color=colours)
    left.bar_label(bars, fmt="%.3f")
    left.set_xticks(range(len(results)), labels)
    left.set_xlabel("method")
    left.set_ylabel("test accuracy")
    left.set_ylim(0, 1)
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
