"""learning_rate="auto" (a range test) against fixed fine-tuning rates.

Fashion-MNIST, ``--per-class`` training images per class (the demo's draw),
the first ``--n-test`` test images; EfficientNet-Lite0 with its offline
ImageNet weights cut at ``layer=-2``, ``trainable_blocks=2``, at
``--size``, no augmentation, the default epochs and early stopping, one
seed. One row per fine-tuning ``learning_rate``: the rate used (for
``"auto"``, the one the range test chose), how long the range test took and
how many batches it ran, the fit's wall time (predicting excluded) and the
test accuracy. The fits run in the order of the table in one process, so
the first one also pays for the frozen network's passes (features and maps,
cached for the others).

    python benchmarks/bench_lr_find.py --per-class 100 --size 128 --n-test 2000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import machine
from bench_cache import demo_training_set

SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--rates", default="1e-4,3e-4,auto",
                        help="fine-tuning rates, comma-separated, in the order run")
    parser.add_argument("--figure", default=None,
                        help="save the range test's curve (LearningRateFinderDisplay) here")
    args = parser.parse_args()

    from sktransfer import FineTunedCNNClassifier, _lr_find
    from sktransfer.datasets import load_fashion_mnist

    X_train, y_train = demo_training_set(args.per_class)
    test = load_fashion_mnist(subset="test")
    X_test, y_test = test.images[: args.n_test], test.target[: args.n_test]

    range_tests = []
    untimed = _lr_find.range_test

    def timed(*positional, **keywords):
        start = time.perf_counter()
        result = untimed(*positional, **keywords)
        range_tests.append((time.perf_counter() - start, len(result[0])))
        return result

    _lr_find.range_test = timed

    print(f"Machine: {machine()}\n")
    print(
        f"Fashion-MNIST, {len(y_train)} training images, {len(y_test)} test images; "
        f"efficientnet_lite0 (ImageNet, offline), layer=-2, trainable_blocks=2, "
        f"input_size={args.size}, augment=False, random_state={SEED}\n"
    )
    print("| learning_rate | rate used | range test (s) | range-test batches "
          "| fit (s) | epochs (head + fine tuning) | test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for text in args.rates.split(","):
        rate = text if text == "auto" else float(text)
        range_tests.clear()
        clf = FineTunedCNNClassifier(
            layer=-2, trainable_blocks=2, input_size=args.size, augment=False,
            learning_rate=rate, random_state=SEED,
        )
        start = time.perf_counter()
        clf.fit(X_train, y_train)
        fit_seconds = time.perf_counter() - start
        accuracy = float(np.mean(clf.predict(X_test) == y_test))
        used = clf.stages_[-1].learning_rate
        test = [f"{range_tests[0][0]:.1f}", str(range_tests[0][1])] if range_tests else ["-", "-"]
        epochs = " + ".join(str(len(h["loss"])) for h in clf.history_.values())
        print(
            f"| {text} | {used:.3g} | {' | '.join(test)} | {fit_seconds:.1f} | {epochs} "
            f"| {accuracy:.4f} |",
            flush=True,
        )
        if rate == "auto" and args.figure:
            import matplotlib

            matplotlib.use("Agg")
            from sktransfer.inspection import LearningRateFinderDisplay

            display = LearningRateFinderDisplay.from_estimator(clf)
            display.figure_.savefig(args.figure, dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main()
