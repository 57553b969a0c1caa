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
  pass raw pixels, the backbone's own preprocessing is applied for you. One
  image of shape ``(h, w, 1|3|4)``, without its batch axis, is an error too
  (read as ``(n, h, w)`` it would be grayscale images 1 to 4 pixels wide).
  Nested lists (``X.tolist()``) and object arrays of numbers are read as the
  numeric array they hold.
* a list/tuple/array/pandas Series/one-column DataFrame of file paths (str or
  PathLike), in any format Pillow reads; EXIF orientation is honoured.
  16-bit files are scaled from 0-65535; 32-bit integer and float files
  follow the rules of arrays (a float image in 0-1 is multiplied by 255;
  NaN or values outside 0-255 are an error).
* a list of PIL images, or of per-image arrays of possibly different sizes.

Grayscale is replicated to RGB and alpha dropped. Nothing the caller passed
is modified: arrays are only read.

Decoding is bounded
-------------------
Files are untrusted: a 400 KB PNG can declare 12000x12000 pixels and take
gigabytes to decode. So the size in a file's header is checked before any
pixel is decoded, against a limit of pixels per image
(:func:`set_max_image_pixels`, or the ``SKTRANSFER_MAX_IMAGE_PIXELS``
environment variable; default 40 million), and an image larger than that is
an :class:`~sktransfer.exceptions.ImageLoadError` naming the file, its size
and the limit. Only regular files are opened (a FIFO would block forever).
An image at least four times the input size on both sides is reduced before
it becomes floats: JPEG files are decoded at 1/2, 1/4 or 1/8 scale (Pillow's
``draft``), other formats shrunk by an integer box filter, always to at
least twice the input size, so the final antialiased resize still decides
the pixels (and features of such images differ slightly from those of the
same pixels passed as an array). Memory per loader thread is then about 4
bytes per pixel of the file, plus the batch (``benchmarks/bench_decoding.py``).
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from . import _fingerprint
from ._files import open_regular
from .exceptions import ImageLoadError

ON_ERROR_OPTIONS = ("raise", "nan")

#: Pixels of one image file decoded at most, unless raised (see the module
#: docstring): 40 million pixels take 160 MB decoded, per loader thread.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
#: A file is reduced before becoming floats when it is at least this many
#: times the input size on both sides; it is reduced to at least half that.
_REDUCE_FROM = 4
#: 16-bit modes (scaled from 0-65535) and Pillow's 32-bit modes.
_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_32_BIT_MODES = ("I", "F")
_ORIENTATION = 0x0112  # the EXIF tag


def _default_max_image_pixels() -> int | None:
    text = os.environ.get("SKTRANSFER_MAX_IMAGE_PIXELS")
    if text is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(
            f"SKTRANSFER_MAX_IMAGE_PIXELS={text!r} is not a number of pixels."
        ) from None
    return None if value <= 0 else value


_max_image_pixels = _default_max_image_pixels()


