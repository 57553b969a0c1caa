"""Hostile and broken input: one regression test per case of issue 13.

Every file here is crafted by the test, small, in a temporary folder. The
outcome of each case is a correct result or a clear error of sktransfer's
own (naming the file, the index or the parameter), never a hang, a bare
NumPy/TensorFlow error, memory out of proportion, or code run from a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import struct
import threading
import warnings
import zipfile
import zlib

import joblib
import numpy as np
import pytest
from PIL import Image

from sktransfer import CNNFeatureExtractor, FineTunedCNNClassifier, cache
from sktransfer import _inputs
from sktransfer.backbones._torch_legacy import (
    UnsafeCheckpointError,
    load_state_dict,
)
from sktransfer.cli import main
from sktransfer.exceptions import (
    CorruptFileError,
    ImageLoadError,
    SktransferError,
    UnsafeFileError,
)

from .conftest import make_images, save_pngs
from .test_torch_legacy import STORAGES, TENSORS, _header, _legacy_file, _tensor_opcodes

COMMON = dict(backbone="mobilenet_v2", weights=None, input_size=32)


def within(seconds: float, function, *args):
    """``function(*args)``, failing the test (not hanging it) after ``seconds``."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} hung for {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def lambda_model(marker):
    """A Keras model whose Lambda layer creates ``marker`` when it runs.

    Building the model runs the Lambda once; the marker is removed after.
    """
    import keras

    inputs = keras.Input((32, 32, 3))
    touched = keras.layers.Lambda(
        lambda x, path=str(marker): (open(path, "w").close(), x)[1], name="evil"
    )(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(touched)
    )
    os.remove(marker)
    return keras.Model(inputs, outputs)


def lambda_model_bytes(marker) -> bytes:
    """:func:`lambda_model` as the bytes of a .keras file."""
    from sktransfer._serialization import model_to_bytes

    return model_to_bytes(lambda_model(marker))


# --- code can run -------------------------------------------------------------


def test_a_pickled_classifier_network_with_a_lambda_is_refused(tmp_path):
    """Case 1: the network in a classifier's pickle was loaded with safe_mode=False."""
    marker = tmp_path / "ran"
    clf = FineTunedCNNClassifier.__new__(FineTunedCNNClassifier)
    with pytest.raises(UnsafeFileError, match="bytecode"):
        clf.__setstate__({"model_": lambda_model_bytes(marker)})  # what unpickling does
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_backbone_file_with_a_lambda_is_refused_unrun(suffix, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / f"evil{suffix}"
    lambda_model(marker).save(path)
    with pytest.raises(UnsafeFileError, match="evil"):
        CNNFeatureExtractor(backbone=str(path), weights=None).fit(make_images(1))
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_cli_loads_a_pickle_only_when_allowed_and_says_what_it_means(
    command, tmp_path, capsys
):
    """Cases 2 and 3: predict and explain loaded any .joblib without a word."""
    from sklearn.linear_model import LogisticRegression

    model = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression().fit([[0], [1]], [0, 1]), model)
    png = save_pngs(make_images(1), tmp_path)[0]
    extra = ["-o", str(tmp_path / "h.png")] if command == "explain" else []
    assert main([command, str(model), png, *extra]) == 2
    err = capsys.readouterr().err
    assert "is a pickle (joblib) file" in err
    assert "Loading a pickle runs whatever code it holds" in err and "--allow-pickle" in err


def test_a_pickled_classifier_is_named_a_pickle_not_a_foreign_zip(
    saved_classifier, tmp_path, capsys
):
    """A pickle ends with the classifier's Keras network, itself a zip: the
    file's kind is told by its first bytes, not by a zip record near its end."""
    from sktransfer._persistence import check_model_file

    clf, _, images = saved_classifier
    model = tmp_path / "model.joblib"
    joblib.dump(clf, model)
    assert check_model_file(str(model)) == "pickle"
    png = save_pngs(images[:1], tmp_path)[0]
    assert main(["predict", str(model), png]) == 2
    assert "is a pickle (joblib) file" in capsys.readouterr().err
    assert main(["predict", str(model), png, "--allow-pickle"]) == 0


