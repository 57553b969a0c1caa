"""Inference engines: the same features as TensorFlow, chosen and converted once.

The engines come with the ``fast`` and ``openvino`` extras (in ``test``);
tests that need one are skipped without it, and the path without the extras
is covered by faking their import away.
"""

from __future__ import annotations

import sys
import warnings

import keras
import numpy as np
import pytest

from sktransfer import CNNFeatureExtractor, _compiled, _engines, cache
from sktransfer._engines import Engine
from sktransfer._network import load_network

from .conftest import he_initialize, make_images

SIZE = 48
ENGINES = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            not _engines.installed(name), reason=f"extra [{_engines.EXTRAS[name]}]"
        ),
    )
    for name in ("onnxruntime", "openvino")
]
POOLINGS = ("avg", "max", "avgmax", "flatten", 2)


@pytest.fixture(scope="module")
def mobilenet():
    """A MobileNetV2 with weights that give features of order one."""
    return he_initialize(
        keras.applications.MobileNetV2(
            input_shape=(SIZE, SIZE, 3), include_top=False, weights=None
        )
    )


@pytest.fixture
def no_extras(monkeypatch):
    """The default install: no engine package can be imported."""
    for module in ("onnxruntime", "openvino", "tf2onnx", "onnx"):
        monkeypatch.setitem(sys.modules, module, None)


def backbone_of(name, mobilenet):
    return (mobilenet, None) if name == "mobilenet" else ("efficientnet_lite0", "imagenet")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "mobilenet"])
def test_every_pooling_and_cut_agrees_with_tensorflow(backbone, engine, mobilenet):
    """One converted function holds several cut points in every pooling."""
    network = load_network(*backbone_of(backbone, mobilenet), (SIZE, SIZE))
    layers = [network.blocks[i].name for i in (-1, -2, -4)]
    parts = [(layer, pooling) for layer in layers for pooling in POOLINGS]
    pixels = make_images(6, SIZE).astype(np.float32)
    expected = network.feature_function(parts, "auto", False)(pixels)
    function = network.feature_function(parts, "auto", False, Engine(engine))
    features = function(pixels)
    assert function.converted
    assert expected.std(axis=0).mean() > 1e-2  # not near-equal numbers
    assert features.dtype == np.float32 and features.shape == expected.shape
    # Within 1e-4 with pretrained weights; the He-initialised network's
    # larger activations carry the rounding further (2e-4 at values of 6).
    scale = 1 if backbone == "efficientnet_lite0" else abs(expected).max()
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4 * scale)
    # An image's features do not depend on its batch.
    np.testing.assert_array_equal(function(pixels[2:3]), features[2:3])


@pytest.mark.parametrize("engine", ENGINES)
def test_extractor_with_an_engine_agrees_with_tensorflow(engine, empty_cache):
    X = make_images(5, SIZE)
    params = dict(input_size=SIZE, layer=[-4, -5], pooling="avgmax", cache=False)
    expected = CNNFeatureExtractor(engine="tensorflow", **params).fit_transform(X)
    features = CNNFeatureExtractor(engine=engine, **params).fit_transform(X)
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4)


def test_auto_chooses_by_device_precision_and_what_is_installed(monkeypatch):
    import tensorflow as tf

    fastest = next((e for e in ("onnxruntime", "openvino") if _engines.installed(e)), None)
    auto = _engines.choose("auto")
    assert auto == (Engine(fastest, on_demand=True) if fastest else _engines.TENSORFLOW)
    assert _engines.choose("auto", "mixed_bfloat16").name == "tensorflow"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    assert _engines.choose("auto").name == "tensorflow"


def test_without_the_extras_auto_is_tensorflow_and_explicit_engines_name_the_extra(
    no_extras,
):
    assert _engines.choose("auto") == _engines.TENSORFLOW
    for engine, extra in (("onnxruntime", "fast"), ("openvino", "openvino")):
        with pytest.raises(ImportError, match=rf'pip install "sktransfer\[{extra}\]"'):
            CNNFeatureExtractor(engine=engine, input_size=SIZE).fit(make_images(2, SIZE))
    with pytest.raises(ImportError, match=r"sktransfer\[openvino\]"):
        _engines.choose("auto", "bfloat16")


