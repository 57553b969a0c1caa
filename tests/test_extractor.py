import pickle

import joblib
import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sktransfer import CNNFeatureExtractor, backbones
from sktransfer.exceptions import ImageLoadError, WeightsUnavailableError

from .conftest import SIZE, he_initialize, make_images


def extractor(**params):
    defaults = dict(backbone="mobilenet_v2", weights=None, input_size=SIZE)
    return CNNFeatureExtractor(**{**defaults, **params})


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A fixed set of MobileNetV2 weights, so a reference can use the same."""
    model = he_initialize(
        keras.applications.MobileNetV2(
            input_shape=(SIZE, SIZE, 3), include_top=False, weights=None
        )
    )
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_32.weights.h5"
    model.save_weights(path)
    return model, str(path)


def reference_features(model, images, layer_name, pool):
    """The hand-written recipe: truncate, preprocess_input, predict, pool."""
    truncated = keras.Model(model.input, model.get_layer(layer_name).output)
    x = keras.applications.mobilenet_v2.preprocess_input(images.astype("float32"))
    maps = truncated.predict(x, verbose=0)
    if pool == "avg":
        return maps.mean(axis=(1, 2))
    if pool == "max":
        return maps.max(axis=(1, 2))
    return maps.reshape(len(maps), -1)


@pytest.mark.parametrize("layer", [-1, -2, -3, "block_3_expand_relu"])
@pytest.mark.parametrize("pooling", ["avg", "max", "flatten"])
def test_features_equal_hand_written_keras(images, weights_file, layer, pooling):
    model, path = weights_file
    ext = extractor(weights=path, layer=layer, pooling=pooling).fit(images)
    features = ext.transform(images)
    expected = reference_features(model, images, ext.layer_names_[0], pooling)
    assert features.dtype == np.float32
    assert features.shape == expected.shape == (len(images), ext.n_features_out_)
    # the comparison is not between near-equal numbers
    assert expected.std(axis=0).mean() > 1e-2
    np.testing.assert_allclose(features, expected, atol=1e-4 * max(1, abs(expected).max()))


def test_avgmax_grid_and_multi_layer_shapes(images):
    blocks = backbones.block_info("mobilenet_v2", input_size=SIZE)
    c1, c2 = blocks[-1].channels, blocks[-2].channels
    assert extractor(pooling="avgmax").fit_transform(images).shape == (12, 2 * c1)
    assert extractor(pooling=2).fit_transform(images).shape == (12, 4 * c1)
    both = extractor(layer=[-1, -2]).fit(images)
    assert both.transform(images).shape == (12, c1 + c2)
    assert both.layer_names_ == [blocks[-1].name, blocks[-2].name]


def test_grid_pooling_is_cell_averages(images, weights_file):
    model, path = weights_file
    ext = extractor(weights=path, layer=-3, pooling=2).fit(images)
    truncated = keras.Model(model.input, model.get_layer(ext.layer_names_[0]).output)
    maps = truncated.predict(
        keras.applications.mobilenet_v2.preprocess_input(images.astype("float32")),
        verbose=0,
    )
    half = maps.shape[1] // 2
    top_left = maps[:, :half, :half].mean(axis=(1, 2))
    bottom_right = maps[:, half:, half:].mean(axis=(1, 2))
    c = maps.shape[-1]
    features = ext.transform(images)
    np.testing.assert_allclose(features[:, :c], top_left, atol=1e-4)
    np.testing.assert_allclose(features[:, 3 * c :], bottom_right, atol=1e-4)
    names = ext.get_feature_names_out()
    assert names[0] == f"mobilenetv2__{ext.layer_names_[0]}__grid0x0__ch0"
    assert names[3 * c] == f"mobilenetv2__{ext.layer_names_[0]}__grid1x1__ch0"


def test_arrays_and_png_files_give_the_same_features(images, image_folder):
    _, paths = image_folder
    ext = extractor(layer=-2).fit(paths)
    np.testing.assert_array_equal(ext.transform(paths), ext.transform(images))


def test_resized_inputs_agree_across_containers(image_folder):
    _, paths = image_folder
    from PIL import Image

    pil = [Image.open(p) for p in paths]
    ext = extractor(input_size=48, layer=-2).fit(paths)
    np.testing.assert_array_equal(ext.transform(paths), ext.transform(pil))


@pytest.mark.parametrize("as_paths", [False, True])
def test_grid_search_in_a_pipeline(images, labels, image_folder, as_paths):
    X = image_folder[1] if as_paths else images
    pipe = make_pipeline(extractor(), LogisticRegression(max_iter=200))
    search = GridSearchCV(
        pipe,
        {
            "cnnfeatureextractor__layer": [-1, -2, -3],
            "cnnfeatureextractor__pooling": ["avg", 2],
        },
        cv=2,
    )
    search.fit(X, labels)
    assert len(search.cv_results_["params"]) == 6
    assert set(search.predict(X)) <= set(labels)


def test_feature_names_and_pandas_output(images):
    ext = extractor(layer=[-1, -2], pooling="avgmax").fit(images)
    names = ext.get_feature_names_out()
    assert len(names) == ext.n_features_out_ == len(set(names))
    assert names[0] == "mobilenetv2__out_relu__avg__ch0"
    assert names[1280] == "mobilenetv2__out_relu__max__ch0"
    frame = ext.set_output(transform="pandas").transform(images)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(names)


def test_pickle_clone_and_joblib_carry_no_keras_objects(images, tmp_path):
    ext = extractor(layer=-2)
    assert len(pickle.dumps(ext)) < 2000
    fitted = clone(ext).fit(images)
    expected = fitted.transform(images)
    blob = pickle.dumps(fitted)
    assert len(blob) < 4000  # parameters and names only, no network
    np.testing.assert_array_equal(pickle.loads(blob).transform(images), expected)
    joblib.dump(fitted, tmp_path / "ext.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "ext.joblib").transform(images), expected)
    assert clone(fitted).get_params() == ext.get_params()


def test_clones_share_one_built_network(images):
    from sktransfer import _network

    _network.clear_cache()
    first = extractor().fit(images)
    second = clone(first).fit(images)
    assert _network.load_network("mobilenet_v2", None, (SIZE, SIZE)) is _network.load_network(
        "MobileNetV2", None, (SIZE, SIZE)
    )
    assert len(_network._cache) == 1
    np.testing.assert_array_equal(first.transform(images), second.transform(images))


def test_keras_model_backbone_is_used_and_not_modified(images, tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="c2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    weights_before = [w.copy() for w in model.get_weights()]
    assert backbones.blocks(model) == ["r1", "r2"]
    ext = CNNFeatureExtractor(backbone=model, layer=0).fit(images)
    expected = keras.Model(inputs, model.get_layer("r1").output).predict(
        images.astype("float32"), verbose=0
    ).mean(axis=(1, 2))
    np.testing.assert_allclose(ext.transform(images), expected, atol=1e-4)
    # weights from a file are loaded into a copy, never into the user's model
    other = keras.models.clone_model(model)
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    CNNFeatureExtractor(backbone=model, weights=str(path)).fit(images).transform(images)
    for before, after in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    # a saved model file works as a backbone too
    model.save(tmp_path / "model.keras")
    from_file = CNNFeatureExtractor(backbone=str(tmp_path / "model.keras"), layer=0)
    np.testing.assert_allclose(from_file.fit(images).transform(images), expected, atol=1e-4)


def test_flexible_size_model_needs_input_size(images):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="c")(inputs)
    model = keras.Model(inputs, keras.layers.ReLU(name="r")(x))
    with pytest.raises(ValueError, match="input_size=\\(height, width\\) must be given"):
        CNNFeatureExtractor(backbone=model).fit(images)
    ext = CNNFeatureExtractor(backbone=model, input_size=SIZE).fit(images)
    assert ext.transform(images).shape == (12, 4)


def test_on_error_nan(images, image_folder):
    _, paths = image_folder
    broken = paths[:3] + ["/no/such.png"]
    with pytest.raises(ImageLoadError, match="file 3 of X does not exist"):
        extractor().fit(paths).transform(broken)
    ext = extractor(on_error="nan").fit(paths)
    with pytest.warns(UserWarning, match="1 image\\(s\\) could not be read.*3 \\('/no/such.png'\\)"):
        features = ext.transform(broken)
    assert np.isnan(features[3]).all() and np.isfinite(features[:3]).all()
    np.testing.assert_array_equal(features[:3], ext.transform(paths[:3]))


@pytest.mark.parametrize(
    "params, error, message",
    [
        (dict(layer=7), ValueError, "layer=7 is out of range.*valid indices are -5 to 4"),
        (dict(layer="nope"), ValueError, "no layer of that name.*out_relu"),
        (dict(layer=[]), ValueError, "layer=\\[\\] is empty"),
        (dict(layer=1.5), ValueError, "layer"),
        (dict(pooling="mean"), ValueError, "pooling"),
        (dict(pooling=0), ValueError, "pooling"),
        (dict(backbone="resnet5"), ValueError, "Did you mean 'ResNet50'"),
        (dict(backbone="/no/model.keras"), FileNotFoundError, "no such model file"),
        (dict(weights="/no/weights.h5"), FileNotFoundError, "no such file"),
        (dict(input_size=(32,)), ValueError, "input_size"),
        (dict(input_size=0), ValueError, "input_size"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(on_error="skip"), ValueError, "on_error"),
        (dict(backbone="inception_v3", input_size=32), ValueError, "InceptionV3 cannot be built with input_size=\\(32, 32\\)"),
    ],
)
def test_bad_parameters_get_clear_errors(images, params, error, message):
    with pytest.raises(error, match=message):
        extractor(**params).fit(images)


def test_case_and_separator_insensitive_names(images):
    for name in ["MobileNetV2", "mobilenetv2", "mobilenet_v2", "MOBILENET-V2"]:
        assert extractor(backbone=name).fit(images).backbone_name_ == "mobilenetv2"


def test_offline_imagenet_error_names_file_and_folder(images, monkeypatch):
    from keras.src.utils import file_utils

    def no_network(fname, origin, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        extractor(weights="imagenet", input_size=None).fit(images)
    message = str(info.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in message
    assert ".keras" in message and "models" in message
    assert "weights='/path/to/that/file'" in message
    assert isinstance(info.value, OSError)


def test_verbose_shows_progress(images, capsys):
    # The bar counts the images sent through the network: none once cached.
    extractor(verbose=1, cache=False).fit(images).transform(images)
    assert "12/12" in capsys.readouterr().out


def test_larger_images_and_small_batches(images):
    big = make_images(5, size=70, seed=3)
    ext = extractor(batch_size=2, layer=-2).fit(big)
    features = ext.transform(big)
    assert features.shape == (5, ext.n_features_out_)
    np.testing.assert_allclose(features, extractor(batch_size=5, layer=-2).fit(big).transform(big), atol=1e-5)


def test_mixed_precision_gives_float32_features_close_to_float32(images, weights_file):
    _, path = weights_file
    full = extractor(weights=path, layer=-3).fit(images).transform(images)
    mixed = extractor(weights=path, layer=-3, precision="mixed_bfloat16").fit(images)
    features = mixed.transform(images)
    assert features.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa: agreement to a few percent
    np.testing.assert_allclose(features, full, rtol=0.1, atol=0.1 * np.abs(full).mean())


def test_jit_compile_gives_the_same_features(images):
    plain = extractor(layer=-2).fit(images).transform(images)
    np.testing.assert_allclose(
        extractor(layer=-2, jit_compile=True).fit(images).transform(images), plain, atol=1e-4
    )


def test_random_weights_are_the_same_after_a_rebuild(images):
    import random

    from sktransfer import _network

    first = extractor(layer=-2).fit(images).transform(images)
    _network.clear_cache()
    before = random.getstate()
    second = extractor(layer=-2).fit(images).transform(images)
    np.testing.assert_array_equal(first, second)
    assert random.getstate() == before  # the caller's random state is untouched
