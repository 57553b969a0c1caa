"""See what the network sees: heat maps, training curves and layer choice.

Displays in scikit-learn's style (as :class:`sklearn.metrics.ConfusionMatrixDisplay`
and :class:`sklearn.model_selection.LearningCurveDisplay`): a
``from_estimator`` (or ``from_cv_results``) class method computes what to
draw and calls :meth:`plot`, which draws it and keeps the figure's objects as
attributes (``figure_``, ``ax_`` or ``axes_``, ``lines_``, ...). matplotlib
is imported only when something is drawn; install it with
``pip install "sktransfer[plot]"``.

* :class:`GradCAMDisplay`: where in each image the network looks, for a
  :class:`~sktransfer.FineTunedCNNClassifier` (Grad-CAM) or a pipeline of
  :class:`~sktransfer.CNNFeatureExtractor` and a linear classifier (class
  activation maps, :func:`class_activation_maps`).
* :class:`TrainingHistoryDisplay`: loss and accuracy of both training
  stages of a fine-tuned classifier.
* :class:`LearningRateFinderDisplay`: the learning-rate range test of a
  classifier fitted with ``learning_rate="auto"``, the chosen rate marked.
* :class:`LayerTransferDisplay`: validation score against the cut ``layer``
  of a grid search, the picture of the rule of thumb (a high layer for
  data like ImageNet, a lower one for different data).
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from . import _gradcam, _inputs
from ._gradcam import class_activation_maps

__all__ = [
    "GradCAMDisplay",
    "LayerTransferDisplay",
    "LearningRateFinderDisplay",
    "TrainingHistoryDisplay",
    "class_activation_maps",
]


def _pyplot(what: str):
    """matplotlib.pyplot, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"{what} needs matplotlib, which is not installed. Install it with "
            'pip install "sktransfer[plot]" (or pip install matplotlib).'
        ) from exc
    return plt


