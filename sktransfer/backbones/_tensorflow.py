"""Lazy, configured import of TensorFlow and Keras.

Importing TensorFlow takes seconds, so ``import sktransfer`` does not do it:
every module that needs it calls :func:`tensorflow` at run time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys


@functools.cache
def tensorflow():
    """Import TensorFlow once, configured for sharing a machine.

    * C++ info logs are silenced unless the user chose a level already.
    * GPU memory grows on demand instead of being grabbed whole, so several
      worker processes (joblib, Dask) can share one GPU and a grid search
      does not starve other programs.
    """
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _native_stderr_silenced(quiet):
        import keras
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "sktransfer needs Keras' TensorFlow backend, but KERAS_BACKEND is "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before "
            "importing keras."
        )
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            # The GPU was initialised before sktransfer ran: keep the user's
            # configuration.
            pass
    return tf


@contextlib.contextmanager
def _native_stderr_silenced(active: bool):
    """Hide what TensorFlow's C++ side prints on file descriptor 2.

    TensorFlow 2.21 logs oneDNN, CUDA-stub and cuInit notices at import and
    at the first device listing before its logging is initialised, ignoring
    TF_CPP_MIN_LOG_LEVEL: a page of noise on every command a user runs.
    Python exceptions are unaffected (they are raised, not printed here).
    """
    if not active:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no real descriptor 2 (embedded, notebooks)
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
