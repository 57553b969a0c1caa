"""The feature cache: never a wrong or stale row, identical floats, one pass."""

from __future__ import annotations

import os
import shutil

import joblib
import numpy as np
import pytest

from sktransfer import CNNFeatureExtractor, FineTunedCNNClassifier, cache
from sktransfer import _features

from .conftest import make_images, save_pngs

COMMON = dict(backbone="mobilenet_v2", weights=None, input_size=32)


pytestmark = pytest.mark.usefixtures("empty_cache")


@pytest.fixture
def passes(monkeypatch):
    """Counts the images sent through the network by the feature cache."""
    counted = []
    original = _features._inputs.map_batches

    def counting(function, images, *args, indices=None, **kwargs):
        counted.append(len(images) if indices is None else len(indices))
        return original(function, images, *args, indices=indices, **kwargs)

    monkeypatch.setattr(_features._inputs, "map_batches", counting)
    return counted


def reference(X, **params):
    return CNNFeatureExtractor(**{**COMMON, **params, "cache": False}).fit(X).transform(X)


@pytest.mark.parametrize(
    "layer, pooling", [(-1, "avg"), (-2, "avgmax"), ([-1, -3], "max"), (-2, 2), (0, "flatten")]
)
def test_cached_features_are_identical_under_permutation_and_slicing(layer, pooling):
    X = make_images(20)
    expected = reference(X, layer=layer, pooling=pooling)
    extractor = CNNFeatureExtractor(**COMMON, layer=layer, pooling=pooling).fit(X)
    rng = np.random.default_rng(0)
    order = rng.permutation(20)
    np.testing.assert_array_equal(extractor.transform(X[order[:7]]), expected[order[:7]])
    np.testing.assert_array_equal(extractor.transform(X), expected)  # partly cached
    np.testing.assert_array_equal(extractor.transform(X[order]), expected[order])
    np.testing.assert_array_equal(extractor.transform(X[5:9]), expected[5:9])
    np.testing.assert_array_equal(extractor.transform(X[::-3]), expected[::-3])
    assert cache.info()["hits"] > 0


def test_modified_images_are_recomputed(passes):
    X = make_images(10)
    extractor = CNNFeatureExtractor(**COMMON).fit(X)
    before = extractor.transform(X)
    X[3] = 255 - X[3]  # in place: same object, new pixels
    passes.clear()
    after = extractor.transform(X)
    assert passes == [1]
    np.testing.assert_array_equal(after, reference(X))
    assert not np.array_equal(after[3], before[3])
    np.testing.assert_array_equal(np.delete(after, 3, 0), np.delete(before, 3, 0))


def test_float_scale_is_part_of_the_key():
    # The same float values mean 0-255 pixels in one array and 0-1 in another.
    X = make_images(4).astype(np.float32) / 255
    dark = X.copy()
    dark[0, 0, 0, 0] = 2.0  # one value above 1: the whole array is read as 0-255
    extractor = CNNFeatureExtractor(**COMMON).fit(X)
    extractor.transform(X)
    np.testing.assert_array_equal(extractor.transform(dark)[1:], reference(dark)[1:])


def test_everything_that_changes_features_changes_the_key():
    X = make_images(6)
    variants = [
        dict(),
        dict(input_size=48),
        dict(preprocessing="torch"),
        dict(preprocessing=None),
        dict(layer=-2),
        dict(pooling="max"),
        dict(jit_compile=True),
    ]
    for params in variants:
        got = CNNFeatureExtractor(**{**COMMON, **params}).fit(X).transform(X)
        np.testing.assert_array_equal(got, reference(X, **params), err_msg=str(params))


def test_a_keras_model_trained_in_place_gets_fresh_features(passes):
    import keras

    X = make_images(6)
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    extractor = CNNFeatureExtractor(model, input_size=32).fit(X)
    before = extractor.transform(X)
    kernel = model.get_layer("Conv1")
    kernel.set_weights([w * 0.5 for w in kernel.get_weights()])
    after = extractor.transform(X)
    assert len(passes) == 2
    assert not np.allclose(before, after, rtol=1e-3, atol=0)
    np.testing.assert_array_equal(
        after, CNNFeatureExtractor(model, input_size=32, cache=False).fit(X).transform(X)
    )


def test_files_by_metadata_and_by_content(tmp_path, passes):
    X = make_images(6)
    paths = save_pngs(X, tmp_path)
    expected = reference(X)
    by_metadata = CNNFeatureExtractor(**COMMON).fit(paths)
    np.testing.assert_array_equal(by_metadata.transform(paths), expected)
    # Rewriting a file changes its modification time: recomputed.
    save_pngs(X[::-1], tmp_path)
    os.utime(paths[0], ns=(1, 10**18))
    np.testing.assert_array_equal(by_metadata.transform(paths), reference(X[::-1]))

    # By content, a copy under another name is recognised without a pass.
    by_content = CNNFeatureExtractor(**COMMON, fingerprint="content").fit(paths)
    by_content.transform(paths)
    copies = []
    for index, path in enumerate(paths):
        copies.append(str(tmp_path / f"copy{index}.png"))
        shutil.copy(path, copies[-1])
    expected = reference(X[::-1])
    passes.clear()
    np.testing.assert_array_equal(by_content.transform(copies), expected)
    assert passes == []


