"""``sktransfer extract``: features of a folder of images, to .npy, .parquet or .csv.

Images go through :class:`CNNFeatureExtractor` in chunks of
:data:`CHUNK_IMAGES`; each chunk's features are stored in the disk feature
cache (``memory=``) as soon as it is done, so an interrupted extraction
resumes where it stopped: re-running the same command runs the network only
on the images whose features are not cached yet.

The output is written to ``<output>.partial`` chunk by chunk (memory stays
bounded by a chunk, not by the data set) and renamed into place at the end,
so a file at the output path is always complete.
"""

from __future__ import annotations

import csv
import os
import shutil
import warnings
from abc import ABC, abstractmethod

import numpy as np

from ._common import (
    CommandError,
    Progress,
    check_output,
    chunks,
    estimator_params,
    image_error,
)
from ..exceptions import ImageLoadError

#: Images per chunk: what an interruption may lose, and the rows of one
#: write to the output and to the disk cache.
CHUNK_IMAGES = 256

OUTPUT_FORMATS = (".npy", ".parquet", ".csv")


def default_cache_dir(output: str) -> str:
    """The resume cache of an output: ``<output>.cache`` beside it."""
    return os.path.abspath(output) + ".cache"


def sidecar_path(output: str) -> str:
    """Where the paths (and labels) of a .npy output's rows go."""
    return os.path.splitext(output)[0] + ".paths.csv"


def _temporary(path: str) -> str:
    return path + ".partial"


class _Writer(ABC):
    """Writes rows chunk by chunk to a temporary file, renamed on :meth:`commit`."""

    def __init__(self, path, n_rows, feature_names, with_labels):
        self.path = path
        self.n_rows = n_rows
        self.feature_names = [str(name) for name in feature_names]
        self.with_labels = with_labels
        self.temporaries = {path: _temporary(path)}

    @abstractmethod
    def write(self, start, stop, paths, labels, rows) -> None:
        """Write the rows ``start:stop`` of the output."""

    def close(self) -> None:
        """Release the open files (before a commit or a discard)."""

    def commit(self) -> list[str]:
        self.close()
        for final, temporary in self.temporaries.items():
            os.replace(temporary, final)
        return list(self.temporaries)

    def discard(self) -> None:
        self.close()
        for temporary in self.temporaries.values():
            if os.path.exists(temporary):
                os.remove(temporary)

    def _columns(self) -> list[str]:
        return ["path"] + (["label"] if self.with_labels else [])


class _NpyWriter(_Writer):
    """Features in a float32 .npy array; paths (and labels) in a .paths.csv beside it."""

    def __init__(self, path, n_rows, feature_names, with_labels):
        super().__init__(path, n_rows, feature_names, with_labels)
        self.index_path = sidecar_path(path)
        self.temporaries[self.index_path] = _temporary(self.index_path)
        self.array = np.lib.format.open_memmap(
            self.temporaries[path], mode="w+", dtype=np.float32,
            shape=(n_rows, len(self.feature_names)),
        )
        self.index = open(self.temporaries[self.index_path], "w", newline="", encoding="utf-8")
        self.index_writer = csv.writer(self.index)
        self.index_writer.writerow(self._columns())

    def write(self, start, stop, paths, labels, rows):
        self.array[start:stop] = rows
        for i, path in enumerate(paths):
            self.index_writer.writerow([path] + ([labels[i]] if labels is not None else []))

    def close(self):
        if self.array is not None:
            self.array.flush()
            del self.array
            self.array = None
        self.index.close()


