"""Pooled features of images, computed once: the cache in front of the network.

:func:`features` is the one way estimators get pooled features. It looks
every image up in the in-memory cache, then on disk, runs the network only
on the images missing, and stores what it computed.

One pass, many layers
---------------------
A pass through the network to a cut point goes through every block below
it, and pooling a block's map costs next to nothing next to the
convolutions (benchmarks/README.md). So every pass also keeps the average
and the max pooled features of each block it went through (``"avgmax"``
derives from them), a few KB per image. Once a second cut depth is asked of
a network in a process (a grid over ``layer``), passes go to the top of the
network, so that the rest of the grid costs no pass at all.
"""

from __future__ import annotations

import numpy as np

from . import _inputs, _pooling
from ._engines import TENSORFLOW, key_suffix
from .cache import disk_cache, memory_cache, memory_location

#: Poolings kept for every block a pass goes through.
EAGER_POOLINGS = ("avg", "max")


def parts_of(layers: list[str], pooling) -> list[tuple[str, object]]:
    """The (layer, pooling) parts whose concatenation is the features."""
    if pooling == "avgmax":
        return [(layer, p) for layer in layers for p in ("avg", "max")]
    return [(layer, pooling) for layer in layers]


def eager_parts(network, parts) -> list[tuple[str, object]]:
    """``parts`` plus the cheap parts worth keeping from the same pass."""
    positions = {layer.name: i for i, layer in enumerate(network.model.layers)}
    deepest = max(positions.get(layer, -1) for layer, _ in parts)
    if network.record_cut_depth(deepest) > 1 and network.blocks:
        deepest = max(deepest, positions.get(network.blocks[-1].name, -1))
    extra = [
        (block.name, pooling)
        for block in network.blocks
        if positions.get(block.name, -1) <= deepest
        for pooling in EAGER_POOLINGS
    ]
    return list(dict.fromkeys([*parts, *extra]))


def _width(network, part) -> int:
    layer, pooling = part
    return _pooling.n_pooled(network.layer_shape(layer), pooling)


def cacheable(preprocessing) -> bool:
    """Whether features computed with ``preprocessing`` may be cached.

    A callable is known only by its identity, which Python recycles once it
    is freed (and ``clone`` copies it), so cached rows could be served for
    another function: its features are always computed.
    """
    return preprocessing is None or isinstance(preprocessing, str)


def feature_key(network, preprocessing, jit_compile, engine=TENSORFLOW) -> tuple:
    """What every part key of these features shares.

    The engine adds to it only where its features differ (reduced
    precision): rows agree across float32 engines, so they are shared.
    """
    return (network.cache_key(), preprocessing, bool(jit_compile), *key_suffix(engine))


def part_keys(base: tuple, parts) -> list[str]:
    """One cache key per (layer, pooling) part."""
    from ._fingerprint import text_key

    return [text_key(*base, layer, pooling) for layer, pooling in parts]


