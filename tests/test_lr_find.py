"""learning_rate="auto": the range test, the suggestion, the classifier and the display."""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from sktransfer import _lr_find, _training, load_model, save_model
from sktransfer.cli._model import training_summary
from sktransfer._stages import Stage
from sktransfer.cli import build_parser

from .conftest import make_images
from .test_classifier import classifier as small_classifier

# The range test -------------------------------------------------------------


def small_model(seed: int = 0):
    """Dense with dropout (a seed generator) and Adam: every kind of state."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.Dropout(0.3)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return model


def small_batches(seed: int = 0, weighted: bool = False):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 1)
    weights = rng.uniform(0.5, 2, size=40).astype(np.float32) if weighted else None
    return _training.batches(
        X.__getitem__, np.arange(40), y, weights, 8, shuffle=True, seed=seed
    )


def state(model) -> list[np.ndarray]:
    return [v.numpy() for v in (*model.variables, *model.optimizer.variables)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("weighted", [False, True])
def test_range_test_restores_weights_and_optimizer_exactly(weighted):
    model = small_model()
    model.fit(small_batches(weighted=weighted), epochs=1, verbose=0, shuffle=False)
    before = state(model)
    rates, losses = _lr_find.range_test(model, small_batches(1, weighted))
    assert_same(state(model), before)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-2)
    assert len(rates) == len(losses) >= 10
    assert rates[0] == _lr_find.START and (np.diff(rates) > 0).all()
    if len(losses) < _lr_find.N_STEPS:  # stopped: it diverged
        assert not losses[-1] <= _lr_find.DIVERGENCE * losses[:-1].min()


def test_the_fit_goes_on_as_if_the_test_never_ran():
    model = small_model()
    _training.build_training(model, small_batches()[0])
    start = state(model)
    model.fit(small_batches(), epochs=2, verbose=0, shuffle=False)
    without = state(model)
    for variable, value in zip((*model.variables, *model.optimizer.variables), start):
        variable.assign(value)
    batches = small_batches()
    _lr_find.range_test(model, batches)
    model.fit(batches, epochs=2, verbose=0, shuffle=False)
    assert_same(state(model), without)


def test_weights_are_restored_when_the_test_fails():
    model = small_model()
    batches = small_batches()
    _training.build_training(model, batches[0])
    before = state(model)

    class Failing(keras.utils.PyDataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, index):
            if index == 3:
                raise OSError("disk gone")
            return batches[index]

    with pytest.raises(OSError, match="disk gone"):
        _lr_find.range_test(model, Failing())
    assert_same(state(model), before)


def test_range_test_is_deterministic_and_checks_its_range():
    curves = [_lr_find.range_test(small_model(), small_batches(), n_steps=30) for _ in "ab"]
    np.testing.assert_array_equal(curves[0][1], curves[1][1])
    with pytest.raises(ValueError, match="0 < start < end"):
        _lr_find.range_test(small_model(), small_batches(), start=1.0, end=1e-3)
    with pytest.raises(ValueError, match="n_steps >= 2"):
        _lr_find.range_test(small_model(), small_batches(), n_steps=1)


# The suggestion on synthetic curves -------------------------------------------

RATES = np.logspace(-7, 0, 100)


def valley(noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Flat to 1e-5, falling from 1.0 to 0.4 until 1e-3, then diverging."""
    log = np.log10(RATES)
    descent = 0.6 / (1 + np.exp(-3 * (log + 4)))
    rise = np.where(log > -3, (log + 3) ** 2, 0.0)
    curve = 1.0 - descent + rise
    return curve + np.random.default_rng(seed).normal(0, noise, len(curve))


def test_a_clean_valley_suggests_its_steepest_fall():
    losses = valley()
    # The descent, from the first point kept (the first tenth is skipped) to
    # the minimum, has lost half its drop where its logistic is steepest.
    level = (losses[10] + losses.min()) / 2
    expected = RATES[np.flatnonzero(losses <= level)[0]]
    assert _lr_find.suggest(RATES, losses) == expected
    assert 8e-5 <= expected <= 1.2e-4  # the steepest fall is at 1e-4


