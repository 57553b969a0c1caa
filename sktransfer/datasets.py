"""Image data sets: a folder of your own, and real data sets that work offline.

* :func:`load_image_folder` lists the images of a class-per-subfolder tree
  with their labels (also ``sktransfer.load_image_folder``).
* :func:`load_fashion_mnist` reads Zalando's Fashion-MNIST from its standard
  IDX files: 70,000 grayscale 28x28 photos of clothing in 10 classes. Data
  far from ImageNet's photos, which makes it a fair test of transfer.
* :func:`load_digits` wraps scikit-learn's bundled 8x8 digits as images.
"""

from __future__ import annotations

import gzip
import http.client
import os
import struct
import sys
import urllib.request

import numpy as np
from PIL import Image
from sklearn.utils import Bunch

from .exceptions import DatasetNotFoundError, DownloadError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
]

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
#: Fashion-MNIST's training images are 47 MB; anything far larger is no IDX
#: data set this package reads, and must not be allocated on a header's word.
_MAX_IDX_BYTES = 2**30
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not.

    The header's declared shape bounds what is read: a file (or a gzip
    stream) longer than its header says is an error, never a larger array.

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
            head = handle.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise ValueError(f"{path!r} is not an IDX file (bad magic number).")
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            dims = handle.read(4 * head[3])
            if len(dims) < 4 * head[3]:
                raise ValueError(f"{path!r} is truncated inside its header.")
            shape = struct.unpack(f">{head[3]}I", dims)
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if expected > _MAX_IDX_BYTES:
                raise ValueError(
                    f"{path!r} declares shape {shape} ({expected / 1e9:.1f} GB), more "
                    f"than an IDX data set of this package can hold "
                    f"({_MAX_IDX_BYTES / 1e9:.0f} GB)."
                )
            data = handle.read(expected + 1)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path!r} cannot be read as an IDX file: {exc}") from None
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(f"{path!r} is {problem}: expected shape {shape}.")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


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
    folders.append(_keras_cache_folder())
    return folders


def _download(subset: str, timeout: float) -> tuple[str, str]:
    """Fetch the subset's two files into Keras' dataset cache; their paths."""
    folder = _keras_cache_folder()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the download folder {folder!r}: {exc}") from None
    paths = []
    for stem in _FILES[subset]:
        target = os.path.join(folder, stem + ".gz")
        if not os.path.isfile(target):
            _fetch(_ORIGIN + stem + ".gz", target, timeout)
        paths.append(target)
    return paths[0], paths[1]


def _fetch(url: str, target: str, timeout: float) -> None:
    """Download ``url`` to ``target``: checked as IDX, then moved into place.

    ``timeout`` bounds the connection and every read, so an offline machine
    answers in seconds rather than hanging; a partial file never takes the
    final name.
    """
    name = os.path.basename(target)
    # read_idx decides gzip by the name, so the partial file keeps ".gz".
    partial = f"{target[:-3]}.{os.getpid()}.part.gz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(
            partial, "wb"
        ) as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 16):
                done += len(chunk)
                if done > _MAX_IDX_BYTES:
                    raise ValueError("the file is larger than any Fashion-MNIST file")
                out.write(chunk)
                _progress(name, done, total)
        _progress(name, done, total, end=True)
        read_idx(partial)
        os.replace(partial, target)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"could not download {url}: {reason}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _progress(name: str, done: int, total: int, end: bool = False) -> None:
    """A one-line progress bar on stderr (a line per file where it is no terminal)."""
    tty = sys.stderr.isatty()
    if not (tty or end):
        return
    if total:
        filled = int(30 * done / total)
        bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:.1f}/{total / 1e6:.1f} MB"
    else:
        bar = f"{done / 1e6:.1f} MB"
    print(
        f"{chr(13) if tty else ''}Downloading {name} {bar}",
        end="\n" if end else "",
        file=sys.stderr,
        flush=True,
    )


def _keras_cache_folder() -> str:
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "datasets", "fashion-mnist")


def load_fashion_mnist(
    data_home: str | os.PathLike | None = None,
    *,
    subset: str = "train",
    download: bool = False,
    timeout: float = 10.0,
    return_X_y: bool = False,
):
    """Load Fashion-MNIST from its IDX files, offline.

    The files (``train-images-idx3-ubyte.gz`` etc., gzipped or not) are
    looked for in ``data_home``, then ``$SKTRANSFER_DATA`` (or its
    ``fashion-mnist`` subfolder), then ``/usr/share/datasets/fashion-mnist``
    (Debian's ``dataset-fashion-mnist`` package), then Keras' dataset cache
    (``~/.keras/datasets/fashion-mnist``, where ``keras.datasets`` and
    ``download=True`` put them). With ``download=True``, files found nowhere
    are fetched from the mirror Keras uses (30 MB), into Keras' cache.

    Parameters
    ----------
    data_home : str or PathLike, default=None
        A folder holding the four IDX files.
    subset : {"train", "test", "all"}, default="train"
        60,000 training images, the 10,000 test images, or both (train first).
    download : bool, default=False
        Download the files when they are found nowhere.
    timeout : float, default=10.0
        Seconds to wait for the server to connect or send data, so that an
        offline machine fails in seconds rather than hanging.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : Bunch
        ``images`` uint8 (n, 28, 28), ``target`` int64 (n,), ``target_names``
        (the 10 class names), ``DESCR``.

    Raises
    ------
    DatasetNotFoundError
        The files are nowhere and were not (or could not be) downloaded; the
        message lists the folders searched and the ways to get the files.

    Examples
    --------
    >>> from sktransfer.datasets import load_fashion_mnist
    >>> data = load_fashion_mnist(subset="test")  # doctest: +SKIP
    >>> data.images.shape, data.target_names[9]  # doctest: +SKIP
    ((10000, 28, 28), 'Ankle boot')
    """
    if subset == "all":
        parts = [
            load_fashion_mnist(data_home, subset=s, download=download, timeout=timeout)
            for s in ("train", "test")
        ]
        images = np.concatenate([p.images for p in parts])
        target = np.concatenate([p.target for p in parts])
    elif subset in _FILES:
        images_path, labels_path = _locate(data_home, subset, download, timeout)
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


