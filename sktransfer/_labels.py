"""Class labels as the estimators take them: checked with scikit-learn's tools."""

from __future__ import annotations

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d


def check_labels(y) -> np.ndarray:
    """``y`` as a 1-D array of class labels; ValueError saying what is wrong."""
    if y is None:
        raise ValueError(
            "FineTunedCNNClassifier requires y to be passed, but the target y is None."
        )
    _check_label_types(y)
    y = np.asarray(y)
    if y.ndim != 1 and y.shape[1:] != (1,):
        # column_or_1d would refuse these too, without saying that multilabel
        # and multi-output targets are what is not supported.
        raise ValueError(
            f"y must be a 1-D array of class labels, one per image, got shape "
            f"{y.shape}. Multilabel and multi-output targets are not supported."
        )
    # A column (n, 1) is accepted with scikit-learn's DataConversionWarning.
    y = column_or_1d(y, warn=True)
    if len(y) == 0:
        raise ValueError("y is empty: at least one labelled image per class is needed.")
    missing = _missing_labels(y)
    if len(missing):
        raise ValueError(
            f"y has missing labels (NaN or None) at indices {missing[:10].tolist()}; "
            "every image needs a label."
        )
    check_classification_targets(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(
            f"y has only one class ({classes.tolist()[0]!r}); a classifier needs at "
            "least 2."
        )
    return y


def _check_label_types(y) -> None:
    """Refuse a mix of string and number labels before NumPy merges them.

    ``np.asarray([1, "1", "b"])`` turns 1 into "1", silently merging two
    classes; scikit-learn's ``unique_labels`` refuses such a mix, and so do we.
    """
    values = y.ravel() if isinstance(y, np.ndarray) else y
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":
        return
    try:
        values = list(values)
    except TypeError:
        return  # not a sequence: check_classification_targets says so
    strings = [v for v in values if isinstance(v, (str, bytes, np.str_))]
    if strings and len(strings) < len(values):
        other = next(v for v in values if not isinstance(v, (str, bytes, np.str_)))
        if other is None or (isinstance(other, float) and other != other):
            return  # a missing label, reported as such
        raise ValueError(
            f"y mixes string labels ({strings[0]!r}) with labels of another type "
            f"({other!r} of type {type(other).__name__}), which would merge classes "
            "such as 1 and '1'. Use one type for all labels, e.g. y = [str(v) for v "
            "in y]."
        )


def _missing_labels(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "f":
        return np.flatnonzero(np.isnan(y))
    if y.dtype.kind == "O":
        return np.flatnonzero([v is None or (isinstance(v, float) and v != v) for v in y])
    return np.array([], dtype=int)
