"""The input layer: every supported image container becomes batches of RGB pixels.

All estimators read their ``X`` through :func:`as_images`, which validates the
input once and returns an :class:`Images` object. ``Images.load(start, stop,
size)`` then yields float32 RGB pixels in ``[0, 255]`` resized to ``size`` and
:func:`iter_batches` streams those batches through a small thread pool, so
decoding overlaps with the network and memory is bounded by the batch size,
never by the data set.

Accepted inputs
---------------
* numeric ndarray ``(n, h, w)``, ``(n, h, w, 1)``, ``(n, h, w, 3)`` or
  ``(n, h, w, 4)``. Integer arrays hold pixels in 0-255. Float arrays hold
  pixels in 0-255, or in 0-1 when every value of the array lies in ``[0, 1]``
  (then they are multiplied by 255). Anything outside ``[0, 255]`` is an error:
  pass raw pixels, the backbone's own preprocessing is applied for you.
* a list/tuple/array/pandas Series/one-column DataFrame of file paths (str or
  PathLike), in any format Pillow reads, of any size; EXIF orientation is
  honoured.
* a list of PIL images, or of per-image arrays of possibly different sizes.

Grayscale is replicated to RGB and alpha dropped. Nothing the caller passed
is modified: arrays are only read.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .exceptions import ImageLoadError

ON_ERROR_OPTIONS = ("raise", "nan")

# Checking finiteness of a huge array in one go would allocate a boolean copy
# of it; chunks keep that overhead small.
_FINITE_CHECK_CHUNK = 256


def _as_size(size: tuple[int, int]) -> tuple[int, int]:
    return int(size[0]), int(size[1])


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a batch ``(k, h, w, 3)`` of float32 pixels to ``size``.

    The single resize used for every input type, so an array and the same
    pixels saved as PNG files give identical features. Bilinear with
    antialiasing (what Pillow does when shrinking).
    """
    if images.shape[1:3] == _as_size(size):
        return images
    from ._tensorflow import tensorflow

    out = tensorflow().image.resize(images, size, method="bilinear", antialias=True)
    return np.clip(out.numpy(), 0.0, 255.0)


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Channels-last pixels (..., h, w, c) with 1, 3 or 4 channels to RGB."""
    if pixels.shape[-1] == 1:
        return np.repeat(pixels, 3, axis=-1)
    if pixels.shape[-1] == 4:
        return pixels[..., :3]
    return pixels


class Images(ABC):
    """A validated collection of images that loads any subset as RGB batches."""

    on_error = "raise"

    @abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    def load(
        self, start: int, stop: int, size: tuple[int, int]
    ) -> tuple[np.ndarray, list[int]]:
        """Pixels of images ``start:stop`` resized to ``size``: see :meth:`take`."""
        return self.take(np.arange(start, stop), size)

    @abstractmethod
    def take(
        self, indices: np.ndarray, size: tuple[int, int]
    ) -> tuple[np.ndarray, list[int]]:
        """Pixels of the images at ``indices`` resized to ``size``.

        Returns
        -------
        pixels : ndarray of shape (len(indices), height, width, 3), float32
            RGB values in [0, 255].
        failed : list of int
            Indices (into the whole input) of images that could not be read;
            their pixels are zeros. Only non-empty with ``on_error="nan"``.
        """


class ArrayImages(Images):
    """A numeric ndarray of same-size images, read lazily batch by batch."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.scale = _pixel_scale(array)

    def __len__(self) -> int:
        return self.array.shape[0]

    def take(self, indices, size):
        # A contiguous range is read through a view; other index sets copy.
        start = int(indices[0]) if len(indices) else 0
        if np.array_equal(indices, np.arange(start, start + len(indices))):
            selected = self.array[start : start + len(indices)]
        else:
            selected = self.array[np.asarray(indices)]
        pixels = np.asarray(selected, dtype=np.float32)
        if self.scale != 1.0:
            pixels = pixels * self.scale
        rgb = _to_rgb(pixels) if self.array.ndim == 4 else _gray(pixels)
        return resize(rgb, size), []


