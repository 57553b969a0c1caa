import pickle

import joblib
import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.validation import check_is_fitted

from sktransfer import FineTunedCNNClassifier
from sktransfer.exceptions import ImageLoadError

from .conftest import bright_and_dark, save_pngs, tiny_backbone


def classifier(backbone, **params):
    defaults = dict(
        weights=None, head_epochs=2, epochs=2, batch_size=8, random_state=0,
        augment=False, early_stopping=False, learning_rate=1e-3, preprocessing="tf",
    )
    return FineTunedCNNClassifier(backbone, **{**defaults, **params})


@pytest.fixture
def data():
    """Two learnable classes: bright and dark images."""
    return bright_and_dark()


def test_learns_and_predicts_string_labels(data, tiny_backbone_file):
    X, y = data
    clf = classifier(tiny_backbone_file, head_epochs=15, head_learning_rate=1e-2).fit(X, y)
    assert clf.classes_.tolist() == ["bright", "dark"]
    proba = clf.predict_proba(X)
    assert proba.shape == (24, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert clf.score(X, y) >= 0.9
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    scores = clf.decision_function(X)
    assert scores.shape == (24,)
    np.testing.assert_array_equal(scores > 0, proba[:, 1] > 0.5)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([3, 1, 2] * 8),
        np.array([True, False] * 12),
        np.array(["x", "y", "z", "w"] * 6, dtype=object),
    ],
)
def test_any_hashable_labels_and_column_order(data, tiny_backbone_file, labels):
    X, _ = data
    clf = classifier(tiny_backbone_file, head_epochs=1, epochs=0).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    assert clf.predict_proba(X).shape == (24, len(clf.classes_))
    assert set(clf.predict(X)) <= set(labels.tolist())
    if len(clf.classes_) > 2:
        assert clf.decision_function(X).shape == (24, len(clf.classes_))


def test_example_grid_search_on_arrays_and_files(data, tmp_path, tiny_backbone_file):
    X, y = data
    paths = save_pngs(X, tmp_path)
    grids = [
        (X, {"trainable_blocks": [0, 1, 2, 3], "learning_rate": [1e-3, 1e-4]}),
        (paths, {"trainable_blocks": [0, 3], "learning_rate": [1e-3]}),
    ]
    for inputs, grid in grids:
        search = GridSearchCV(classifier(tiny_backbone_file, head_epochs=1, epochs=1), grid, cv=2)
        search.fit(inputs, y)
        assert len(search.cv_results_["params"]) == len(grid["trainable_blocks"]) * len(
            grid["learning_rate"]
        )
        assert search.predict(inputs).shape == (24,)
        assert search.predict_proba(inputs).shape == (24, 2)
    # arrays and the same pixels as PNG files give the same model
    clf = classifier(tiny_backbone_file).fit(X, y)
    np.testing.assert_allclose(
        clf.predict_proba(paths), classifier(tiny_backbone_file).fit(paths, y).predict_proba(X), atol=1e-6
    )


def test_cross_val_score_pipeline_and_two_processes(data, tiny_backbone_file):
    X, y = data
    pipe = make_pipeline(FunctionTransformer(None), classifier(tiny_backbone_file, head_epochs=1, epochs=1))
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,)
    search = GridSearchCV(
        classifier(tiny_backbone_file, head_epochs=1, epochs=1),
        {"trainable_blocks": [0, 1]},
        cv=2,
        n_jobs=2,
    ).fit(X, y)
    assert search.best_estimator_.predict(X).shape == (24,)


def test_same_random_state_same_predictions_and_pickling(data, tiny_backbone_file, tmp_path):
    X, y = data
    params = dict(augment=True, early_stopping=True, validation_fraction=0.25, dropout=0.3)
    first = classifier(tiny_backbone_file, **params).fit(X, y)
    second = classifier(tiny_backbone_file, **params).fit(X, y)
    expected = first.predict_proba(X)
    np.testing.assert_array_equal(expected, second.predict_proba(X))
    # augmentation and dropout are off at inference: the same call twice agrees
    np.testing.assert_array_equal(expected, first.predict_proba(X))
    restored = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(restored.predict_proba(X), expected)
    joblib.dump(first, tmp_path / "clf.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib").predict_proba(X), expected)
    assert not list(tmp_path.glob("*.keras"))  # the network is inside, no side file
    # a clone carries the parameters, not the fit: unfitted until it is fitted,
    # and then, with the same random_state, the same model
    unfitted = clone(first)
    with pytest.raises(NotFittedError):
        check_is_fitted(unfitted)
    np.testing.assert_array_equal(unfitted.fit(X, y).predict_proba(X), expected)


def _named_weights(model):
    return {
        f"{layer.name}/{weight.name}": weight.numpy().copy()
        for layer in model.layers
        for weight in layer.weights
    }


def _backbone_weights(clf):
    return _named_weights(next(l for l in clf.model_.layers if l.name.endswith("_backbone")))