def _locate(data_home, subset: str, download: bool, timeout: float = 10.0) -> tuple[str, str]:
    folders = _candidate_folders(data_home)
    for folder in folders:
        found = [_find(folder, stem) for stem in _FILES[subset]]
        if all(found):
            return found[0], found[1]
    failure = None
    if download:
        try:
            return _download(subset, timeout)
        except DownloadError as exc:
            failure = str(exc)
    searched = "\n".join(f"  - {folder}" for folder in folders)
    raise DatasetNotFoundError(
        f"Fashion-MNIST files ({', '.join(s + '[.gz]' for s in _FILES[subset])}) "
        f"were not found in:\n{searched}\n"
        + (f"and the download failed: {failure}\n" if failure else "")
        + "To get them, do one of the following:\n"
        "  1. on Debian/Ubuntu: apt-get install dataset-fashion-mnist;\n"
        "  2. put the four IDX files in a folder and pass it as data_home, or "
        "set SKTRANSFER_DATA to it;\n"
        "  3. with network access: load_fashion_mnist(download=True).",
        download_error=failure,
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


def image_extensions() -> set[str]:
    """The file extensions Pillow reads, lower case with the dot."""
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def load_image_folder(
    path: str | os.PathLike, *, follow_links: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """List the images of a class-per-subfolder tree, like Keras' loader.

    ``path/cat/1.jpg, path/dog/2.png`` gives the paths and the labels
    ``["cat", "dog"]``, ready for any sktransfer estimator or a scikit-learn
    splitter. Every file whose extension Pillow knows is taken, from every
    depth below a class folder; classes and files are sorted so the result
    does not depend on the file system.

    Parameters
    ----------
    path : str or PathLike
        The folder holding one subfolder per class.
    follow_links : bool, default=False
        Whether to follow symbolic links to folders.

    Returns
    -------
    paths : ndarray of str objects, shape (n_images,)
    labels : ndarray of str, shape (n_images,)
        The name of each image's class folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from sktransfer import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for label in ["cat", "dog"]:
    ...     (root / label).mkdir()
    ...     Image.new("RGB", (8, 8)).save(root / label / "a.png")
    >>> paths, labels = load_image_folder(root)
    >>> labels.tolist()
    ['cat', 'dog']
    """
    root = os.fspath(path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"load_image_folder: {root!r} is not a folder.")
    extensions = image_extensions()
    classes = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir(follow_symlinks=follow_links) and not entry.name.startswith(".")
    )
    if not classes:
        raise ValueError(
            f"load_image_folder: {root!r} has no subfolders; expected one "
            "subfolder per class (e.g. root/cat/*.jpg, root/dog/*.jpg)."
        )
    paths, labels = [], []
    for label in classes:
        found = []
        for folder, subfolders, files in os.walk(
            os.path.join(root, label), followlinks=follow_links
        ):
            subfolders.sort()
            found += [
                os.path.join(folder, name)
                for name in files
                if os.path.splitext(name)[1].lower() in extensions
            ]
        found.sort()
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise ValueError(
            f"load_image_folder: no image files under {root!r} (looked in "
            f"{len(classes)} class folders for extensions Pillow reads, such as "
            ".jpg and .png)."
        )
    return np.asarray(paths, dtype=object), np.asarray(labels)


def empty_class_folders(path: str | os.PathLike, labels) -> list[str]:
    """Class folders of ``path`` that :func:`load_image_folder` found no image in.

    ``load_image_folder`` leaves them out, as Keras' loader does; a command
    that trains on the tree names them instead, since a class without
    images is almost always a mistake (a wrong extension, files one level
    too deep in another folder).
    """
    found = set(np.asarray(labels).tolist())
    return sorted(
        entry.name
        for entry in os.scandir(os.fspath(path))
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in found
    )


def check_no_empty_class(path: str | os.PathLike, labels) -> None:
    """ValueError naming the class folders of ``path`` that hold no image."""
    empty = empty_class_folders(path, labels)
    if empty:
        raise ValueError(
            f"{os.fspath(path)!r}: the class folder(s) {', '.join(map(repr, empty))} "
            "hold no images Pillow reads (such as .jpg or .png): add images, or "
            "move the folder out of the tree."
        )
