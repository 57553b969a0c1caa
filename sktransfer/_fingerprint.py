"""Content fingerprints of images and networks, the keys of the feature cache.

A cached feature row may only be served for the very pixels and the very
network it was computed from, so keys are built from content:

* an image of an array: BLAKE2b of its bytes, with dtype, shape and the
  array's 0-1 -> 0-255 scale (decided per call for float arrays);
* a PIL image: BLAKE2b of its mode, size and pixel bytes;
* a file: its absolute path, size and modification time (``"metadata"``,
  instant), or BLAKE2b of its bytes (``"content"``, survives copies and
  ``touch`` and catches edits that keep size and mtime);
* a network: everything that changes its output (backbone, weights, input
  size, precision, preprocessing, XLA), with the weights of a user's
  ``keras.Model`` hashed at each use, so training it in place invalidates
  its features. (A model that had to be copied, to give it a concrete
  ``input_size`` or to load ``weights=path``, is the copy: training the
  original afterwards changes neither the features nor their key.)

Keys are 16-byte digests; a collision needs 2**64 images.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ._files import file_stamp, open_regular

FINGERPRINTS = ("metadata", "content")

_DIGEST_SIZE = 16
_FILE_CHUNK = 1 << 20


def _digest(*parts: bytes) -> bytes:
    hasher = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    for part in parts:
        hasher.update(part)
    return hasher.digest()


def _array_header(array: np.ndarray, scale: float | None) -> bytes:
    return f"array|{array.dtype.str}|{array.shape}|{scale}|".encode()


def array_keys(array: np.ndarray, scale: float) -> list[bytes]:
    """One key per image of an (n, h, w[, c]) array read with ``scale``."""
    header = _array_header(array[0], scale)
    return [_digest(header, np.ascontiguousarray(image).data) for image in array]


def item_key(item, fingerprint: str = "metadata") -> bytes | None:
    """The key of one image given on its own: an array, a file path or a PIL image.

    None where it has no stable key (a file that cannot be read).
    ``fingerprint`` ("metadata" or "content") says how a file is keyed.
    """
    if isinstance(item, np.ndarray):
        return _digest(_array_header(item, None), np.ascontiguousarray(item).data)
    if isinstance(item, str):
        try:
            return _image_file_key(item, fingerprint)
        except OSError:
            return None  # unreadable: never cached, reported when loaded
    # A PIL image. Its pixels as the network sees them also depend on the
    # EXIF orientation and, for palette images, on the palette and its
    # transparency, which tobytes() leaves out.
    try:
        orientation = item.getexif().get(0x0112, 1)
        palette = item.getpalette() if item.mode in ("P", "PA") else None
        header = (
            f"pil|{item.mode}|{item.size}|{orientation}|{palette}|"
            f"{item.info.get('transparency')}|"
        ).encode()
        return _digest(header, item.tobytes())
    except (OSError, ValueError):
        return None  # unreadable: never cached, reported when loaded


def _image_file_key(path: str, fingerprint: str) -> bytes:
    if fingerprint == "content":
        hasher = hashlib.blake2b(b"file-content|", digest_size=_DIGEST_SIZE)
        with open_regular(path) as file:  # a FIFO would block forever
            for chunk in iter(lambda: file.read(_FILE_CHUNK), b""):
                hasher.update(chunk)
        return hasher.digest()
    path, mtime_ns, size = file_stamp(path)
    return _digest(f"file|{path}|{size}|{mtime_ns}".encode())


def model_weights_key(model) -> str:
    """Hex digest of a Keras model's architecture and weight values."""
    hasher = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    hasher.update(repr(model.to_json()).encode())
    for weights in model.get_weights():
        hasher.update(f"{weights.dtype.str}{weights.shape}".encode())
        hasher.update(np.ascontiguousarray(weights).data)
    return hasher.hexdigest()


def text_key(*parts) -> str:
    """Hex digest of the ``repr`` of ``parts`` (stable across processes)."""
    return _digest(repr(parts).encode()).hex()
