"""Lazy, configured import of TensorFlow and Keras.

Importing TensorFlow takes seconds, so ``import sktransfer`` does not do it:
every module that needs it calls :func:`tensorflow` at run time.
"""

from __future__ import annotations

import functools
import os


@functools.cache
def tensorflow():
    """Import TensorFlow once, configured for sharing a machine.

    * C++ info logs are silenced unless the user chose a level already.
    * GPU memory grows on demand instead of being grabbed whole, so several
      worker processes (joblib, Dask) can share one GPU and a grid search
      does not starve other programs.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "sktransfer needs Keras' TensorFlow backend, but KERAS_BACKEND is "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before "
            "importing keras."
        )
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            # The GPU was initialised before sktransfer ran: keep the user's
            # configuration.
            pass
    return tf
