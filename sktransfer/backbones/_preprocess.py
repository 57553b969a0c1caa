"""A Keras layer applying a registered backbone's own preprocessing."""

from __future__ import annotations

import keras

from ._registry import get_spec


@keras.saving.register_keras_serializable(package="sktransfer")
class Preprocess(keras.layers.Layer):
    """RGB pixels in [0, 255] -> the input a registered backbone expects.

    Serialised by the backbone's name, so a saved model reloads with the
    same preprocessing and no Python function (Lambda) in the file.

    Parameters
    ----------
    backbone : str
        A registered backbone name.
    """

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self._function = get_spec(backbone).preprocess_input

    def call(self, inputs):
        return self._function(keras.ops.cast(inputs, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}
