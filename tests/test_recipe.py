"""The fine-tuning recipe's components: each does what its parameter says."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sktransfer import _training
from sktransfer._stages import Stage

from .conftest import two_classes
from .test_classifier import classifier as small_classifier


def classifier(backbone, **params):
    """test_classifier's small classifier, with this file's differences."""
    return small_classifier(backbone, **{**dict(head_epochs=1, learning_rate=1e-2, optimizer="sgd"), **params})


@pytest.fixture(scope="module")
def data():
    return two_classes(16, seed=4)


@pytest.mark.parametrize("schedule", ["cosine", "one_cycle"])
def test_schedule_shapes(schedule):
    total = 200
    rates = np.array([_training.scheduled_rate(schedule, 1.0, s, total) for s in range(total)])
    peak = int(rates.argmax())
    assert rates.max() == pytest.approx(1.0, abs=1e-3)
    # Warm-up: rising to the peak (10 % of the steps, 25 % for one cycle).
    assert peak == pytest.approx(total * (0.1 if schedule == "cosine" else 0.25), abs=2)
    assert np.all(np.diff(rates[: peak + 1]) > 0) and np.all(np.diff(rates[peak:]) <= 0)
    assert rates[-1] < 1e-4
    if schedule == "one_cycle":
        assert rates[0] == pytest.approx(1 / 25)


def test_constant_schedule_and_a_single_step():
    assert _training.scheduled_rate("constant", 0.3, 5, 10) == 0.3
    assert _training.scheduled_rate("cosine", 0.3, 0, 1) == 0.3


def test_the_schedule_sets_the_rate_of_every_batch():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate))

    x, y = np.zeros((40, 3), "float32"), np.zeros(40, "int32")
    model.fit(
        x, y, batch_size=10, epochs=2, verbose=0,
        callbacks=[_training._schedule_callback("cosine", 2), Record()],
    )
    expected = [_training.scheduled_rate("cosine", 0.5, step, 8) for step in range(8)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.5)  # restored


def _conv_kernel(clf, name):
    backbone = next(layer for layer in clf.model_.layers if hasattr(layer, "layers"))
    return backbone.get_layer(name).get_weights()[0]


def test_layer_decay_slows_the_lower_blocks(data, tiny_backbone_file):
    """SGD's step is proportional to the rate: a tiny decay all but freezes block 2."""
    pretrained = keras.models.load_model(tiny_backbone_file)

    def moved(clf, name):
        return np.abs(_conv_kernel(clf, name) - pretrained.get_layer(name).get_weights()[0]).max()

    full = classifier(tiny_backbone_file, trainable_blocks=2).fit(*data)
    decayed = classifier(tiny_backbone_file, trainable_blocks=2, layer_decay=1e-3).fit(*data)
    assert moved(full, "conv2") > 0 and moved(full, "conv3") > 0
    # The top block trains at rate * 1e-3, the one below at rate * 1e-6.
    assert moved(decayed, "conv3") < 0.01 * moved(full, "conv3")
    assert moved(decayed, "conv2") < 1e-4 * moved(full, "conv2")
    assert moved(decayed, "conv2") < moved(decayed, "conv3")


def test_weight_decay_spares_biases_and_normalization():
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(2)
    dense.build((None, 2))
    dense.bias.assign(np.ones(2, "float32"))
    optimizer = _training.make_optimizer("adamw", 0.1, weight_decay=0.5)
    kernel = dense.kernel.numpy()
    optimizer.apply([np.zeros((2, 2), "float32"), np.zeros(2, "float32")],
                    [dense.kernel, dense.bias])
    np.testing.assert_allclose(dense.kernel.numpy(), kernel * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_array_equal(dense.bias.numpy(), np.ones(2))


def test_label_smoothing_loss_matches_its_definition():
    loss = _training.classification_loss(0.2)
    y_pred = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    y_true = np.array([0, 2])
    targets = np.full((2, 3), 0.2 / 3) + 0.8 * np.eye(3)[y_true]
    expected = -(targets * np.log(y_pred)).sum(axis=1)
    np.testing.assert_allclose(np.asarray(loss(y_true, y_pred)), expected, rtol=1e-5)
    assert _training.classification_loss(0.0) == "sparse_categorical_crossentropy"


def test_smoothed_fit_records_its_stages(data, tiny_backbone_file):
    clf = classifier(
        tiny_backbone_file, trainable_blocks=1, label_smoothing=0.1, schedule="one_cycle",
        optimizer="adamw", weight_decay=0.01,
    ).fit(*data)
    assert {(s.label_smoothing, s.schedule) for s in clf.stages_} == {(0.1, "one_cycle")}
    assert clf.predict(data[0]).shape == (16,)


def test_gradual_unfreezing_plans_steps(data, tiny_backbone_file):
    clf = classifier(tiny_backbone_file, trainable_blocks=3, unfreeze_steps=2, epochs=5,
                     augment={"flip": "horizontal"}).fit(*data)
    assert [(s.name, s.trainable_blocks, s.epochs) for s in clf.stages_] == [
        ("head", 0, 1), ("fine_tune_step1", 2, 2), ("fine_tune", 3, 3),
    ]
    assert list(clf.history_) == ["head", "fine_tune_step1", "fine_tune"]
    # More steps than blocks: one block per step.
    clf = classifier(tiny_backbone_file, trainable_blocks=2, unfreeze_steps=5, epochs=2).fit(*data)
    assert [s.trainable_blocks for s in clf.stages_[1:]] == [1, 2]
    assert [s.inputs for s in clf.stages_[1:]] == ["maps", "maps"]


def test_augmentation_presets():
    assert _training.check_augment("light") == _training.check_augment(True)
    strong = _training.check_augment("strong")
    assert strong["zoom"] > _training.DEFAULT_AUGMENT["zoom"] and "contrast" in strong
    with pytest.raises(ValueError, match=r"a preset \['light', 'strong'\]"):
        _training.check_augment("heavy")


def test_test_time_augmentation_averages_the_mirror(data, tiny_backbone_file):
    X, y = data
    clf = classifier(tiny_backbone_file, trainable_blocks=1).fit(X, y)
    logits = clf.set_params(test_time_augmentation=False)._forward(X, "logits")
    mirrored = clf._forward(X[:, :, ::-1], "logits")
    mean = (logits + mirrored) / 2
    expected = np.exp(mean) / np.exp(mean).sum(axis=1, keepdims=True)
    clf.set_params(test_time_augmentation=True)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clf.decision_function(X), mean[:, 1] - mean[:, 0], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[expected.argmax(axis=1)])


@pytest.mark.parametrize(
    "param, value",
    [("schedule", "linear"), ("layer_decay", 0.0), ("layer_decay", 1.5),
     ("label_smoothing", 1.0), ("weight_decay", -0.1), ("unfreeze_steps", 0),
     ("augment", "heavy"), ("test_time_augmentation", "yes")],
)
def test_bad_recipe_parameters_name_the_parameter(data, tiny_backbone_file, param, value):
    with pytest.raises(ValueError, match=f"'{param}' parameter"):
        classifier(tiny_backbone_file, **{param: value}).fit(*data)


def test_stage_checks_its_recipe_fields():
    fields = dict(name="s", title="t", trainable_blocks=1, epochs=1, learning_rate=0.1)
    for change in (dict(schedule="linear"), dict(layer_decay=0), dict(label_smoothing=1)):
        with pytest.raises(ValueError, match="Not a valid training stage"):
            Stage(**fields, **change)
