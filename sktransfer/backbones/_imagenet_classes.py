"""The names of the 1000 ImageNet-1k classes, shipped with the package."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def _class_names() -> tuple[str, ...]:
    text = Path(__file__).with_name("imagenet_classes.txt").read_text("utf-8")
    return tuple(text.splitlines())


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, in the order of the classifiers' outputs.

    Available offline (shipped with the package, read once per process).

    Returns
    -------
    names : list of str
        A fresh list, indexed by class id.

    Examples
    --------
    >>> from sktransfer.backbones import imagenet_classes
    >>> imagenet_classes()[967]
    'espresso'
    """
    return list(_class_names())
