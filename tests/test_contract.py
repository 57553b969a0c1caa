"""scikit-learn's estimator checks, with images.

``test_common.py`` runs scikit-learn's own checks. Those that feed a 2-D
numeric array of tabular data cannot reach estimators whose samples are
images, and are excused there, each naming its image version here: the same
property, with the same operations, assertions and tolerances as the
check's source in ``sklearn/utils/estimator_checks.py`` (named in each
docstring), on small RGB images, for both estimators wherever the check
applies to both.

Estimators run the tiny backbone of ``conftest.py`` (images of 24 pixels are
resized to its 32, so the decoding and resizing path runs too), with
``cache=False``, so the network runs at every call and no property holds
merely because a result was served from the feature cache, and with
``engine="tensorflow"``: ``"auto"`` may convert the network to another engine
partway through a process, whose outputs agree with TensorFlow's to about
1e-5 (``test_engines.py``), not to the tolerances of these checks.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from inspect import signature

import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.base import clone
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.model_selection import ShuffleSplit, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.utils import get_tags
from sklearn.utils._testing import (
    assert_allclose_dense_sparse,
    create_memmap_backed_data,
    raises,
)
from sklearn.utils.estimator_checks import _NotAnArray, set_random_state
from sklearn.utils.validation import check_is_fitted

from sktransfer import CNNFeatureExtractor, FineTunedCNNClassifier

from .conftest import make_images, save_pngs

#: The methods scikit-learn's checks call when an estimator has them.
METHODS = ["predict", "transform", "decision_function", "predict_proba"]
#: Side of the test images; the tiny backbone takes 32.
SIDE = 24

BOTH = pytest.mark.parametrize(
    "name", ["CNNFeatureExtractor", "FineTunedCNNClassifier"]
)


def image_data(n: int = 24, n_classes: int = 3, seed: int = 0):
    """Images whose class is the colour channel that dominates them, and labels.

    A fine-tuned classifier learns them in two epochs, so the checks that
    ask for a classifier that learns (training accuracy, class weights)
    hold without long training.
    """
    X = make_images(n, size=SIDE, seed=seed) // 4
    y = np.arange(n) % n_classes
    for k in range(n_classes):
        X[y == k, :, :, k] += 160
    return X, y


@pytest.fixture(scope="module")
def make(tiny_backbone_file):
    """make(name): a new, unfitted estimator of that class."""

    def make_estimator(name):
        common = dict(
            weights=None, preprocessing="tf", cache=False, engine="tensorflow"
        )
        if name == "CNNFeatureExtractor":
            return CNNFeatureExtractor(tiny_backbone_file, **common)
        return FineTunedCNNClassifier(
            tiny_backbone_file, head_learning_rate=0.1, head_epochs=2,
            learning_rate=1e-3, epochs=1, batch_size=8, early_stopping=False,
            random_state=0, **common,
        )

    return make_estimator


@pytest.fixture(scope="module")
def fitted(make):
    """fitted(name): the estimator fitted on image_data(), once per module.

    For the checks whose property is about a fitted estimator's methods;
    tests must not change it.
    """
    estimators = {}

    def fitted_estimator(name):
        if name not in estimators:
            estimators[name] = make(name).fit(*image_data())
        return estimators[name]

    return fitted_estimator


def methods_of(estimator):
    return [method for method in METHODS if hasattr(estimator, method)]


@BOTH
def test_dict_unchanged(name, make):
    """check_dict_unchanged: the methods leave ``__dict__`` as fit left it.

    scikit-learn compares a shallow copy, which a cache filled in place on
    first use (a dict already in ``__dict__``) passes; the containers'
    contents are compared too.
    """
    X, y = image_data()
    estimator = make(name)
    set_random_state(estimator, 1)
    estimator.fit(X, y)

    def contents(state):
        return {
            k: copy.copy(v) if isinstance(v, (dict, list, set)) else v
            for k, v in state.items()
        }

    # explain (Grad-CAM) too: it compiles a pass of its own on first use.
    explain = ["explain"] if hasattr(estimator, "explain") else []
    for method in methods_of(estimator) + explain:
        dict_before = estimator.__dict__.copy()
        contents_before = contents(estimator.__dict__)
        getattr(estimator, method)(X)
        assert estimator.__dict__ == dict_before, (
            f"Estimator changes __dict__ during {method}"
        )
        assert contents(estimator.__dict__) == contents_before, (
            f"Estimator changes what its __dict__ holds during {method}"
        )


@BOTH
def test_dont_overwrite_parameters(name, make):
    """check_dont_overwrite_parameters: fit adds or changes only ``_``-attributes."""
    X, y = image_data()
    estimator = make(name)
    set_random_state(estimator, 1)
    dict_before_fit = estimator.__dict__.copy()
    estimator.fit(X, y)
    public = [
        k for k in estimator.__dict__ if not (k.startswith("_") or k.endswith("_"))
    ]
    assert not [k for k in public if k not in dict_before_fit]
    assert not [k for k in public if dict_before_fit[k] is not estimator.__dict__[k]]


@BOTH
def test_dtype_object(name, make):
    """check_dtype_object: an object array of pixel values is read as numbers."""
    X, y = image_data()
    X = X.astype(object)
    estimator = make(name)
    estimator.fit(X, y)
    for method in ("predict", "transform"):
        if hasattr(estimator, method):
            getattr(estimator, method)(X)
    with raises(Exception, match="Unknown label type", may_pass=True):
        estimator.fit(X, y.astype(object))
    # scikit-learn fits estimators that take strings on X with a dict in it;
    # images take strings only as file paths, and a dict is no pixel value.
    X[0, 0, 0, 0] = {"foo": "bar"}
    with pytest.raises(ValueError, match="dtype object"):
        estimator.fit(X, y)


@BOTH
def test_estimators_dtypes(name, make):
    """check_estimators_dtypes: float32, float64, int64 and int32 pixels work.

    Integer pixels and the same values as floats give the same outputs.
    """
    X, y = image_data()
    expected = None
    for dtype in (np.float32, np.float64, np.int64, np.int32):
        estimator = make(name)
        set_random_state(estimator, 1)
        estimator.fit(X.astype(dtype), y)
        outputs = [
            getattr(estimator, m)(X.astype(dtype)) for m in methods_of(estimator)
        ]
        if expected is None:
            expected = outputs
        for output, first in zip(outputs, expected):
            np.testing.assert_allclose(output, first, rtol=1e-5, atol=1e-5)


@BOTH
def test_estimators_empty_data_messages(name, make):
    """check_estimators_empty_data_messages: no image, or images of no pixels."""
    estimator = make(name)
    set_random_state(estimator, 1)
    with pytest.raises(ValueError):
        estimator.fit(np.empty((0, SIDE, SIDE, 3)), [])
    y = np.array([1, 0] * 6)
    with pytest.raises(ValueError, match=r"empty axis: shape \(12, 0, 0, 3\)"):
        estimator.fit(np.empty((12, 0, 0, 3)), y)


@BOTH
def test_estimators_fit_returns_self(name, make):
    """check_estimators_fit_returns_self."""
    estimator = make(name)
    set_random_state(estimator)
    assert estimator.fit(*image_data()) is estimator


@BOTH
def test_estimators_nan_inf(name, make):
    """check_estimators_nan_inf: NaN or infinite pixels are refused by every method."""
    X, y = image_data()
    for bad in (np.nan, np.inf):
        X_bad = X.astype(np.float64)
        X_bad[0, 0, 0, 0] = bad
        estimator = make(name)
        set_random_state(estimator, 1)
        with pytest.raises(ValueError, match="inf|NaN"):
            estimator.fit(X_bad, y)
        estimator.fit(X, y)
        for method in ("predict", "transform"):
            if hasattr(estimator, method):
                with pytest.raises(ValueError, match="inf|NaN"):
                    getattr(estimator, method)(X_bad)


@BOTH
def test_estimators_overwrite_params(name, make):
    """check_estimators_overwrite_params: fit leaves every parameter as it was."""
    estimator = make(name)
    set_random_state(estimator)
    original = {k: joblib.hash(v) for k, v in estimator.get_params().items()}
    estimator.fit(*image_data())
    assert {k: joblib.hash(v) for k, v in estimator.get_params().items()} == original


@BOTH
@pytest.mark.parametrize("readonly_memmap", [False, True])
def test_estimators_pickle(name, fitted, readonly_memmap):
    """check_estimators_pickle: an unpickled estimator gives the same outputs.

    With ``readonly_memmap``, it is loaded by joblib from a read-only memmap,
    as joblib's workers load it.
    """
    X, _ = image_data()
    estimator = fitted(name)
    if readonly_memmap:
        unpickled = create_memmap_backed_data(estimator)
    else:
        unpickled = pickle.loads(pickle.dumps(estimator))
    for method in methods_of(estimator):
        assert_allclose_dense_sparse(
            getattr(estimator, method)(X), getattr(unpickled, method)(X)
        )


@BOTH
def test_f_contiguous_array_estimator(name, make):
    """check_f_contiguous_array_estimator: Fortran-ordered images, same outputs."""
    X, y = image_data()
    estimator = make(name)
    estimator.fit(np.asfortranarray(X), y)
    for method in ("transform", "predict"):
        if hasattr(estimator, method):
            np.testing.assert_array_equal(
                getattr(estimator, method)(np.asfortranarray(X)),
                getattr(estimator, method)(X),
            )


@BOTH
def test_fit_one_pixel_images(name, make):
    """check_fit2d_1feature: the least input per sample, 1x1 images, fits.

    scikit-learn also accepts an informative error; an image of one pixel
    is resized like any other, so it fits and predicts.
    """
    X, y = image_data(10)
    X = X[:, :1, :1]
    estimator = make(name)
    set_random_state(estimator, 1)
    assert estimator.fit(X, y) is estimator
    for method in methods_of(estimator):
        assert len(getattr(estimator, method)(X)) == len(X)


@BOTH
def test_fit_one_image(name, make):
    """check_fit2d_1sample: one image fits, or the error says why."""
    X, y = image_data(1)
    estimator = make(name)
    set_random_state(estimator, 1)
    msgs = [
        "1 sample", "n_samples = 1", "n_samples=1", "one sample", "1 class", "one class"
    ]
    with raises(ValueError, match=msgs, may_pass=True):
        estimator.fit(X, y)


@BOTH
def test_predict_one_image_without_batch_axis(name, fitted):
    """check_fit2d_predict1d: one image without its batch axis is refused.

    An (h, w, 3) array would otherwise be read as h grayscale images.
    """
    X, _ = image_data()
    estimator = fitted(name)
    for method in methods_of(estimator):
        with pytest.raises(ValueError, match="Reshape your data"):
            getattr(estimator, method)(X[0])


@BOTH
def test_fit_check_is_fitted(name, make):
    """check_fit_check_is_fitted."""
    estimator = make(name)
    set_random_state(estimator)
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    estimator.fit(*image_data())
    check_is_fitted(estimator)


@BOTH
def test_fit_idempotent(name, make):
    """check_fit_idempotent: fitting twice gives the same outputs.

    The input is left as it was given.
    """
    rng = np.random.RandomState(0)
    X, y = image_data()
    estimator = make(name)
    set_random_state(estimator)
    train, test = next(ShuffleSplit(test_size=0.2, random_state=rng).split(X))
    X_train, y_train, X_test = X[train], y[train], X[test]
    given = X_train.copy(), X_test.copy()
    estimator.fit(X_train, y_train)
    result = {m: getattr(estimator, m)(X_test) for m in methods_of(estimator)}
    set_random_state(estimator)
    estimator.fit(X_train, y_train)
    for method in methods_of(estimator):
        new_result = getattr(estimator, method)(X_test)
        if np.issubdtype(new_result.dtype, np.floating):
            tol = 2 * np.finfo(new_result.dtype).eps
        else:
            tol = 2 * np.finfo(np.float64).eps
        assert_allclose_dense_sparse(
            result[method], new_result, atol=max(tol, 1e-9), rtol=max(tol, 1e-7),
            err_msg=f"Idempotency check failed for method {method}",
        )
    np.testing.assert_array_equal(X_train, given[0])
    np.testing.assert_array_equal(X_test, given[1])


@BOTH
def test_fit_score_takes_y(name, make):
    """check_fit_score_takes_y: y is the second argument, for pipelines."""
    X, y = image_data()
    estimator = make(name)
    set_random_state(estimator)
    for func_name in ["fit", "score", "partial_fit", "fit_predict", "fit_transform"]:
        func = getattr(estimator, func_name, None)
        if func is not None:
            func(X, y)
            args = [p.name for p in signature(func).parameters.values()]
            assert args[1] in ["y", "Y"], (func_name, args)


@BOTH
def test_methods_sample_order_invariance(name, fitted):
    """check_methods_sample_order_invariance: no output depends on image order.

    scikit-learn's tolerance (atol=1e-9) holds: the CPU forward pass
    computes every image of a batch the same way whatever its neighbours.
    """
    X, _ = image_data()
    estimator = fitted(name)
    idx = np.random.permutation(len(X))
    for method in methods_of(estimator):
        assert_allclose_dense_sparse(
            getattr(estimator, method)(X)[idx],
            getattr(estimator, method)(X[idx]),
            atol=1e-9,
            err_msg=f"{method} is not invariant to the order of the images",
        )


@BOTH
def test_methods_subset_invariance(name, fitted):
    """check_methods_subset_invariance: an image alone gives its output in a batch."""
    X, _ = image_data()
    estimator = fitted(name)
    for method in methods_of(estimator):
        func = getattr(estimator, method)
        result_full = np.ravel(func(X))
        result_by_batch = np.ravel([func(image[np.newaxis]) for image in X])
        np.testing.assert_allclose(
            result_full, result_by_batch, atol=1e-7,
            err_msg=f"{method} is not invariant when applied to a subset",
        )


@BOTH
def test_pipeline_consistency(name, make):
    """check_pipeline_consistency: ``make_pipeline(est)`` gives what ``est`` gives."""
    X, y = image_data()
    estimator = make(name)
    set_random_state(estimator)
    assert not get_tags(estimator).non_deterministic
    pipeline = make_pipeline(estimator)
    estimator.fit(X, y)
    pipeline.fit(X, y)
    for func_name in ["score", "fit_transform"]:
        func = getattr(estimator, func_name, None)
        if func is not None:
            assert_allclose_dense_sparse(func(X, y), getattr(pipeline, func_name)(X, y))


@BOTH
def test_positive_only_tag_during_fit(name, make):
    """check_positive_only_tag_during_fit: the tag says pixels are never negative."""
    X, y = image_data()
    estimator = make(name)
    assert get_tags(estimator).input_tags.positive_only
    X = X.astype(np.float64)
    X -= X.mean()
    set_random_state(estimator, 0)
    with pytest.raises(ValueError, match="Negative values in data"):
        estimator.fit(X, y)


@BOTH
def test_readonly_memmap_input(name, make):
    """check_readonly_memmap_input: images in a read-only memmap (joblib's workers)."""
    X, y = create_memmap_backed_data(list(image_data()))
    estimator = make(name)
    set_random_state(estimator)
    assert estimator.fit(X, y) is estimator
    for method in methods_of(estimator):
        getattr(estimator, method)(X)


@BOTH
@pytest.mark.parametrize("container", ["NotAnArray", "pandas", "list"])
def test_data_not_an_array(name, fitted, make, container, tmp_path):
    """check_classifier_data_not_an_array, check_transformer_data_not_an_array.

    Images given as an array-like that is not an array (``__array__``), as
    nested lists (``X.tolist()``), or as pandas (a column of file paths, y a
    Series) give the outputs of the same images as an array.
    """
    X, y = image_data()
    if container == "NotAnArray":
        X_, y_ = _NotAnArray(X), _NotAnArray(y)
    elif container == "list":
        X_, y_ = X.tolist(), y.tolist()
    else:
        X_ = pd.DataFrame({"path": save_pngs(X, tmp_path)})
        y_ = pd.Series(y)
    estimator = make(name)
    set_random_state(estimator)
    estimator.fit(X_, y_)
    method = "predict" if hasattr(estimator, "predict") else "transform"
    np.testing.assert_allclose(
        getattr(estimator, method)(X_), getattr(fitted(name), method)(X), atol=1e-2
    )


def test_transformer_general(make):
    """check_transformer_general: fit_transform, transform, and again, agree.

    Also on a read-only memmap, as scikit-learn runs it a second time.
    """
    for X, y in (image_data(), create_memmap_backed_data(list(image_data()))):
        transformer = make("CNNFeatureExtractor")
        set_random_state(transformer)
        transformer.fit(X, y)
        X_pred = clone(transformer).fit_transform(X, y=y)
        assert X_pred.shape[0] == len(X)
        X_pred2 = transformer.transform(X)
        X_pred3 = transformer.fit_transform(X, y=y)
        assert_allclose_dense_sparse(X_pred, X_pred2, atol=1e-2)
        assert_allclose_dense_sparse(X_pred, X_pred3, atol=1e-2)
        assert len(X_pred2) == len(X_pred3) == len(X)


# --- the classifier's checks -------------------------------------------------


def test_class_weight_classifiers(make):
    """check_class_weight_classifiers: class weights decide on noise.

    Labels carry no signal (plain random images): a class weighted 1000
    against 0.0001 is predicted for at least 87 % of held-out images.
    """
    for n_classes in [2, 3]:
        X = make_images(60, size=SIDE, seed=1)
        y = np.random.RandomState(0).randint(0, n_classes, len(X))
        X_train, X_test, y_train, _ = train_test_split(
            X, y, test_size=0.5, random_state=0
        )
        class_weight = {0: 1000, **{k: 0.0001 for k in range(1, n_classes)}}
        classifier = clone(make("FineTunedCNNClassifier")).set_params(
            class_weight=class_weight
        )
        set_random_state(classifier)
        classifier.fit(X_train, y_train)
        assert np.mean(classifier.predict(X_test) == 0) > 0.87


def test_classifiers_classes(make):
    """check_classifiers_classes: string, object and ±1 labels are the classes."""
    X_multi, y_multi = image_data(30)
    X_binary, y_binary = X_multi[y_multi != 2], y_multi[y_multi != 2]
    problems = []
    for X, y, labels in [
        (X_binary, y_binary, ["one", "two"]),
        (X_multi, y_multi, ["one", "two", "three"]),
    ]:
        names = np.take(labels, y)
        problems += [(X, names), (X, names.astype("O"))]
    problems.append((X_binary, np.take([-1, 1], y_binary)))
    for X, y in problems:
        classes = np.unique(y)
        classifier = make("FineTunedCNNClassifier")
        set_random_state(classifier)
        classifier.fit(X, y)
        y_pred = classifier.predict(X)
        decision = classifier.decision_function(X)
        assert isinstance(decision, np.ndarray)
        if len(classes) == 2:
            expected = classifier.classes_[(decision.ravel() > 0).astype(int)]
        else:
            expected = classifier.classes_[np.argmax(decision, axis=1)]
        np.testing.assert_array_equal(expected, y_pred)
        np.testing.assert_array_equal(classes, classifier.classes_)


def test_classifiers_one_label_sample_weights(make):
    """check_classifiers_one_label_sample_weights: weights that keep one class.

    The classifier predicts that class only (scikit-learn also accepts an
    error that says so; test_classifier.py relies on the fit).
    """
    X, _ = image_data(10)
    y = np.arange(10) % 2
    classifier = make("FineTunedCNNClassifier")
    with raises(
        (AssertionError, ValueError), match=[r"\bclass(es)?\b"], may_pass=True
    ) as cm:
        classifier.fit(X, y, sample_weight=y.copy())
        if cm.raised_and_matched:
            return
        np.testing.assert_array_equal(classifier.predict(X), np.ones(10))


@pytest.mark.parametrize("variant", ["array", "readonly_memmap", "float32"])
def test_classifiers_train(make, variant):
    """check_classifiers_train: it learns, and its outputs agree.

    Malformed input (y of the wrong length; images transposed, as the
    check's ``X.T``) is refused. scikit-learn runs the check a second time
    on read-only memmaps and a third time on float32 data.
    """
    X_m, y_m = image_data(30)
    if variant == "float32":
        X_m = X_m.astype(np.float32)
    X_b, y_b = X_m[y_m != 2], y_m[y_m != 2]
    if variant == "readonly_memmap":
        X_m, y_m, X_b, y_b = create_memmap_backed_data([X_m, y_m, X_b, y_b])
    for X, y in [(X_b, y_b), (X_m, y_m)]:
        n_classes = len(np.unique(y))
        classifier = make("FineTunedCNNClassifier")
        set_random_state(classifier)
        with pytest.raises(ValueError):
            classifier.fit(X, y[:-1])
        classifier.fit(X, y)
        classifier.fit(X.tolist(), y.tolist())
        assert hasattr(classifier, "classes_")
        y_pred = classifier.predict(X)
        assert y_pred.shape == (len(X),)
        assert np.mean(y_pred == y) > 0.83
        decision = classifier.decision_function(X)
        if n_classes == 2:
            assert decision.shape == (len(X),)
            np.testing.assert_array_equal((decision > 0).astype(int), y_pred)
        else:
            assert decision.shape == (len(X), n_classes)
            np.testing.assert_array_equal(np.argmax(decision, axis=1), y_pred)
        y_prob = classifier.predict_proba(X)
        assert y_prob.shape == (len(X), n_classes)
        np.testing.assert_array_equal(np.argmax(y_prob, axis=1), y_pred)
        np.testing.assert_array_almost_equal(np.sum(y_prob, axis=1), np.ones(len(X)))
        for method in ("predict", "decision_function", "predict_proba"):
            with pytest.raises(ValueError):
                getattr(classifier, method)(X.T)


def test_decision_proba_consistency(make):
    """check_decision_proba_consistency: probabilities rank as the scores do."""
    X, y = image_data(40, n_classes=2)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=0)
    classifier = make("FineTunedCNNClassifier")
    classifier.fit(X_train, y_train)
    a = classifier.predict_proba(X_test)[:, 1].round(decimals=10)
    b = classifier.decision_function(X_test).round(decimals=10)
    rank_proba, rank_score = rankdata(a), rankdata(b)
    try:
        np.testing.assert_array_almost_equal(rank_proba, rank_score)
    except AssertionError:
        # Ties from rounding the probabilities: the scores of each rank group
        # must still increase with it (as scikit-learn relaxes it).
        grouped = np.array([b[rank_proba == g].mean() for g in np.unique(rank_proba)])
        np.testing.assert_array_equal(np.argsort(grouped), np.arange(len(grouped)))


