"""Transform on a Dask LocalCluster against the single-process extractor.

``--n-images`` Fashion-MNIST training images are written as PNG files (not
timed); their paths are transformed (a) by ``CNNFeatureExtractor.transform``
in this process and (b) as a Dask array of paths on a ``LocalCluster`` of
``--workers`` single-threaded worker processes. The feature cache is off, so
both compute every image. Each worker is warmed up first (TensorFlow
imported, network built: reported separately as start-up). Peak memory: the
RSS growth of this process during (a), sampled every 20 ms; the peak RSS
(``ru_maxrss``) of each worker process after (b).

    python benchmarks/bench_dask.py --n-images 20000
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from _common import PeakMemory, machine


def write_pngs(folder: str, n: int) -> list[str]:
    from sktransfer.datasets import load_fashion_mnist

    images = load_fashion_mnist(subset="train").images
    images = np.concatenate([images] * (n // len(images) + 1))[:n]
    paths = []
    for index, image in enumerate(images):
        path = os.path.join(folder, f"{index:06d}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args) -> list[str]:
    import dask.array as da
    import distributed

    from sktransfer import CNNFeatureExtractor

    params = dict(
        backbone=args.backbone, weights="imagenet", input_size=args.size,
        batch_size=args.batch_size, cache=False,
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_pngs(folder, args.n_images)
        extractor = CNNFeatureExtractor(**params).fit(paths)
        extractor.transform(paths[:64])  # network built, function traced
        with PeakMemory() as memory:
            start = time.perf_counter()
            local = extractor.transform(paths)
            seconds = time.perf_counter() - start
        rows.append(
            f"| single process | 1 x {os.cpu_count()} threads | - | {seconds:.1f} | "
            f"{len(paths) / seconds:.0f} | +{memory.growth_mb:.0f} (RSS peak "
            f"{memory.peak / 2**20:.0f}) |"
        )

        start = time.perf_counter()
        with distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True,
            dashboard_address=None,
        ) as cluster, distributed.Client(cluster) as client:
            warm = [client.submit(extractor.transform, paths[i : i + 64], pure=False,
                                  workers=[w]) for i, w in enumerate(client.scheduler_info()["workers"])]
            client.gather(warm)
            startup = time.perf_counter() - start
            lazy = extractor.transform(
                da.from_array(np.array(paths, dtype=object), chunks=args.chunk)
            )
            start = time.perf_counter()
            result = lazy.compute()
            seconds = time.perf_counter() - start
            peaks = client.run(peak_rss_mb)
        assert np.array_equal(result, local), "distributed features differ"
        rows.append(
            f"| LocalCluster, {args.workers} workers | {args.workers} x 1 thread | "
            f"{startup:.1f} | {seconds:.1f} | {len(paths) / seconds:.0f} | "
            + ", ".join(f"{mb:.0f}" for mb in peaks.values())
            + " (peak RSS per worker) |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-images", type=int, default=20000)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=500)
    args = parser.parse_args()
    rows = run(args)
    print(f"Machine: {machine()}\n")
    print(
        f"{args.n_images} PNG files (Fashion-MNIST), {args.backbone} ImageNet at "
        f"{args.size}x{args.size}, batch {args.batch_size}, Dask chunks of "
        f"{args.chunk} paths, feature cache off; features identical in both.\n"
    )
    print("| run | processes | start-up (s) | transform (s) | img/s | memory (MB) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
