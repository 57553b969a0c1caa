"""learning_rate="auto": the range test, the suggestion, the classifier and the display."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sktransfer import _lr_find, _training

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


def test_a_clean_valley_suggests_its_middle():
    losses = valley()
    # Falling from the first point kept (the first tenth is skipped) to the
    # minimum: the rate halfway between, in log scale, as fastai's valley.
    lowest = int(np.argmin(losses))
    assert _lr_find.suggest(RATES, losses) == RATES[(10 + lowest) // 2]
    assert 1e-5 <= RATES[(10 + lowest) // 2] <= 1e-4  # below the steepest fall


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_valley_suggests_a_rate_on_the_descent(seed):
    suggestion = _lr_find.suggest(RATES, valley(noise=0.01, seed=seed))
    assert 1e-6 <= suggestion <= 1e-3


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
