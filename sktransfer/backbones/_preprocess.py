"""Preprocessing: RGB pixels in [0, 255] -> what a network expects.

One resolution rule for every estimator (``preprocessing`` parameter):
``"auto"`` is the registered backbone's own ``preprocess_input`` (none for a
user's model), ``"tf"``/``"torch"``/``"caffe"`` are Keras' ImageNet modes,
``None`` feeds raw pixels, and a callable is used as given.
"""

from __future__ import annotations

import keras

from ._registry import get_spec


def resolve_preprocessing(backbone: str | None, preprocessing):
    """The preprocessing function, or None for raw pixels.

    Parameters
    ----------
    backbone : str or None
        A registered backbone name; None for a user's model.
    preprocessing : {"auto", "tf", "torch", "caffe"}, callable or None
    """
    if preprocessing is None or callable(preprocessing):
        return preprocessing
    if preprocessing == "auto":
        return get_spec(backbone).preprocess_input if backbone else None
    from keras.applications import imagenet_utils

    def preprocess(x, mode=preprocessing):
        return imagenet_utils.preprocess_input(x, mode=mode)

    return preprocess


@keras.saving.register_keras_serializable(package="sktransfer")
class Preprocess(keras.layers.Layer):
    """A layer applying a backbone's preprocessing to RGB pixels in [0, 255].

    Serialised by name (backbone and mode), so a saved model reloads with the
    same preprocessing and no Python function in the file.

    Parameters
    ----------
    backbone : str or None
        A registered backbone name (for ``mode="auto"``).
    mode : {"auto", "tf", "torch", "caffe"}, default="auto"
    """

    def __init__(self, backbone: str | None = None, mode: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.mode = mode
        self._function = resolve_preprocessing(backbone, mode)

    def call(self, inputs):
        inputs = keras.ops.cast(inputs, self.compute_dtype)
        return inputs if self._function is None else self._function(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone, "mode": self.mode}
