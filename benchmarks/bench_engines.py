"""Inference engines against TensorFlow's compiled forward pass, in one process.

For each backbone, random uint8 images of 224x224 in memory, batch 32,
``cache=False`` (every call a forward pass):

* **TF compiled**: a hand-written ``tf.function`` (``preprocess_input``, the
  network, average pooling) over the very network the extractor built, as in
  bench_extractor.py: the reference for speed and for features;
* ``CNNFeatureExtractor.transform`` with ``engine="tensorflow"`` (today's
  path), ``"auto"`` (called until it has converted, as a long-running job
  gets it), ``"onnxruntime"``, ``"openvino"``, and OpenVINO in
  ``precision="bfloat16"``.

Timings are interleaved: every repeat times TF compiled and then each
engine, so load from other processes on a shared machine hits all rows
alike; the ratio column is the median over repeats of (TF compiled time /
row time) within the repeat. "first call" is the first transform of a
fresh estimator (the conversion included); "RSS growth" the peak resident
memory over that call. ``--classifier`` adds ``FineTunedCNNClassifier``'s
``predict_proba`` with ``engine="tensorflow"`` against ``"auto"`` (converted)
on the same fitted model, what one conversion of it takes (and what
``"auto"`` expects it to take), and how many predicted images repay it.

    python benchmarks/bench_engines.py --backbones efficientnet_lite0 --classifier
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import PeakMemory, hand_written_forward, machine

#: The others cannot download here: random weights (He-initialised), as fast.
WEIGHTS = {"efficientnet_lite0": "imagenet"}


def _timed(function):
    start = time.perf_counter()
    out = function()
    return time.perf_counter() - start, out


def _converted(estimator) -> bool:
    """Whether an estimator's ``"auto"`` engine has converted its network."""
    from sktransfer import _compiled, _engines
    from sktransfer._network import network_of

    if hasattr(estimator, "model_"):  # a classifier's functions live with its model
        functions = _compiled.functions_of(estimator.model_)
    else:
        functions = network_of(estimator).functions
    return any(
        isinstance(f, _engines.EngineFunction) and f.converted for f in functions.values()
    )


def _warm_auto(call, estimator, limit: int = 20) -> str:
    """Call until ``"auto"`` has converted (the rent paid); says after how many calls."""
    for calls in range(1, limit + 1):
        call()
        if _converted(estimator):
            return f"converted after {calls} calls"
    return f"not converted after {limit} calls"


