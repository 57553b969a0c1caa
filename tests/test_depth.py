"""``layer="auto"`` and ``trainable_blocks="auto"``: the probe and the rule of thumb."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

from sktransfer import (
    CNNFeatureExtractor,
    FineTunedCNNClassifier,
    _depth,
    load_model,
    save_model,
)
from sktransfer.cli._model import training_summary

from .conftest import bright_and_dark, make_images, tiny_backbone


@pytest.fixture
def data():
    """Two classes a linear probe separates at any block: bright and dark images."""
    return bright_and_dark()


@pytest.fixture(scope="module")
def blind_top_file(tmp_path_factory):
    """The tiny backbone with its top block blind: a zero convolution, so the
    top block's features are the same for every image and only the blocks
    below can tell classes apart."""
    model = tiny_backbone()
    conv = model.get_layer("conv3")
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    path = tmp_path_factory.mktemp("backbones") / "blind_top.keras"
    model.save(path)
    return str(path)


def extractor(backbone, **params):
    return CNNFeatureExtractor(backbone, weights=None, preprocessing="tf", **params)


def classifier(backbone, **params):
    defaults = dict(
        weights=None, head_epochs=2, epochs=1, batch_size=8, random_state=0,
        augment=False, early_stopping=False, preprocessing="tf",
    )
    return FineTunedCNNClassifier(backbone, **{**defaults, **params})


# --- the decision functions, on fixed inputs ---------------------------------------


def test_choose_takes_the_best_score_and_the_higher_block_on_a_tie():
    assert _depth.choose({-1: 0.80, -2: 0.90, -3: 0.85}) == -2
    assert _depth.choose({-1: 0.90, -2: 0.90, -3: 0.85}) == -1
    assert _depth.choose({-1: 0.50, -2: 0.90, -3: 0.90}) == -2


@pytest.mark.parametrize(
    "per_class, top_cut, expected, words",
    [
        (5, True, 0, "too few to fine-tune"),
        (5, False, 0, "too few to fine-tune"),
        (100, True, 1, "small and similar"),  # top block's features, top block tuned
        (100, False, 1, "small and different"),  # a lower cut, its top block tuned
        (1000, True, 2, "large and similar"),  # the top blocks
        (5000, False, "all", "large and different"),  # the whole cut network
    ],
)
def test_trainable_blocks_rule_follows_the_four_quadrants(per_class, top_cut, expected, words):
    blocks, reason = _depth.trainable_blocks_rule(per_class, top_cut)
    assert blocks == expected
    assert words in reason and str(per_class) in reason


def test_subsample_keeps_every_class_evenly_and_in_order():
    y = np.array([0] * 900 + [1] * 100)
    rows = _depth._subsample(y, 100)
    assert np.all(np.diff(rows) > 0)
    assert np.bincount(y[rows]).tolist() == [90, 10]
    assert rows[0] == 0 and rows[89] == 899  # spread over the class, not its start
    np.testing.assert_array_equal(_depth._subsample(y, 1000), np.arange(1000))


# --- CNNFeatureExtractor(layer="auto") ---------------------------------------------


def test_auto_layer_picks_the_block_that_separates_the_classes(data, blind_top_file):
    X, y = data
    est = extractor(blind_top_file, layer="auto").fit(X, y)
    assert list(est.depth_scores_) == [-1, -2, -3]
    assert est.depth_scores_[-1] <= 0.6  # the blind top block: chance
    assert est.depth_scores_[-2] == est.depth_scores_[-3] == 1.0
    assert est.layer_ == -2  # the tie between -2 and -3 goes to the higher block
    assert est.layer_names_ == ["relu2"]
    assert "layer -2 (relu2)" in est.depth_reason_ and "3-fold" in est.depth_reason_


def test_auto_layer_is_the_argmax_of_its_scores_and_transforms_as_that_layer(
    data, tiny_backbone_file
):
    X, y = data
    est = extractor(tiny_backbone_file, layer="auto")
    features = est.fit_transform(X, y)
    assert est.layer_ == _depth.choose(est.depth_scores_)
    fixed = extractor(tiny_backbone_file, layer=est.layer_)
    np.testing.assert_array_equal(features, fixed.fit_transform(X))
    assert est.layer_names_ == fixed.layer_names_
    np.testing.assert_array_equal(est.transform(X), features)
    np.testing.assert_array_equal(est.get_feature_names_out(), fixed.get_feature_names_out())


def test_auto_layer_without_the_cache_gives_the_same_features(data, tiny_backbone_file):
    X, y = data
    cached = extractor(tiny_backbone_file, layer="auto").fit_transform(X, y)
    uncached = extractor(tiny_backbone_file, layer="auto", cache=False)
    np.testing.assert_allclose(uncached.fit_transform(X, y), cached, rtol=1e-5)


def test_auto_layer_needs_labels(data, tiny_backbone_file):
    X, _ = data
    est = extractor(tiny_backbone_file, layer="auto")
    with pytest.raises(ValueError, match=r"layer='auto'.*y is None"):
        est.fit(X)
    with pytest.raises(ValueError, match=r"layer='auto'.*y is None"):
        est.fit_transform(X)
    with pytest.raises(ValueError, match="at least 2 images"):
        est.fit(X[:3], ["a", "b", "b"])
    with pytest.raises(ValueError, match="24 images but y has 3 labels"):
        est.fit(X, ["a", "b", "b"])


def test_auto_layer_refuses_a_dask_collection(data):
    da = pytest.importorskip("dask.array")
    X, y = data
    with pytest.raises(ValueError, match="never computes a Dask collection"):
        CNNFeatureExtractor(layer="auto").fit(da.from_array(X, chunks=8), y)


def test_tags_say_auto_layer_requires_y():
    assert CNNFeatureExtractor(layer="auto").__sklearn_tags__().target_tags.required
    assert not CNNFeatureExtractor().__sklearn_tags__().target_tags.required


def test_auto_layer_is_deterministic_and_survives_clone_pickle_and_save_model(
    data, tiny_backbone_file, tmp_path
):
    X, y = data
    est = extractor(tiny_backbone_file, layer="auto")
    assert clone(est).get_params()["layer"] == "auto"
    est.fit(X, y)
    again = clone(est).fit(X, y)
    assert again.depth_scores_ == est.depth_scores_ and again.layer_ == est.layer_
    restored = pickle.loads(pickle.dumps(est))
    assert restored.depth_scores_ == est.depth_scores_
    np.testing.assert_array_equal(restored.transform(X), est.transform(X))
    save_model(est, tmp_path / "auto.sktransfer")
    loaded = load_model(tmp_path / "auto.sktransfer")
    assert loaded.layer == "auto" and loaded.layer_ == est.layer_
    assert loaded.depth_scores_ == est.depth_scores_
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))


def test_grid_search_over_auto_and_fixed_layers(data, tiny_backbone_file):
    X, y = data
    pipe = make_pipeline(extractor(tiny_backbone_file), LogisticRegression())
    search = GridSearchCV(pipe, {"cnnfeatureextractor__layer": ["auto", -1]}, cv=2)
    search.fit(X, y)
    assert list(search.cv_results_["param_cnnfeatureextractor__layer"]) == ["auto", -1]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    if search.best_params_["cnnfeatureextractor__layer"] == "auto":
        assert search.best_estimator_[0].layer_ in (-1, -2, -3)


# --- FineTunedCNNClassifier(layer="auto", trainable_blocks="auto") -----------------


def test_classifier_auto_depths_are_fitted_attributes_with_their_reason(
    data, blind_top_file
):
    X, y = data
    clf = classifier(blind_top_file, layer="auto", trainable_blocks="auto").fit(X, y)
    assert clf.layer_ == -2 and clf.layer_names_ == ["relu2"]
    # 12 images a class: small data cut below the top, its top block tuned.
    assert clf.trainable_blocks_ == 1
    assert "layer -2 (relu2)" in clf.depth_reason_
    assert "small and different" in clf.depth_reason_
    assert [stage.trainable_blocks for stage in clf.stages_] == [0, 1]
    assert clf.predict(X).shape == (24,)
    summary = training_summary(clf)  # what `sktransfer fit` prints
    assert summary[0] == f"chosen from the images: {clf.depth_reason_}"


def test_classifier_auto_blocks_with_a_fixed_layer_skip_the_probe(data, tiny_backbone_file):
    X, y = data
    clf = classifier(tiny_backbone_file, trainable_blocks="auto").fit(X, y)
    assert clf.trainable_blocks_ == 1 and "small and similar" in clf.depth_reason_
    assert not hasattr(clf, "layer_") and not hasattr(clf, "depth_scores_")
    few = classifier(tiny_backbone_file, trainable_blocks="auto").fit(X[:8], y[:8])
    assert few.trainable_blocks_ == 0 and "too few" in few.depth_reason_
    assert not hasattr(classifier(tiny_backbone_file).fit(X, y), "depth_reason_")


def test_classifier_auto_depths_clone_pickle_and_grid_search(data, tiny_backbone_file):
    X, y = data
    clf = classifier(tiny_backbone_file, layer="auto", trainable_blocks="auto")
    assert clone(clf).get_params()["trainable_blocks"] == "auto"
    grid = [{"layer": ["auto"], "trainable_blocks": ["auto"]},
            {"layer": [-1], "trainable_blocks": [0]}]
    search = GridSearchCV(clf, grid, cv=2).fit(X, y)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    fitted = search.best_estimator_
    restored = pickle.loads(pickle.dumps(fitted))
    assert restored.trainable_blocks_ == fitted.trainable_blocks_
    np.testing.assert_array_equal(restored.predict(X), fitted.predict(X))


def test_auto_values_are_validated():
    with pytest.raises(InvalidParameterError, match="auto"):
        FineTunedCNNClassifier(trainable_blocks="some").fit(make_images(4), [0, 1] * 2)
