"""Extractor throughput against a hand-written compiled forward pass and Model.predict.

All three compute the same thing: preprocess_input, the headless backbone,
global average pooling, on the same uint8 images already in memory. Prints a
markdown table; median of repeats after one warm-up. The extractor runs with
``cache=False``: with the feature cache every timed call after the warm-up
would be a cache hit, not a forward pass (bench_cache.py measures the cache).

    python benchmarks/bench_extractor.py --backbones mobilenet_v2 --n-images 256
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import hand_written_forward, machine, median_time


def run(backbone: str, n_images: int, size: int, batch_size: int, repeats: int):
    import keras

    from sktransfer import CNNFeatureExtractor, backbones

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, size, size, 3), dtype=np.uint8)

    extractor = CNNFeatureExtractor(
        backbone, weights=None, input_size=size, batch_size=batch_size, cache=False
    ).fit(images)
    # The reference uses the very network the extractor built (same weights).
    from sktransfer._network import load_network

    model = load_network(backbone, None, (size, size)).model
    preprocess = backbones.preprocess_input(backbone)

    hand_written = hand_written_forward(model, preprocess, images, batch_size)
    pooled = keras.Model(model.input, keras.layers.GlobalAveragePooling2D()(model.output))

    def predict():
        return pooled.predict(
            preprocess(images.astype("float32")), batch_size=batch_size, verbose=0
        )

    def ours():
        return extractor.transform(images)

    for function in (hand_written, predict, ours):
        function()  # warm-up: tracing and first-call allocations
    np.testing.assert_allclose(ours(), hand_written(), rtol=1e-4, atol=1e-5)
    rates = {
        name: n_images / median_time(function, repeats)
        for name, function in [("compiled", hand_written), ("predict", predict), ("ours", ours)]
    }
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2"])
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"Machine: {machine()}\n")
    print(f"{args.n_images} images of {args.size}x{args.size}, batch {args.batch_size}, "
          f"median of {args.repeats}\n")
    print("| backbone | hand-written compiled (img/s) | Model.predict (img/s) | "
          "CNNFeatureExtractor (img/s) | ours / compiled | ours / predict |")
    print("|---|---|---|---|---|---|")
    for backbone in args.backbones:
        r = run(backbone, args.n_images, args.size, args.batch_size, args.repeats)
        print(f"| {backbone} | {r['compiled']:.1f} | {r['predict']:.1f} | {r['ours']:.1f} | "
              f"{r['ours'] / r['compiled']:.2f} | {r['ours'] / r['predict']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
