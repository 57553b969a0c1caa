"""scikit-learn callbacks (:mod:`sklearn.callback`) told about the work of a fit.

scikit-learn 1.9 added a callback API: ``est.set_callbacks(ProgressBar(),
ScoringMonitor(scoring="accuracy"))`` before ``fit``, and every estimator
that supports it reports its fit as a tree of tasks, each begun and ended
through the callbacks' ``on_fit_task_begin``/``on_fit_task_end``. Both
estimators report theirs through :class:`FitTasks`:

* ``CNNFeatureExtractor.fit`` is one task, ``"fit"``, with no sub-task: it
  runs no network.
* ``CNNFeatureExtractor.fit_transform`` is ``"fit-transform"`` with one
  sub-task, ``"transform"``: the network's pass over the images, with a
  sub-task ``"batch"`` per batch that went through the network (none for
  images found in the feature cache; none either for Dask input, whose
  output is lazy).
* ``FineTunedCNNClassifier.fit`` is ``"fit"`` with, in this order: the pass
  ``"features"`` (batches) when stage 1 trains on cached pooled features;
  the stage ``"head"``, with a sub-task ``"epoch"`` per epoch of stage 1;
  the pass ``"maps"`` (batches) when stage 2 trains on cached maps of the
  frozen layers; the stage ``"fine_tune"`` with its epochs, when stage 2
  runs. The stages are named as the keys of ``history_``.

What the hooks receive
----------------------
``X``, ``y`` and ``metadata`` (``{"sample_weight": ...}`` when it was given)
are what ``fit`` was given, for every task. ``fitted_estimator``, the
estimator as if the fit had stopped there, is given at the end of every
epoch, every stage and the whole fit (``None`` at the beginnings and for the
feature passes, which fit nothing): a copy of the estimator whose
``model_`` is an independent copy of the network at that point (taken only
when a callback asks for it) and whose ``history_`` holds the Keras curves
(``loss``, ``accuracy``, ``val_loss``, ...) up to that point. So
``ScoringMonitor`` scores every epoch and stage on ``X``, and a callback
reads an epoch's loss as ``fitted_estimator.history_[stage]["loss"][-1]``.
The model of an epoch is the network's weights at the end of that epoch;
early stopping restores the best weights only at the end of its stage.

A callback's request to stop (``on_fit_task_end`` returning True) is
honoured at the end of an epoch (the stage stops there; with early stopping
on, its best weights are restored as usual) and at the end of a stage (no
later stage runs); the batches of a feature pass run to the end.

The API covers ``fit`` (and ``fit_transform``) only: ``transform``,
``predict`` and the other methods report nothing; their progress is shown
by ``verbose``.

Older scikit-learn
------------------
Where :mod:`sklearn.callback` does not exist (scikit-learn < 1.9), the
estimators import and fit as before; ``set_callbacks`` with callbacks
raises an ImportError that says which version is needed, and every report
goes to a context that does nothing.
"""

from __future__ import annotations

import functools
import math

try:
    from sklearn.callback import CallbackSupportMixin

    HAS_CALLBACK_API = True
except ImportError:  # scikit-learn < 1.9
    HAS_CALLBACK_API = False

    class CallbackSupportMixin:
        """Stands in for scikit-learn's mixin where it has no callback API."""

        def set_callbacks(self, *callbacks):
            """Set callbacks: needs scikit-learn >= 1.9 (:mod:`sklearn.callback`).

            Parameters
            ----------
            *callbacks : callback instances
                None may be given here: with none, this does nothing.

            Returns
            -------
            self : estimator instance

            Raises
            ------
            ImportError
                When callbacks are given.
            """
            if callbacks:
                import sklearn

                raise ImportError(
                    f"set_callbacks needs scikit-learn >= 1.9, whose sklearn.callback "
                    f"API it uses; scikit-learn {sklearn.__version__} is installed. "
                    "Upgrade scikit-learn (pip install -U scikit-learn), or use "
                    "verbose=1 for progress bars."
                )
            return self


class _NoContext:
    """A callback context that reports nothing (no callback API)."""

    def subcontext(self, **kwargs):
        return self

    def call_on_fit_task_begin(self, **kwargs):
        return self

    def call_on_fit_task_end(self, **kwargs) -> bool:
        return False