def _gray(pixels: np.ndarray) -> np.ndarray:
    """Grayscale pixels without a channel axis to RGB."""
    return np.repeat(pixels[..., np.newaxis], 3, axis=-1)


class SequenceImages(Images):
    """Per-image inputs: file paths, PIL images, or arrays of mixed sizes."""

    def __init__(self, items: list, on_error: str):
        self.items = items
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.items)

    def take(self, indices, size):
        batch = np.zeros((len(indices), *_as_size(size), 3), dtype=np.float32)
        failed = []
        for offset, index in enumerate(indices):
            try:
                pixels = self._load_one(int(index))
            except ImageLoadError:
                if self.on_error == "raise":
                    raise
                failed.append(int(index))
                continue
            batch[offset] = resize(pixels[np.newaxis], size)[0]
        return batch, failed

    def _load_one(self, index: int) -> np.ndarray:
        item = self.items[index]
        if isinstance(item, np.ndarray):
            return _single_array_pixels(item, index)
        if isinstance(item, Image.Image):
            try:
                return _pil_pixels(item)
            except (OSError, ValueError) as exc:  # e.g. a lazy image whose file is gone
                raise ImageLoadError(
                    f"Could not read PIL image {index} of X: {exc}", index=index
                ) from None
        return _read_file(item, index)


def _single_array_pixels(item: np.ndarray, index: int) -> np.ndarray:
    if item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[-1] not in (1, 3, 4)):
        raise ValueError(
            f"X[{index}] is an array of shape {item.shape}; a single image must "
            "have shape (height, width) or (height, width, 1|3|4)."
        )
    if item.ndim == 2:
        item = item[..., np.newaxis]
    pixels = np.asarray(item, dtype=np.float32) * _pixel_scale(item, index=index)
    return _to_rgb(pixels)