@pytest.mark.parametrize("container", ["list", "pandas_series", "not_an_array"])
def test_sample_weights_containers(make, container, tmp_path):
    """check_sample_weights_list, _pandas_series, _not_an_array.

    As in scikit-learn, X and y come in the same kind of container as the
    weights: pandas means a column of file paths and Series.
    """
    X, y = image_data(12, n_classes=2)
    if container == "list":
        fit_args = (X, y, [3] * len(y))
    elif container == "pandas_series":
        paths = pd.DataFrame({"path": save_pngs(X, tmp_path)})
        fit_args = (paths, pd.Series(y), pd.Series([1] * len(y)))
    else:
        fit_args = (_NotAnArray(X), _NotAnArray(y), _NotAnArray([1] * len(y)))
    classifier = make("FineTunedCNNClassifier")
    X_, y_, weights = fit_args
    classifier.fit(X_, y_, sample_weight=weights)


def test_sample_weights_not_overwritten(make):
    """check_sample_weights_not_overwritten."""
    X, y = image_data(16, n_classes=2)
    classifier = make("FineTunedCNNClassifier")
    set_random_state(classifier, random_state=0)
    sample_weight_original = np.ones(len(y))
    sample_weight_original[0] = 10.0
    sample_weight_fit = sample_weight_original.copy()
    classifier.fit(X, y, sample_weight=sample_weight_fit)
    np.testing.assert_allclose(sample_weight_fit, sample_weight_original)


