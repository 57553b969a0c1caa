"""Image folders: a class-per-subfolder tree to (paths, labels)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


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