def _pil_pixels(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grayscale: scale to 0-255 instead of letting convert() clip.
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") else max(values.max(), 1.0)
        return _gray(values * (255.0 / top))
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _read_file(path: str, index: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return _pil_pixels(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(
            f"Could not read image {index} of X ({path!r}): {exc}",
            index=index,
            path=path,
        ) from None


def _pixel_scale(array: np.ndarray, index: int | None = None) -> float:
    """Validate pixel values and return the factor that maps them to 0-255."""
    where = "X" if index is None else f"image {index} of X"
    if array.dtype.kind == "b" or array.dtype.kind not in "uif":
        raise ValueError(
            f"{where} has dtype {array.dtype}; images must be numeric pixel "
            "values (uint8 in 0-255, or float in 0-255 or 0-1), or file paths."
        )
    if array.size == 0:
        raise ValueError(f"{where} has an empty axis: shape {array.shape}.")
    if array.dtype.kind == "f":
        _check_finite(array, where, per_image=index is None)
    return range_scale(float(array.min()), float(array.max()), array.dtype.kind == "f", where)


def range_scale(low: float, high: float, is_float: bool, where: str = "X") -> float:
    """The factor mapping pixels in ``[low, high]`` to 0-255; ValueError outside 0-255.

    Float pixels all within [0, 1] are read as 0-1 (factor 255).
    """
    if low < 0 or high > 255:
        raise ValueError(
            f"{where} has pixel values in [{low:g}, {high:g}]; expected 0-255 "
            "(or 0-1 for floats). Pass raw pixels: the backbone's own "
            "preprocessing is applied for you. Rescale 16-bit images to 0-255."
        )
    return 255.0 if is_float and high <= 1.0 else 1.0


def _check_finite(array: np.ndarray, where: str, per_image: bool = True) -> None:
    if not per_image:
        if not np.isfinite(array).all():
            raise ValueError(f"{where} contains NaN or infinite pixel values.")
        return
    for start in range(0, array.shape[0], _FINITE_CHECK_CHUNK):
        chunk = array[start : start + _FINITE_CHECK_CHUNK]
        if not np.isfinite(chunk).all():
            bad = start + int(
                np.flatnonzero(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1))[0]
            )
            raise ValueError(f"{where}: image {bad} contains NaN or infinite pixel values.")


def _is_path(item) -> bool:
    return isinstance(item, (str, os.PathLike))


def as_images(X, *, on_error: str = "raise") -> Images:
    """Validate ``X`` and wrap it as :class:`Images`.

    Parameters
    ----------
    X : array-like, sequence of paths, PIL images or arrays, Series or DataFrame
        See the module docstring for the accepted forms.
    on_error : {"raise", "nan"}
        What to do with files that cannot be read: raise (missing files are
        reported here, before any work), or let the caller fill their rows
        with NaN and warn.

    Returns
    -------
    images : Images
    """
    if _is_path(X):
        hint = (
            " It is a folder: use sktransfer.load_image_folder(path) to list "
            "its images (and labels)."
            if os.path.isdir(X)
            else " Wrap a single file in a list: [path]."
        )
        raise ValueError(
            f"X must be a collection of images, got the single path {str(X)!r}."
            + hint
        )
    if isinstance(X, Image.Image):
        raise ValueError("X must be a collection of images; wrap it in a list: [image].")
    if hasattr(X, "tocsr") or hasattr(X, "todense"):
        raise TypeError(
            "Sparse input is not supported: images must be dense arrays, file "
            "paths or PIL images."
        )
    X = _unwrap_pandas(X)
    if not isinstance(X, (np.ndarray, list, tuple)) and hasattr(X, "__array__"):
        X = np.asarray(X)
    if isinstance(X, np.ndarray) and X.dtype.kind == "c":
        raise ValueError("Complex data not supported: images are real pixel values.")
    if isinstance(X, np.ndarray) and X.dtype.kind in "uifb":
        return _numeric_array(X)
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(
                f"X is an array of dtype {X.dtype} with shape {X.shape}; a "
                "non-numeric array must be a 1-D array of file paths."
            )
        items = list(X)
    elif isinstance(X, Sequence) or hasattr(X, "__iter__"):
        items = list(X)
    else:
        raise ValueError(
            f"X of type {type(X).__name__} is not a supported image collection: "
            "pass a numeric array (n, h, w[, c]), file paths, or PIL images."
        )
    if not items:
        raise ValueError("X is empty: at least one image is required.")
    if all(isinstance(item, np.ndarray) for item in items) and _same_shape(items):
        return _numeric_array(np.stack(items))
    for index, item in enumerate(items):
        if _is_path(item):
            continue
        if isinstance(item, (Image.Image, np.ndarray)):
            continue
        raise ValueError(
            f"X[{index}] is a {type(item).__name__} ({item!r:.60}); every item "
            "must be a file path (str or PathLike), a PIL image or a numeric "
            "array."
        )
    items = [os.fspath(item) if _is_path(item) else item for item in items]
    _check_files_exist(items, on_error)
    return SequenceImages(items, on_error)


def _same_shape(items: list[np.ndarray]) -> bool:
    return len({item.shape for item in items}) == 1


def _unwrap_pandas(X):
    module = type(X).__module__
    if not module.startswith("pandas"):
        return X
    if getattr(X, "ndim", 1) == 2:
        if X.shape[1] != 1:
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} columns "
                f"({list(X.columns)[:5]}); pass the one column of file paths, "
                "e.g. df['path']."
            )
        X = X.iloc[:, 0]
    return X.to_numpy()


def _numeric_array(X: np.ndarray) -> ArrayImages:
    if X.ndim == 2:
        raise ValueError(
            f"X is a 2-D numeric array of shape {X.shape}, not a batch of images. "
            "Images must have shape (n, height, width) or (n, height, width, "
            "channels); for flattened square images reshape first, e.g. "
            f"X.reshape(-1, side, side) with side*side == {X.shape[1]}."
        )
    if X.ndim not in (3, 4):
        raise ValueError(
            f"X has {X.ndim} dimensions (shape {X.shape}); images must have "
            "shape (n, height, width) or (n, height, width, channels)."
        )
    if X.shape[0] == 0:
        raise ValueError("X is empty: at least one image is required.")
    if X.ndim == 4 and X.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"X has {X.shape[-1]} channels (shape {X.shape}); expected 1 "
            "(grayscale), 3 (RGB) or 4 (RGBA), channels last."
        )
    return ArrayImages(X)


