"""Property-based fuzzing of every file reader (Hypothesis).

Valid small files (images in five formats, ``.pth`` checkpoints in both
layouts, feature cache shards) are mutated (bytes flipped, cut, inserted,
and size fields overwritten with extreme integers) and read. The outcome
must be one of:

* a correct result: the right type, shape and dtype, finite values in
  range (for a mutation that left the file valid);
* an error of sktransfer's own (:class:`~sktransfer.exceptions.SktransferError`),
  never a bare NumPy, Pillow, zipfile or pickle error;

never a hang (each read runs under a timeout), and never memory beyond a
stated multiple of the input: the peak of Python and NumPy allocations
(``tracemalloc``) of one read stays under ``MEMORY_FACTOR`` times the file's
size plus 1 MB for checkpoints and shards, and, for images, under 40 bytes
per pixel of the pixel limit (set to 1 million here) plus 1 MB. (Found this
way: Pillow's readers allocate lengths read from a header before reading
them, 1.2 GB for a 2 KB file taken for a GIMP brush; files are now read
through a reader that caps every read at the bytes left.)

The default run tries a few dozen mutations per reader (seconds); the
``slow`` run tries thousands.
"""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

import sktransfer
from sktransfer import _inputs, cache
from sktransfer.backbones._torch_legacy import load_state_dict
from sktransfer.exceptions import SktransferError

from .test_hostile_inputs import within
from .test_torch_legacy import STORAGES, TENSORS, _header, _state_dict_pickle

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MEMORY_FACTOR = 10
PIXEL_LIMIT = 1_000_000
BYTES_PER_PIXEL = 40
TIMEOUT = 20

FAST = settings(
    max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LONG = settings(
    max_examples=1500, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _image_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    files = {}
    for name, image, options in [
        ("png", Image.fromarray(rgb), {}),
        ("jpeg", Image.fromarray(rgb), {"quality": 90}),
        ("gif", Image.fromarray(rgb).convert("P"), {}),
        ("bmp", Image.fromarray(rgb), {}),
        ("tiff", Image.fromarray(rgb[..., 0].astype(np.float32) / 255), {}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format=name, **options)
        files[name] = buffer.getvalue()
    return files


def _checkpoints() -> dict[str, bytes]:
    legacy = _header() + _state_dict_pickle(TENSORS, STORAGES)
    legacy += pickle.dumps(list(STORAGES), protocol=2)
    for _, array in STORAGES.values():
        legacy += struct.pack("<q", array.size) + array.tobytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", _state_dict_pickle(TENSORS, STORAGES).replace(b"\nNtQ", b"\ntQ"))
        archive.writestr("archive/byteorder", "little")
        for key, (_, array) in STORAGES.items():
            archive.writestr(f"archive/data/{key}", array.tobytes())
    return {"legacy": legacy, "zip": buffer.getvalue()}


def _shard() -> bytes:
    keys = np.arange(3 * 16, dtype=np.uint8).reshape(3, 16)
    features = np.linspace(0, 1, 3 * 8, dtype=np.float32).reshape(3, 8)
    buffer = io.BytesIO()
    np.savez(buffer, keys=keys, features=features, checksum=cache._checksum(keys, features))
    return buffer.getvalue()


IMAGES = _image_files()
CHECKPOINTS = _checkpoints()
SHARD = _shard()
EXTREMES = [0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**40, 2**63 - 1]


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` with a few random mutations."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "cut", "insert", "integer", "zero"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "integer":
            value = draw(st.sampled_from(EXTREMES))
            width = draw(st.sampled_from([2, 4, 8]))
            order = draw(st.sampled_from(["little", "big"]))
            data[at : at + width] = (value % 2 ** (8 * width)).to_bytes(width, order)
        else:
            data[at : at + draw(st.integers(1, 64))] = b""
    return bytes(data)


def read_bounded(function, path, size: int):
    """``function(path)`` under a timeout; its peak allocations checked."""
    tracemalloc.start()
    try:
        try:
            return within(TIMEOUT, function, path)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            assert peak <= size + 2**20, f"{peak} bytes allocated for a {path.stat().st_size}-byte file"
    finally:
        tracemalloc.stop()


@pytest.fixture
def small_pixel_limit():
    sktransfer.set_max_image_pixels(PIXEL_LIMIT)
    yield
    sktransfer.set_max_image_pixels(sktransfer.DEFAULT_MAX_IMAGE_PIXELS)


def check_image(tmp_path, data: bytes) -> None:
    path = tmp_path / "image"
    path.write_bytes(data)
    try:
        pixels = read_bounded(
            lambda p: _inputs._read_file(str(p), 0, (16, 16)), path,
            BYTES_PER_PIXEL * PIXEL_LIMIT,
        )
    except SktransferError:
        return
    assert pixels.dtype == np.float32 and pixels.ndim == 3 and pixels.shape[-1] == 3
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255


def check_checkpoint(tmp_path, data: bytes) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(data)
    try:
        state = read_bounded(load_state_dict, path, MEMORY_FACTOR * len(data))
    except SktransferError:
        return
    assert isinstance(state, dict)
    assert all(isinstance(v, np.ndarray) and v.flags.c_contiguous for v in state.values())


def check_shard(tmp_path, data: bytes) -> None:
    path = tmp_path / "shard.npz"
    path.write_bytes(data)
    try:
        arrays = read_bounded(lambda p: cache.read_shard(str(p)), path, MEMORY_FACTOR * len(data))
    except SktransferError:
        return
    # Whatever survived the mutation passed the checksum: it is the original.
    assert arrays["keys"].shape == (3, 16) and arrays["features"].shape == (3, 8)
    np.testing.assert_array_equal(arrays["features"].ravel(), np.linspace(0, 1, 24, dtype=np.float32))


SOURCES = {"image": IMAGES, "checkpoint": CHECKPOINTS, "shard": {"npz": SHARD}}
CHECKS = {"image": check_image, "checkpoint": check_checkpoint, "shard": check_shard}
CASES = [(reader, kind) for reader, files in SOURCES.items() for kind in sorted(files)]


def fuzz_test(budget, *marks):
    """A test of every reader on mutated files, with Hypothesis ``budget``."""

    @pytest.mark.usefixtures("small_pixel_limit")
    @pytest.mark.parametrize("reader, kind", CASES)
    @budget
    @given(data=st.data())
    def test(reader, kind, data, tmp_path):
        CHECKS[reader](tmp_path, data.draw(mutated(SOURCES[reader][kind])))

    for mark in marks:
        test = mark(test)
    return test


test_mutated_files = fuzz_test(FAST)
test_mutated_files_long = fuzz_test(LONG, pytest.mark.slow)