def test_unreadable_files_are_never_cached(tmp_path):
    X = make_images(3)
    paths = save_pngs(X, tmp_path)
    later = str(tmp_path / "later.png")
    extractor = CNNFeatureExtractor(**COMMON, on_error="nan").fit(paths)
    with pytest.warns(UserWarning, match="could not be read"):
        first = extractor.transform([*paths, later])
    assert np.isnan(first[3]).all()
    shutil.copy(paths[0], later)
    np.testing.assert_array_equal(extractor.transform([*paths, later])[3], first[0])


def test_a_grid_over_layer_costs_one_pass(passes):
    from sktransfer import _network

    _network.clear_cache()  # forget the cut depths earlier tests asked for
    X = make_images(12)
    for layer in [-3, -1, -2, -4, 0]:
        for pooling in ["avg", "max", "avgmax"]:
            CNNFeatureExtractor(**COMMON, layer=layer, pooling=pooling).fit(X).transform(X)
    # The first pass stops at layer -3; the second cut depth makes the next
    # pass go to the top, keeping every block: no pass after that.
    assert passes == [12, 12]


def test_disk_cache_survives_the_process_cache_and_is_shared(tmp_path, passes):
    X = make_images(8)
    expected = reference(X)
    extractor = CNNFeatureExtractor(**COMMON, memory=tmp_path / "features").fit(X)
    np.testing.assert_array_equal(extractor.transform(X), expected)
    cache.clear()
    passes.clear()
    np.testing.assert_array_equal(extractor.transform(X[::-1]), expected[::-1])
    assert passes == []
    # A joblib.Memory works as the location.
    joblib_memory = joblib.Memory(tmp_path / "features", verbose=0)
    cache.clear()
    same = CNNFeatureExtractor(**COMMON, memory=joblib_memory).fit(X).transform(X)
    np.testing.assert_array_equal(same, expected)
    assert passes == []


def _transform_in_worker(folder, start):
    X = make_images(24)
    extractor = CNNFeatureExtractor(**COMMON, memory=folder, batch_size=4).fit(X)
    return extractor.transform(X[start:])


def test_concurrent_workers_share_one_disk_cache(tmp_path, passes):
    folder = str(tmp_path / "features")
    results = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_transform_in_worker)(folder, start) for start in (0, 6)
    )
    X = make_images(24)
    expected = reference(X)
    np.testing.assert_array_equal(results[0], expected)
    np.testing.assert_array_equal(results[1], expected[6:])
    # This process finds every row on disk.
    passes.clear()
    got = CNNFeatureExtractor(**COMMON, memory=folder).fit(X).transform(X)
    np.testing.assert_array_equal(got, expected)
    assert passes == []


def test_memory_limit_is_respected():
    X = make_images(10)
    limit = cache.info()["max_bytes"]
    cache.set_max_bytes(20_000)
    try:
        extractor = CNNFeatureExtractor(**COMMON).fit(X)
        np.testing.assert_array_equal(extractor.transform(X), reference(X))
        assert 0 < cache.info()["bytes"] <= 20_000
        np.testing.assert_array_equal(extractor.transform(X), reference(X))
    finally:
        cache.set_max_bytes(limit)
    with pytest.raises(ValueError, match="max_bytes"):
        cache.set_max_bytes(-1)


def test_cache_off_runs_the_network_every_time(passes):
    X = make_images(5)
    extractor = CNNFeatureExtractor(**COMMON, cache=False).fit(X)
    extractor.transform(X)
    extractor.transform(X)
    assert passes == [5, 5]
    assert cache.info()["rows"] == 0


def test_bad_memory_gets_a_clear_error(tmp_path):
    X = make_images(2)
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        CNNFeatureExtractor(**COMMON, memory=file).fit(X)


def test_stage_one_trains_on_the_extractors_cached_features(passes):
    X = make_images(12)
    y = np.array(["a", "b", "c"] * 4)
    params = dict(COMMON, layer=-2, pooling="avg")
    features = CNNFeatureExtractor(**params).fit(X).transform(X)
    passes.clear()
    clf = FineTunedCNNClassifier(
        **params, trainable_blocks=0, augment=False, head_epochs=2,
        early_stopping=False, dropout=0.0, random_state=0,
    ).fit(X, y)
    assert passes == []  # stage 1 read every feature from the cache
    assert len(clf.history_["head"]["loss"]) == 2
    # The trained top is the classifier's: its softmax of the cached
    # features is predict_proba.
    weights, bias = clf.model_.get_layer("logits").get_weights()
    logits = features @ weights + bias
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-4, atol=1e-5)