class _CsvWriter(_Writer):
    """A CSV table: ``path``, ``label`` (with classes), one column per feature."""

    def __init__(self, path, n_rows, feature_names, with_labels):
        super().__init__(path, n_rows, feature_names, with_labels)
        self.file = open(self.temporaries[path], "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        self.writer.writerow(self._columns() + self.feature_names)

    def write(self, start, stop, paths, labels, rows):
        for i, path in enumerate(paths):
            # 9 significant digits give back the very float32 values.
            values = [format(value, ".9g") for value in rows[i].tolist()]
            self.writer.writerow(
                [path] + ([labels[i]] if labels is not None else []) + values
            )

    def close(self):
        self.file.close()


class _ParquetWriter(_Writer):
    """A Parquet table (through pyarrow), with the columns of the CSV output."""

    def __init__(self, path, n_rows, feature_names, with_labels):
        super().__init__(path, n_rows, feature_names, with_labels)
        pa, pq = _pyarrow()
        self.pa = pa
        fields = [pa.field("path", pa.string())]
        if with_labels:
            fields.append(pa.field("label", pa.string()))
        fields += [pa.field(name, pa.float32()) for name in self.feature_names]
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(self.temporaries[path], self.schema)

    def write(self, start, stop, paths, labels, rows):
        columns = [self.pa.array([str(p) for p in paths], self.pa.string())]
        if labels is not None:
            columns.append(self.pa.array([str(label) for label in labels], self.pa.string()))
        columns += [self.pa.array(rows[:, j]) for j in range(rows.shape[1])]
        self.writer.write_table(self.pa.Table.from_arrays(columns, schema=self.schema))

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CommandError(
            "writing .parquet needs pyarrow, which is not installed. To resolve "
            "this, do one of the following:\n  1. pip install pyarrow\n  2. write "
            "-o features.csv or -o features.npy instead."
        ) from None
    return pa, pq


_WRITERS = {".npy": _NpyWriter, ".csv": _CsvWriter, ".parquet": _ParquetWriter}


def run_extract(args, paths, labels, *, say, warn) -> int:
    """Extract, write and report; the body of ``sktransfer extract``."""
    from .._extractor import CNNFeatureExtractor

    extension = check_output(args.output, OUTPUT_FORMATS)
    if extension == ".parquet":
        _pyarrow()  # fail before the work, not after it
    if args.no_cache:
        cache_dir = None
    else:
        cache_dir = args.cache_dir or default_cache_dir(args.output)
        if os.path.isfile(cache_dir):
            raise CommandError(f"--cache-dir {cache_dir!r} is a file, not a folder.")
    extractor = CNNFeatureExtractor(
        # Disk only: the rows go to the output; keeping them in memory too
        # would only evict what other work cached.
        **estimator_params(CNNFeatureExtractor, args, cache=False, memory=cache_dir)
    )
    try:
        extractor.fit(paths)
    except ImageLoadError as exc:
        raise image_error(exc, paths) from None
    names = extractor.get_feature_names_out()
    writer = _WRITERS[extension](args.output, len(paths), names, labels is not None)
    progress = Progress(len(paths), "extract", enabled=args.progress)
    unreadable = []
    try:
        for start, stop in chunks(len(paths), CHUNK_IMAGES):
            try:
                with warnings.catch_warnings():
                    # Reported once below, by path; the library's warning
                    # counts images within the chunk.
                    warnings.filterwarnings("ignore", "[0-9]+ image.s. could not be read")
                    rows = extractor.transform(paths[start:stop])
            except ImageLoadError as exc:
                raise image_error(exc, paths[start:stop]) from None
            unreadable += [str(paths[start + i]) for i in np.flatnonzero(np.isnan(rows).any(1))]
            writer.write(
                start, stop, paths[start:stop],
                None if labels is None else labels[start:stop], rows,
            )
            progress.update(stop - start)
        written = writer.commit()
    except BaseException:
        progress.close()
        writer.discard()
        if cache_dir is not None and progress.done:
            warn(
                f"the features of {progress.done} image(s) are cached in "
                f"{cache_dir!r}: run the same command again to resume."
            )
        raise
    progress.close()
    if unreadable:
        warn(
            f"{len(unreadable)} image(s) could not be read; their features are NaN: "
            + ", ".join(repr(p) for p in unreadable[:5])
            + (" ..." if len(unreadable) > 5 else "")
        )
    if cache_dir is not None and args.cache_dir is None:
        _remove_resume_cache(cache_dir)
    layers = ", ".join(extractor.layer_names_)
    say(
        f"{len(paths)} images -> {len(names)} features each ({extractor.backbone_name_} "
        f"cut at {layers}, pooling {extractor.pooling_!r}, input "
        f"{extractor.input_size_[0]}x{extractor.input_size_[1]})"
    )
    for path in written:
        say(f"wrote {path}")
    return 0


def _remove_resume_cache(cache_dir: str) -> None:
    """Delete the default cache once the output is complete.

    Only a folder that holds nothing but the feature cache's own folder is
    removed, so a user's folder that happens to have this name is left alone.
    """
    if not os.path.isdir(cache_dir):
        return
    if all(name.startswith("sktransfer-features-") for name in os.listdir(cache_dir)):
        shutil.rmtree(cache_dir, ignore_errors=True)
