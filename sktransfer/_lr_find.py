"""The learning-rate range test behind ``learning_rate="auto"`` (fastai's ``lr_find``).

Leslie Smith's range test, as fastai runs it: the compiled model of a stage
trains batch by batch while the learning rate grows exponentially from
``start`` to ``end``; the loss of each batch goes into an exponential moving
average (bias-corrected, so the first values are not pulled towards 0),
and the test stops when that smoothed loss exceeds four times the lowest
seen (or is not finite). The model's weights, seed-generator states and
optimizer state are then put back as they were: the stage trains afterwards
exactly as if the test had never run.

:func:`suggest` reads a rate off the curve: the steepest descent (Leslie
Smith's recommendation: the rate at which the loss falls fastest), found
robustly, as the rate at which the longest descent of the loss has lost
half of its drop. For an S-shaped descent that is its steepest point.

* Not the steepest point as the minimum of the curve's slope: a slope
  amplifies the noise of a curve measured on one batch per rate, so that
  point jumps from run to run. A level crossed by the whole descent does
  not.
* Not fastai's "valley" (halfway along the longest descent, in log rate):
  a fine-tuning curve is flat for decades below the descent, and the
  longest descent starts in that flat part (the loss drifts down there
  too), so the valley's middle moves with ``start``, the smallest rate
  tried, and lands where the loss has barely begun to fall (measured on
  Fashion-MNIST: 5e-5, a decade below the steepest fall).
* Not the minimum divided by 10: the minimum sits where training is about
  to become unstable, often right before the divergence, and the factor of
  10 is arbitrary.

The longest descent is fastai's: the longest strictly decreasing
subsequence of the losses (not necessarily consecutive points), so bumps of
noise inside a descent do not cut it. A curve that never falls clearly
(flat, pure noise, or rising from the start: every rate tried was too
small to matter or already too large) has none: :func:`suggest` returns
None, and the classifier then trains at its parameter's default rate, with
a warning.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _training

#: The range of rates tried, and how many steps (batches) at most.
START, END, N_STEPS = 1e-7, 1.0, 100
#: Weight of the past in the moving average of the loss (fastai's).
SMOOTHING = 0.98
#: The test stops when the smoothed loss exceeds this many times its minimum.
DIVERGENCE = 4.0
#: A valley must lower the loss by at least this fraction of its start.
MIN_DROP = 0.05
#: Fewest points a curve needs (after its first tenth is skipped).
MIN_POINTS = 5


def find(model, batches, *, parameter: str, fallback: float, stage: str) -> dict:
    """Range test and chosen rate of one stage: an entry of ``lr_find_``.

    The suggestion of :func:`suggest`; without one, ``fallback`` (the
    default of ``parameter``), with a warning that says so.
    """
    rates, losses = range_test(model, batches)
    suggestion = suggest(rates, losses)
    if suggestion is None:
        warnings.warn(
            f"{parameter}='auto': the learning-rate range test of the {stage} "
            f"stage found no clear descent of the training loss (flat, noise only, "
            f"or rising from the smallest rate tried, {START:g}), so that stage "
            f"trains at {fallback:g}, the default of {parameter}. Draw the curve "
            "with sktransfer.inspection.LearningRateFinderDisplay.from_estimator"
            f"(clf), or give {parameter} a number.",
            UserWarning,
            stacklevel=5,  # the caller of fit
        )
    return {
        "learning_rates": rates.tolist(),
        "losses": losses.tolist(),
        "suggestion": suggestion,
        "learning_rate": fallback if suggestion is None else suggestion,
    }


def range_test(
    model,
    batches,
    *,
    start: float = START,
    end: float = END,
    n_steps: int = N_STEPS,
    smoothing: float = SMOOTHING,
    divergence: float = DIVERGENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Train ``model`` at exponentially growing rates; the smoothed loss of each.

    Parameters
    ----------
    model : keras.Model
        Compiled, with its optimizer (a stage model of
        :class:`sktransfer._training.Trainer`). Its variables and its
        optimizer's are restored when the test ends, however it ends.
    batches : keras.utils.PyDataset
        The training batches, ``(x, y)`` or ``(x, y, sample_weight)``, read
        in their current order (cycled when there are fewer than
        ``n_steps``; never reshuffled, so the fit that follows sees the
        order it would have seen).
    start, end : float, default=1e-7, 1.0
        The first and the last rate.
    n_steps : int, default=100
        The batches trained at most, one rate each: ``start * (end /
        start) ** (i / (n_steps - 1))`` for step ``i``.
    smoothing : float, default=0.98
        Weight of the past in the moving average of the loss.
    divergence : float, default=4.0
        The test stops after the first smoothed loss above ``divergence``
        times the lowest before it.

    Returns
    -------
    learning_rates : ndarray of shape (n_run,)
        The rates of the steps run, increasing.
    losses : ndarray of shape (n_run,)
        The smoothed training loss after each step; the last may be the one
        that diverged (or NaN).
    """
    if not 0 < start < end:
        raise ValueError(f"The range test needs 0 < start < end; got {start=}, {end=}.")
    if n_steps < 2:
        raise ValueError(f"The range test needs n_steps >= 2; got {n_steps}.")
    _training.build_training(model, batches[0])
    variables = [*model.variables, *model.optimizer.variables]
    saved = [variable.numpy() for variable in variables]
    rates = start * (end / start) ** np.linspace(0.0, 1.0, n_steps)
    losses = []
    average, best = 0.0, np.inf
    try:
        for step, rate in enumerate(rates):
            model.optimizer.learning_rate = rate
            x, y, *weights = batches[step % len(batches)]
            logs = model.train_on_batch(
                x, y, sample_weight=weights[0] if weights else None, return_dict=True
            )
            average = smoothing * average + (1 - smoothing) * float(logs["loss"])
            losses.append(average / (1 - smoothing ** (step + 1)))
            if not np.isfinite(losses[-1]) or losses[-1] > divergence * best:
                break
            best = min(best, losses[-1])
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)
    return rates[: len(losses)], np.asarray(losses, dtype=float)


