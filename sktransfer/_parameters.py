"""What both estimators share: the backbone parameters and their validation.

One name for one idea: ``backbone``, ``weights``, ``layer``, ``pooling``,
``input_size``, ``preprocessing``, ``batch_size``, ``on_error``,
``precision``, ``engine`` and ``verbose`` mean the same in every estimator.
"""

from __future__ import annotations

import copy
import os
from numbers import Integral

from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from . import _engines, _inputs, _pooling
from ._fingerprint import FINGERPRINTS
from ._network import PRECISIONS, network_of
from .backbones._registry import PREPROCESSING_MODES

BACKBONE_CONSTRAINTS: dict = {
    "backbone": [str, os.PathLike, HasMethods(["get_layer"])],
    "weights": [StrOptions({"imagenet"}), str, os.PathLike, None],
    "layer": [Integral, str, list, tuple],
    "pooling": [
        StrOptions(set(_pooling.POOLING_OPTIONS)),
        Interval(Integral, 1, None, closed="left"),
    ],
    "input_size": [None, Interval(Integral, 1, None, closed="left"), tuple, list],
    "preprocessing": [StrOptions(set(PREPROCESSING_MODES)), callable, None],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "on_error": [StrOptions(set(_inputs.ON_ERROR_OPTIONS))],
    "precision": [StrOptions({*PRECISIONS, "bfloat16"})],
    "engine": [StrOptions(set(_engines.ENGINES))],
    "verbose": ["verbose"],
}

#: The feature cache's parameters, the same in both estimators.
CACHE_CONSTRAINTS: dict = {
    "cache": ["boolean"],
    "memory": [None, str, os.PathLike, HasMethods(["cache"])],
    "fingerprint": [StrOptions(set(FINGERPRINTS))],
}


class BackboneMixin:
    """Resolve the backbone parameters into a built, cached network."""

    def __sklearn_clone__(self):
        """Clone, passing a ``keras.Model`` backbone on by reference.

        scikit-learn deep-copies parameters, which for a Keras model means a
        full save and reload per clone, a new identity (so a network rebuilt
        per clone) and failures for models that cannot be serialised. The
        model is never modified by sktransfer, so sharing it is safe.
        """
        from sklearn.base import clone

        params = self.get_params(deep=False)
        backbone = params.pop("backbone")
        if not hasattr(backbone, "get_layer"):
            backbone = clone(backbone, safe=False)
        new = type(self)(backbone=backbone, **{k: clone(v, safe=False) for k, v in params.items()})
        # What sklearn's own clone carries over besides the parameters.
        for attribute in ("_metadata_request", "_sklearn_output_config"):
            if hasattr(self, attribute):
                setattr(new, attribute, copy.deepcopy(getattr(self, attribute)))
        if hasattr(self, "_skl_callbacks"):
            # By reference, as scikit-learn's clone does: one callback (a
            # ScoringMonitor) collects the logs of every clone in a search.
            new._skl_callbacks = self._skl_callbacks
        return new

    def __setstate__(self, state):
        # An estimator pickled before the engine parameter existed.
        state.setdefault("engine", "auto")
        super().__setstate__(state)

    def _check_backbone_params(self):
        """Checks beyond the constraint table; returns the network."""
        _pooling.check_pooling(self.pooling)
        self._engine()  # a missing extra or an engine that cannot run precision
        return self._network()  # load_network checks weights and backbone paths

    def _network(self):
        return network_of(self)

    def _engine(self) -> _engines.Engine:
        """What runs the forward pass (chosen again at each use: the GPU may come)."""
        return _engines.choose(self.engine, self.precision)