def _he_initialize(model):
    """Random weights whose features do not vanish, so the diff column means something.

    Keras' default initialisation of MobileNetV2 gives features of 1e-17;
    the tests' He initialisation (identity BatchNorm) gives features of order
    one. The network is the cached one every estimator here uses.
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import he_initialize

    he_initialize(model)


def _engine_rows(args):
    from sktransfer import _engines

    rows = [("tensorflow", "float32"), ("auto", "float32")]
    rows += [(name, "float32") for name in ("onnxruntime", "openvino") if _engines.installed(name)]
    if _engines.installed("openvino") and not args.no_bf16:
        rows.append(("openvino", "bfloat16"))
    return rows


def extraction(backbone: str, args) -> list[str]:
    from sktransfer import CNNFeatureExtractor, backbones
    from sktransfer._network import load_network

    size, batch = args.size, args.batch_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.n_images, size, size, 3), dtype=np.uint8)
    weights = WEIGHTS.get(backbone)
    model = load_network(backbone, weights, (size, size)).model
    if weights is None:
        _he_initialize(model)
    preprocess = backbones.preprocess_input(backbone)

    compiled = hand_written_forward(model, preprocess, images, batch)
    reference = compiled()  # traces
    estimators, calls, firsts, memory = {}, {}, {}, {}
    for engine, precision in _engine_rows(args):
        estimator = CNNFeatureExtractor(
            backbone, weights=weights, input_size=size, batch_size=batch,
            cache=False, engine=engine, precision=precision,
        ).fit(images[:1])
        with PeakMemory() as peak:
            firsts[engine, precision], _ = _timed(lambda: estimator.transform(images))
        memory[engine, precision] = peak.growth_mb
        if engine == "auto":
            calls[engine, precision] = _warm_auto(lambda: estimator.transform(images), estimator)
        estimators[engine, precision] = estimator

    times = {key: [] for key in estimators}
    ratios = {key: [] for key in estimators}
    diffs = {}
    reference_times = []
    for _ in range(args.repeats):
        reference_time, _ = _timed(compiled)
        reference_times.append(reference_time)
        for key, estimator in estimators.items():
            elapsed, features = _timed(lambda: estimator.transform(images))
            times[key].append(elapsed)
            ratios[key].append(reference_time / elapsed)
            diffs[key] = float(np.abs(features - reference).max())

    n = len(images)
    lines = [
        f"| {backbone} | TF compiled (hand-written) | {n / statistics.median(reference_times):.1f}"
        " | 1.00 | - | - | - | - |"
    ]
    for (engine, precision), estimator in estimators.items():
        label = f'engine="{engine}"' + (f', precision="{precision}"' if precision != "float32" else "")
        if engine == "auto":
            label += f" ({calls[engine, precision]} after the first)"
        lines.append(
            f"| {backbone} | {label} | {n / statistics.median(times[engine, precision]):.1f}"
            f" | **{statistics.median(ratios[engine, precision]):.2f}**"
            f" | {diffs[engine, precision]:.1e} | {abs(reference).max():.1f}"
            f" | {firsts[engine, precision]:.1f} | {memory[engine, precision]:.0f} |"
        )
    return lines


def classifier(backbone: str, args) -> list[str]:
    from sktransfer import FineTunedCNNClassifier, _engines, _training

    size = args.size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.n_images, size, size, 3), dtype=np.uint8)
    n_train = min(64, len(images))
    labels = np.arange(n_train) % 4
    clf = FineTunedCNNClassifier(
        backbone, weights=WEIGHTS.get(backbone), input_size=size, head_epochs=1,
        epochs=1, trainable_blocks=1, augment=False, early_stopping=False,
        random_state=0, batch_size=args.batch_size, engine="tensorflow",
    ).fit(images[:n_train], labels)
    today = clf.predict_proba(images)  # traces today's path
    clf.set_params(engine="auto")
    calls = _warm_auto(lambda: clf.predict_proba(images), clf)
    ratios, tf_times, auto_times = [], [], []
    for _ in range(args.repeats):
        clf.set_params(engine="tensorflow")
        tf_time, today = _timed(lambda: clf.predict_proba(images))
        clf.set_params(engine="auto")
        auto_time, proba = _timed(lambda: clf.predict_proba(images))
        tf_times.append(tf_time)
        auto_times.append(auto_time)
        ratios.append(tf_time / auto_time)
    n = len(images)
    same = float((today.argmax(axis=1) == proba.argmax(axis=1)).mean())
    # What one conversion of the fitted network costs, against what "auto"
    # expects it to cost; and the predictions that repay it.
    conversion, _ = _timed(lambda: _engines.compile_onnx(
        _engines.export_onnx(_training.inference_model(clf.model_), (size, size)),
        _engines.Engine("onnxruntime"),
    ))
    expected = (
        _engines.CONVERSION_SECONDS
        + _engines.CONVERSION_SECONDS_PER_WEIGHT * clf.model_.count_params()
    )
    saved = statistics.median(tf_times) / n - statistics.median(auto_times) / n
    return [
        f"| {backbone} | {n / statistics.median(tf_times):.1f}"
        f" | {n / statistics.median(auto_times):.1f} ({calls})"
        f" | **{statistics.median(ratios):.2f}** | {np.abs(today - proba).max():.1e}"
        f" | {same:.4f} | {conversion:.1f} ({expected:.1f}) | {conversion / saved:.0f} |"
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backbones", nargs="+",
        default=["efficientnet_lite0", "mobilenet_v2", "resnet50"],
    )
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classifier", action="store_true", help="also predict_proba")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 row")
    args = parser.parse_args()

    from importlib import metadata

    print(f"Machine: {machine()}\n")
    versions = []
    for name in ("onnxruntime", "openvino", "onnx", "tf2onnx"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    print(f"Engines: {', '.join(versions)}.\n")
    print(
        f"{args.n_images} images of {args.size}x{args.size}, batch {args.batch_size}, "
        f"median of {args.repeats} interleaved repeats.\n"
    )
    tables = [(
        "| backbone | forward pass | img/s | TF compiled time / this | max abs diff "
        "| max abs feature | first call (s) | first call RSS growth (MB) |",
        extraction,
    )]
    if args.classifier:
        tables.append((
            "| backbone | predict_proba, engine=\"tensorflow\" (img/s) "
            "| engine=\"auto\" (img/s) | speed-up | max abs proba diff | same predictions "
            "| conversion, s (auto's estimate) | images that repay it |",
            classifier,
        ))
    for header, rows in tables:
        print(f"\n{header}\n" + "|---" * (header.count("|") - 1) + "|")
        for backbone in args.backbones:
            for line in rows(backbone, args):
                print(line, flush=True)


if __name__ == "__main__":
    main()
