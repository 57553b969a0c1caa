"""Keras layers of sktransfer's models, registered for saving and loading.

Importing this module imports Keras; estimators import it lazily.
"""

from __future__ import annotations

import keras

from ._pooling import pool
from .backbones._preprocess import Preprocess

__all__ = ["Pooling", "Preprocess"]


@keras.saving.register_keras_serializable(package="sktransfer")
class Pooling(keras.layers.Layer):
    """Pool each (batch, h, w, c) input to a vector and concatenate them.

    Parameters
    ----------
    pooling : {"avg", "max", "avgmax", "flatten"} or int
        As the estimators' ``pooling`` parameter (see ``sktransfer._pooling``).
    """

    def __init__(self, pooling="avg", **kwargs):
        super().__init__(**kwargs)
        self.pooling = pooling

    def call(self, inputs):
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        pooled = [pool(keras.ops.cast(x, self.compute_dtype), self.pooling) for x in inputs]
        return pooled[0] if len(pooled) == 1 else keras.ops.concatenate(pooled, axis=-1)

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling}
