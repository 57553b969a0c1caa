import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sktransfer._inputs import as_images, iter_batches, resize
from sktransfer.exceptions import ImageLoadError

from .conftest import SIZE, make_images


def load_all(X, size=(SIZE, SIZE), **kwargs):
    images = as_images(X, **kwargs)
    return images.load(0, len(images), size)


def test_uint8_rgb_array_is_taken_as_is(images):
    pixels, failed = load_all(images)
    assert pixels.dtype == np.float32 and failed == []
    np.testing.assert_array_equal(pixels, images.astype(np.float32))


@pytest.mark.parametrize("shape", [(3, SIZE, SIZE), (3, SIZE, SIZE, 1)])
def test_grayscale_is_replicated_to_rgb(shape):
    gray = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    pixels, _ = load_all(gray)
    assert pixels.shape == (3, SIZE, SIZE, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], gray.reshape(3, SIZE, SIZE))


def test_alpha_is_dropped(images):
    rgba = np.concatenate([images, np.full(images.shape[:3] + (1,), 7, np.uint8)], -1)
    np.testing.assert_array_equal(load_all(rgba)[0], load_all(images)[0])


def test_float_scale_rule(images):
    as_unit = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(load_all(as_unit)[0], images, atol=1e-3)
    np.testing.assert_allclose(load_all(images.astype(np.float32))[0], images)


def test_resize_to_input_size(images):
    pixels, _ = load_all(images, size=(20, 24))
    assert pixels.shape == (len(images), 20, 24, 3)
    assert pixels.min() >= 0 and pixels.max() <= 255


@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros((0, 8, 8, 3)), "empty"),
        (np.zeros((4, 64)), "2-D numeric array"),
        (np.zeros((4, 8)), "reshape"),
        (np.zeros((2, 2, 8, 8, 3)), "5 dimensions"),
        (np.zeros((4, 8, 8, 2)), "2 channels"),
        (np.full((4, 8, 8), -1.0), "Negative values in data: X has pixel values"),
        (np.zeros((8, 8, 3)), "one 8x8 image with 3 channel.*Reshape your data"),
        (np.zeros((8, 8, 1)), "X\\[..., np.newaxis\\] for grayscale images 1 pixel"),
        (np.array([[[[{}]]]], dtype=object), "dtype object"),
        (np.full((4, 8, 8), 300), "pixel values"),
        (np.zeros((4, 8, 8), dtype=bool), "dtype bool"),
        ([], "empty"),
        ([1, 2, 3], "X\\[0\\] is a int"),
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), "2 columns"),
    ],
)
def test_bad_arrays_get_clear_errors(X, message):
    with pytest.raises(ValueError, match=message):
        as_images(X)


def test_nested_lists_and_object_arrays_are_read_as_numbers(images):
    expected = load_all(images)[0]
    np.testing.assert_array_equal(load_all(images.tolist())[0], expected)
    np.testing.assert_array_equal(load_all(images.astype(object))[0], expected)
    # Integers stay 0-255 and floats in 0-1 are scaled, as for arrays.
    unit = (images / 255.0).astype(object)
    np.testing.assert_allclose(load_all(unit)[0], expected, atol=1e-3)
    ragged = [images[0].tolist(), images[1][:16].tolist()]
    assert len(as_images(ragged)) == 2


def test_nan_names_the_image():
    X = np.zeros((5, 8, 8, 3), dtype=np.float32)
    X[3, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="image 3 contains NaN"):
        as_images(X)
    X[3, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="image 3 contains NaN or infinite"):
        as_images(X)


def test_single_path_and_folder_are_refused(tmp_path):
    with pytest.raises(ValueError, match="load_image_folder"):
        as_images(str(tmp_path))
    with pytest.raises(ValueError, match="Wrap a single file"):
        as_images(str(tmp_path / "a.png"))


def test_sparse_is_refused():
    import scipy.sparse as scipy_sparse
    with pytest.raises(TypeError, match="Sparse input is not supported"):
        as_images(scipy_sparse.csr_matrix(np.eye(3)))


def test_files_equal_arrays(images, image_folder):
    _, paths = image_folder
    np.testing.assert_array_equal(load_all(paths)[0], load_all(images)[0])


