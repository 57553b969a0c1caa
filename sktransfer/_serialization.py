"""Keras models as bytes, so estimators pickle with their network inside.

Uses Keras' own ``.keras`` format (architecture + weights in one zip), not a
pickle of Keras internals and not a side file next to the pickle.
"""

from __future__ import annotations

import os
import tempfile


def model_to_bytes(model) -> bytes:
    """Serialize a Keras model to the bytes of a ``.keras`` file."""
    import keras

    # A fresh functional model over the same layers carries no optimizer: only
    # what inference needs is saved (Adam's slots would double the size).
    inference = keras.Model(model.inputs, model.outputs, name=model.name)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        inference.save(path)
        with open(path, "rb") as handle:
            return handle.read()


def model_from_bytes(data: bytes):
    """The Keras model saved by :func:`model_to_bytes`."""
    from . import _layers  # noqa: F401  (registers sktransfer's layers)
    from ._tensorflow import tensorflow

    tensorflow()
    import keras

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as handle:
            handle.write(data)
        # safe_mode=False only so that a user's preprocessing callable (a
        # Lambda layer) reloads; unpickling is already trusting the source.
        return keras.saving.load_model(path, compile=False, safe_mode=False)
