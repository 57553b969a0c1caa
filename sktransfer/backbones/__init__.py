"""The backbone registry: which networks there are, and where they can be cut.

Every ``keras.applications`` model is registered under its name, matched
case- and separator-insensitively (``"ResNet50"``, ``"resnet50"``,
``"mobilenet_v2"``), and so are sktransfer's EfficientNet-Lite0/1/2. Every
estimator of sktransfer reads backbones from here.

This package is the bottom layer of sktransfer: it imports nothing from the
package above but :mod:`sktransfer.exceptions`, and registers nothing when it
is imported (the built-in backbones enter the registry at the first lookup).
"""

from __future__ import annotations

from ._blocks import Block, block_info, blocks
from ._build import build
from ._imagenet_classes import imagenet_classes
from ._registry import (
    get_spec,
    list_backbones,
    names,
    native_size,
    preprocess_input,
    register,
)
from ._spec import BackboneSpec

__all__ = [
    "BackboneSpec",
    "Block",
    "block_info",
    "blocks",
    "build",
    "get_spec",
    "imagenet_classes",
    "list_backbones",
    "names",
    "native_size",
    "preprocess_input",
    "register",
]
