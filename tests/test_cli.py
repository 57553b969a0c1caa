import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sktransfer.cli import main


def test_backbones_lists_sizes_and_blocks(capsys):
    assert main(["backbones", "mobilenet_v2"]) == 0
    out = capsys.readouterr().out
    assert "MobileNetV2" in out and "224x224" in out
    assert "layer  -1 =  4: out_relu (7x7x1280)" in out


def test_errors_go_to_stderr_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "sktransfer", "demo", "--backbone", "resnet5", "--no-figure"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Unknown backbone 'resnet5'" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_on_digits_prints_table_and_writes_figure(tmp_path, capsys):
    code = main(
        [
            "demo", "--dataset", "digits", "--backbone", "mobilenet_v2",
            "--weights", "none", "--input-size", "32", "--layers=-3,-4",
            "--samples-per-class", "5", "--output-dir", str(tmp_path),
            "--head-epochs", "1", "--epochs", "1", "--fine-tune-layer=-3",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| raw pixels + logistic regression |" in out
    assert "| mobilenet_v2 features + logistic regression | -3 (" in out
    assert "| mobilenet_v2 fine-tuned (FineTunedCNNClassifier) | -3 (" in out
    figure = np.asarray(Image.open(tmp_path / "demo.png").convert("L"))
    assert figure.shape[0] > 300 and figure.std() > 20  # a picture, not a blank


@pytest.mark.slow
def test_demo_on_fashion_mnist_transfer_beats_raw_pixels(tmp_path):
    """The main job end to end on real data and real weights (about 3 minutes)."""
    from sktransfer._demo import run_demo

    results, figure = run_demo(
        dataset="fashion-mnist", output_dir=str(tmp_path), verbose=0, fine_tune=False
    )
    raw = results[0].accuracy
    best_features = max(r.accuracy for r in results[1:])
    assert best_features > raw + 0.03
    assert figure is not None and (tmp_path / "demo.png").stat().st_size > 10_000
