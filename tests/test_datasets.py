import gzip
import os
import struct

import numpy as np
import pytest
from PIL import Image

import sktransfer
from sktransfer.datasets import (
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
)


def write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path):
    rng = np.random.default_rng(0)
    data = {}
    for subset, n in [("train", 20), ("t10k", 10)]:
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(tmp_path / f"{subset}-images-idx3-ubyte.gz", images, True)
        write_idx(tmp_path / f"{subset}-labels-idx1-ubyte", labels, False)
        data[subset] = (images, labels)
    return tmp_path, data


def test_read_idx_round_trip_and_errors(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", array, False)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_load_from_data_home_and_env(fake_fashion, monkeypatch, tmp_path_factory):
    folder, data = fake_fashion
    bunch = load_fashion_mnist(folder, subset="train")
    np.testing.assert_array_equal(bunch.images, data["train"][0])
    np.testing.assert_array_equal(bunch.target, data["train"][1])
    assert bunch.target_names == FASHION_MNIST_CLASSES
    monkeypatch.setenv("SKTRANSFER_DATA", str(folder))
    X, y = load_fashion_mnist(subset="all", return_X_y=True)
    assert X.shape == (30, 28, 28) and y.dtype == np.int64


def test_not_found_says_how_to_get_it(tmp_path, monkeypatch):
    import sktransfer.datasets as datasets

    monkeypatch.delenv("SKTRANSFER_DATA", raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist(tmp_path)
    assert "SKTRANSFER_DATA" in str(info.value) and "download=True" in str(info.value)
    with pytest.raises(ValueError, match="subset="):
        load_fashion_mnist(tmp_path, subset="valid")


@pytest.mark.skipif(
    not os.path.isdir(DEBIAN_FASHION_MNIST),
    reason="needs Debian's dataset-fashion-mnist, which .ci/run installs",
)
def test_real_fashion_mnist():
    test = load_fashion_mnist(subset="test")
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == np.uint8
    assert np.bincount(test.target).tolist() == [1000] * 10


def test_digits_as_images():
    images, target = load_digits(return_X_y=True)
    assert images.shape == (1797, 8, 8) and images.max() == 255 and images.dtype == np.uint8
    assert len(target) == 1797


def test_image_folder_paths_and_labels_sorted(image_folder, labels):
    root, paths = image_folder
    (root / "cat" / "notes.txt").write_text("not an image")
    nested = root / "dog" / "more"
    nested.mkdir()
    Image.new("RGB", (4, 4)).save(nested / "z.jpg")
    found, found_labels = load_image_folder(root)
    assert list(found_labels) == sorted(list(labels) + ["dog"])
    assert str(nested / "z.jpg") in list(found)
    assert not any(p.endswith(".txt") for p in found)
    assert found.dtype == object and len(found) == len(found_labels) == 13


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no subfolders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_image_folder(tmp_path)


def test_the_package_exports_the_same_loader():
    assert sktransfer.load_image_folder is load_image_folder
