"""Blocks: the cut points of any Keras CNN, found from its layer shapes.

A block is the last layer at each spatial resolution, the reduction points
that timm's ``features_only`` exposes. It is computed the same way for every
backbone, a ``keras.applications`` model, one of ours, or a user's model.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

from ._build import (
    build_headless,
    check_model,
    is_model,
    model_at_input_size,
    normalize_input_size,
)
from ._registry import get_spec
from ._spec import BackboneSpec
from ._tensorflow import tensorflow


@dataclass(frozen=True)
class Block:
    """One cut point of a backbone.

    Attributes
    ----------
    name : str
        The Keras layer name.
    height, width, channels : int
        Shape of the layer's output for the input size it was computed at.
    """

    name: str
    height: int
    width: int
    channels: int


def _spatial_shape(tensor) -> tuple[int, int, int] | None:
    shape = getattr(tensor, "shape", None)
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        return None
    return int(shape[1]), int(shape[2]), int(shape[3])


def _input_area(layer) -> int:
    try:
        inputs = layer.input
    except (AttributeError, ValueError):
        return 0
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    areas = [s[0] * s[1] for s in map(_spatial_shape, inputs) if s is not None]
    return max(areas, default=0)


def _has_kernel(layer) -> bool:
    # Only layers that learn a spatial or dense transform make a resolution
    # worth cutting at; Rescaling/Normalization (which carry weights too)
    # would otherwise make the raw input a "block".
    return any("kernel" in weight.path.rsplit("/", 1)[-1] for weight in layer.weights)


def _producers(layer) -> list:
    try:
        inputs = layer.input
    except (AttributeError, ValueError):
        return []
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    history = (getattr(tensor, "_keras_history", None) for tensor in inputs)
    return [h.operation for h in history if h is not None]


def _cut_points(layers: list) -> set[int]:
    """Positions of the layers every path from input to output goes through.

    With the layers in topological order, layer i is such a cut point when no
    edge jumps over it (from a layer before i to a layer after i): that
    excludes a branch of an Inception module, a squeeze-and-excitation gate,
    or the inside of a residual block, and keeps a block's merged output.
    """
    position = {id(layer): i for i, layer in enumerate(layers)}
    reach = list(range(len(layers)))
    for i, layer in enumerate(layers):
        for producer in _producers(layer):
            j = position.get(id(producer))
            if j is not None:
                reach[j] = max(reach[j], i)
    cuts, furthest = set(), -1
    for i in range(len(layers)):
        if furthest <= i:
            cuts.add(i)
        furthest = max(furthest, reach[i])
    return cuts


def find_blocks(model) -> list[Block]:
    """The blocks of a built Keras model, shallowest first.

    Parameters
    ----------
    model : keras.Model
        A functional (or Sequential) model with a concrete input size.

    Returns
    -------
    blocks : list of Block
        Layers are grouped by their reduction, ``round(log2(input height /
        output height))``, so that networks with "valid" padding (299 -> 149
        -> 147 in Inception) still give one block per stride, as timm's
        ``feature_info`` does. A block is the last cut point (a layer all
        paths go through) of a group, kept only when every later cut point is
        in a deeper group and the group holds a layer with a kernel. Padding
        layers, whose output is larger than their input, are ignored.
    """
    layers = list(model.layers)
    cuts = _cut_points(layers)
    input_height = _spatial_shape(model.inputs[0])[0]
    entries = []
    for position, layer in enumerate(layers):
        try:
            shape = _spatial_shape(layer.output)
        except (AttributeError, ValueError):
            # A layer called at several nodes has no single output shape.
            continue
        if shape is None or shape[0] * shape[1] > _input_area(layer) > 0:
            continue
        reduction = round(math.log2(input_height / shape[0]))
        entries.append((layer, shape, reduction, position in cuts))

    learned = {reduction for layer, _, reduction, _ in entries if _has_kernel(layer)}
    candidates = [entry for entry in entries if entry[3] and entry[2] in learned]
    blocks = []
    for index, (layer, shape, reduction, _) in enumerate(candidates):
        if all(other[2] > reduction for other in candidates[index + 1 :]):
            blocks.append(Block(layer.name, *shape))
    return blocks


def block_info(backbone, input_size=None) -> list[Block]:
    """The blocks of a backbone with their output shapes, shallowest first.

    Parameters
    ----------
    backbone : str or keras.Model
        A registered name or a built Keras model (for a saved ``.keras`` or
        ``.h5`` file, load it first).
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
    size = normalize_input_size(input_size)
    check_model(backbone)
    if is_model(backbone):
        return find_blocks(model_at_input_size(backbone, size)[0])
    if isinstance(backbone, os.PathLike) or (
        isinstance(backbone, str) and backbone.lower().endswith((".keras", ".h5"))
    ):
        raise ValueError(
            f"backbone={os.fspath(backbone)!r} is a file: block_info takes a "
            "registered name or a keras.Model. Load the model first "
            "(keras.saving.load_model) and pass it."
        )
    spec = get_spec(backbone)
    return list(_registered_blocks(spec, size or spec.native_size))


@functools.lru_cache(maxsize=16)
def _registered_blocks(spec: BackboneSpec, size: tuple[int, int]) -> tuple[Block, ...]:
    # Keyed by the spec itself: a backbone registered again is measured again.
    tensorflow()
    return tuple(find_blocks(build_headless(spec, size, None)))


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
