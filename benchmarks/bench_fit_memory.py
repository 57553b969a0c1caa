"""Resident memory across many successive fits of FineTunedCNNClassifier in one process.

A grid search fits dozens of candidates in one process; this measures the
RSS after each fit (after garbage collection).

    python benchmarks/bench_fit_memory.py --backbone mobilenet_v2 --fits 30
"""

from __future__ import annotations

import argparse
import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import machine, rss_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--fits", type=int, default=30)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n-images", type=int, default=48)
    args = parser.parse_args()

    from sktransfer import FineTunedCNNClassifier

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(args.n_images, args.size, args.size, 3), dtype=np.uint8)
    y = np.arange(args.n_images) % 3
    clf = FineTunedCNNClassifier(
        args.backbone, weights=None, input_size=args.size, head_epochs=1, epochs=1,
        trainable_blocks=1, batch_size=16, random_state=0,
    )
    readings = []
    for _ in range(args.fits):
        clf.fit(X, y)
        gc.collect()
        readings.append(rss_bytes() / 2**20)
    warm = min(5, len(readings) - 1)
    per_fit = (readings[-1] - readings[warm]) / (len(readings) - 1 - warm)
    print(f"Machine: {machine()}\n")
    print("| backbone | input | fits | RSS after fit 1 (MB) | after fit "
          f"{warm + 1} (MB) | after fit {args.fits} (MB) | growth per fit after fit {warm + 1} (MB) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.backbone} | {args.size}x{args.size} | {args.fits} | {readings[0]:.0f} | "
          f"{readings[warm]:.0f} | {readings[-1]:.0f} | {per_fit:.1f} |")


if __name__ == "__main__":
    main()
