"""``layer="auto"`` against every fixed layer, on the demo's data.

The demo's draws of Fashion-MNIST (100 training images per class, the
10,000 test images; one draw per seed), EfficientNet-Lite0 with its offline
ImageNet weights at the demo's 128x128. For each draw, the test accuracy of

    make_pipeline(CNNFeatureExtractor(layer=L), StandardScaler(),
                  GridSearchCV(LogisticRegression(max_iter=300),
                               {"C": [0.01, 0.1, 1.0]}, cv=3))

for ``L = "auto"`` and each fixed layer, with the probe's cross-validated
accuracy of each block (``depth_scores_``) beside it, and the time of the
choice: ``CNNFeatureExtractor(layer="auto").fit`` once one pass has cached
the features, beside one pass of the network over the 1,000 training
images without the cache (which ``transform`` pays anyway). ``--threads``
also times one logistic regression of the probe (block -1, C=0.01) with
scikit-learn's BLAS threads as they are and limited to one.

    python benchmarks/bench_depth.py [--seeds 0 1 2] [--n-test 10000] [--threads]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import machine


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples-per-class", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--input-size", type=int, default=128)
    # -5 is not probed: it shows what the probe leaves out.
    parser.add_argument("--layers", type=int, nargs="+", default=[-1, -2, -3, -4, -5])
    parser.add_argument("--memory", default=None, help="a disk cache for the features")
    parser.add_argument("--threads", action="store_true")
    args = parser.parse_args()

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from sktransfer import CNNFeatureExtractor
    from sktransfer._demo import load_builtin_data

    def extractor(layer, **params):
        params = {"memory": args.memory, **params}
        return CNNFeatureExtractor(layer=layer, input_size=args.input_size, **params)

    candidates = ["auto", *args.layers]
    accuracy = {layer: [] for layer in candidates}
    lines = []
    for seed in args.seeds:
        data = load_builtin_data(
            "fashion-mnist", args.samples_per_class, seed, download=False, say=print
        )
        train, test = data.splits[0]
        test = test[: args.n_test]
        X_train, y_train = data.X[train], data.y[train]
        if seed == args.seeds[0]:
            uncached = extractor(-1, cache=False, memory=None).fit(X_train[:2])
            uncached.transform(X_train[:2])  # builds and compiles: not timed
            start = time.perf_counter()
            uncached.transform(X_train)
            pass_seconds = time.perf_counter() - start
            if args.threads:
                threads = _time_threads(extractor(-1).fit_transform(X_train), y_train)
        extractor(-1).fit(data.X[:1]).transform(np.concatenate([X_train, data.X[test]]))
        start = time.perf_counter()
        auto = extractor("auto").fit(X_train, y_train)
        choice_seconds = time.perf_counter() - start
        for layer in candidates:
            pipe = make_pipeline(
                extractor(layer),
                StandardScaler(),
                GridSearchCV(LogisticRegression(max_iter=300), {"C": [0.01, 0.1, 1.0]}, cv=3),
            )
            # One BLAS thread, as the probe's own regressions (see _depth);
            # 300 iterations, as the probe's and the demo's.
            with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                pipe.fit(X_train, y_train)
                accuracy[layer].append(pipe.score(data.X[test], data.y[test]))
        best = max(args.layers, key=lambda layer: accuracy[layer][-1])
        cells = " | ".join(
            f"{accuracy[layer][-1]:.4f}"
            + (f" ({auto.depth_scores_[layer]:.3f})" if layer in auto.depth_scores_ else "")
            for layer in args.layers
        )
        lines.append(
            f"| {seed} | {cells} | {auto.layer_} | {accuracy['auto'][-1]:.4f} | "
            f"{100 * (accuracy['auto'][-1] - accuracy[best][-1]):+.2f} | "
            f"{choice_seconds:.1f} |"
        )

    print(f"Machine: {machine()}\n")
    print(
        f"Fashion-MNIST, {args.samples_per_class} training images per class, "
        f"{len(test)} test images; efficientnet_lite0 at {args.input_size}x"
        f"{args.input_size}. Each layer cell: test accuracy (the probe's "
        "cross-validated accuracy on the training images). One pass over the "
        f"{len(X_train)} training images, cache off: {pass_seconds:.1f} s.\n"
    )
    header = " | ".join(f"layer {layer}" for layer in args.layers)
    print(
        f"| seed | {header} | auto chose | auto | auto - best fixed (points) | "
        "choice (s) |"
    )
    print("|---" * (len(args.layers) + 5) + "|")
    print("\n".join(lines))
    means = " | ".join(f"{np.mean(accuracy[layer]):.4f}" for layer in args.layers)
    print(f"| mean | {means} | | {np.mean(accuracy['auto']):.4f} | | |")
    if args.threads:
        print("\n| BLAS threads | one fit, block -1, C=0.01 (s) |\n|---|---|")
        for limit, seconds in threads.items():
            print(f"| {limit} | {seconds:.2f} |")


def _time_threads(features, y) -> dict:
    """Seconds of one probe regression with BLAS threads as they are, and one."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_info, threadpool_limits

    X = StandardScaler().fit_transform(features)
    blas = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    seconds = {}
    for label, limit in ((f"{blas} (as installed)", None), ("1 (the probe's)", 1)):
        with threadpool_limits(limit, user_api="blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            LogisticRegression(C=0.01, max_iter=300).fit(X, y)
            seconds[label] = time.perf_counter() - start
    return seconds


if __name__ == "__main__":
    main()