def test_recipe_freezes_blocks_and_keeps_batchnorm_in_inference(data):
    X, y = data
    model = tiny_backbone()
    original = _named_weights(model)
    clf = classifier(model, trainable_blocks=1, learning_rate=1e-2, epochs=3).fit(X, y)
    after = _backbone_weights(clf)
    changed = {name for name in original if not np.array_equal(original[name], after[name])}
    # only the top block (conv3/bn3) is tuned; BatchNorm statistics never move
    assert "conv3/kernel" in changed
    assert not {n for n in changed if n.startswith(("conv1", "bn1", "conv2", "bn2"))}
    assert not {n for n in changed if n.startswith("bn")}  # BatchNorm frozen
    assert not {n for n in changed if "moving" in n}
    # the user's model is untouched
    for name, value in _named_weights(model).items():
        np.testing.assert_array_equal(value, original[name])
    frozen = classifier(model, trainable_blocks=0, epochs=3).fit(X, y)
    assert all(np.array_equal(original[k], v) for k, v in _backbone_weights(frozen).items())
    everything = classifier(model, trainable_blocks="all", learning_rate=1e-2).fit(X, y)
    changed = {k for k, v in _backbone_weights(everything).items() if not np.array_equal(original[k], v)}
    assert "conv1/kernel" in changed and not {n for n in changed if "moving" in n}


def test_passed_model_keeps_its_trained_weights_in_clones(data):
    """Keras' own SKLearnClassifier re-initialises a passed model; we do not."""
    X, y = data
    model = tiny_backbone(seed=3)
    kernel = model.get_layer("conv1").get_weights()[0].copy()
    clf = clone(classifier(model, trainable_blocks=1))
    for fitted in (clf.fit(X, y), clone(clf).fit(X, y)):
        np.testing.assert_array_equal(_backbone_weights(fitted)["conv1/kernel"], kernel)


def test_history_of_both_stages_and_early_stopping(data, tiny_backbone_file):
    X, y = data
    clf = classifier(
        tiny_backbone_file, early_stopping=True, validation_fraction=0.25,
        head_epochs=4, epochs=3, patience=1,
    ).fit(X, y)
    assert set(clf.history_) == {"head", "fine_tune"}
    for stage, limit in (("head", 4), ("fine_tune", 3)):
        assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(clf.history_[stage])
        assert 1 <= len(clf.history_[stage]["loss"]) <= limit
    assert "fine_tune" not in classifier(tiny_backbone_file, trainable_blocks=0).fit(X, y).history_


def test_validation_split_impossible_warns(data, tiny_backbone_file):
    X, y = data
    with pytest.warns(UserWarning, match="Early stopping is off for this fit"):
        classifier(tiny_backbone_file, early_stopping=True, validation_fraction=0.01).fit(X, y)


def test_sample_and_class_weights(data, tiny_backbone_file):
    X, y = data
    plain = classifier(tiny_backbone_file).fit(X, y).predict_proba(X)
    ones = classifier(tiny_backbone_file).fit(X, y, sample_weight=np.ones(24)).predict_proba(X)
    np.testing.assert_allclose(ones, plain, atol=1e-6)
    weights = np.where(y == "dark", 0.0, 1.0)
    only_bright = classifier(tiny_backbone_file, head_learning_rate=1e-2, head_epochs=5).fit(
        X, y, sample_weight=weights
    )
    assert (only_bright.predict(X) == "bright").mean() > 0.5
    # class_weight acts as the per-image weights it stands for; on imbalanced
    # data (12 bright, 4 dark) "balanced" gives dark images 16 / (2 * 4) = 2 and
    # bright ones 16 / (2 * 12) = 2/3, and raises the probability of dark.
    few_dark = (y == "bright") | (np.arange(24) < 8)
    X, y = X[few_dark], y[few_dark]

    def dark_proba(sample_weight=None, **params):
        clf = classifier(tiny_backbone_file, **params).fit(X, y, sample_weight=sample_weight)
        return clf.predict_proba(X)[:, list(clf.classes_).index("dark")]

    balanced = dark_proba(class_weight="balanced")
    np.testing.assert_allclose(balanced, dark_proba(np.where(y == "dark", 2.0, 2 / 3)), atol=1e-5)
    assert balanced.mean() > dark_proba().mean() + 1e-3
    np.testing.assert_allclose(
        dark_proba(class_weight={"dark": 2.0}), dark_proba(np.where(y == "dark", 2.0, 1.0)), atol=1e-5
    )
    with pytest.raises(ValueError, match="class_weight has labels \\['cat'\\]"):
        classifier(tiny_backbone_file, class_weight={"cat": 2.0}).fit(X, y)