def features(
    network,
    layers: list[str],
    pooling,
    images,
    *,
    preprocessing,
    jit_compile: bool,
    batch_size: int,
    cache: bool = True,
    memory=None,
    fingerprint: str = "metadata",
    verbose=0,
    progress=None,
    eager: bool = True,
    engine=TENSORFLOW,
) -> np.ndarray:
    """Pooled features of ``layers`` for every image, through the caches.

    Parameters
    ----------
    engine : _engines.Engine
        What runs the network (see :func:`sktransfer._engines.choose`).
    eager : bool
        Also keep the cheap parts of the pass (see :func:`eager_parts`);
        False computes and stores only what is asked.
    progress : _fit_tasks.BatchTask, optional
        Reports the pass to scikit-learn callbacks: ``progress.begin(n,
        batch_size)`` with the number of images the network runs on (0 when
        the caches hold them all), then ``progress.on_batch`` after each batch.

    Returns
    -------
    features : ndarray of shape (len(images), n_features), float32
        NaN rows for unreadable images (``on_error="nan"``); those are never
        cached.
    """
    parts = parts_of(layers, pooling)
    disk = disk_cache(memory)
    if not cacheable(preprocessing):
        cache, disk = False, None
    if not cache and disk is None:
        function = _function(network, parts, preprocessing, jit_compile, engine, memory)
        width = sum(_width(network, part) for part in parts)
        if progress is not None:
            progress.begin(len(images), batch_size)
        return _inputs.map_batches(
            function, images, network.input_size, batch_size, width, verbose=verbose,
            on_batch=None if progress is None else progress.on_batch,
        )

    keys = images.keys(fingerprint)
    widths = [_width(network, part) for part in parts]
    out = np.empty((len(images), sum(widths)), dtype=np.float32)
    found = np.zeros((len(images), len(parts)), dtype=bool)
    base = feature_key(network, preprocessing, jit_compile, engine)
    names = part_keys(base, parts)
    offsets = np.concatenate([[0], np.cumsum(widths)])
    memory_rows = memory_cache()
    for p, name in enumerate(names):
        stored = memory_rows.get(name, keys) if cache else [None] * len(keys)
        if disk is not None:
            missing = [i for i, row in enumerate(stored) if row is None and keys[i] is not None]
            if missing:
                from_disk = disk.get(name, [keys[i] for i in missing])
                promoted = [(i, row) for i, row in zip(missing, from_disk) if row is not None]
                for i, row in promoted:
                    stored[i] = row
                if cache and promoted:
                    memory_rows.put(name, [keys[i] for i, _ in promoted], [r for _, r in promoted])
        for i, row in enumerate(stored):
            if row is not None and row.shape == (widths[p],):
                out[i, offsets[p] : offsets[p + 1]] = row
                found[i, p] = True

    todo = np.flatnonzero(~found.all(axis=1))
    if progress is not None:
        progress.begin(len(todo), batch_size)
    if len(todo):
        computed_parts = eager_parts(network, parts) if eager else parts
        function = _function(
            network, computed_parts, preprocessing, jit_compile, engine, memory
        )
        computed_widths = [_width(network, part) for part in computed_parts]
        store = _Store(
            part_keys(base, computed_parts), computed_widths, [keys[i] for i in todo],
            memory_rows if cache else None, disk,
        )

        def on_batch(out, start, stop, failed):
            store.add(out, todo, start, stop, failed)
            if progress is not None:
                progress.on_batch(out, start, stop, failed)

        computed = _inputs.map_batches(
            function,
            images,
            network.input_size,
            batch_size,
            sum(computed_widths),
            indices=todo,
            verbose=verbose,
            on_batch=on_batch,
        )
        store.flush(computed)
        bounds = store.bounds
        for p, part in enumerate(parts):
            q = computed_parts.index(part)
            out[todo, offsets[p] : offsets[p + 1]] = computed[:, bounds[q] : bounds[q + 1]]
    return out


def _function(network, parts, preprocessing, jit_compile, engine, memory):
    """The network's feature function; a converted one is also kept in ``memory``."""
    function = network.feature_function(parts, preprocessing, jit_compile, engine)
    location = memory_location(memory)
    if location is not None and hasattr(function, "add_folder"):
        function.add_folder(location)
    return function


class _Store:
    """Stores computed rows in the caches as batches complete.

    Rows go to disk every ``FLUSH_ROWS`` images, so an interrupted
    extraction resumes where it stopped, without a file per batch.
    """

    FLUSH_ROWS = 1024

    def __init__(self, names, widths, keys, memory_rows, disk):
        self.names = names
        self.bounds = np.concatenate([[0], np.cumsum(widths)])
        self.keys = keys
        self.memory_rows = memory_rows
        self.disk = disk
        self.pending: list[int] = []  # positions (into keys) ready to store

    def add(self, computed, todo, start, stop, failed) -> None:
        failed = set(failed)
        self.pending += [
            position
            for position in range(start, stop)
            if self.keys[position] is not None and int(todo[position]) not in failed
        ]
        if len(self.pending) >= self.FLUSH_ROWS:
            self.flush(computed)

    def flush(self, computed) -> None:
        if not self.pending:
            return
        keys = [self.keys[position] for position in self.pending]
        for q, name in enumerate(self.names):
            rows = computed[self.pending, self.bounds[q] : self.bounds[q + 1]]
            if self.memory_rows is not None:
                self.memory_rows.put(name, keys, rows)
            if self.disk is not None:
                self.disk.put(name, keys, rows, kept_in_memory=self.memory_rows is not None)
        self.pending = []