def test_augment_head_chooses_the_stage_one_route(passes):
    X = make_images(12)
    y = np.array(["a", "b"] * 6)
    common = dict(
        COMMON, head_epochs=1, epochs=1, early_stopping=False, random_state=0,
    )
    # Stage 2 follows: the top trains on cached features, then augmentation.
    clf = FineTunedCNNClassifier(**common, trainable_blocks=1, augment=True).fit(X, y)
    assert passes == [12] and "fine_tune" in clf.history_
    passes.clear()
    # No stage 2: augmentation applies in stage 1, through the network.
    FineTunedCNNClassifier(**common, trainable_blocks=0, augment=True).fit(X, y)
    assert passes == []
    FineTunedCNNClassifier(
        **common, trainable_blocks=1, augment=True, augment_head=True
    ).fit(X, y)
    assert passes == []


def test_stage_two_without_augmentation_trains_on_cached_frozen_maps(passes):
    X = make_images(16)
    y = np.array(["a", "b"] * 8)
    params = dict(
        COMMON, layer=-1, trainable_blocks=2, augment=False, head_epochs=2, epochs=2,
        early_stopping=False, random_state=0,
    )
    clf = FineTunedCNNClassifier(**params).fit(X, y)
    # One pass for the pooled features (stage 1), one for the maps below
    # the two unfrozen blocks (stage 2); none per epoch.
    assert passes == [16, 16]
    assert len(clf.history_["fine_tune"]["loss"]) == 2
    # The same training through the whole network (no room in the cache
    # for the maps) gives the same model.
    limit = cache.info()["max_bytes"]
    cache.set_max_bytes(0)
    try:
        through_network = FineTunedCNNClassifier(**params).fit(X, y)
    finally:
        cache.set_max_bytes(limit)
    np.testing.assert_allclose(
        clf.predict_proba(X), through_network.predict_proba(X), rtol=1e-3, atol=1e-4
    )


def test_callable_preprocessing_is_never_cached(passes):
    X = make_images(6)
    extractor = CNNFeatureExtractor(**COMMON, preprocessing=lambda x: x / 127.5 - 1).fit(X)
    extractor.transform(X)
    extractor.transform(X)
    assert passes == [6, 6]


def test_palette_images_with_other_palettes_get_other_features():
    from PIL import Image

    indices = Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32) % 4, "L")
    first = indices.convert("P")
    second = indices.convert("P")
    first.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    second.putpalette([255, 255, 255, 0, 0, 255, 0, 255, 255, 255, 0, 255] + [0] * 756)
    extractor = CNNFeatureExtractor(**COMMON).fit([first])
    got = extractor.transform([first, second])
    assert not np.array_equal(got[0], got[1])
    np.testing.assert_array_equal(got[1], extractor.transform([second])[0])


def test_a_damaged_shard_is_ignored(tmp_path, passes):
    X = make_images(6)
    folder = tmp_path / "features"
    expected = CNNFeatureExtractor(**COMMON, memory=folder).fit(X).transform(X)
    for part in (folder / "sktransfer-features-v2").iterdir():
        (part / "0damaged.npz").write_bytes(b"")  # a shard cut short by a crash
        (part / "1damaged.npz").write_bytes(b"PK\x03\x04 truncated")
    cache.clear()
    passes.clear()
    got = CNNFeatureExtractor(**COMMON, memory=folder).fit(X).transform(X)
    np.testing.assert_array_equal(got, expected)
    assert passes == []


def test_memory_path_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    X = make_images(3)
    CNNFeatureExtractor(**COMMON, memory="~/features").fit(X).transform(X)
    assert (tmp_path / "features" / "sktransfer-features-v2").is_dir()


def test_a_failing_disk_cache_warns_and_returns_the_features(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    X = make_images(4)
    with pytest.warns(UserWarning, match="could not be written to the disk cache"):
        got = CNNFeatureExtractor(**COMMON, memory=tmp_path / "f", cache=False).fit(X).transform(X)
    # Two separate passes: oneDNN may sum in another order on a loaded machine
    # (seen: 1e-17 apart), so equal up to the last bits.
    np.testing.assert_allclose(got, reference(X), rtol=1e-6, atol=1e-9)
    assert not [p for p in (tmp_path / "f").rglob("*") if p.is_file()]


def test_an_augment_dict_with_everything_off_is_no_augmentation(passes):
    X = make_images(12)
    y = np.array(["a", "b"] * 6)
    FineTunedCNNClassifier(
        **COMMON, trainable_blocks=1, augment={"flip": False, "zoom": 0}, head_epochs=1,
        epochs=1, early_stopping=False, random_state=0,
    ).fit(X, y)
    assert passes == [12, 12]  # the features, then the frozen maps: no pass per epoch