def test_without_the_extras_features_are_tensorflows_exactly(no_extras, empty_cache):
    X = make_images(4, SIZE)
    extractor = CNNFeatureExtractor(input_size=SIZE, layer=-2, cache=False).fit(X)
    network = extractor._network()
    network.functions.clear()
    features = extractor.transform(X)
    expected = network.feature_function(
        [(extractor.layer_names_[0], "avg")], "auto", False
    )(X.astype(np.float32))
    np.testing.assert_array_equal(features, expected)
    assert not any(
        isinstance(f, _engines.EngineFunction) for f in network.functions.values()
    )


@pytest.mark.parametrize(
    "engine, precision, message",
    [
        ("onnxruntime", "mixed_float16", "run by TensorFlow only"),
        ("onnxruntime", "bfloat16", "run by engine='openvino'"),
        ("tensorflow", "bfloat16", "use precision='mixed_bfloat16'"),
        ("gpu", "float32", "engine"),
    ],
)
def test_an_engine_that_cannot_run_the_precision_gets_a_clear_error(
    engine, precision, message
):
    if engine == "onnxruntime" and not _engines.installed(engine):
        pytest.skip("extra [fast]")
    with pytest.raises(ValueError, match=message):
        CNNFeatureExtractor(
            engine=engine, precision=precision, input_size=SIZE
        ).fit(make_images(2, SIZE))


def test_auto_converts_once_tensorflow_has_run_as_long_as_converting_takes(
    monkeypatch, empty_cache
):
    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")
    monkeypatch.setattr(_engines, "_CPU_ORDER", ("onnxruntime",))
    monkeypatch.setattr(_engines, "CONVERSION_SECONDS", 0.0)
    monkeypatch.setattr(_engines, "CONVERSION_SECONDS_PER_WEIGHT", 1.0)  # never pays
    X = make_images(4, SIZE)
    params = dict(input_size=SIZE, layer=-5, cache=False, batch_size=2)
    extractor = CNNFeatureExtractor(**params).fit(X)
    extractor._network().functions.clear()
    expected = CNNFeatureExtractor(engine="tensorflow", **params).fit_transform(X)
    np.testing.assert_array_equal(extractor.transform(X), expected)
    (function,) = [
        f for f in extractor._network().functions.values()
        if isinstance(f, _engines.EngineFunction)
    ]
    assert not function.converted
    function._price = 0.0  # the rent is paid: the next batch converts
    features = extractor.transform(X)
    assert function.converted
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4)


def test_an_unconvertible_network_falls_back_under_auto_and_raises_when_named(
    monkeypatch, empty_cache
):
    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")

    def fail(model, input_size):
        raise _engines.ConversionError("The network 'x' could not be converted.")

    monkeypatch.setattr(_engines, "export_onnx", fail)
    monkeypatch.setattr(_engines, "CONVERSION_SECONDS", 0.0)
    monkeypatch.setattr(_engines, "CONVERSION_SECONDS_PER_WEIGHT", 0.0)
    monkeypatch.setattr(_engines, "_CPU_ORDER", ("onnxruntime",))
    X = make_images(3, SIZE)
    params = dict(input_size=SIZE, layer=-5, cache=False)
    load_network("efficientnet_lite0", "imagenet", (SIZE, SIZE)).functions.clear()
    with pytest.warns(UserWarning, match="could not be converted.*TensorFlow runs it"):
        features = CNNFeatureExtractor(**params).fit_transform(X)
    expected = CNNFeatureExtractor(engine="tensorflow", **params).fit_transform(X)
    np.testing.assert_array_equal(features, expected)
    with pytest.raises(_engines.ConversionError, match="could not be converted"):
        CNNFeatureExtractor(engine="onnxruntime", **params).fit_transform(X)