def _axes_grid(ax, n: int, n_cols: int, what: str, panel_size=(2.6, 2.6)):
    """``n`` axes: from ``ax`` (one Axes or an array of them) or a new grid."""
    plt = _pyplot(what)
    if ax is None:
        n_cols = max(1, min(n_cols, n))
        n_rows = -(-n // n_cols)
        figure, grid = plt.subplots(
            n_rows,
            n_cols,
            figsize=(panel_size[0] * n_cols, panel_size[1] * n_rows),
            squeeze=False,
        )
        grid = grid.ravel()
        for unused in grid[n:]:
            unused.set_axis_off()
        return figure, grid[:n]
    axes = np.asarray(ax, dtype=object).ravel()
    if len(axes) < n:
        raise ValueError(
            f"ax has {len(axes)} Axes but {n} panels are drawn; pass at least {n} "
            "Axes (e.g. plt.subplots(rows, cols)[1]) or ax=None for a new figure."
        )
    return axes[0].figure, axes[:n]


def _fitted_classifier(estimator, display: str):
    """The fitted FineTunedCNNClassifier that ``display`` draws (a search's best)."""
    from sklearn.utils.validation import check_is_fitted

    _pyplot(display)
    estimator = getattr(estimator, "best_estimator_", estimator)
    if not hasattr(type(estimator), "explain"):
        raise TypeError(
            f"{display}.from_estimator needs a FineTunedCNNClassifier; got "
            f"{type(estimator).__name__}."
        )
    check_is_fitted(estimator)
    return estimator


def _label_text(label) -> str:
    return str(label.item() if isinstance(label, np.generic) else label)


class GradCAMDisplay:
    """Heat maps of where a CNN looks, drawn over their images.

    Create it with :meth:`from_estimator`, which computes the maps (Grad-CAM
    for a :class:`~sktransfer.FineTunedCNNClassifier`, class activation maps
    for a pipeline of :class:`~sktransfer.CNNFeatureExtractor` and a linear
    classifier) and draws them; or from maps computed before, then call
    :meth:`plot`. Each panel shows an image with its map on top, titled with
    the predicted label (and the true one, in red when they differ).

    Parameters
    ----------
    images : list of ndarray of shape (height, width, 3)
        RGB images with values in [0, 1].
    heatmaps : ndarray of shape (n_images, height, width) or list of ndarray
        Maps in [0, 1], each the size of its image.
    predicted_labels : array-like of shape (n_images,), default=None
    true_labels : array-like of shape (n_images,), default=None
    target_labels : array-like of shape (n_images,), default=None
        The class each map explains, when not the predicted one.

    Attributes
    ----------
    figure_ : matplotlib Figure
    axes_ : ndarray of matplotlib Axes
        One per image.
    images_ : list of matplotlib AxesImage
        The images drawn.
    overlays_ : list of matplotlib AxesImage
        The heat maps drawn over them.

    See Also
    --------
    sktransfer.FineTunedCNNClassifier.explain : Grad-CAM maps.
    class_activation_maps : Class activation maps of a linear pipeline.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sktransfer import FineTunedCNNClassifier
    >>> from sktransfer.inspection import GradCAMDisplay
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    >>> labels = ["cat", "dog"] * 2
    >>> clf = FineTunedCNNClassifier(
    ...     backbone="mobilenet_v2", weights=None, input_size=32, layer=-2,
    ...     head_epochs=1, epochs=0, early_stopping=False, random_state=0,
    ... ).fit(images, labels)
    >>> display = GradCAMDisplay.from_estimator(clf, images, labels)
    >>> display.axes_.shape
    (4,)
    """

    def __init__(
        self,
        images,
        heatmaps,
        *,
        predicted_labels=None,
        true_labels=None,
        target_labels=None,
    ):
        self.images = images
        self.heatmaps = heatmaps
        self.predicted_labels = predicted_labels
        self.true_labels = true_labels
        self.target_labels = target_labels

    def plot(
        self, *, ax=None, n_cols: int = 4, alpha: float = 0.5, cmap="jet"
    ) -> GradCAMDisplay:
        """Draw every image with its heat map on top.

        Parameters
        ----------
        ax : matplotlib Axes or array-like of Axes, default=None
            At least one Axes per image; None makes a new figure with a grid
            of ``n_cols`` columns.
        n_cols : int, default=4
            Columns of the new grid.
        alpha : float, default=0.5
            Opacity of the heat maps, in [0, 1].
        cmap : str or matplotlib Colormap, default="jet"
            Colour map of the heat maps.

        Returns
        -------
        display : GradCAMDisplay
        """
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha={alpha!r} must be in [0, 1].")
        if not isinstance(n_cols, int) or n_cols < 1:
            raise ValueError(f"n_cols={n_cols!r} must be a positive int.")
        n = len(self.images)
        if len(self.heatmaps) != n:
            raise ValueError(
                f"{len(self.heatmaps)} heat maps for {n} images: give one per image."
            )
        self.figure_, self.axes_ = _axes_grid(ax, n, n_cols, "GradCAMDisplay")
        self.images_, self.overlays_ = [], []
        for index, axes in enumerate(self.axes_):
            image = np.asarray(self.images[index])
            heatmap = np.asarray(self.heatmaps[index])
            self.images_.append(axes.imshow(image, vmin=0, vmax=1))
            self.overlays_.append(
                axes.imshow(heatmap, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
            )
            axes.set_axis_off()
            self._title(axes, index)
        return self

    def _title(self, axes, index: int) -> None:
        lines, wrong = [], False
        if self.predicted_labels is not None:
            predicted = _label_text(self.predicted_labels[index])
            lines.append(f"pred: {predicted}")
            if self.true_labels is not None:
                wrong = predicted != _label_text(self.true_labels[index])
        if self.true_labels is not None:
            lines.append(f"true: {_label_text(self.true_labels[index])}")
        if self.target_labels is not None:
            lines.append(f"map of: {_label_text(self.target_labels[index])}")
        if lines:
            colour = {"color": "tab:red"} if wrong else {}
            axes.set_title("\n".join(lines), fontsize=9, **colour)

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y=None,
        *,
        target=None,
        n_cols: int = 4,
        alpha: float = 0.5,
        cmap="jet",
        ax=None,
    ) -> GradCAMDisplay:
        """Compute the heat maps of ``X`` and draw them over the images.

        Parameters
        ----------
        estimator : FineTunedCNNClassifier or Pipeline
            A fitted :class:`~sktransfer.FineTunedCNNClassifier` (Grad-CAM),
            or a fitted pipeline of a :class:`~sktransfer.CNNFeatureExtractor`
            and a linear classifier (class activation maps; see
            :func:`class_activation_maps` for what it supports). A fitted
            search is read through its ``best_estimator_``.
        X : array-like of images, file paths or PIL images
            The images to explain, one panel each: pass a few.
        y : array-like of shape (n_images,), default=None
            True labels, shown in the titles.
        target : label, array-like of labels or None, default=None
            The class each map explains: None for each image's predicted
            class, one label for all images, or one label per image.
        n_cols : int, default=4
        alpha : float, default=0.5
        cmap : str or matplotlib Colormap, default="jet"
        ax : matplotlib Axes or array-like of Axes, default=None
            See :meth:`plot`.

        Returns
        -------
        display : GradCAMDisplay
        """
        _pyplot("GradCAMDisplay")
        estimator = getattr(estimator, "best_estimator_", estimator)
        if hasattr(estimator, "explain"):
            heatmaps, predicted = _gradcam.grad_cam_and_predictions(
                estimator, X, target
            )
            on_error = estimator.on_error
            fallback_size = estimator.input_size_
        else:
            heatmaps, predicted = _gradcam.cam_and_predictions(estimator, X, target)
            extractor = _gradcam.linear_parts(estimator)[0]
            on_error = extractor.on_error
            fallback_size = extractor.input_size_
        classes = estimator.classes_
        images = _inputs.as_images(X, on_error=on_error)
        n = len(images)
        if y is not None and len(y) != n:
            raise ValueError(f"X has {n} images but y has {len(y)} labels.")
        sizes = images.sizes(fallback_size)
        pixels = [_gradcam.display_pixels(images, i, sizes[i]) for i in range(n)]
        predicted_labels = [
            classes[index] if index >= 0 else "unreadable" for index in predicted
        ]
        target_labels = (
            None
            if target is None
            else classes[_gradcam.check_target(target, classes, n)]
        )
        display = cls(
            pixels,
            heatmaps,
            predicted_labels=predicted_labels,
            true_labels=None if y is None else list(y),
            target_labels=target_labels,
        )
        return display.plot(ax=ax, n_cols=n_cols, alpha=alpha, cmap=cmap)


class TrainingHistoryDisplay:
    """Training curves of a fine-tuned classifier, both stages in a row.

    One panel per metric (loss, accuracy), each with the training curve and
    the validation curve (when early stopping held out a validation split).
    The epochs of stage 2 (fine tuning) follow those of stage 1 (the new top
    on the frozen network), and a dotted vertical line marks where fine
    tuning starts: a drop of the validation loss after it is what fine
    tuning bought; a rise, that the learning rate was too high or the data
    too few.

    Parameters
    ----------
    history : dict
        Epoch histories per stage, in training order, as
        :attr:`FineTunedCNNClassifier.history_`:
        ``{"head": {"loss": [...], "val_loss": [...], ...},
        "fine_tune": {...}}``.
    stage_titles : dict, default=None
        How each stage reads in the legend, by name (as the ``title`` of
        :attr:`FineTunedCNNClassifier.stages_`); a stage not in it reads as
        its name.

    Attributes
    ----------
    figure_ : matplotlib Figure
    axes_ : ndarray of matplotlib Axes
        One per metric, in the order of :attr:`metrics_`.
    metrics_ : list of str
        The metrics drawn (``"loss"`` first).
    lines_ : dict
        ``lines_[metric]["train"]`` and ``lines_[metric]["validation"]``:
        the matplotlib Line2D of each curve (no "validation" key without
        validation data).
    boundary_lines_ : list of matplotlib Line2D
        The vertical lines where a stage starts, in every panel.

    See Also
    --------
    sktransfer.FineTunedCNNClassifier : Its ``history_`` is drawn.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sktransfer.inspection import TrainingHistoryDisplay
    >>> history = {
    ...     "head": {"loss": [0.9, 0.6], "val_loss": [0.8, 0.7],
    ...              "accuracy": [0.5, 0.7], "val_accuracy": [0.6, 0.65]},
    ...     "fine_tune": {"loss": [0.5], "val_loss": [0.6],
    ...                   "accuracy": [0.8], "val_accuracy": [0.7]},
    ... }
    >>> display = TrainingHistoryDisplay(history).plot()
    >>> display.metrics_
    ['loss', 'accuracy']
    >>> display.lines_["loss"]["validation"].get_ydata().tolist()
    [0.8, 0.7, 0.6]

    With a fitted classifier: ``TrainingHistoryDisplay.from_estimator(clf)``.
    """

    def __init__(self, history: dict, *, stage_titles: dict | None = None):
        self.history = history
        self.stage_titles = stage_titles

    def plot(self, *, ax=None) -> TrainingHistoryDisplay:
        """Draw the curves.

        Parameters
        ----------
        ax : array-like of matplotlib Axes, default=None
            One Axes per metric (loss, accuracy); None makes a new figure.

        Returns
        -------
        display : TrainingHistoryDisplay
        """
        stages = [(name, curves) for name, curves in self.history.items() if curves]
        if not stages:
            raise ValueError(
                "history has no epochs to draw; expected {'head': {'loss': [...], "
                "...}, 'fine_tune': {...}} as FineTunedCNNClassifier.history_."
            )
        metrics = list(
            dict.fromkeys(
                key
                for _, curves in stages
                for key in curves
                if not key.startswith("val_")
            )
        )
        metrics.sort(key=lambda metric: metric != "loss")  # loss first, else kept
        self.metrics_ = metrics
        self.figure_, self.axes_ = _axes_grid(
            ax, len(metrics), len(metrics), "TrainingHistoryDisplay", (4.5, 3.5)
        )
        titles = self.stage_titles or {}
        lengths = [max(len(v) for v in curves.values()) for _, curves in stages]
        starts = np.cumsum([0, *lengths])
        self.lines_, self.boundary_lines_ = {}, []
        for metric, axes in zip(metrics, self.axes_):
            self.lines_[metric] = {}
            for kind, key, style in (
                ("train", metric, "-"),
                ("validation", f"val_{metric}", "--"),
            ):
                epochs, values = [], []
                for (_, curves), start in zip(stages, starts):
                    series = curves.get(key, [])
                    epochs += list(range(start + 1, start + len(series) + 1))
                    values += [float(v) for v in series]
                if values:
                    (self.lines_[metric][kind],) = axes.plot(
                        epochs, values, style, marker="o", markersize=3, label=kind
                    )
            for (name, _), start in list(zip(stages, starts))[1:]:
                self.boundary_lines_.append(
                    axes.axvline(
                        start + 0.5,
                        color="gray",
                        linestyle=":",
                        label=f"{titles.get(name, name)} starts",
                    )
                )
            axes.set_xlabel("epoch")
            axes.set_ylabel(metric)
            axes.legend(fontsize=8)
        self.figure_.tight_layout()
        return self

    @classmethod
    def from_estimator(cls, estimator, *, ax=None) -> TrainingHistoryDisplay:
        """Draw the training curves of a fitted :class:`FineTunedCNNClassifier`.

        Parameters
        ----------
        estimator : FineTunedCNNClassifier
            Fitted; a fitted search is read through its ``best_estimator_``.
        ax : array-like of matplotlib Axes, default=None
            See :meth:`plot`.

        Returns
        -------
        display : TrainingHistoryDisplay
        """
        estimator = _fitted_classifier(estimator, "TrainingHistoryDisplay")
        # A model saved before stages_ existed reads with names as titles.
        titles = {stage.name: stage.title for stage in getattr(estimator, "stages_", ())}
        return cls(estimator.history_, stage_titles=titles).plot(ax=ax)


class LearningRateFinderDisplay:
    """Loss against learning rate in a range test, the suggested rate marked.

    The curve of ``learning_rate="auto"`` (fastai's ``lr_find``): the
    smoothed training loss of one batch per rate, the rates growing
    exponentially, on a log axis. Where the loss falls, the network learns;
    where it shoots up, the rate is too high. The suggested rate, where the
    longest descent has lost half its drop, is marked; a curve without a
    clear descent
    has no suggestion (the classifier then used its default rate).

    Parameters
    ----------
    learning_rates : array-like of shape (n_points,)
        Increasing.
    losses : array-like of shape (n_points,)
        The smoothed loss at each rate.
    suggestion : float or None, default=None
        The rate to mark, within the range of ``learning_rates``.
    title : str or None, default=None
        The title of the Axes (the stage, with ``from_estimator``).

    Attributes
    ----------
    figure_ : matplotlib Figure
    ax_ : matplotlib Axes
    line_ : matplotlib Line2D
        The curve.
    suggestion_ : matplotlib Line2D or None
        The marker of the suggestion on the curve (None without one).

    See Also
    --------
    sktransfer.FineTunedCNNClassifier : Its ``lr_find_`` is drawn.
    TrainingHistoryDisplay : The training that followed.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sktransfer.inspection import LearningRateFinderDisplay
    >>> rates = np.logspace(-7, 0, 50)
    >>> losses = 1.0 - 0.5 / (1 + (rates / 1e-4) ** -2) + (rates / 0.1) ** 2
    >>> display = LearningRateFinderDisplay(rates, losses, suggestion=1e-4).plot()
    >>> display.ax_.get_xscale()
    'log'
    >>> display.suggestion_.get_xdata().tolist()
    [0.0001]

    With a classifier fitted with ``learning_rate="auto"``:
    ``LearningRateFinderDisplay.from_estimator(clf)``.
    """

    def __init__(self, learning_rates, losses, *, suggestion=None, title=None):
        self.learning_rates = learning_rates
        self.losses = losses
        self.suggestion = suggestion
        self.title = title

    def plot(self, *, ax=None) -> LearningRateFinderDisplay:
        """Draw the curve and mark the suggestion.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            None makes a new figure.

        Returns
        -------
        display : LearningRateFinderDisplay
        """
        rates = np.asarray(self.learning_rates, dtype=float)
        losses = np.asarray(self.losses, dtype=float)
        if rates.ndim != 1 or rates.shape != losses.shape or len(rates) == 0:
            raise ValueError(
                f"learning_rates and losses must be 1-D, of one length and not "
                f"empty; got shapes {rates.shape} and {losses.shape}."
            )
        if not (rates > 0).all() or (np.diff(rates) <= 0).any():
            raise ValueError(
                "learning_rates must be positive and increasing, as a range test "
                "tries them."
            )
        plt = _pyplot("LearningRateFinderDisplay")
        if ax is None:
            self.figure_, self.ax_ = plt.subplots(figsize=(5, 3.5))
        else:
            self.figure_, self.ax_ = ax.figure, ax
        (self.line_,) = self.ax_.plot(rates, losses, label="smoothed loss")
        self.ax_.set_xscale("log")
        self.suggestion_ = None
        if self.suggestion is not None:
            rate = float(self.suggestion)
            if not rates[0] <= rate <= rates[-1]:
                raise ValueError(
                    f"suggestion={rate:g} is outside the rates of the curve "
                    f"[{rates[0]:g}, {rates[-1]:g}]."
                )
            finite = np.isfinite(losses)
            loss = np.interp(np.log(rate), np.log(rates[finite]), losses[finite])
            (self.suggestion_,) = self.ax_.plot(
                [rate], [loss], "o", color="tab:red", label=f"suggestion: {rate:.2g}"
            )
        self.ax_.set_xlabel("learning rate (log scale)")
        self.ax_.set_ylabel("training loss (smoothed)")
        if self.title:
            self.ax_.set_title(self.title)
        self.ax_.legend(fontsize=8)
        return self

    @classmethod
    def from_estimator(
        cls, estimator, *, stage: str | None = None, ax=None
    ) -> LearningRateFinderDisplay:
        """Draw a range test of a fitted :class:`FineTunedCNNClassifier`.

        Parameters
        ----------
        estimator : FineTunedCNNClassifier
            Fitted with ``learning_rate="auto"`` (or
            ``head_learning_rate="auto"``); a fitted search is read through
            its ``best_estimator_``.
        stage : str, default=None
            The stage whose test is drawn, a key of ``lr_find_``
            (``"fine_tune"``, ``"head"``); None for the last one run.
        ax : matplotlib Axes, default=None
            See :meth:`plot`.

        Returns
        -------
        display : LearningRateFinderDisplay
        """
        estimator = _fitted_classifier(estimator, "LearningRateFinderDisplay")
        tests = getattr(estimator, "lr_find_", {})
        if not tests:
            raise ValueError(
                "This classifier ran no learning-rate range test: fit it with "
                "learning_rate='auto' (or head_learning_rate='auto') to have one."
            )
        if stage is None:
            stage = list(tests)[-1]
        if stage not in tests:
            raise ValueError(
                f"stage={stage!r} ran no range test; the stages that did are "
                f"{list(tests)}."
            )
        titles = {s.name: s.title for s in getattr(estimator, "stages_", ())}
        test = tests[stage]
        display = cls(
            test["learning_rates"],
            test["losses"],
            suggestion=test["suggestion"],
            title=f"range test: {titles.get(stage, stage)}",
        )
        return display.plot(ax=ax)


class LayerTransferDisplay:
    """Validation score against one searched parameter, usually ``layer``.

    The picture of transfer learning's rule of thumb: for data like
    ImageNet (photos of objects) the deepest layer (``layer=-1``) scores
    best; for data far from it (textures, medical or satellite images,
    drawings) a lower layer often does. One line per combination of the
    other searched parameters (``C``, ``trainable_blocks``,
    ``learning_rate``, ...), each point the mean cross-validated score with
    a band of one standard deviation.

    Parameters
    ----------
    values : list
        The values of the parameter on the x axis, in drawing order.
    mean_scores : ndarray of shape (n_lines, n_values)
        Mean validation score per line and value; NaN where not searched.
    std_scores : ndarray of shape (n_lines, n_values)
    param_name : str
        The parameter on the x axis.
    line_labels : list of str, default=None
        One label per line (the other parameters' values).
    score_name : str, default="score"

    Attributes
    ----------
    figure_ : matplotlib Figure
    ax_ : matplotlib Axes
    lines_ : list of matplotlib Line2D
        The mean scores, one line per row of ``mean_scores``.
    fill_between_ : list of matplotlib PolyCollection or None
        The bands of one standard deviation.
    errorbar_ : list of matplotlib ErrorbarContainer or None

    See Also
    --------
    sktransfer.CNNFeatureExtractor : Its ``layer`` is the usual x axis.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sklearn.pipeline import make_pipeline
    >>> from sktransfer import CNNFeatureExtractor
    >>> from sktransfer.inspection import LayerTransferDisplay
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_pipeline(
    ...     CNNFeatureExtractor(backbone="mobilenet_v2", weights=None, input_size=32),
    ...     LogisticRegression(),
    ... )
    >>> search = GridSearchCV(pipe, {"cnnfeatureextractor__layer": [-1, -2],
    ...                              "logisticregression__C": [0.1, 1.0]}, cv=2)
    >>> display = LayerTransferDisplay.from_cv_results(search.fit(images, [0, 1] * 4))
    >>> display.values, len(display.lines_)
    ([-2, -1], 2)
    """

    def __init__(
        self,
        values,
        mean_scores,
        std_scores,
        *,
        param_name: str,
        line_labels=None,
        score_name: str = "score",
    ):
        self.values = values
        self.mean_scores = mean_scores
        self.std_scores = std_scores
        self.param_name = param_name
        self.line_labels = line_labels
        self.score_name = score_name

    def plot(
        self, *, ax=None, std_display_style: str | None = "fill_between"
    ) -> LayerTransferDisplay:
        """Draw one line per row of ``mean_scores``.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            None makes a new figure.
        std_display_style : {"fill_between", "errorbar"} or None, \
default="fill_between"
            How one standard deviation is shown: a band, error bars, or not.

        Returns
        -------
        display : LayerTransferDisplay
        """
        styles = ("fill_between", "errorbar", None)
        if std_display_style not in styles:
            raise ValueError(
                f"std_display_style={std_display_style!r} is not valid; use one of "
                f"{styles}."
            )
        plt = _pyplot("LayerTransferDisplay")
        if ax is None:
            self.figure_, self.ax_ = plt.subplots(figsize=(6, 4))
        else:
            self.figure_, self.ax_ = ax.figure, ax
        means = np.atleast_2d(np.asarray(self.mean_scores, dtype=float))
        stds = np.atleast_2d(np.asarray(self.std_scores, dtype=float))
        labels = self.line_labels or [None] * len(means)
        # The values are categories (layer names, lists of cuts, decades of a
        # learning rate): equally spaced, labelled as given.
        positions = np.arange(len(self.values))
        self.lines_ = []
        self.fill_between_ = [] if std_display_style == "fill_between" else None
        self.errorbar_ = [] if std_display_style == "errorbar" else None
        for mean, std, label in zip(means, stds, labels):
            if std_display_style == "errorbar":
                container = self.ax_.errorbar(
                    positions, mean, yerr=std, marker="o", capsize=3, label=label
                )
                self.errorbar_.append(container)
                self.lines_.append(container.lines[0])
                continue
            (line,) = self.ax_.plot(positions, mean, marker="o", label=label)
            self.lines_.append(line)
            if std_display_style == "fill_between":
                self.fill_between_.append(
                    self.ax_.fill_between(
                        positions,
                        mean - std,
                        mean + std,
                        alpha=0.2,
                        color=line.get_color(),
                    )
                )
        self.ax_.set_xticks(positions, [_value_text(v) for v in self.values])
        xlabel = self.param_name
        # Sorted block indices run deeper to the right only when they share
        # a sign ([0, -1] puts the deepest block first).
        if self.param_name.endswith("layer") and all(
            _is_number(v) for v in self.values
        ) and (all(v >= 0 for v in self.values) or all(v < 0 for v in self.values)):
            xlabel += "  (block index: deeper to the right)"
        self.ax_.set_xlabel(xlabel)
        self.ax_.set_ylabel(f"mean validation {self.score_name}")
        if any(label is not None for label in labels):
            self.ax_.legend(fontsize=8)
        return self

    @classmethod
    def from_cv_results(
        cls,
        cv_results,
        param: str = "auto",
        *,
        metric: str | None = None,
        ax=None,
        std_display_style: str | None = "fill_between",
    ) -> LayerTransferDisplay:
        """Draw a grid search's validation scores against one parameter.

        Parameters
        ----------
        cv_results : fitted GridSearchCV or RandomizedSearchCV, or dict
            The search, or its ``cv_results_``.
        param : str, default="auto"
            The parameter on the x axis: its full name
            (``"cnnfeatureextractor__layer"``) or the part after the last
            ``"__"`` (``"layer"``, ``"trainable_blocks"``,
            ``"learning_rate"``). ``"auto"``: the one searched parameter
            whose name ends in ``"layer"``.
        metric : str, default=None
            With multi-metric scoring, the scorer to draw (the columns
            ``mean_test_<metric>``); None for the single metric.
        ax : matplotlib Axes, default=None
        std_display_style : {"fill_between", "errorbar"} or None, \
default="fill_between"

        Returns
        -------
        display : LayerTransferDisplay
        """
        _pyplot("LayerTransferDisplay")
        results = _cv_results(cv_results)
        names = [key[len("param_") :] for key in results if key.startswith("param_")]
        param = _searched_param(param, names)
        score_name = "score" if metric is None else metric
        mean_key, std_key = f"mean_test_{score_name}", f"std_test_{score_name}"
        if mean_key not in results:
            available = [
                k[len("mean_test_") :] for k in results if k.startswith("mean_test_")
            ]
            raise ValueError(
                f"cv_results has no column {mean_key!r}; "
                + (
                    f"pass metric= one of {available}."
                    if available
                    else "was the search fitted?"
                )
            )
        column = results[f"param_{param}"]
        rows = [i for i in range(len(column)) if not np.ma.is_masked(column[i])]
        values = _ordered_unique([column[i] for i in rows])
        others = [
            name
            for name in names
            if name != param
            and len({_key(results[f"param_{name}"][i]) for i in rows}) > 1
        ]
        groups: dict = {}
        for i in rows:
            label = ", ".join(
                f"{name.split('__')[-1]}={_value_text(results[f'param_{name}'][i])}"
                for name in others
            )
            groups.setdefault(label, []).append(i)
        means = np.full((len(groups), len(values)), np.nan)
        stds = np.full_like(means, np.nan)
        value_keys = [_key(value) for value in values]
        for line, members in enumerate(groups.values()):
            for i in members:
                position = value_keys.index(_key(column[i]))
                # With several rows per point (a parameter searched in only
                # some sub-grids) the best one is shown.
                if (
                    np.isnan(means[line, position])
                    or results[mean_key][i] > means[line, position]
                ):
                    means[line, position] = results[mean_key][i]
                    stds[line, position] = results[std_key][i]
        display = cls(
            values,
            means,
            stds,
            param_name=param,
            line_labels=list(groups) if others else None,
            score_name=score_name,
        )
        return display.plot(ax=ax, std_display_style=std_display_style)


    @classmethod
    def from_estimator(cls, estimator, *, ax=None) -> LayerTransferDisplay:
        """Draw the probe of ``layer="auto"``: each block's accuracy.

        The curve ``fit`` chose the cut from: the cross-validated accuracy
        of a logistic regression on each probed block's features, deeper to
        the right (``depth_scores_``). The chosen block is named in the
        legend.

        Parameters
        ----------
        estimator : CNNFeatureExtractor, FineTunedCNNClassifier or Pipeline
            Fitted with ``layer="auto"``; a pipeline's step that was.
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : LayerTransferDisplay
        """
        _pyplot("LayerTransferDisplay")
        steps = [step for _, step in getattr(estimator, "steps", [])] or [estimator]
        fitted = next((step for step in steps if hasattr(step, "depth_scores_")), None)
        if fitted is None:
            raise ValueError(
                f"{type(estimator).__name__} has no depth_scores_: only a fit with "
                "layer='auto' probes the blocks. Fit it with layer='auto', or draw "
                "a grid search over layer with LayerTransferDisplay.from_cv_results."
            )
        values = sorted(fitted.depth_scores_)
        display = cls(
            values,
            np.array([[fitted.depth_scores_[v] for v in values]]),
            np.zeros((1, len(values))),
            param_name="layer",
            line_labels=[f"linear probe (layer='auto' chose {fitted.layer_})"],
            score_name="accuracy",
        )
        return display.plot(ax=ax, std_display_style=None)


def _cv_results(cv_results) -> dict:
    if isinstance(cv_results, dict):
        return cv_results
    results = getattr(cv_results, "cv_results_", None)
    if results is None:
        raise ValueError(
            f"cv_results must be a fitted search (GridSearchCV, RandomizedSearchCV) "
            f"or its cv_results_ dict; got {type(cv_results).__name__}"
            + (" that is not fitted yet." if hasattr(cv_results, "fit") else ".")
        )
    return results


def _searched_param(param: str, names: list[str]) -> str:
    """The full name of the searched parameter ``param`` ("auto": a *layer)."""
    if param == "auto":
        found = [name for name in names if name.endswith("layer")]
        if len(found) == 1:
            return found[0]
        raise ValueError(
            (
                "param='auto' found no searched parameter ending in 'layer'"
                if not found
                else f"param='auto' found several searched layer parameters {found}"
            )
            + f"; pass param= one of {names}."
        )
    found = [name for name in names if name == param] or [
        name for name in names if name.split("__")[-1] == param
    ]
    if len(found) != 1:
        raise ValueError(
            f"param={param!r} is not "
            + ("a searched parameter" if not found else f"unique ({found})")
            + f"; the searched parameters are {names}."
        )
    return found[0]


def _key(value):
    """A hashable stand-in for a parameter value (lists are values too)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _ordered_unique(values: list) -> list:
    values = [
        value.item() if isinstance(value, np.generic) else value for value in values
    ]
    unique = list({_key(value): value for value in values}.values())
    if all(_is_number(value) for value in unique):
        return sorted(unique)
    return unique


def _value_text(value) -> str:
    if np.ma.is_masked(value):
        return "-"
    if isinstance(value, np.generic):
        value = value.item()
    return f"{value:g}" if isinstance(value, float) else str(value)
