"""Peak memory of transforming many image files: bounded by the batch, not the data.

Writes ``--n-files`` JPEG files of 224x224 to a temporary folder, then
measures the resident set size while ``CNNFeatureExtractor.transform`` streams
them (sampled every 20 ms), against the process's baseline just before.

    python benchmarks/bench_memory.py --n-files 5000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from _common import PeakMemory, machine


def write_files(folder: str, n: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        path = os.path.join(folder, f"{i:06d}.jpg")
        Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-files", type=int, default=5000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from sktransfer import CNNFeatureExtractor

    with tempfile.TemporaryDirectory() as folder:
        paths = write_files(folder, args.n_files, args.size)
        extractor = CNNFeatureExtractor(
            args.backbone, weights=None, batch_size=args.batch_size
        ).fit(paths)
        extractor.transform(paths[: args.batch_size])  # warm-up (tracing)
        start = time.perf_counter()
        with PeakMemory() as memory:
            features = extractor.transform(paths)
        elapsed = time.perf_counter() - start
    print(f"Machine: {machine()}\n")
    print("| backbone | files | size | batch | time (s) | img/s | baseline RSS (MB) "
          "| peak RSS (MB) | peak - baseline (MB) | features (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.backbone} | {args.n_files} | {args.size}x{args.size} | {args.batch_size} "
          f"| {elapsed:.1f} | {args.n_files / elapsed:.1f} | {memory.baseline / 2**20:.0f} "
          f"| {memory.peak / 2**20:.0f} | {memory.growth_mb:.0f} | {features.nbytes / 2**20:.1f} |")


if __name__ == "__main__":
    main()