def set_max_image_pixels(pixels: int | None) -> None:
    """Bound the pixels of an image file; larger files are refused before decoding.

    Decoding an image takes about 4 bytes per pixel, whatever the size of
    its file (a 420 KB PNG of 12000x12000 pixels takes 576 MB), so the
    size in each file's header is checked first. The limit applies to image
    files, not to arrays or PIL images (already in memory).

    Parameters
    ----------
    pixels : int or None
        Width times height allowed per image (default 40 million, or the
        ``SKTRANSFER_MAX_IMAGE_PIXELS`` environment variable); None for no
        limit (only for files you trust).

    Examples
    --------
    >>> import sktransfer
    >>> sktransfer.set_max_image_pixels(100_000_000)  # 10000 x 10000 photos
    >>> sktransfer.set_max_image_pixels(sktransfer.DEFAULT_MAX_IMAGE_PIXELS)
    """
    global _max_image_pixels
    if pixels is not None and (
        isinstance(pixels, bool) or not isinstance(pixels, (int, np.integer)) or pixels < 1
    ):
        raise ValueError(f"pixels={pixels!r} must be a positive int, or None for no limit.")
    _max_image_pixels = None if pixels is None else int(pixels)

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
    from .backbones._tensorflow import tensorflow

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
    #: What messages call each image, when not its position (a Dask block's
    #: images are named by their position or label in the whole collection).
    names: Sequence | None = None

    def name(self, index: int):
        """The index of image ``index`` in the user's collection."""
        return index if self.names is None else self.names[index]

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

    @abstractmethod
    def keys(self, fingerprint: str = "metadata") -> list[bytes | None]:
        """One feature-cache key per image (see :mod:`sktransfer._fingerprint`).

        None where an image has no stable key (a file that cannot be read).
        ``fingerprint`` ("metadata" or "content") says how files are keyed.
        """

    @abstractmethod
    def sizes(self, fallback_size: tuple[int, int]) -> list[tuple[int, int]]:
        """(height, width) of every image as given, before any resizing.

        Files are sized from their headers (no decoding), honouring EXIF
        orientation as :meth:`take` does; an unreadable file gets
        ``fallback_size``.
        """

    def needs_decoding(self, size: tuple[int, int]) -> bool:
        """Whether loading at ``size`` decodes or resizes anything.

        That work is worth doing ahead in threads, overlapped with the network.
        """
        return True

    def describe(self, index: int) -> str:
        """Image ``index`` as messages name it."""
        return str(self.name(index))


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

    def keys(self, fingerprint="metadata"):
        return _fingerprint.array_keys(self.array, self.scale)

    def sizes(self, fallback_size):
        return [tuple(self.array.shape[1:3])] * len(self)

    def needs_decoding(self, size):
        return self.array.shape[1:3] != _as_size(size)


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
                pixels = self._load_one(int(index), size)
            except ImageLoadError:
                if self.on_error == "raise":
                    raise
                failed.append(int(index))
                continue
            batch[offset] = resize(pixels[np.newaxis], size)[0]
        return batch, failed

    def keys(self, fingerprint="metadata"):
        return [_fingerprint.item_key(item, fingerprint) for item in self.items]

    def sizes(self, fallback_size):
        return [_item_size(item, _as_size(fallback_size)) for item in self.items]

    def describe(self, index):
        item = self.items[index]
        if _is_path(item):
            return f"{self.name(index)} ({item!r})"
        return super().describe(index)

    def _load_one(self, index: int, size) -> np.ndarray:
        item = self.items[index]
        name = self.name(index)
        if isinstance(item, np.ndarray):
            return _single_array_pixels(item, name)
        if isinstance(item, Image.Image):
            try:
                return _pil_pixels(item, size)
            except (OSError, ValueError) as exc:  # e.g. a lazy image whose file is gone
                raise ImageLoadError(
                    f"Could not read PIL image {name} of X: {exc}", index=name
                ) from None
        return _read_file(item, name, size)


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


