"""Training as data: the planned stages, and a third stage added by the plan alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sktransfer import FineTunedCNNClassifier, load_model, save_model
from sktransfer import _stages
from sktransfer.cli._model import training_summary
from sktransfer._stages import Stage
from sktransfer.exceptions import CorruptFileError

from .conftest import two_classes
from .test_classifier import classifier as small_classifier
from .test_persistence import member, rewritten


def classifier(backbone, **params):
    """test_classifier's small classifier, with this file's differences."""
    return small_classifier(backbone, **{**dict(epochs=1), **params})


@pytest.fixture(scope="module")
def data():
    return two_classes(16, seed=3)


def _plan(clf, X, y):
    """The stages ``fit`` would plan, from a one-epoch fit."""
    return clf.fit(X, y).stages_


@pytest.mark.parametrize(
    "params, expected",
    [
        # The bottleneck recipe: top on cached features, then the top block
        # on the cached maps of the layer below it.
        (dict(trainable_blocks=1),
         [("head", 0, 2, 1e-3, "features", None), ("fine_tune", 1, 1, 1e-3, "maps", "relu2")]),
        # Augmentation: every fine-tuning epoch reads new versions of the pixels.
        (dict(trainable_blocks=2, augment={"flip": "horizontal"}),
         [("head", 0, 2, 1e-3, "features", None), ("fine_tune", 2, 1, 1e-3, "pixels", None)]),
        (dict(trainable_blocks=1, augment={"flip": "horizontal"}, augment_head=True),
         [("head", 0, 2, 1e-3, "pixels", None), ("fine_tune", 1, 1, 1e-3, "pixels", None)]),
        # All blocks: nothing frozen below, so pixels.
        (dict(trainable_blocks="all", head_learning_rate=0.01, learning_rate=1e-4),
         [("head", 0, 2, 0.01, "features", None), ("fine_tune", 3, 1, 1e-4, "pixels", None)]),
        (dict(trainable_blocks=0), [("head", 0, 2, 1e-3, "features", None)]),
        (dict(trainable_blocks=1, epochs=0), [("head", 0, 2, 1e-3, "features", None)]),
    ],
)
def test_the_plan_follows_the_parameters(data, tiny_backbone_file, params, expected):
    clf = classifier(tiny_backbone_file, **params)
    stages = _plan(clf, *data)
    assert [
        (s.name, s.trainable_blocks, s.epochs, s.learning_rate, s.inputs, s.boundary)
        for s in stages
    ] == expected
    assert list(clf.history_) == [s.name for s in stages]


def test_maps_too_large_for_the_cache_are_not_kept(data, tiny_backbone_file, monkeypatch):
    from sktransfer import cache

    monkeypatch.setattr(cache.memory_cache().rows, "maxsize", 1000)
    stages = _plan(classifier(tiny_backbone_file, trainable_blocks=1), *data)
    assert (stages[1].inputs, stages[1].boundary) == ("pixels", None)


@pytest.mark.parametrize(
    "change",
    [
        dict(name=""), dict(trainable_blocks=-1), dict(trainable_blocks=True),
        dict(epochs=1.5), dict(learning_rate=0), dict(learning_rate="1e-3"),
        dict(inputs="disk"), dict(inputs="maps"), dict(boundary="relu2"),
        dict(inputs="features", trainable_blocks=1),
    ],
)
def test_an_invalid_stage_is_refused(change):
    fields = dict(name="s", title="t", trainable_blocks=0, epochs=1, learning_rate=0.1,
                  inputs="features")
    with pytest.raises(ValueError, match="Not a valid training stage"):
        Stage(**{**fields, **change})


def test_a_third_stage_is_a_change_to_the_plan_alone(data, tiny_backbone_file, monkeypatch):
    """Unfreeze one more block in a third stage: only ``_stages.plan`` changes."""
    import matplotlib

    matplotlib.use("Agg")
    from sktransfer.inspection import TrainingHistoryDisplay

    X, y = data
    two = classifier(tiny_backbone_file, trainable_blocks=1).fit(X, y)
    original = _stages.plan

    def plan_with_a_third_stage(estimator, network, n_images, augment):
        stages = original(estimator, network, n_images, augment)
        return (*stages, Stage("fine_tune_more", "two blocks", trainable_blocks=2,
                               epochs=2, learning_rate=1e-4))

    monkeypatch.setattr(_stages, "plan", plan_with_a_third_stage)
    three = classifier(tiny_backbone_file, trainable_blocks=1).fit(X, y)

    assert [s.name for s in three.stages_] == ["head", "fine_tune", "fine_tune_more"]
    assert list(three.history_) == ["head", "fine_tune", "fine_tune_more"]
    assert len(three.history_["fine_tune_more"]["loss"]) == 2
    # The first two stages ran as before; the third trained the second block
    # from the top, which two stages left at its pretrained weights.
    np.testing.assert_array_equal(
        two.history_["fine_tune"]["loss"], three.history_["fine_tune"]["loss"]
    )

    def conv2(clf):
        backbone = next(layer for layer in clf.model_.layers if hasattr(layer, "layers"))
        return backbone.get_layer("conv2").get_weights()[0]

    source = FineTunedCNNClassifier(tiny_backbone_file).backbone
    import keras

    pretrained = keras.models.load_model(source).get_layer("conv2").get_weights()[0]
    np.testing.assert_array_equal(conv2(two), pretrained)
    assert not np.allclose(conv2(three), pretrained)
    # The command line and the training-curves display read the stages.
    assert training_summary(three)[:3] == [
        "stage 1 (new top): 2 epoch(s)",
        "stage 2 (fine tuning), 1 block(s) unfrozen: 1 epoch(s)",
        "stage 3 (two blocks), 2 block(s) unfrozen: 2 epoch(s)",
    ]
    display = TrainingHistoryDisplay.from_estimator(three)
    labels = [line.get_label() for line in display.boundary_lines_]
    assert labels == ["fine tuning starts", "two blocks starts"] * len(display.axes_)


def test_stages_are_saved_and_a_crafted_stage_is_refused(data, tiny_backbone_file, tmp_path):
    clf = classifier(tiny_backbone_file, trainable_blocks=1).fit(*data)
    path = tmp_path / "model.sktransfer"
    save_model(clf, path)
    assert load_model(path).stages_ == clf.stages_
    attributes = member(path, "attributes.json")
    saved = attributes["stages_"]["__tuple__"][1]["__stage__"]["__dict__"]
    for field in saved:
        if field[0] == "inputs":
            field[1] = "os.system"
    crafted = rewritten(path, tmp_path / "crafted.sktransfer", attributes_json=attributes)
    with pytest.raises(CorruptFileError, match="malformed .*Not a valid training stage"):
        load_model(crafted)
    del saved[-1]  # a missing field
    crafted = rewritten(path, tmp_path / "missing.sktransfer", attributes_json=attributes)
    with pytest.raises(CorruptFileError, match="unknown or missing fields"):
        load_model(crafted)


def test_stage_is_frozen():
    stage = Stage("head", "new top", trainable_blocks=0, epochs=1, learning_rate=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.epochs = 5
