"""What bfloat16 inference costs in accuracy, on the demo's data.

The demo's draw of Fashion-MNIST (100 training images per class, the 10,000
test images; ``sktransfer.datasets``), EfficientNet-Lite0 (ImageNet) at the
demo's 128x128, the demo's cut points and its logistic regression with C
chosen by 3-fold CV on the training images. The features are extracted in
float32 (``engine="onnxruntime"``, the same features as TensorFlow to ~1e-5)
and with ``precision="bfloat16"`` (OpenVINO); the table gives, per layer, the
test accuracy of each, the features' largest and mean absolute difference,
and the extraction time of the 11,000 images (``cache=False``).

    python benchmarks/bench_precision.py [--samples-per-class 100]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import machine


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples-per-class", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--layers", type=int, nargs="+", default=[-1, -2, -3])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sklearn.metrics import accuracy_score

    from sktransfer import CNNFeatureExtractor
    from sktransfer._demo import _search, load_demo_data
    from sktransfer._pooling import n_pooled

    _, X_train, y_train, X_test, y_test, _ = load_demo_data(
        "fashion-mnist", args.samples_per_class, args.seed
    )
    X = np.concatenate([X_train, X_test])
    features, seconds = {}, {}
    for label, params in (
        ("float32", dict(engine="onnxruntime")),
        ("bfloat16", dict(engine="openvino", precision="bfloat16")),
    ):
        extractor = CNNFeatureExtractor(
            layer=args.layers, input_size=args.input_size, cache=False, **params
        ).fit(X[:1])
        extractor.transform(X[:2])  # converts: not part of the timing
        start = time.perf_counter()
        features[label] = extractor.transform(X)
        seconds[label] = time.perf_counter() - start
    widths = [n_pooled(shape, "avg") for shape in extractor.layer_shapes_]
    offsets = np.concatenate([[0], np.cumsum(widths)])

    print(f"Machine: {machine()}\n")
    print(
        f"Fashion-MNIST: {len(X_train)} training images, {len(X_test)} test images, "
        f"efficientnet_lite0 at {args.input_size}x{args.input_size}; extraction of "
        f"all {len(X)} images: float32 {seconds['float32']:.1f} s, bfloat16 "
        f"{seconds['bfloat16']:.1f} s ({seconds['float32'] / seconds['bfloat16']:.2f}x).\n"
    )
    print(
        "| layer | accuracy, float32 | accuracy, bfloat16 | difference | "
        "max abs feature diff | mean abs feature diff | max abs feature |"
    )
    print("|---|---|---|---|---|---|---|")
    n = len(X_train)
    for index, (layer, name) in enumerate(zip(args.layers, extractor.layer_names_)):
        columns = slice(offsets[index], offsets[index + 1])
        accuracy = {}
        for label, F in features.items():
            search = _search(F[:n, columns], y_train, args.seed)
            accuracy[label] = accuracy_score(y_test, search.predict(F[n:, columns]))
        diff = np.abs(features["bfloat16"][:, columns] - features["float32"][:, columns])
        print(
            f"| {layer} ({name}) | {accuracy['float32']:.4f} | {accuracy['bfloat16']:.4f}"
            f" | {accuracy['bfloat16'] - accuracy['float32']:+.4f} | {diff.max():.3f}"
            f" | {diff.mean():.4f} | {np.abs(features['float32'][:, columns]).max():.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
