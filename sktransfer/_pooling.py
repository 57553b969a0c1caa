"""Pooling of a block's feature map (h, w, c) into a feature vector.

``"avg"``/``"max"`` give c features, ``"avgmax"`` 2c (average then max),
``"flatten"`` h*w*c (no pooling), an int k a k x k grid of averages (k*k*c),
which keeps the coarse layout that helps lower layers. Grid cells follow
adaptive average pooling: cell i covers rows floor(i*h/k) to ceil((i+1)*h/k),
so any k works at any resolution (cells overlap when k > h).

Feature order and names agree: cells row-major, channels fastest.
"""

from __future__ import annotations

import math
from numbers import Integral

POOLING_OPTIONS = ("avg", "max", "avgmax", "flatten")


def check_pooling(pooling, parameter: str = "pooling") -> None:
    """ValueError naming the parameter unless ``pooling`` is valid."""
    if isinstance(pooling, str) and pooling in POOLING_OPTIONS:
        return
    if isinstance(pooling, Integral) and not isinstance(pooling, bool) and pooling > 0:
        return
    raise ValueError(
        f"{parameter}={pooling!r} is not valid; use one of {POOLING_OPTIONS} or "
        "a positive int k for a k x k grid of averages."
    )


def n_pooled(shape: tuple[int, int, int], pooling) -> int:
    """Number of features pooling gives for a (h, w, c) feature map."""
    height, width, channels = shape
    if pooling in ("avg", "max"):
        return channels
    if pooling == "avgmax":
        return 2 * channels
    if pooling == "flatten":
        return height * width * channels
    return int(pooling) ** 2 * channels


def _cells(length: int, k: int) -> list[tuple[int, int]]:
    return [
        (math.floor(i * length / k), math.ceil((i + 1) * length / k)) for i in range(k)
    ]


def pool(x, pooling):
    """Pool a (batch, h, w, c) tensor to (batch, n_pooled), with ``keras.ops``.

    Used inside the extractor's compiled function and by :class:`Pooling`.
    """
    from keras import ops

    if pooling == "avg":
        return ops.mean(x, axis=(1, 2))
    if pooling == "max":
        return ops.max(x, axis=(1, 2))
    if pooling == "avgmax":
        return ops.concatenate([ops.mean(x, axis=(1, 2)), ops.max(x, axis=(1, 2))], axis=-1)
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if pooling == "flatten":
        return ops.reshape(x, (-1, height * width * channels))
    k = int(pooling)
    cells = [
        ops.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2))
        for r0, r1 in _cells(height, k)
        for c0, c1 in _cells(width, k)
    ]
    return ops.concatenate(cells, axis=-1)


def pooled_names(prefix: str, shape: tuple[int, int, int], pooling) -> list[str]:
    """Feature names in the order :func:`pool` produces them."""
    height, width, channels = shape
    if pooling in ("avg", "max"):
        cells = [pooling]
    elif pooling == "avgmax":
        cells = ["avg", "max"]
    elif pooling == "flatten":
        cells = [f"y{r}x{c}" for r in range(height) for c in range(width)]
    else:
        k = int(pooling)
        cells = [f"grid{r}x{c}" for r in range(k) for c in range(k)]
    return [f"{prefix}__{cell}__ch{ch}" for cell in cells for ch in range(channels)]