def _check_files_exist(items: list, on_error: str) -> None:
    missing = [
        (index, item)
        for index, item in enumerate(items)
        if isinstance(item, str) and not os.path.isfile(item)
    ]
    if not missing:
        return
    index, path = missing[0]
    if on_error == "raise":
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ImageLoadError(
            f"Image file {index} of X does not exist: {path!r}{more}. Pass "
            "on_error='nan' to get NaN features for unreadable files instead.",
            index=index,
            path=path,
        )


def iter_batches(
    images: Images,
    size: tuple[int, int],
    batch_size: int,
    *,
    indices: np.ndarray | None = None,
    prefetch: int = 2,
) -> Iterator[tuple[int, np.ndarray, list[int]]]:
    """Yield ``(start, pixels, failed)`` batches, decoding ahead in threads.

    ``start`` is the position of the batch's first image in ``indices``
    (all images in order when None). At most ``prefetch + 1`` batches are
    held in memory at a time.
    """
    order = np.arange(len(images)) if indices is None else np.asarray(indices)
    n = len(order)
    if isinstance(images, ArrayImages) and images.array.shape[1:3] == _as_size(size):
        # Nothing to decode or resize: a batch is a cast of a slice, and
        # prefetch threads would only compete with the network for the
        # cores (measured: about 5 % slower on 2 cores).
        for start in range(0, n, batch_size):
            yield (start, *images.take(order[start : start + batch_size], size))
        return
    with ThreadPoolExecutor(max_workers=max(1, prefetch)) as pool:
        pending: deque = deque()
        for start in range(0, n, batch_size):
            chunk = order[start : start + batch_size]
            pending.append((start, pool.submit(images.take, chunk, size)))
            if len(pending) > prefetch:
                first, future = pending.popleft()
                yield (first, *future.result())
        while pending:
            first, future = pending.popleft()
            yield (first, *future.result())


def warn_failed(failed: list[int], images: Images) -> None:
    """Warn once about images replaced by NaN features."""
    if not failed:
        return
    shown = ", ".join(
        f"{index} ({images.items[index]!r})"
        if isinstance(images, SequenceImages) and _is_path(images.items[index])
        else str(index)
        for index in failed[:5]
    )
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    warnings.warn(
        f"{len(failed)} image(s) could not be read; their features are NaN: "
        f"{shown}{more}.",
        UserWarning,
        stacklevel=3,
    )


def map_batches(
    function,
    images: Images,
    size: tuple[int, int],
    batch_size: int,
    width: int,
    *,
    indices: np.ndarray | None = None,
    verbose=0,
    warn: bool = True,
    on_batch=None,
) -> np.ndarray:
    """Apply a batch function to images; rows of unreadable images are NaN.

    Parameters
    ----------
    function : callable
        (k, h, w, 3) float32 pixels -> (k, width) array.
    indices : array of int, optional
        The images to process, in this order; all of them when None.
    verbose : int
        Show a progress bar when > 0.
    warn : bool
        Warn about unreadable images (NaN rows).
    on_batch : callable, optional
        Called as ``on_batch(out, start, stop, failed)`` once
        ``out[start:stop]`` is filled; ``failed`` lists the unreadable images' indices among them.

    Returns
    -------
    out : ndarray of shape (len(indices), width), float32
    """
    n = len(images) if indices is None else len(indices)
    out = np.empty((n, width), dtype=np.float32)
    failed: list[int] = []
    progress = None
    if verbose:
        import keras

        progress = keras.utils.Progbar(n, unit_name="image")
    for start, batch, batch_failed in iter_batches(images, size, batch_size, indices=indices):
        out[start : start + len(batch)] = function(batch)
        failed.extend(batch_failed)
        if on_batch is not None:
            on_batch(out, start, start + len(batch), batch_failed)
        if progress is not None:
            progress.add(len(batch))
    if failed:
        order = np.arange(len(images)) if indices is None else np.asarray(indices)
        out[np.isin(order, failed)] = np.nan
    if warn:
        warn_failed(failed, images)
    return out