def test_the_suggestion_ignores_how_far_the_flat_start_goes():
    wider = np.logspace(-10, 0, 143)  # the same step, three decades more
    flat = np.full(43, valley()[0])
    assert _lr_find.suggest(wider, np.concatenate([flat, valley()])) == pytest.approx(
        _lr_find.suggest(RATES, valley()), rel=0.2
    )


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_valley_suggests_a_rate_on_the_descent(seed):
    suggestion = _lr_find.suggest(RATES, valley(noise=0.01, seed=seed))
    assert 3e-5 <= suggestion <= 3e-4


@pytest.mark.parametrize(
    "losses",
    [
        np.full(100, 0.7),  # flat: nothing learns at any rate
        0.7 + np.random.default_rng(0).normal(0, 0.005, 100),  # noise only
        0.5 * np.exp(RATES * 20),  # diverging from the smallest rate
        0.5 + np.linspace(0, 1, 100) + np.random.default_rng(1).normal(0, 0.01, 100),
        np.array([1.0, 0.5, 0.2, 0.1]),  # too few points
    ],
    ids=["flat", "noise", "diverging", "noisy-rising", "short"],
)
def test_no_clear_descent_no_suggestion(losses):
    assert _lr_find.suggest(RATES[: len(losses)], losses) is None


def test_losses_after_a_nan_are_ignored():
    losses = valley()
    losses[60:] = np.nan
    nan_free = _lr_find.suggest(RATES[:60], losses[:60])
    assert _lr_find.suggest(RATES, losses) == nan_free is not None
    with pytest.raises(ValueError, match="of one length"):
        _lr_find.suggest(RATES, losses[:10])


# The classifier ---------------------------------------------------------------


def classifier(backbone, **params):
    """test_classifier's small fast classifier, fine tuning at learning_rate="auto"."""
    return small_classifier(
        backbone, **{"learning_rate": "auto", "trainable_blocks": 1, **params}
    )


@pytest.fixture(scope="module")
def data():
    """Two learnable classes, bright and dark images, as in test_classifier."""
    images = make_images(16, seed=1)
    labels = np.array(["bright", "dark"] * 8)
    images[labels == "dark"] //= 4
    return images, labels


@pytest.fixture(scope="module")
def fitted(data, tiny_backbone_file):
    return classifier(tiny_backbone_file).fit(*data)


def test_auto_records_the_curve_and_the_rate(fitted):
    head, fine_tune = fitted.stages_
    assert head.learning_rate == 1e-3  # given: no test
    assert list(fitted.lr_find_) == ["fine_tune"]
    found = fitted.lr_find_["fine_tune"]
    assert set(found) == {"learning_rates", "losses", "suggestion", "learning_rate"}
    assert len(found["learning_rates"]) == len(found["losses"]) > 10
    assert found["suggestion"] == found["learning_rate"] == fine_tune.learning_rate
    assert fine_tune.learning_rate in found["learning_rates"]


def test_auto_trains_as_the_rate_it_chose_and_is_reproducible(fitted, data, tiny_backbone_file):
    X, y = data
    again = classifier(tiny_backbone_file).fit(X, y)
    assert again.stages_ == fitted.stages_
    assert again.lr_find_ == fitted.lr_find_
    # The range test left no trace: a fit at the chosen rate is the same fit.
    rate = fitted.stages_[1].learning_rate
    fixed = classifier(tiny_backbone_file, learning_rate=rate).fit(X, y)
    assert fixed.lr_find_ == {}
    np.testing.assert_array_equal(fixed.predict_proba(X), fitted.predict_proba(X))


def test_head_learning_rate_auto(data, tiny_backbone_file):
    clf = classifier(tiny_backbone_file, head_learning_rate="auto", epochs=0).fit(*data)
    assert list(clf.lr_find_) == ["head"] and len(clf.stages_) == 1
    assert clf.stages_[0].learning_rate == clf.lr_find_["head"]["learning_rate"]


def test_no_clear_descent_falls_back_to_the_default(data, tiny_backbone_file, monkeypatch):
    monkeypatch.setattr(_lr_find, "suggest", lambda rates, losses: None)
    with pytest.warns(UserWarning, match=r"learning_rate='auto'.*trains at 0.0001"):
        clf = classifier(tiny_backbone_file, epochs=1).fit(*data)
    assert clf.stages_[1].learning_rate == 1e-4
    assert clf.lr_find_["fine_tune"]["suggestion"] is None
    assert "learning rate 0.0001 (the default: the range test found no clear descent)" in (
        "\n".join(training_summary(clf))
    )


