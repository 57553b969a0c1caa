"""The examples run end to end (slow: minutes each on 2 CPU cores)."""

from __future__ import annotations

import pathlib
import runpy

import numpy as np
import pytest
from PIL import Image

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, figure",
    [
        ("feature_extraction_layer_grid.py", "layer_grid.png"),
        ("fine_tuning_grid.py", "training_history.png"),
        ("grad_cam.py", "grad_cam.png"),
    ],
)
def test_example_runs_and_draws(script, figure, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("SKTRANSFER_EXAMPLES_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    pixels = np.asarray(Image.open(tmp_path / figure).convert("RGB"))
    # A drawn figure, not a blank canvas: many distinct colours.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