@pytest.mark.parametrize(
    "params, fit_args, message",
    [
        ({}, lambda X, y: (X, np.array(["a"] * 24)), "only one class \\('a'\\)"),
        ({}, lambda X, y: (X, y[:20]), "X has 24 images but y has 20 labels"),
        ({}, lambda X, y: (X, np.where(np.arange(24) == 5, np.nan, 1.0)), "missing labels .* indices \\[5\\]"),
        ({}, lambda X, y: (X, np.array(["a", None] * 12, dtype=object)), "missing labels .* indices \\[1, 3"),
        ({"trainable_blocks": 4}, None, "trainable_blocks=4 is out of range.*3 blocks.*from 0 .* to 3, or 'all'"),
        ({"learning_rate": 0.0}, None, "'learning_rate' parameter .* range \\(0.0, inf\\)"),
        ({"head_learning_rate": -1.0}, None, "'head_learning_rate' parameter"),
        ({"augment": {"shear": 0.1}}, None, "augment has unknown keys \\['shear'\\]"),
        ({"augment": {"rotation": 2}}, None, "augment\\['rotation'\\]=2"),
        ({"layer": 5}, None, "layer=5 is out of range"),
        ({}, lambda X, y: (X, y, np.ones(3)), "sample_weight has shape \\(3,\\)"),
        ({}, lambda X, y: (X, y, -np.ones(24)), "Negative values in data passed to `sample_weight`"),
        ({}, lambda X, y: (X, np.stack([y, y], axis=1)), "1-D array of class labels.*got shape \\(24, 2\\)"),
    ],
)
def test_bad_input_gets_clear_errors(data, tiny_backbone_file, params, fit_args, message):
    X, y = data
    args = fit_args(X, y) if fit_args else (X, y)
    with pytest.raises(ValueError, match=message):
        classifier(tiny_backbone_file, **params).fit(*args)


def test_undecodable_image_in_fit_names_the_file(data, tmp_path, tiny_backbone_file):
    X, y = data
    paths = save_pngs(X, tmp_path)
    (tmp_path / "007.png").write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match="image 7 of X .*007.png"):
        classifier(tiny_backbone_file).fit(paths, y)


def test_lower_cut_and_list_of_layers(data, tiny_backbone_file):
    X, y = data
    clf = classifier(tiny_backbone_file, layer=-2, pooling=2, trainable_blocks="all").fit(X, y)
    assert clf.layer_names_ == ["relu2"] and clf.trainable_blocks_ == 2
    both = classifier(tiny_backbone_file, layer=[-1, -2], hidden_units=8).fit(X, y)
    assert both.predict_proba(X).shape == (24, 2)


def _live_keras_objects() -> tuple[int, int]:
    import gc

    gc.collect()
    objects = gc.get_objects()
    layers = sum(isinstance(o, keras.layers.Layer) for o in objects)
    functions = sum(type(o).__name__ in ("Function", "ConcreteFunction") for o in objects)
    return layers, functions


def test_python_objects_are_released_between_fits(data, tiny_backbone_file):
    """Keras layers and traced functions of earlier fits do not pile up."""
    X, y = data
    clf = classifier(tiny_backbone_file, head_epochs=1, epochs=1)
    counts = []
    for _ in range(8):
        clf.fit(X, y)
        counts.append(_live_keras_objects())
    assert counts[-1] == counts[2], counts


@pytest.mark.slow  # 30 fits; test_python_objects_are_released_between_fits is the fast guard
def test_memory_is_flat_across_many_fits(data, tiny_backbone_file):
    """Fits of one architecture reuse one traced network (see _training.Trainer)."""
    from benchmarks._common import rss_bytes

    X, y = data
    clf = classifier(tiny_backbone_file, head_epochs=1, epochs=1)
    readings = []
    for _ in range(30):
        clf.fit(X, y)
        readings.append(rss_bytes())
    growth = (readings[-1] - readings[9]) / 2**20
    assert growth < 20, f"RSS grew by {growth:.0f} MB over 20 fits"


def test_clone_shares_a_passed_model_and_output_config(data):
    from sktransfer import CNNFeatureExtractor

    model = tiny_backbone()
    assert clone(classifier(model)).backbone is model
    extractor = CNNFeatureExtractor(model).set_output(transform="pandas")
    copy = clone(extractor)
    assert copy.backbone is model
    assert type(copy.fit(data[0]).transform(data[0])).__name__ == "DataFrame"


def test_batchnorm_inside_a_nested_model_stays_frozen(data):
    X, y = data
    inner = tiny_backbone(seed=5)
    inputs = keras.Input((32, 32, 3))
    outer = keras.Model(inputs, keras.layers.ReLU(name="after")(inner(inputs)))
    before = _named_weights(inner)
    clf = classifier(outer, trainable_blocks="all", learning_rate=1e-2).fit(X, y)
    backbone = next(l for l in clf.model_.layers if l.name.endswith("_backbone"))
    nested = next(l for l in backbone.layers if hasattr(l, "layers"))
    after = _named_weights(nested)
    assert not np.array_equal(after["conv1/kernel"], before["conv1/kernel"])  # tuned
    for name in before:
        if name.startswith("bn"):
            np.testing.assert_array_equal(after[name], before[name])