# --- hangs ----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_in_the_cache_folder_is_skipped_not_waited_on(tmp_path, empty_cache):
    """Case 4: a FIFO named *.npz blocked np.load forever."""
    X = make_images(3)
    folder = tmp_path / "features"
    expected = CNNFeatureExtractor(**COMMON, memory=folder).fit(X).transform(X)
    for part in (folder / "sktransfer-features-v2").iterdir():
        os.mkfifo(part / "0fifo.npz")
    cache.clear()
    extractor = CNNFeatureExtractor(**COMMON, memory=folder).fit(X)
    with pytest.warns(UserWarning, match="FIFO"):
        got = within(60, extractor.transform, X)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_given_as_an_image_is_refused_not_waited_on(tmp_path):
    fifo = str(tmp_path / "image.png")
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="FIFO"):
        _inputs.as_images([fifo])
    images = _inputs.as_images([fifo], on_error="nan")  # opened at load time
    _, failed = within(10, images.take, np.arange(1), (32, 32))
    assert failed == [0]
    assert within(10, images.keys, "content") == [None]  # not hashed


# --- memory without bound ---------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` gray pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 8)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_png_of_12000x12000_pixels_is_refused_before_decoding(tmp_path):
    """Case 5: a 420 KB PNG of 12000x12000 pixels took 5.8 GB (benchmarks/bench_decoding.py)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(12000, 12000))
    images = _inputs.as_images([str(path)])
    with pytest.raises(ImageLoadError) as error:
        images.take(np.arange(1), (32, 32))
    message = str(error.value)
    assert "bomb.png" in message and "12000x12000" in message
    assert "set_max_image_pixels" in message and "SKTRANSFER_MAX_IMAGE_PIXELS" in message
    assert error.value.path == str(path) and error.value.index == 0


def test_the_pixel_limit_can_be_raised_and_large_images_are_reduced(tmp_path):
    import sktransfer

    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), 64, 0), 64, 1)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(big).save(tmp_path / "big.png")
    sktransfer.set_max_image_pixels(1000 * 1000)
    try:
        with pytest.raises(ImageLoadError, match="1024x1024"):
            _inputs._read_file(str(tmp_path / "big.png"), 0, (32, 32))
        sktransfer.set_max_image_pixels(2000 * 2000)
        for name in ("big.jpg", "big.png"):
            pixels = _inputs._read_file(str(tmp_path / name), 0, (32, 32))
            # Reduced before becoming floats (JPEG draft, box filter), to at
            # least twice the input size.
            assert 64 <= pixels.shape[0] < 1024 and pixels.shape[:2] == pixels.shape[1::-1][:2]
            assert abs(pixels.mean() - big.mean()) < 2
    finally:
        sktransfer.set_max_image_pixels(sktransfer.DEFAULT_MAX_IMAGE_PIXELS)


def test_a_cache_shard_that_inflates_is_refused_unread(tmp_path):
    """Case 6: a 2 MB shard inflated to 2.9 GB."""
    path = tmp_path / "bomb.npz"
    np.savez_compressed(
        path, keys=np.zeros((10_000, 16), np.uint8), features=np.zeros((10_000, 1000), np.float32),
        checksum=np.zeros(16, np.uint8),
    )
    assert path.stat().st_size < 200_000
    with pytest.raises(CorruptFileError, match="compressed or inflated"):
        cache.read_shard(str(path))


def _pth_body(numel: int, size: tuple, stride: tuple) -> bytes:
    """A state dict pickle with one FloatStorage tensor ``w``."""
    return (
        b"ccollections\nOrderedDict\n)RVw\n"
        + _tensor_opcodes("FloatStorage", "0", numel, (0, size, stride))
        + b"s."
    )


def _legacy_pth(body: bytes, numel: int, data: bytes) -> bytes:
    return _header() + body + pickle.dumps(["0"], protocol=2) + struct.pack("<q", numel) + data


def test_a_pth_tensor_with_stride_0_is_refused(tmp_path):
    """Case 7: a 294-byte .pth with stride 0 took 1.7 GB."""
    path = tmp_path / "stride0.pth"
    path.write_bytes(_legacy_pth(_pth_body(1, (20_000, 20_000), (0, 0)), 1, b"\0" * 4))
    assert path.stat().st_size < 400
    with pytest.raises(CorruptFileError, match="stride0.pth: its tensors take 1600000000 bytes"):
        load_state_dict(path)
    # Refused even when the few elements it repeats fit in the bound.
    path.write_bytes(_legacy_pth(_pth_body(1, (10, 10), (0, 0)), 1, b"\0" * 4))
    with pytest.raises(CorruptFileError, match="more elements than its storage"):
        load_state_dict(path)


def test_a_pth_zip_storage_bomb_is_refused_unread(tmp_path):
    """Case 8: a 1 MB .pth zip storage bomb took 2.2 GB."""
    numel = 10_000_000
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", _pth_body(numel, (numel,), (1,)))
        archive.writestr("archive/data/0", bytes(4 * numel))
    assert path.stat().st_size < 100_000
    with pytest.raises(CorruptFileError, match="times the file's size"):
        load_state_dict(path)


def test_a_pth_declaring_2_to_the_40_elements_is_a_clear_error(tmp_path):
    """Case 9: a bare MemoryError."""
    path = tmp_path / "huge.pth"
    path.write_bytes(_legacy_pth(_pth_body(2**40, (2**40,), (1,)), 2**40, b"\0" * 16))
    with pytest.raises(CorruptFileError, match="huge.pth.*declares 4398046511104 bytes"):
        load_state_dict(path)


# --- silently wrong ------------------------------------------------------------


@pytest.mark.parametrize(
    "target, state",
    [(b"ctorch\nFloatStorage\n", b"Vdtype\nVi4\n"), (b"ctorch._utils\n_rebuild_tensor_v2\n", b"Vx\nI1\n")],
)
def test_build_on_an_allowed_global_is_refused_and_changes_nothing(tmp_path, target, state):
    """Case 10: BUILD rewrote FloatStorage's dtype for every later load."""
    evil = tmp_path / "evil.pth"
    body = target + b"(" + state + b"db0" + _pth_body(6, (6,), (1,))
    evil.write_bytes(_legacy_pth(body, 6, np.arange(6, dtype="<f4").tobytes()))
    with pytest.raises(UnsafeCheckpointError, match="BUILD"):
        load_state_dict(evil)
    state_dict = load_state_dict(_legacy_file(tmp_path / "good.pth", TENSORS, STORAGES))
    assert state_dict["matrix"].dtype == np.float32