def test_auto_is_a_parameter_like_any_other(fitted, data, tiny_backbone_file, tmp_path):
    X, y = data
    with pytest.raises(InvalidParameterError, match="learning_rate"):
        classifier(tiny_backbone_file, learning_rate="fast").fit(X, y)
    assert clone(fitted).get_params()["learning_rate"] == "auto"
    restored = pickle.loads(pickle.dumps(fitted))
    assert restored.lr_find_ == fitted.lr_find_ and restored.stages_ == fitted.stages_
    path = tmp_path / "model.sktransfer"
    save_model(fitted, path)
    loaded = load_model(path)
    assert loaded.learning_rate == "auto"
    assert loaded.lr_find_ == fitted.lr_find_ and loaded.stages_ == fitted.stages_
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


def test_auto_in_a_grid_search(data, tiny_backbone_file):
    search = GridSearchCV(
        classifier(tiny_backbone_file, head_epochs=1, epochs=1),
        {"learning_rate": ["auto", 1e-3]},
        cv=2,
    ).fit(*data)
    assert search.cv_results_["param_learning_rate"].tolist() == ["auto", 1e-3]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_an_unresolved_stage_is_valid_and_other_strings_are_not():
    stage = Stage("fine_tune", "fine tuning", 1, 2, "auto")
    assert stage.to_dict()["learning_rate"] == "auto"
    with pytest.raises(ValueError, match="Not a valid training stage"):
        Stage("fine_tune", "fine tuning", 1, 2, "fast")


def test_command_line_accepts_auto(fitted):
    parser = build_parser()
    args = parser.parse_args(
        ["fit", "photos", "-o", "m.sktransfer", "--learning-rate", "auto",
         "--head-learning-rate", "auto"]
    )
    assert args.learning_rate == args.head_learning_rate == "auto"
    assert parser.parse_args(["fit", "p", "-o", "m", "--learning-rate", "3e-4"]).learning_rate == 3e-4
    with pytest.raises(SystemExit):
        parser.parse_args(["fit", "p", "-o", "m", "--learning-rate", "fast"])
    rate = fitted.stages_[1].learning_rate
    assert f"learning rate {rate:.2g} from a range test" in "\n".join(training_summary(fitted))


# The display --------------------------------------------------------------------


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_display_from_estimator(fitted, plt):
    from sktransfer.inspection import LearningRateFinderDisplay

    display = LearningRateFinderDisplay.from_estimator(fitted)
    found = fitted.lr_find_["fine_tune"]
    np.testing.assert_array_equal(display.line_.get_xdata(), found["learning_rates"])
    np.testing.assert_array_equal(display.line_.get_ydata(), found["losses"])
    assert display.ax_.get_xscale() == "log"
    assert display.suggestion_.get_xdata().tolist() == [found["suggestion"]]
    assert display.ax_.get_title() == "range test: fine tuning"
    _, ax = plt.subplots()
    assert LearningRateFinderDisplay.from_estimator(fitted, ax=ax).ax_ is ax
    with pytest.raises(ValueError, match=r"stage='head' ran no range test.*\['fine_tune'\]"):
        LearningRateFinderDisplay.from_estimator(fitted, stage="head")


def test_display_from_arrays_and_its_errors(data, tiny_backbone_file, plt):
    from sktransfer.inspection import LearningRateFinderDisplay

    display = LearningRateFinderDisplay(RATES, valley()).plot()
    assert display.suggestion_ is None and len(display.line_.get_xdata()) == 100
    with pytest.raises(ValueError, match="outside the rates"):
        LearningRateFinderDisplay(RATES, valley(), suggestion=10.0).plot()
    with pytest.raises(ValueError, match="increasing"):
        LearningRateFinderDisplay(RATES[::-1], valley()).plot()
    given = classifier(tiny_backbone_file, learning_rate=1e-3, epochs=0).fit(*data)
    with pytest.raises(ValueError, match="learning_rate='auto'"):
        LearningRateFinderDisplay.from_estimator(given)
