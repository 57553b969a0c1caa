"""Exceptions raised by sktransfer.

Every error the package raises on purpose derives from :class:`SktransferError`
and also from the built-in class a caller would naturally catch
(``ValueError`` for bad input, ``OSError`` for unavailable files), so
``except ValueError`` keeps working in code written for scikit-learn.
"""

from __future__ import annotations

__all__ = [
    "ConversionError",
    "EngineUnavailableError",
    "ImageLoadError",
    "SktransferError",
    "WeightsUnavailableError",
]


class SktransferError(Exception):
    """Base class of the errors raised by sktransfer."""


class ImageLoadError(SktransferError, ValueError):
    """An image could not be read or decoded.

    Attributes
    ----------
    index : int
        Position of the image in the input.
    path : str or None
        The file, when the image was given as a path.
    """

    def __init__(self, message: str, *, index: int, path: str | None = None):
        super().__init__(message)
        self.index = index
        self.path = path


class WeightsUnavailableError(SktransferError, OSError):
    """Pretrained weights could not be obtained (no network, missing package)."""


class EngineUnavailableError(SktransferError, ImportError):
    """An inference engine was asked for whose optional extra is not installed."""


class ConversionError(SktransferError, RuntimeError):
    """A network could not be converted for an inference engine."""