@pytest.mark.parametrize(
    "wrap",
    [
        list,
        tuple,
        lambda p: np.asarray(p, dtype=object),
        lambda p: np.asarray(p, dtype=object).reshape(-1, 1),
        lambda p: pd.Series(p),
        lambda p: pd.DataFrame({"path": p}),
        lambda p: [os.path.relpath(x) for x in p],
        lambda p: [__import__("pathlib").Path(x) for x in p],
    ],
)
def test_path_containers(image_folder, images, wrap):
    _, paths = image_folder
    np.testing.assert_array_equal(load_all(wrap(paths))[0], images)


def test_pil_images_and_mixed_size_arrays(images):
    pil = [Image.fromarray(image) for image in images]
    np.testing.assert_array_equal(load_all(pil)[0], images)
    mixed = [images[0], make_images(1, size=48)[0], images[1][..., 0]]
    pixels, _ = load_all(mixed)
    assert pixels.shape == (3, SIZE, SIZE, 3)
    np.testing.assert_array_equal(pixels[0], images[0])
    np.testing.assert_array_equal(pixels[2][..., 1], images[1][..., 0])


def test_mixed_size_files_and_modes(tmp_path):
    paths = []
    for index, (mode, size) in enumerate([("RGB", 40), ("L", 20), ("RGBA", 64), ("P", 32)]):
        path = tmp_path / f"{index}.png"
        Image.new(mode, (size, size // 2 + 3)).save(path)
        paths.append(str(path))
    jpeg = tmp_path / "x.jpg"
    Image.new("CMYK", (30, 30)).save(jpeg)
    paths.append(str(jpeg))
    pixels, _ = load_all(paths)
    assert pixels.shape == (5, SIZE, SIZE, 3)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(path)
    pixels, _ = load_all([str(path)], size=(8, 8))
    np.testing.assert_allclose(pixels, 255.0)


def test_exif_orientation_is_honoured(tmp_path):
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    image[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(image).save(path, exif=exif, quality=100)
    pixels, _ = load_all([str(path)], size=(20, 10))
    # Displayed upright, the white half is on top.
    assert pixels[0, :8].mean() > 200 and pixels[0, 12:].mean() < 50


def test_missing_and_broken_files_name_path_and_index(image_folder):
    _, paths = image_folder
    missing = paths[:2] + ["/no/such/file.png"]
    with pytest.raises(ImageLoadError, match=r"file 2 of X does not exist: '/no/such/file.png'") as info:
        as_images(missing)
    assert info.value.index == 2 and info.value.path == "/no/such/file.png"
    broken = os.path.join(os.path.dirname(paths[0]), "broken.png")
    with open(broken, "w") as handle:
        handle.write("not an image")
    with pytest.raises(ImageLoadError, match=r"image 1 of X \('.*broken.png'\)"):
        load_all([paths[0], broken])
    pixels, failed = load_all([paths[0], broken, "/no/such.png"], on_error="nan")
    assert failed == [1, 2]
    assert not pixels[1:].any()


def test_input_is_not_modified(images):
    floats = images.astype(np.float64) / 255.0
    before = floats.copy()
    images_before = images.copy()
    load_all(floats)
    load_all(images)
    np.testing.assert_array_equal(floats, before)
    np.testing.assert_array_equal(images, images_before)


def test_read_only_input_is_accepted(images):
    images.setflags(write=False)
    np.testing.assert_array_equal(load_all(images)[0], images)


def test_iter_batches_order_and_bound(images):
    source = as_images(images)
    seen = []
    for start, batch, failed in iter_batches(source, (SIZE, SIZE), batch_size=5):
        seen.append((start, len(batch)))
        np.testing.assert_array_equal(batch, images[start : start + 5])
    assert seen == [(0, 5), (5, 5), (10, 2)]


def test_resize_is_identity_at_same_size(images):
    batch = images.astype(np.float32)
    assert resize(batch, (SIZE, SIZE)) is batch


@pytest.mark.parametrize("kind", ["array", "paths"])
def test_take_any_index_order(images, image_folder, kind):
    source = as_images(images if kind == "array" else image_folder[1])
    for indices in ([0, 2, 1, 3], [5], [11, 0], list(range(3, 9))):
        pixels, _ = source.take(np.asarray(indices), (SIZE, SIZE))
        np.testing.assert_array_equal(pixels, images[indices])


def test_nan_in_one_image_of_a_list_names_that_image(images):
    bad = images[1].astype(np.float32)
    bad[3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="image 1 of X contains NaN"):
        load_all([images[0], bad, make_images(1, size=40)[0]])