def test_sample_weights_shape(make):
    """check_sample_weights_shape: one weight per image, or an error."""
    X, y = image_data(16, n_classes=2)
    classifier = make("FineTunedCNNClassifier")
    classifier.fit(X, y, sample_weight=np.ones(len(y)))
    with pytest.raises(ValueError):
        classifier.fit(X, y, sample_weight=np.ones(2 * len(y)))
    with pytest.raises(ValueError):
        classifier.fit(X, y, sample_weight=np.ones((len(y), 2)))


def test_supervised_y_2d(make):
    """check_supervised_y_2d: a column y warns, and fits as the 1-D y does.

    The probabilities too, not only the labels: a column y is the same fit.
    """
    X, y = image_data(30)
    classifier = make("FineTunedCNNClassifier")
    set_random_state(classifier)
    classifier.fit(X, y)
    y_pred, proba = classifier.predict(X), classifier.predict_proba(X)
    set_random_state(classifier)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", DataConversionWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        classifier.fit(X, y[:, np.newaxis])
    assert any(
        "A column-vector y was passed when a 1d array was expected" in str(x.message)
        for x in w
    ), [str(x.message) for x in w]
    np.testing.assert_allclose(y_pred.ravel(), classifier.predict(X).ravel())
    np.testing.assert_array_equal(classifier.predict_proba(X), proba)
