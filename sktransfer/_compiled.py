"""Compiled functions of fitted networks, kept with each network.

A fitted :class:`~sktransfer.FineTunedCNNClassifier` predicts through
``tf.function`` passes of its ``model_`` (and their engine conversions), and
``explain`` through a Grad-CAM pass; tracing one costs about a second, so
each is made once per network. They are cached here, keyed weakly by the
network object, rather than on the estimator:

* predicting leaves ``vars(estimator)`` unchanged (scikit-learn's
  ``check_dict_unchanged``);
* pickling, ``copy.copy`` and ``clone`` need no special case;
* a copy given another ``model_`` (a callback's ``fitted_estimator``) can
  never be served the functions of the first network.

An entry lives as long as its network. So a cached function must not hold
its network strongly, or the entry would keep its own key alive: builders
keep what they traced (sub-models sharing the layers) or a weak reference.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable

_lock = threading.Lock()
_functions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def function(model, key: Hashable, build: Callable):
    """``build(model)``, made once per network ``model`` and ``key``.

    Two threads asking at once may both build; the first result is kept.
    """
    with _lock:
        functions = _functions.setdefault(model, {})
        if key in functions:
            return functions[key]
    made = build(model)
    with _lock:
        return functions.setdefault(key, made)


def functions_of(model) -> dict:
    """The functions cached for ``model`` so far, by key (a copy)."""
    with _lock:
        return dict(_functions.get(model, {}))