def test_float32_engines_share_cached_rows_and_bfloat16_has_its_own(empty_cache):
    from sktransfer import _features

    network = load_network("efficientnet_lite0", "imagenet", (SIZE, SIZE))
    tensorflow_key = _features.feature_key(network, "auto", False)
    assert _features.feature_key(network, "auto", False, Engine("onnxruntime")) == (
        tensorflow_key
    )
    bfloat16 = _features.feature_key(network, "auto", False, Engine("openvino", "bfloat16"))
    assert bfloat16 != tensorflow_key


@pytest.mark.parametrize("engine", ENGINES)
def test_converted_network_is_kept_in_memory_and_verified(
    engine, tmp_path, monkeypatch, empty_cache
):
    network = load_network("efficientnet_lite0", "imagenet", (SIZE, SIZE))
    params = dict(input_size=SIZE, layer=-4, engine=engine, cache=False, memory=tmp_path)

    def features(seed):
        """Features of new images (the disk's feature rows cannot serve them)."""
        X = make_images(3, SIZE, seed=seed)
        reference = {**params, "engine": "tensorflow", "memory": None}
        expected = CNNFeatureExtractor(**reference).fit_transform(X)
        features = CNNFeatureExtractor(**params).fit_transform(X)
        np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4)

    network.functions.clear()
    features(seed=1)
    (model_file,) = (tmp_path / "sktransfer-engines-v1").glob("*.onnx")
    assert model_file.with_suffix(".onnx.blake2b").exists()
    exports = []
    original = _engines.export_onnx
    monkeypatch.setattr(
        _engines, "export_onnx", lambda *a: exports.append(1) or original(*a)
    )

    # Another process (no function in memory) uses the file, converting nothing.
    network.functions.clear()
    features(seed=2)
    assert exports == []

    # A replaced or damaged file is never used: converted again, with a warning.
    network.functions.clear()
    model_file.write_bytes(model_file.read_bytes()[:-100] + bytes(100))
    with pytest.warns(UserWarning, match="does not match its checksum"):
        features(seed=3)
    assert exports == [1]
    network.functions.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: the next use is silent
        features(seed=4)
    assert exports == [1]


def test_a_keras_model_trained_in_place_is_converted_again(mobilenet, empty_cache):
    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")
    model = keras.models.clone_model(mobilenet)
    model.set_weights(mobilenet.get_weights())
    X = make_images(3, SIZE)
    params = dict(weights=None, layer=-5, engine="onnxruntime", cache=False)
    before = CNNFeatureExtractor(model, **params).fit_transform(X)
    model.set_weights([w * 1.5 for w in model.get_weights()])
    after = CNNFeatureExtractor(model, **params).fit_transform(X)
    expected = CNNFeatureExtractor(model, **{**params, "engine": "tensorflow"}).fit_transform(X)
    assert np.abs(after - before).max() > 1e-2
    np.testing.assert_allclose(after, expected, rtol=0, atol=1e-4)


def test_engine_rows_are_served_to_tensorflow_from_the_cache(empty_cache):
    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")
    X = make_images(3, SIZE)
    params = dict(input_size=SIZE, layer=-4)
    fast = CNNFeatureExtractor(engine="onnxruntime", **params).fit_transform(X)
    hits = cache.info()["hits"]
    served = CNNFeatureExtractor(engine="tensorflow", **params).fit_transform(X)
    assert cache.info()["hits"] > hits
    np.testing.assert_array_equal(served, fast)


def test_the_engine_extras_agree_with_tensorflows_pins():
    """What pip installed for the extras satisfies every pin, protobuf's first.

    TensorFlow and the engines share protobuf (and numpy): a release of one
    that moved its range would show here, in CI, rather than as a broken
    import at a user's.
    """
    import tomllib
    from importlib import metadata
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    ours = [Requirement(r) for extra in ("fast", "openvino") for r in extras[extra]]
    distributions = ["tensorflow", *(r.name for r in ours)]
    checked = 0
    for name in distributions:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # an extra not installed here: the skipped tests say so
        pins = [Requirement(r) for r in requires]
        for pin in [*pins, *(r for r in ours if r.name == name)]:
            if pin.marker is not None and not pin.marker.evaluate({"extra": ""}):
                continue
            if pin.name not in ("protobuf", "numpy") and pin not in ours:
                continue
            version = metadata.version(pin.name)
            assert pin.specifier.contains(version, prereleases=True), (
                f"{name} needs {pin}, but {pin.name} {version} is installed"
            )
            checked += 1
    assert checked


