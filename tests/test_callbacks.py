"""scikit-learn's callback API (sklearn.callback, 1.9+) on both estimators."""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sktransfer import CNNFeatureExtractor, FineTunedCNNClassifier
from sktransfer._fit_tasks import HAS_CALLBACK_API

from .conftest import make_images

needs_api = pytest.mark.skipif(
    not HAS_CALLBACK_API, reason="sklearn.callback needs scikit-learn >= 1.9"
)

# The tests whose callbacks score every epoch train conftest's tiny backbone
# instead: each score copies the network and compiles its forward pass, which
# takes seconds for MobileNetV2.
FAST = dict(backbone="mobilenet_v2", weights=None, input_size=32)

# The feature passes have batches only for images the cache lacks.
pytestmark = pytest.mark.usefixtures("empty_cache")


@pytest.fixture
def data():
    return make_images(12), np.array(["cat", "dog"] * 6)


def classifier(**params):
    defaults = dict(
        head_epochs=2, epochs=1, batch_size=8, augment=False, early_stopping=False,
        random_state=0,
    )
    return FineTunedCNNClassifier(**{**FAST, **defaults, **params})


def task_path(context):
    from sklearn.callback._callback_context import get_context_path

    return tuple(ctx.task_name for ctx in get_context_path(context))


class Recorder:
    """Records every hook: (hook, task path, task id, epoch loss or None)."""

    def __init__(self):
        self.events = []
        self.fitted = []

    def setup(self, estimator, context):
        self.events.append(("setup", task_path(context)))

    def teardown(self, estimator, context):
        self.events.append(("teardown", task_path(context)))

    def on_fit_task_begin(self, estimator, context, *, fitted_estimator=None):
        assert fitted_estimator is None
        self.events.append(("begin", task_path(context), context.task_id))

    def on_fit_task_end(self, estimator, context, *, fitted_estimator=None):
        loss = None
        if context.task_name == "epoch":
            self.fitted.append(fitted_estimator)
            loss = fitted_estimator.history_[context.parent.task_name]["loss"][-1]
        self.events.append(("end", task_path(context), context.task_id, loss))


class AutoRecorder(Recorder):
    """Records without asking for fitted_estimator (no copy of the network);
    meta-estimators propagate it to their sub-estimators."""

    max_propagation_depth = None

    def on_fit_task_begin(self, estimator, context):
        self.events.append(("begin", task_path(context), context.task_id))

    def on_fit_task_end(self, estimator, context):
        self.events.append(("end", task_path(context), context.task_id, None))


