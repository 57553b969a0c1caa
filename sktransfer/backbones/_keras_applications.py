"""Every model of ``keras.applications``, as backbone registry entries."""

from __future__ import annotations

import functools
import importlib

from ._spec import BackboneSpec

# Input sizes the ImageNet weights were trained at, where not 224 (from the
# Keras applications documentation).
_NATIVE_SIZES = {
    "InceptionV3": 299,
    "InceptionResNetV2": 299,
    "Xception": 299,
    "NASNetLarge": 331,
    "EfficientNetB1": 240,
    "EfficientNetB2": 260,
    "EfficientNetB3": 300,
    "EfficientNetB4": 380,
    "EfficientNetB5": 456,
    "EfficientNetB6": 528,
    "EfficientNetB7": 600,
    "EfficientNetV2B1": 240,
    "EfficientNetV2B2": 260,
    "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384,
    "EfficientNetV2M": 480,
    "EfficientNetV2L": 480,
}


def _build(function, *, input_shape, weights, include_top):
    return function(input_shape=input_shape, weights=weights, include_top=include_top)


def specs() -> list[BackboneSpec]:
    """One :class:`BackboneSpec` per model of the installed ``keras.applications``."""
    import keras

    entries = []
    for name in dir(keras.applications):
        function = getattr(keras.applications, name)
        if not (name[:1].isupper() and callable(function)):
            continue
        # Each builder's own module holds its preprocess_input (ResNet's
        # caffe mode, MobileNet's [-1, 1], identity for EfficientNet...).
        module = importlib.import_module(function.__module__)
        size = _NATIVE_SIZES.get(name, 224)
        entries.append(
            BackboneSpec(
                name=name,
                builder=functools.partial(_build, function),
                preprocess_input=module.preprocess_input,
                native_size=(size, size),
                source="keras.applications",
            )
        )
    return entries
