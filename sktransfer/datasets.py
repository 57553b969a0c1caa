"""Real image data sets that work offline.

* :func:`load_fashion_mnist` reads Zalando's Fashion-MNIST from its standard
  IDX files: 70,000 grayscale 28x28 photos of clothing in 10 classes. Data
  far from ImageNet's photos, which makes it a fair test of transfer.
* :func:`load_digits` wraps scikit-learn's bundled 8x8 digits as images.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
from sklearn.utils import Bunch

__all__ = ["FASHION_MNIST_CLASSES", "load_digits", "load_fashion_mnist"]

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The mirror Keras' own fashion_mnist loader uses.
_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    array : ndarray
        With the shape and dtype the file declares.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path!r} cannot be read as an IDX file: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path!r} is not an IDX file (bad magic number).")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path!r} is truncated: expected shape {shape}.")
    return array.reshape(shape).astype(array.dtype.newbyteorder("="))


def _find(folder: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _candidate_folders(data_home) -> list[str]:
    folders = []
    if data_home is not None:
        folders.append(os.fspath(data_home))
    env = os.environ.get("SKTRANSFER_DATA")
    if env:
        folders += [env, os.path.join(env, "fashion-mnist")]
    folders.append(DEBIAN_FASHION_MNIST)
    # Where download=True puts the files (Keras' cache).
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    folders.append(os.path.join(home, "datasets", "fashion-mnist"))
    return folders


def _download(subset: str) -> tuple[str, str]:
    from keras.utils import get_file

    return tuple(
        get_file(stem + ".gz", _ORIGIN + stem + ".gz", cache_subdir="datasets/fashion-mnist")
        for stem in _FILES[subset]
    )


def load_fashion_mnist(
    data_home: str | os.PathLike | None = None,
    *,
    subset: str = "train",
    download: bool = False,
    return_X_y: bool = False,
):
    """Load Fashion-MNIST from its IDX files, offline.

    The files (``train-images-idx3-ubyte.gz`` etc., gzipped or not) are
    looked for in ``data_home``, then ``$SKTRANSFER_DATA`` (or its
    ``fashion-mnist`` subfolder), then ``/usr/share/datasets/fashion-mnist``
    (Debian's ``dataset-fashion-mnist`` package). With ``download=True``,
    missing files are fetched from the mirror Keras uses, into Keras' cache.

    Parameters
    ----------
    data_home : str or PathLike, default=None
        A folder holding the four IDX files.
    subset : {"train", "test", "all"}, default="train"
        60,000 training images, the 10,000 test images, or both (train first).
    download : bool, default=False
        Download the files when they are found nowhere.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : Bunch
        ``images`` uint8 (n, 28, 28), ``target`` int64 (n,), ``target_names``
        (the 10 class names), ``DESCR``.

    Examples
    --------
    >>> from sktransfer.datasets import load_fashion_mnist
    >>> data = load_fashion_mnist(subset="test")  # doctest: +SKIP
    >>> data.images.shape, data.target_names[9]  # doctest: +SKIP
    ((10000, 28, 28), 'Ankle boot')
    """
    if subset == "all":
        parts = [
            load_fashion_mnist(data_home, subset=s, download=download) for s in ("train", "test")
        ]
        images = np.concatenate([p.images for p in parts])
        target = np.concatenate([p.target for p in parts])
    elif subset in _FILES:
        images_path, labels_path = _locate(data_home, subset, download)
        images, target = read_idx(images_path), read_idx(labels_path).astype(np.int64)
        if len(images) != len(target):
            raise ValueError(
                f"{images_path!r} holds {len(images)} images but {labels_path!r} "
                f"{len(target)} labels."
            )
    else:
        raise ValueError(f"subset={subset!r} is not valid; use 'train', 'test' or 'all'.")
    if return_X_y:
        return images, target
    return Bunch(
        images=images,
        target=target,
        target_names=list(FASHION_MNIST_CLASSES),
        DESCR="Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 28x28 grayscale "
        "photos of clothing, 10 classes, 60,000 train / 10,000 test. MIT licence.",
    )


def _locate(data_home, subset: str, download: bool) -> tuple[str, str]:
    folders = _candidate_folders(data_home)
    for folder in folders:
        found = [_find(folder, stem) for stem in _FILES[subset]]
        if all(found):
            return found[0], found[1]
    if download:
        return _download(subset)
    searched = "\n".join(f"  - {folder}" for folder in folders)
    raise FileNotFoundError(
        f"Fashion-MNIST files ({', '.join(s + '[.gz]' for s in _FILES[subset])}) "
        f"were not found in:\n{searched}\nTo get them, do one of the following:\n"
        "  1. on Debian/Ubuntu: apt-get install dataset-fashion-mnist;\n"
        "  2. put the four IDX files in a folder and pass it as data_home, or "
        "set SKTRANSFER_DATA to it;\n"
        "  3. with network access: load_fashion_mnist(download=True)."
    )


def load_digits(*, return_X_y: bool = False):
    """scikit-learn's bundled 8x8 handwritten digits, as images.

    Parameters
    ----------
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : Bunch
        ``images`` uint8 (1797, 8, 8) in 0-255, ``target``, ``target_names``.

    Examples
    --------
    >>> from sktransfer.datasets import load_digits
    >>> load_digits().images.shape
    (1797, 8, 8)
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    # sklearn's values are 0-16; scale to the 0-255 pixel convention.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    if return_X_y:
        return images, digits.target
    return Bunch(
        images=images,
        target=digits.target,
        target_names=[str(t) for t in digits.target_names],
        DESCR=digits.DESCR,
    )