class FitTasks:
    """The task of one fit, and its sub-tasks, reported to the callbacks.

    Made at the beginning of the fit (inside a method decorated with
    ``_fit_context``, which tears the callbacks down whatever happens); it
    sets the callbacks up and begins the fit's task.

    Parameters
    ----------
    estimator : CNNFeatureExtractor or FineTunedCNNClassifier
        The estimator being fitted.
    X, y : what the fit was given
        Passed to every hook (``ScoringMonitor`` scores on them).
    sample_weight : array-like or None, default=None
        Passed to the hooks as ``metadata={"sample_weight": ...}``.
    task_name : str, default="fit"
        Name of the fit's task.
    n_tasks : int, default=0
        How many sub-tasks the fit's task has (0: none).
    """

    def __init__(
        self, estimator, X, y=None, *, sample_weight=None, task_name="fit", n_tasks=0
    ):
        metadata = {} if sample_weight is None else {"sample_weight": sample_weight}
        self.hook_args = dict(estimator=estimator, X=X, y=y, metadata=metadata)
        self.history: dict = {}  # the curves of the stages already ended
        if HAS_CALLBACK_API:
            # Called even without callbacks of its own: inside a Pipeline or
            # a search, this attaches the fit's tasks to the meta-estimator's.
            self.context = estimator._init_callback_context(
                task_name=task_name, max_subtasks=n_tasks
            )
        else:
            self.context = _NoContext()
        self.context.call_on_fit_task_begin(**self.hook_args)

    def end(self) -> None:
        """End the fit's task; the estimator is fitted."""
        self.context.call_on_fit_task_end(**self.hook_args, reconstruction_attributes={})

    def batches(self, task_name: str) -> BatchTask:
        """A pass of the network over batches, for ``_features.features``."""
        return BatchTask(self, task_name)

    def stage(self, task_name: str, epochs: int, snapshot):
        """A Keras callback reporting a training stage and its epochs.

        Parameters
        ----------
        task_name : str
            The stage, as named in ``history_``.
        epochs : int
            The most epochs the stage may run.
        snapshot : callable
            Returns an independent copy of the network being trained.
        """
        return _stage_callback_class()(self, task_name, epochs, snapshot)


class BatchTask:
    """A pass of the network over images, with a sub-task per batch.

    ``_features.features`` calls ``begin`` once it knows how many images the
    network runs on, then ``on_batch`` after each batch (the hook of
    ``_inputs.map_batches``); the task ends with its last batch.
    """

    def __init__(self, tasks: FitTasks, task_name: str):
        self.tasks = tasks
        self.task_name = task_name

    def begin(self, n_images: int, batch_size: int) -> None:
        self.remaining = math.ceil(n_images / batch_size)
        self.context = self.tasks.context.subcontext(
            task_name=self.task_name, max_subtasks=self.remaining
        )
        self.context.call_on_fit_task_begin(**self.tasks.hook_args)
        self._next()

    def on_batch(self, out, start, stop, failed) -> None:
        self.batch.call_on_fit_task_end(**self.tasks.hook_args)
        self.remaining -= 1
        self._next()

    def _next(self) -> None:
        # The next batch begins as soon as the previous one ends, so that its
        # task spans its computation.
        if self.remaining:
            self.batch = self.context.subcontext(task_name="batch")
            self.batch.call_on_fit_task_begin(**self.tasks.hook_args)
        else:
            self.context.call_on_fit_task_end(**self.tasks.hook_args)


@functools.cache
def _stage_callback_class():
    # Defined on first use: importing Keras (and TensorFlow) must wait until
    # a network is trained.
    import keras

    class StageCallback(keras.callbacks.Callback):
        """Reports a training stage to the scikit-learn callbacks, an epoch a task.

        Runs after early stopping's Keras callback, so that the stage's end
        sees the best weights it restored.
        """

        def __init__(self, tasks, task_name, epochs, snapshot):
            super().__init__()
            self.tasks = tasks
            self.task_name = task_name
            self.epochs = epochs
            self.snapshot = snapshot
            self.curves: dict = {}
            #: Whether a callback asked, at the stage's end, that no later stage run.
            self.stop_fit = False

        def on_train_begin(self, logs=None):
            self.context = self.tasks.context.subcontext(
                task_name=self.task_name, max_subtasks=self.epochs
            )
            self.context.call_on_fit_task_begin(**self.tasks.hook_args)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = self.context.subcontext(task_name="epoch")
            self.epoch.call_on_fit_task_begin(**self.tasks.hook_args)

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.curves.setdefault(key, []).append(float(value))
            if self.epoch.call_on_fit_task_end(
                **self.tasks.hook_args, reconstruction_attributes=self._fitted_state
            ):
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.stop_fit = self.context.call_on_fit_task_end(
                **self.tasks.hook_args, reconstruction_attributes=self._fitted_state
            )
            self.tasks.history[self.task_name] = self.curves

        def _fitted_state(self) -> dict:
            # Called by scikit-learn only when a callback asks for
            # fitted_estimator: copying the network is not free.
            curves = {key: list(values) for key, values in self.curves.items()}
            return {
                "model_": self.snapshot(),
                "history_": {**self.tasks.history, self.task_name: curves},
            }

    return StageCallback
