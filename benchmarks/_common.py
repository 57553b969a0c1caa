"""Helpers shared by the benchmark scripts: machine description, timing, memory."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time


def machine() -> str:
    """One line naming the machine and library versions."""
    import keras
    import sklearn
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU ({gpus[0].name})" if gpus else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{device}; Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, scikit-learn {sklearn.__version__}"
    )


def median_time(function, repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls (after the caller's warm-up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """Sample the resident set size in a thread; ``peak`` over the block."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0

    def __enter__(self):
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


def hand_written_forward(model, preprocess, images, batch_size: int):
    """A hand-written compiled forward pass: preprocess, ``model``, average pooling.

    The reference of the throughput benchmarks; returns a function computing
    the pooled features of ``images`` (uint8, in memory) batch by batch.
    """
    import numpy as np
    import tensorflow as tf

    size = images.shape[1:3]

    @tf.function(input_signature=[tf.TensorSpec((None, *size, 3), tf.float32)])
    def forward(x):
        return tf.reduce_mean(model(preprocess(x), training=False), axis=[1, 2])

    def hand_written():
        return np.concatenate([
            forward(tf.constant(images[i : i + batch_size], tf.float32)).numpy()
            for i in range(0, len(images), batch_size)
        ])

    return hand_written