def suggest(learning_rates, losses, *, min_drop: float = MIN_DROP) -> float | None:
    """The rate at which the longest descent of the loss has lost half its drop.

    The steepest descent, found robustly (see the module's notes for why
    this rule). The first tenth of the curve (a moving average of few
    batches) and everything from its first non-finite loss on are left out.

    Parameters
    ----------
    learning_rates : array-like of shape (n_points,)
        Increasing, as :func:`range_test` returns them.
    losses : array-like of shape (n_points,)
    min_drop : float, default=0.05
        The fraction of its starting loss a descent must lose to count.

    Returns
    -------
    learning_rate : float or None
        One of ``learning_rates``: the first point of the longest descent
        at or below the middle of its highest and lowest loss. None when
        the curve has no clear descent (flat, noise only, rising from the
        start, or fewer than 5 points).
    """
    rates = np.asarray(learning_rates, dtype=float)
    losses = np.asarray(losses, dtype=float)
    if rates.shape != losses.shape or rates.ndim != 1:
        raise ValueError(
            f"learning_rates and losses must be 1-D and of one length; got shapes "
            f"{rates.shape} and {losses.shape}."
        )
    bad = np.flatnonzero(~np.isfinite(losses))
    n = bad[0] if len(bad) else len(losses)
    rates, losses = rates[n // 10 : n], losses[n // 10 : n]
    if len(losses) < MIN_POINTS:
        return None
    descent = _longest_descent(losses)
    top, bottom = losses[descent[0]], losses[descent[-1]]
    if top - bottom < min_drop * abs(top):
        return None
    half = descent[np.argmax(losses[descent] <= (top + bottom) / 2)]
    return float(rates[half])


def _longest_descent(losses: np.ndarray) -> np.ndarray:
    """The indices of the longest strictly decreasing subsequence, in order.

    The earliest one among equally long ones (as fastai's valley).
    """
    length = np.ones(len(losses), dtype=int)
    previous = np.full(len(losses), -1)
    for i in range(1, len(losses)):
        higher = np.flatnonzero(losses[:i] > losses[i])
        if len(higher):
            previous[i] = higher[np.argmax(length[higher])]
            length[i] = length[previous[i]] + 1
    indices = [int(np.argmax(length))]
    while previous[indices[-1]] >= 0:
        indices.append(int(previous[indices[-1]]))
    return np.array(indices[::-1])
