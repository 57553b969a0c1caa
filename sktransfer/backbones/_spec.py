"""What the registry holds for each backbone: :class:`BackboneSpec`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one registered backbone.

    Attributes
    ----------
    name : str
        Canonical name, e.g. ``"MobileNetV2"``.
    builder : callable
        ``builder(input_shape=(h, w, 3), weights=..., include_top=bool)``
        returning a ``keras.Model`` that takes *preprocessed* input.
    preprocess_input : callable
        Maps RGB pixels in [0, 255] (array or tensor) to the model's input.
    native_size : tuple of int
        (height, width) the ImageNet weights were trained at.
    source : str
        Where the architecture comes from, e.g. ``"keras.applications"``.
    """

    name: str
    builder: Callable = field(repr=False)
    preprocess_input: Callable = field(repr=False)
    native_size: tuple[int, int]
    source: str