@pytest.fixture(scope="module")
def fitted_classifier():
    """A classifier whose stage 2 trains on the frozen network's maps."""
    from sktransfer import FineTunedCNNClassifier

    X = make_images(12, SIZE)
    clf = FineTunedCNNClassifier(
        input_size=SIZE, layer=-4, head_epochs=1, epochs=1, trainable_blocks=1,
        augment=False, early_stopping=False, random_state=0, engine="tensorflow",
    ).fit(X, np.array(["cat", "dog", "eel"] * 4))
    return clf, X


@pytest.mark.parametrize("engine", ENGINES)
def test_classifier_predictions_agree_with_tensorflow(engine, fitted_classifier):
    clf, X = fitted_classifier
    expected = clf.predict_proba(X), clf.decision_function(X), clf.predict(X)
    clf.set_params(engine=engine)
    try:
        proba, scores, labels = clf.predict_proba(X), clf.decision_function(X), clf.predict(X)
        assert all(
            f.converted for f in _compiled.functions_of(clf.model_).values()
            if isinstance(f, _engines.EngineFunction)
        )
    finally:
        clf.set_params(engine="tensorflow")
    np.testing.assert_allclose(proba, expected[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores, expected[1], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(labels, expected[2])


def test_classifier_converts_with_augmentation_layers_in_the_model(empty_cache):
    """Random layers are left out of the export: ONNX has none of their ops."""
    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")
    from sktransfer import FineTunedCNNClassifier

    X = make_images(6, SIZE)
    clf = FineTunedCNNClassifier(
        input_size=SIZE, layer=-5, head_epochs=1, epochs=0, early_stopping=False,
        random_state=0, engine="onnxruntime", augment={"rotation": 0.1, "zoom": 0.1},
    ).fit(X, [0, 1] * 3)
    proba = clf.predict_proba(X)
    expected = clf.set_params(engine="tensorflow").predict_proba(X)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-5)


def test_classifier_stages_take_the_frozen_networks_output_from_the_engine(
    monkeypatch, empty_cache
):
    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")
    from sktransfer import FineTunedCNNClassifier

    converted = []
    original = _engines.EngineFunction.__call__

    def spy(self, batch):
        out = original(self, batch)
        converted.append(self.converted)
        return out

    monkeypatch.setattr(_engines.EngineFunction, "__call__", spy)
    X = make_images(6, SIZE)
    FineTunedCNNClassifier(
        input_size=SIZE, layer=-4, head_epochs=1, epochs=1, trainable_blocks=1,
        augment=False, early_stopping=False, random_state=0, engine="onnxruntime",
        batch_size=6,
    ).fit(X, [0, 1] * 3)
    # Stage 1's pooled features and stage 2's maps: two converted passes.
    assert converted == [True, True]


def test_an_estimator_pickled_before_engines_existed_loads(fitted_classifier):
    import pickle

    clf, X = fitted_classifier
    state = clf.__getstate__()
    del state["engine"]
    old = type(clf).__new__(type(clf))
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old.get_params()["engine"] == "auto"
    np.testing.assert_allclose(old.predict_proba(X), clf.predict_proba(X), atol=1e-5)


def test_dask_workers_run_the_engine(monkeypatch, empty_cache):
    da = pytest.importorskip("dask.array")
    import dask

    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")
    X = make_images(8, SIZE)
    params = dict(input_size=SIZE, layer=-4, engine="onnxruntime", cache=False)
    expected = CNNFeatureExtractor(**params).fit_transform(X)
    extractor = CNNFeatureExtractor(**params).fit(X)
    with dask.config.set(scheduler="threads", num_workers=2):
        lazy = extractor.transform(da.from_array(X, chunks=(3, SIZE, SIZE, 3)))
        np.testing.assert_array_equal(lazy.compute(), expected)


def test_cli_engine_option(tmp_path, capsys):
    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")
    from sktransfer.cli import main

    from .conftest import save_pngs

    folder = tmp_path / "images"
    folder.mkdir()
    paths = save_pngs(make_images(4, SIZE), folder)
    common = ["--input-size", str(SIZE), "--layer=-4", "--no-progress"]
    outputs = {}
    for engine in ("tensorflow", "onnxruntime"):
        outputs[engine] = tmp_path / f"{engine}.npy"
        assert main(
            ["extract", *paths, *common, "--engine", engine, "--no-cache",
             "-o", str(outputs[engine])]
        ) == 0
    np.testing.assert_allclose(
        np.load(outputs["onnxruntime"]), np.load(outputs["tensorflow"]), rtol=0, atol=1e-4
    )
    assert main(["extract", *paths, "--engine", "gpu", "-o", "x.npy"]) == 2
    assert "--engine: invalid choice" in capsys.readouterr().err


def test_cli_names_the_missing_extra(tmp_path, no_extras, capsys):
    from sktransfer.cli import main

    from .conftest import save_pngs

    folder = tmp_path / "images"
    folder.mkdir()
    paths = save_pngs(make_images(2, SIZE), folder)
    output = tmp_path / "f.npy"
    assert main(["extract", *paths, "--engine", "openvino", "-o", str(output)]) == 2
    assert 'pip install "sktransfer[openvino]"' in capsys.readouterr().err


def test_bfloat16_is_opt_in_keyed_apart_and_needs_the_cpu(monkeypatch, empty_cache):
    if not _engines.installed("openvino"):
        pytest.skip("extra [openvino]")
    X = make_images(4, SIZE)
    params = dict(input_size=SIZE, layer=-4)
    exact = CNNFeatureExtractor(**params).fit_transform(X)
    monkeypatch.setattr(_engines, "_cpu_capabilities", lambda: ("FP32", "INT8"))
    with pytest.raises(ValueError, match="needs a CPU with bfloat16"):
        CNNFeatureExtractor(precision="bfloat16", **params).fit(X)
    monkeypatch.undo()
    if "BF16" not in _engines._cpu_capabilities():
        pytest.skip("this CPU has no bfloat16 instructions")
    reduced = CNNFeatureExtractor(precision="bfloat16", **params).fit_transform(X)
    assert 0 < np.abs(reduced - exact).max() < 0.05 * np.abs(exact).max()


def test_cli_predict_runs_a_saved_model_on_the_engine(
    fitted_classifier, tmp_path, capsys, monkeypatch
):
    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")
    import sktransfer

    engines = []
    original = _engines.compile_onnx
    monkeypatch.setattr(
        _engines, "compile_onnx", lambda onnx, engine: engines.append(engine.name)
        or original(onnx, engine),
    )

    from sktransfer.cli import main

    from .conftest import save_pngs

    clf, X = fitted_classifier
    model = tmp_path / "model.sktransfer"
    sktransfer.save_model(clf, model)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = save_pngs(X[:4], folder)
    assert main(["predict", str(model), *paths, "--engine", "onnxruntime"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert lines == [[p, label] for p, label in zip(paths, clf.predict(paths))]
    assert engines == ["onnxruntime"]


def test_a_grid_search_never_converts_for_its_small_predictions(monkeypatch, empty_cache):
    """Each candidate's model is its own; its fold's predictions do not repay one."""
    if not _engines.installed("onnxruntime"):
        pytest.skip("extra [fast]")
    from sklearn.model_selection import GridSearchCV

    from sktransfer import FineTunedCNNClassifier

    exports = []
    monkeypatch.setattr(_engines, "export_onnx", lambda *a: exports.append(a))
    monkeypatch.setattr(_engines, "_CPU_ORDER", ("onnxruntime",))
    clf = FineTunedCNNClassifier(
        backbone="mobilenet_v2", weights=None, input_size=32, head_epochs=1, epochs=0,
        early_stopping=False, random_state=0,
    )
    search = GridSearchCV(clf, {"dropout": [0.0, 0.5]}, cv=2, refit=False)
    search.fit(make_images(8, 32), [0, 1] * 4)
    assert exports == []
