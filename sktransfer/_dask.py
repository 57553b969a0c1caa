"""Lazy, block-wise feature extraction on Dask collections.

``CNNFeatureExtractor.transform`` hands Dask input here and gets a lazy
result back, computed block by block on whatever runs Dask (threads, a
``distributed`` cluster). Each task receives the small fitted extractor and
its block; the worker process builds the network once (the process-wide
network cache) and reuses it for every block it runs, and memory per worker
is bounded by the block and the batch size. File paths travel as paths:
images are decoded on the workers, never shipped through the scheduler.

Dask is imported only when Dask input arrives: the package works without it
(``pip install "sktransfer[dask]"`` installs it).
"""

from __future__ import annotations

import numpy as np

from . import _inputs


def is_dask_collection(X) -> bool:
    """Whether ``X`` is a Dask array, bag, DataFrame or Series (without importing Dask)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "__dask_graph__")


def _kind(X) -> str:
    module = type(X).__module__
    if module.startswith("dask.array"):
        return "array"
    if module.startswith("dask.bag"):
        return "bag"
    if module.startswith("dask.dataframe"):
        return "dataframe"
    raise TypeError(f"X is a Dask {type(X).__name__}, which is not supported.")


def check(X) -> None:
    """Validate a Dask collection's structure without computing it."""
    kind = _kind(X)
    if kind == "array":
        if X.dtype.kind in "uif":
            if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] not in (1, 3, 4)):
                raise ValueError(
                    f"X is a Dask array of shape {X.shape}; images must have shape "
                    "(n, height, width) or (n, height, width, 1|3|4)."
                )
            _inputs.check_not_single_image(X.shape, "X, a Dask array,")
        elif X.ndim != 1:
            raise ValueError(
                f"X is a Dask array of dtype {X.dtype} with shape {X.shape}; a "
                "non-numeric Dask array must be a 1-D array of file paths."
            )
    elif kind == "dataframe" and getattr(X, "ndim", 1) == 2 and len(X.columns) != 1:
        raise ValueError(
            f"X is a Dask DataFrame with {len(X.columns)} columns "
            f"({list(X.columns)[:5]}); pass the one column of file paths, e.g. "
            "ddf['path']."
        )


def transform(extractor, X):
    """Lazy features of a Dask collection of images or file paths.

    Returns
    -------
    A Dask array of shape (n_images, n_features_out_) for a Dask array or
    bag; a Dask DataFrame with the same index, one column per feature name,
    for a Dask DataFrame or Series.
    """
    check(X)
    kind = _kind(X)
    width = extractor.n_features_out_
    if kind == "array" and X.dtype.kind in "uif":
        return _numeric_array(extractor, X, width)
    if kind == "array":
        return X.map_blocks(
            _paths_array_block, extractor, dtype=np.float32, chunks=(X.chunks[0], (width,)),
            new_axis=1,
        )
    if kind == "bag":
        import dask
        import dask.array as da

        # Messages name an image by its position in the whole bag: each
        # partition's first position is the sum of the lengths before it
        # (computed with the partitions, not before).
        parts, offset, blocks = X.to_delayed(), 0, []
        for part in parts:
            blocks.append(
                da.from_delayed(
                    dask.delayed(_paths_block)(part, extractor, offset),
                    shape=(np.nan, width),
                    dtype=np.float32,
                )
            )
            offset = dask.delayed(_add_length)(offset, part)
        return da.concatenate(blocks, axis=0)
    import pandas as pd

    series = X if getattr(X, "ndim", 1) == 1 else X.iloc[:, 0]
    names = list(extractor.get_feature_names_out())
    meta = pd.DataFrame(
        {name: pd.Series(dtype=np.float32) for name in names},
        index=series._meta.index,
    )
    return series.map_partitions(_series_block, extractor, names, meta=meta)


def _numeric_array(extractor, X, width):
    import dask

    # The 0-1 or 0-255 reading of float pixels is decided for the whole
    # array, as for a NumPy array, not block by block. This reads a float
    # array once when transform is called (its min and max); integer
    # arrays stay entirely lazy.
    scale = 1.0
    if X.dtype.kind == "f":
        low, high = dask.compute(X.min(), X.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError("X contains NaN or infinite pixel values.")
        scale = _inputs.range_scale(float(low), float(high), is_float=True)
    X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    return X.map_blocks(
        _array_block, extractor, scale, dtype=np.float32,
        chunks=(X.chunks[0], (width,)), drop_axis=list(range(2, X.ndim)),
    )


def _array_block(block, extractor, scale):
    images = _inputs.as_images(block, on_error=extractor.on_error)
    images.scale = scale
    return extractor.transform(images)


def _add_length(offset: int, part) -> int:
    return offset + len(list(part))


def _paths_block(paths, extractor, first=0, names=None):
    """Features of a block of paths; images named ``first``, ``first + 1``, ... or ``names``."""
    paths = list(paths)
    if not paths:
        return np.empty((0, extractor.n_features_out_), dtype=np.float32)
    if names is None:
        names = range(first, first + len(paths))
    images = _inputs.as_images(paths, on_error=extractor.on_error, names=list(names))
    return extractor.transform(images)


def _paths_array_block(paths, extractor, block_info=None):
    first = block_info[0]["array-location"][0][0] if block_info else 0
    return _paths_block(paths, extractor, first)


def _series_block(series, extractor, names):
    import pandas as pd

    # A row is named by its index label, which is its position in the
    # collection for the default RangeIndex.
    features = _paths_block(series.to_numpy(), extractor, names=series.index.tolist())
    return pd.DataFrame(features, index=series.index, columns=names)