class Stopper(AutoRecorder):
    """Asks to stop at the end of every task at ``path``."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_fit_task_end(self, estimator, context):
        super().on_fit_task_end(estimator, context)
        return task_path(context) == self.path


def ends(recorder, name):
    return [event for event in recorder.events if event[0] == "end" and event[1][-1] == name]


@needs_api
def test_stages_and_epochs_with_their_losses(data):
    X, y = data
    recorder = Recorder()
    clf = classifier().set_callbacks(recorder)
    clf.fit(X, y)

    begins = [event[1] for event in recorder.events if event[0] == "begin"]
    assert begins == [
        ("fit",),
        ("fit", "features"), ("fit", "features", "batch"), ("fit", "features", "batch"),
        ("fit", "head"), ("fit", "head", "epoch"), ("fit", "head", "epoch"),
        ("fit", "maps"), ("fit", "maps", "batch"), ("fit", "maps", "batch"),
        ("fit", "fine_tune"), ("fit", "fine_tune", "epoch"),
    ]
    assert recorder.events[0] == ("setup", ("fit",))
    assert recorder.events[-2] == ("end", ("fit",), 0, None)
    assert recorder.events[-1] == ("teardown", ("fit",))
    # The stages end after their epochs, in order, with sequential task ids.
    stage_ends = [event[1:3] for event in recorder.events
                  if event[0] == "end" and len(event[1]) == 2]
    assert stage_ends == [
        (("fit", "features"), 0), (("fit", "head"), 1), (("fit", "maps"), 2),
        (("fit", "fine_tune"), 3),
    ]
    # One event per epoch, with the loss Keras logged for it.
    for stage in ("head", "fine_tune"):
        epochs = [event for event in ends(recorder, "epoch") if event[1][1] == stage]
        assert [event[2] for event in epochs] == list(range(len(clf.history_[stage]["loss"])))
        np.testing.assert_allclose([event[3] for event in epochs], clf.history_[stage]["loss"])
    # Each epoch's fitted estimator is a copy with its own network.
    first, last = recorder.fitted[0], recorder.fitted[-1]
    assert first is not clf and first.model_ is not clf.model_
    assert list(first.history_) == ["head"] and len(first.history_["head"]["loss"]) == 1
    assert last.history_ == clf.history_
    np.testing.assert_allclose(last.predict_proba(X), clf.predict_proba(X), rtol=1e-5)


@needs_api
def test_a_stop_request_ends_the_stage_and_the_fit(data):
    X, y = data
    at_epoch = classifier(head_epochs=3).set_callbacks(Stopper(("fit", "head", "epoch")))
    at_epoch.fit(X, y)
    assert len(at_epoch.history_["head"]["loss"]) == 1
    assert len(at_epoch.history_["fine_tune"]["loss"]) == 1

    at_stage = classifier().set_callbacks(Stopper(("fit", "head"))).fit(X, y)
    assert list(at_stage.history_) == ["head"]
    assert at_stage.predict(X).shape == (12,)


@needs_api
def test_scoring_monitor_scores_epochs_stages_and_fit(data, tiny_backbone_file):
    from sklearn.callback import ScoringMonitor

    X, y = data
    monitor = ScoringMonitor(scoring="accuracy")
    clf = classifier(backbone=tiny_backbone_file, epochs=0).set_callbacks(monitor).fit(X, y)
    rows = monitor.get_logs().data
    assert [row["task_id_path"] for row in rows] == [(0,), (0, 1), (0, 1, 0), (0, 1, 1)]
    assert [row["task_name"] for row in rows] == ["fit", "head", "epoch", "epoch"]
    # No early stopping: the last epoch's network is the final one.
    final = clf.score(X, y)
    assert all(row["accuracy"] == pytest.approx(final) for row in rows[:2] + rows[3:])


@needs_api
def test_progress_bar(data):
    pytest.importorskip("rich")
    from sklearn.callback import ProgressBar

    X, y = data
    classifier(head_epochs=1).set_callbacks(ProgressBar()).fit(X, y)
    features = CNNFeatureExtractor(**FAST, batch_size=5).set_callbacks(ProgressBar())
    assert features.fit_transform(X).shape == (12, 1280)
    pipe = make_pipeline(CNNFeatureExtractor(**FAST), LogisticRegression())
    pipe.set_callbacks(ProgressBar(max_propagation_depth=None)).fit(X, y)


@needs_api
def test_extractor_reports_the_batches_of_fit_transform(data):
    X, _ = data
    recorder = Recorder()
    extractor = CNNFeatureExtractor(**FAST, batch_size=5).set_callbacks(recorder)
    features = extractor.fit_transform(X)
    assert [event[1] for event in recorder.events if event[0] == "begin"] == [
        ("fit-transform",), ("fit-transform", "transform"),
        *[("fit-transform", "transform", "batch")] * 3,
    ]
    assert recorder.events[-1] == ("teardown", ("fit-transform",))
    np.testing.assert_array_equal(features, clone(extractor).fit(X).transform(X))

    # fit runs no network: one task. transform is no fit: no task.
    recorder.events.clear()
    extractor.fit(X).transform(X)
    assert recorder.events == [
        ("setup", ("fit",)), ("begin", ("fit",), 0), ("end", ("fit",), 0, None),
        ("teardown", ("fit",)),
    ]
    # Cached images: the pass has no batch.
    recorder.events.clear()
    extractor.fit_transform(X)
    assert ends(recorder, "batch") == [] and len(ends(recorder, "transform")) == 1


@needs_api
def test_pipeline_and_grid_search_reach_the_estimators(data, tiny_backbone_file):
    from sklearn.callback import ScoringMonitor

    X, y = data
    recorder = AutoRecorder()
    extractor = CNNFeatureExtractor(**FAST, batch_size=5)
    make_pipeline(extractor, LogisticRegression()).set_callbacks(recorder).fit(X, y)
    batches = ends(recorder, "batch")
    assert {event[1] for event in batches} == {
        ("fit", "fit-transform", "transform", "batch")
    }
    assert len(batches) == 3

    # A ScoringMonitor set on the estimator goes with its clones.
    monitor = ScoringMonitor(scoring="accuracy")
    clf = classifier(backbone=tiny_backbone_file, head_epochs=1, epochs=0)
    clf.set_callbacks(monitor)
    recorder = AutoRecorder()
    GridSearchCV(clf, {"dropout": [0.1]}, cv=2).set_callbacks(recorder).fit(X, y)
    epochs = [row for row in monitor.get_logs().data if row["task_name"] == "epoch"]
    assert len(epochs) == 3  # two folds and the refit
    assert len(ends(recorder, "epoch")) == 3


@needs_api
def test_clone_and_pickle_keep_the_callbacks(data, tiny_backbone_file):
    from sklearn.callback import ProgressBar, ScoringMonitor

    X, y = data
    clf = classifier(backbone=tiny_backbone_file, head_epochs=1, epochs=0)
    for estimator, callbacks in [
        (CNNFeatureExtractor(**FAST), [ProgressBar(), Recorder()]),
        (clf, [ProgressBar(), ScoringMonitor(scoring="accuracy")]),
    ]:
        estimator.set_callbacks(*callbacks)
        assert clone(estimator)._skl_callbacks == callbacks  # by reference
        fitted = estimator.fit(X, y)
        restored = pickle.loads(pickle.dumps(fitted))
        assert [type(c) for c in restored._skl_callbacks] == [type(c) for c in callbacks]
        assert not hasattr(restored, "_callback_fit_ctx")
        assert restored.fit(X, y) is restored
    np.testing.assert_array_equal(restored.predict(X), fitted.predict(X))


@needs_api
def test_callbacks_do_not_change_the_fit(tiny_backbone_file):
    from sklearn.callback import ScoringMonitor

    X = make_images(24, seed=1)
    y = np.array(["bright", "dark"] * 12)
    X[y == "dark"] //= 4
    params = dict(
        weights=None, augment=True, early_stopping=True, validation_fraction=0.25,
        head_epochs=2, epochs=2, batch_size=8, preprocessing="tf", random_state=0,
    )
    plain = FineTunedCNNClassifier(tiny_backbone_file, **params).fit(X, y)
    watched = FineTunedCNNClassifier(tiny_backbone_file, **params)
    watched.set_callbacks(ScoringMonitor(scoring="accuracy")).fit(X, y)
    np.testing.assert_array_equal(watched.predict_proba(X), plain.predict_proba(X))
    assert watched.history_ == plain.history_


def test_without_sklearn_callback_the_package_works():
    script = textwrap.dedent(
        """
        import sys

        # What scikit-learn itself imports is loaded first; then the module
        # disappears, as on scikit-learn < 1.9.
        import sklearn.model_selection, sklearn.pipeline, sklearn.preprocessing
        try:
            import sklearn.callback._callback_support
        except ImportError:
            pass
        sys.modules["sklearn.callback"] = None

        import numpy as np
        from sktransfer import CNNFeatureExtractor, FineTunedCNNClassifier, _fit_tasks

        assert not _fit_tasks.HAS_CALLBACK_API
        X = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
        y = ["cat", "dog"] * 3
        fast = dict(backbone="mobilenet_v2", weights=None, input_size=32)
        clf = FineTunedCNNClassifier(
            **fast, head_epochs=1, epochs=1, augment=False, early_stopping=False
        )
        assert clf.set_callbacks() is clf
        assert clf.fit(X, y).predict(X).shape == (6,)
        assert CNNFeatureExtractor(**fast).fit_transform(X).shape == (6, 1280)
        try:
            clf.set_callbacks(object())
        except ImportError as exc:
            assert "scikit-learn >= 1.9" in str(exc)
        else:
            raise AssertionError("set_callbacks accepted a callback")
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