def _pil_pixels(image: Image.Image, size=None) -> np.ndarray:
    """RGB float32 pixels of a PIL image, reduced first when much larger than ``size``."""
    if image.getexif().get(_ORIENTATION, 1) != 1:
        # Only then: exif_transpose copies the image even when it turns nothing.
        image = ImageOps.exif_transpose(image)
    sixteen_bit = image.mode in _16_BIT_MODES
    factor = _reduction(image, size) if size is not None else 1
    if factor > 1:
        if image.mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", *_32_BIT_MODES):
            image = image.convert("I" if sixteen_bit else "RGB")
        image = image.reduce(factor)
    if sixteen_bit:
        return _gray(np.asarray(image, dtype=np.float32) * (255.0 / 65535.0))
    if image.mode in _32_BIT_MODES:
        values = np.asarray(image, dtype=np.float32)
        is_float = image.mode == "F"
        if is_float and not np.isfinite(values).all():
            raise ValueError("it contains NaN or infinite pixel values.")
        return _gray(values * range_scale(float(values.min()), float(values.max()), is_float, "it"))
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _item_size(item, fallback_size) -> tuple[int, int]:
    if isinstance(item, np.ndarray):
        return tuple(item.shape[:2])
    if isinstance(item, Image.Image):
        return _pil_size(item)
    try:
        with Image.open(item) as image:
            return _pil_size(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return fallback_size


def _pil_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    # EXIF orientations 5-8 rotate by a quarter turn: width and height swap.
    if image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
        width, height = height, width
    return height, width


def _reduction(image: Image.Image, size) -> int:
    """The integer factor an image may be shrunk by before the final resize."""
    height, width = _as_size(size)
    factor = min(image.width // (2 * width), image.height // (2 * height))
    return factor if factor >= _REDUCE_FROM // 2 else 1


def _read_file(path: str, index, size=None) -> np.ndarray:
    where = f"image {index} of X ({path!r})"
    try:
        with open_regular(path) as file, Image.open(file) as image:
            _check_pixels(image, where, index, path)
            if size is not None and image.format == "JPEG" and _reduction(image, size) > 1:
                # Decode at 1/2, 1/4 or 1/8 scale (a request independent of
                # the orientation). Only for our own files: it changes the
                # image object, and a PIL image passed in is the user's.
                side = 2 * max(_as_size(size))
                image.draft(image.mode, (side, side))
            return _pil_pixels(image, size)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(
            f"Could not read {where}: {exc} {_LIMIT_HINT}", index=index, path=path
        ) from None
    except OSError as exc:
        reason = exc.strerror if exc.filename is not None and exc.strerror else exc
        raise ImageLoadError(
            f"Could not read {where}: {reason}", index=index, path=path
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged file makes decoders raise anything
        raise ImageLoadError(
            f"Could not read {where}: {type(exc).__name__}: {exc}", index=index, path=path
        ) from None


_LIMIT_HINT = (
    "Decoding takes about 4 bytes a pixel whatever the file's size; if you trust "
    "the file, raise the limit with sktransfer.set_max_image_pixels(...) or the "
    "SKTRANSFER_MAX_IMAGE_PIXELS environment variable."
)


def _check_pixels(image: Image.Image, where: str, index, path: str) -> None:
    """Refuse an image whose header declares more pixels than the limit."""
    limit = _max_image_pixels
    width, height = image.size
    if limit is not None and width * height > limit:
        raise ImageLoadError(
            f"Could not read {where}: it is {width}x{height} pixels "
            f"({width * height / 1e6:.1f} million), over the limit of "
            f"{limit / 1e6:g} million pixels per image. {_LIMIT_HINT}",
            index=index,
            path=path,
        )


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
        # scikit-learn's words for input that must not be negative.
        negative = "Negative values in data: " if low < 0 else ""
        raise ValueError(
            f"{negative}{where} has pixel values in [{low:g}, {high:g}]; expected "
            "0-255 (or 0-1 for floats). Pass raw pixels: the backbone's own "
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


def as_images(X, *, on_error: str = "raise", names: Sequence | None = None) -> Images:
    """Validate ``X`` and wrap it as :class:`Images`.

    Parameters
    ----------
    X : array-like, sequence of paths, PIL images or arrays, Series or DataFrame
        See the module docstring for the accepted forms.
    on_error : {"raise", "nan"}
        What to do with files that cannot be read: raise (missing files are
        reported here, before any work), or let the caller fill their rows
        with NaN and warn.
    names : sequence, optional
        What messages call each image instead of its position in ``X``: the
        position (or index label) of each image of a Dask block in the whole
        collection.

    Returns
    -------
    images : Images
        ``X`` itself when it is one already (validated when it was made:
        the Dask blocks of :mod:`sktransfer._dask` go through ``transform``).

    Notes
    -----
    This is the estimators' input validation, in place of scikit-learn's
    ``validate_data``, which does not fit images: it would set
    ``n_features_in_`` to ``X.shape[1]``, an image's height here, which no
    method may check (images of any size are resized), and
    ``feature_names_in_`` to the name of a DataFrame's column of paths; and
    its ``check_array`` knows no file paths or PIL images.
    """
    if isinstance(X, Images):
        return X
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
    if isinstance(X, np.ndarray) and X.dtype.kind == "O" and X.ndim > 2:
        # Pixel values in an object array are read as numbers, as
        # scikit-learn reads object arrays (paths are 1-D or one column).
        X = _numeric(X)
    if isinstance(X, np.ndarray) and X.dtype.kind in "uifb":
        images = _numeric_array(X)
        images.names = names
        return images
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
    # An image as nested lists (X.tolist() of an array) is its array.
    items = [
        _numeric(item) if isinstance(item, (list, tuple)) else item for item in items
    ]
    if all(isinstance(item, np.ndarray) for item in items) and _same_shape(items):
        images = _numeric_array(np.stack(items))
        images.names = names
        return images
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
    _check_files_exist(items, on_error, names)
    images = SequenceImages(items, on_error)
    images.names = names
    return images


def _numeric(values):
    """Nested lists or an object array of numbers as a numeric array.

    The numbers' own types decide its dtype, so integer pixels stay integers
    (0-255) and floats floats (0-1 or 0-255). Anything else is returned
    unchanged, for the caller's error to name.
    """
    nested = values.tolist() if isinstance(values, np.ndarray) else values
    try:
        array = np.asarray(nested)
    except (ValueError, TypeError):  # ragged lists
        return values
    return array if array.dtype.kind in "uifb" else values


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
    check_not_single_image(X.shape)
    if X.shape[0] == 0:
        raise ValueError("X is empty: at least one image is required.")
    if X.ndim == 4 and X.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"X has {X.shape[-1]} channels (shape {X.shape}); expected 1 "
            "(grayscale), 3 (RGB) or 4 (RGBA), channels last."
        )
    return ArrayImages(X)


def check_not_single_image(shape: tuple, what: str = "X") -> None:
    """Refuse an array of shape (height, width, 1|3|4): one image, no batch axis.

    Read as (n, height, width) it would be many grayscale images 1, 3 or 4
    pixels wide, and give that many rows of features without an error.
    """
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        raise ValueError(
            f"{what} has shape {tuple(shape)}: one {shape[0]}x{shape[1]} image with "
            f"{shape[2]} channel(s), not a batch of images. Reshape your data: "
            "X[np.newaxis] for a batch of this one image, or X[..., np.newaxis] "
            f"for grayscale images {shape[2]} pixel(s) wide."
        )


def _check_files_exist(items: list, on_error: str, names=None) -> None:
    problems = [
        (index, item, problem)
        for index, item in enumerate(items)
        if isinstance(item, str) and (problem := _file_problem(item)) is not None
    ]
    if not problems or on_error != "raise":
        return
    index, path, problem = problems[0]
    index = index if names is None else names[index]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise ImageLoadError(
        f"Image file {index} of X {problem}: {path!r}{more}. Pass "
        "on_error='nan' to get NaN features for unreadable files instead.",
        index=index,
        path=path,
    )


def _file_problem(path: str) -> str | None:
    """Why ``path`` is not an image file that can be opened, or None."""
    if os.path.isfile(path):
        return None
    if os.path.isdir(path):
        return (
            "is a folder, not an image file (list its images, e.g. with "
            "sktransfer.load_image_folder)"
        )
    if os.path.exists(path):
        from ._files import file_kind

        return f"is {file_kind(os.stat(path).st_mode)}, not a regular file"
    return "does not exist"


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
    if not images.needs_decoding(size):
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
    shown = ", ".join(images.describe(index) for index in failed[:5])
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