def test_a_float_tiff_holding_nan_is_refused(tmp_path):
    """Case 11: a NaN feature row, without error."""
    values = np.full((16, 16), 100.0, np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values).save(tmp_path / "nan.tif")
    with pytest.raises(ImageLoadError, match=r"nan\.tif.*NaN"):
        _inputs.as_images([str(tmp_path / "nan.tif")]).take(np.arange(1), (32, 32))


def test_a_float_tiff_follows_the_rules_of_float_arrays(tmp_path):
    """Case 12: values in -5...5 passed (an array would be refused)."""
    wide = np.linspace(-5, 5, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    with pytest.raises(ImageLoadError, match=r"wide\.tif.*pixel values in \[-5, 5\]"):
        _inputs.as_images([str(tmp_path / "wide.tif")]).take(np.arange(1), (16, 16))
    unit = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    from_file, _ = _inputs.as_images([str(tmp_path / "unit.tif")]).take(np.arange(1), (16, 16))
    from_array, _ = _inputs.as_images(unit[np.newaxis]).take(np.arange(1), (16, 16))
    np.testing.assert_allclose(from_file, from_array, rtol=1e-6)


def test_a_32_bit_integer_tiff_is_not_scaled_by_its_own_maximum(tmp_path):
    """Case 13: two 32-bit TIFFs of one scene differed (each scaled by its maximum)."""
    scene = np.arange(256, dtype=np.int32).reshape(16, 16)
    Image.fromarray(scene).save(tmp_path / "scene.tif")
    Image.fromarray(scene[:8].copy()).save(tmp_path / "half.tif")  # a lower maximum
    images = _inputs.as_images([str(tmp_path / "scene.tif"), str(tmp_path / "half.tif")])
    whole = images._load_one(0, None)
    half = images._load_one(1, None)
    np.testing.assert_array_equal(whole[:8], half)
    np.testing.assert_array_equal(whole[..., 0], scene)  # integer pixels, as an array's
    Image.fromarray(scene * 1000).save(tmp_path / "wide.tif")
    with pytest.raises(ImageLoadError, match=r"wide\.tif.*expected 0-255"):
        _inputs.as_images([str(tmp_path / "wide.tif")]).take(np.arange(1), (16, 16))


def test_a_forged_cache_shard_is_not_served(tmp_path, empty_cache):
    """Case 14: forged shards were served as features."""
    X = make_images(3)
    folder = tmp_path / "features"
    expected = CNNFeatureExtractor(**COMMON, memory=folder).fit(X).transform(X)
    for shard in folder.rglob("*.npz"):
        arrays = cache.read_shard(str(shard))
        np.savez(shard, keys=arrays["keys"], features=arrays["features"] + 1,
                 checksum=arrays["checksum"])
    cache.clear()
    with pytest.warns(UserWarning, match="does not match its checksum"):
        got = CNNFeatureExtractor(**COMMON, memory=folder).fit(X).transform(X)
    np.testing.assert_array_equal(got, expected)
    assert "What the disk cache trusts" in cache.__doc__


def test_a_world_writable_cache_folder_is_warned_about(tmp_path, empty_cache):
    X = make_images(2)
    folder = tmp_path / "features"
    CNNFeatureExtractor(**COMMON, memory=folder).fit(X).transform(X)
    os.chmod(folder / "sktransfer-features-v2", 0o777)
    cache.clear()
    with pytest.warns(UserWarning, match="can be written by any user"):
        CNNFeatureExtractor(**COMMON, memory=folder).fit(X[::-1]).transform(X[::-1])


def test_an_empty_memory_path_is_refused(tmp_path, monkeypatch):
    """Case 15: memory='' wrote the cache into the working folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="memory='' is an empty path; use None"):
        CNNFeatureExtractor(**COMMON, memory="").fit(make_images(2))
    assert os.listdir(tmp_path) == []


def test_labels_mixing_strings_and_numbers_are_refused():
    """Case 16: y = [1, "1", "b"] merged the classes 1 and "1"."""
    with pytest.raises(ValueError, match=r"mixes string labels \('1'\) with labels of another type \(1 of type int\)"):
        FineTunedCNNClassifier(**COMMON).fit(make_images(3), [1, "1", "b"])


def test_predict_output_keeps_a_path_with_a_newline_on_one_row(saved_classifier, tmp_path, capsys):
    """Case 17: a path with a newline was written as two broken rows."""
    _, model, images = saved_classifier
    folder = tmp_path / "odd\nname"
    folder.mkdir()
    paths = save_pngs(images[:2], folder)
    assert main(["predict", model, *paths, "--no-progress"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out), delimiter="\t"))
    assert [row[0] for row in rows] == paths and all(len(row) == 2 for row in rows)


# --- unclear errors ------------------------------------------------------------


def _shard(path, keys, features):
    from sktransfer.cache import _checksum

    np.savez(path, keys=keys, features=features, checksum=_checksum(keys, features))


def test_a_shard_whose_key_and_feature_counts_differ_is_a_clear_error(tmp_path):
    """Case 18: IndexError."""
    path = tmp_path / "a.npz"
    _shard(path, np.zeros((3, 16), np.uint8), np.zeros((2, 8), np.float32))
    with pytest.raises(CorruptFileError, match=r"a\.npz' has 3 keys but features of shape \(2, 8\)"):
        cache.read_shard(str(path))


def test_a_shard_with_0d_keys_is_a_clear_error(tmp_path):
    """Case 19: TypeError."""
    path = tmp_path / "b.npz"
    np.savez(path, keys=np.uint8(3), features=np.zeros((1, 8), np.float32),
             checksum=np.zeros(16, np.uint8))
    with pytest.raises(CorruptFileError, match=r"b\.npz' has keys of shape \(\)"):
        cache.read_shard(str(path), features=False)


def test_a_crafted_keras_file_is_a_clear_error_naming_it(tmp_path):
    """Case 20: KeyError: 'name'."""
    path = tmp_path / "crafted.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        archive.writestr("config.json", json.dumps({"module": "keras", "class_name": "Functional", "config": {}}))
    with pytest.raises(CorruptFileError, match=r"crafted\.keras.*could not be loaded as a Keras model"):
        CNNFeatureExtractor(backbone=str(path), weights=None, input_size=32).fit(make_images(1))


def test_a_text_file_named_keras_is_not_called_missing(tmp_path):
    """Case 21: "File not found" for a file that exists."""
    path = tmp_path / "notes.keras"
    path.write_text("hello")
    with pytest.raises(CorruptFileError, match=r"notes\.keras.*is not a Keras model file.*b'hello'"):
        CNNFeatureExtractor(backbone=str(path), weights=None, input_size=32).fit(make_images(1))


def test_a_bad_h5_file_is_an_error_naming_it(tmp_path):
    """Case 22: OSError without the path."""
    path = tmp_path / "broken.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(CorruptFileError, match=r"broken\.h5"):
        CNNFeatureExtractor(backbone=str(path), weights=None, input_size=32).fit(make_images(1))


def test_cli_predict_with_a_plain_logistic_regression_says_it_takes_no_images(tmp_path, capsys):
    """Case 23: "could not convert string to float"."""
    from sklearn.linear_model import LogisticRegression

    model = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression().fit([[0], [1]], [0, 1]), model)
    png = save_pngs(make_images(1), tmp_path)[0]
    assert main(["predict", str(model), png, "--allow-pickle"]) == 2
    err = capsys.readouterr().err
    assert "LogisticRegression, which does not take images" in err
    assert "runs any code it holds" in err  # said when the pickle is loaded


# --- misleading ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["array", "bag", "series"])
def test_dask_errors_and_warnings_give_the_index_in_the_collection(kind, tmp_path):
    """Case 24: the index inside the partition."""
    pytest.importorskip("dask")
    paths = save_pngs(make_images(6), tmp_path)
    paths[5] = str(tmp_path / "missing.png")

    def collection():
        if kind == "array":
            import dask.array as da

            return da.from_array(np.array(paths, dtype=object), chunks=2)
        if kind == "bag":
            import dask.bag as db

            return db.from_sequence(paths, npartitions=3)
        import dask.dataframe as dd
        import pandas as pd

        return dd.from_pandas(pd.Series(paths), npartitions=3)

    extractor = CNNFeatureExtractor(**COMMON).fit(paths[:1])
    with pytest.raises(ImageLoadError, match="Image file 5 of X does not exist"):
        np.asarray(extractor.transform(collection()).compute(scheduler="sync"))
    extractor.set_params(on_error="nan")
    with pytest.warns(UserWarning, match=r"1 image\(s\) could not be read; their features are NaN: 5 \("):
        extractor.transform(collection()).compute(scheduler="sync")


def test_a_folder_given_as_an_image_says_it_is_a_folder(tmp_path):
    """Case 25: "does not exist"."""
    (tmp_path / "photos").mkdir()
    with pytest.raises(ImageLoadError, match="Image file 0 of X is a folder, not an image file"):
        _inputs.as_images([str(tmp_path / "photos")])


def test_a_full_disk_with_cache_false_does_not_claim_features_are_kept(tmp_path, monkeypatch, empty_cache):
    """Case 26: the warning said features were "kept in memory"."""

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    X = make_images(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CNNFeatureExtractor(**COMMON, memory=tmp_path / "a", cache=False).fit(X).transform(X)
        CNNFeatureExtractor(**COMMON, memory=tmp_path / "b", cache=True).fit(X).transform(X)
    messages = [str(w.message) for w in caught if "disk cache" in str(w.message)]
    assert len(messages) == 2
    assert "kept in memory" not in messages[0] and "computed again" in messages[0]
    assert "kept in memory" in messages[1]


def test_cached_features_are_served_whatever_the_batch(empty_cache):
    """Case 27: cache.py claimed the forward pass is batch-invariant; it is not
    (up to 6e-6 apart), and the docs now say so: the cache serves the floats
    first computed, whatever the batch of later calls."""
    X = make_images(5)
    first = CNNFeatureExtractor(**COMMON, batch_size=1).fit(X).transform(X)
    again = CNNFeatureExtractor(**COMMON, batch_size=4).fit(X).transform(X)
    np.testing.assert_array_equal(first, again)
    assert "differ in the last bits" in cache.__doc__
    assert "identically whatever the batch" not in cache.__doc__


def test_every_refusal_is_an_sktransfer_error():
    for error in (CorruptFileError, UnsafeFileError, ImageLoadError, UnsafeCheckpointError):
        assert issubclass(error, SktransferError) and issubclass(error, ValueError)
