"""The safe model format: save_model/load_model, and what it refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import joblib
import numpy as np
import pytest

import sktransfer
from sktransfer import CNNFeatureExtractor, load_model, save_model
from sktransfer.exceptions import CorruptFileError, ModelVersionWarning, UnsafeFileError

from .conftest import make_images
from .test_hostile_inputs import lambda_model_bytes


def rewritten(source, target, **members) -> str:
    """A copy of the zip ``source`` with some members replaced (bytes or JSON)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = members.pop(info.filename.replace(".", "_"), None)
            if data is None:
                data = old.read(info)
            elif not isinstance(data, bytes):
                data = json.dumps(data).encode()
            new.writestr(info.filename, data)
    return str(target)


def member(path, name):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(name))


def test_the_file_is_json_and_a_keras_file_in_a_zip(saved_classifier):
    clf, path, _ = saved_classifier
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert names == ["metadata.json", "params.json", "attributes.json", "model.keras"]
    metadata = member(path, "metadata.json")
    assert metadata["format"] == "sktransfer.model" and metadata["format_version"] == 1
    assert metadata["estimator"] == "FineTunedCNNClassifier"
    assert set(metadata["versions"]) == {"sktransfer", "keras", "tensorflow", "scikit-learn", "numpy"}
    assert member(path, "params.json")["backbone"] == "mobilenet_v2"
    attributes = member(path, "attributes.json")
    assert attributes["classes_"]["__ndarray__"] == ["cat", "dog"]


def test_a_saved_classifier_predicts_identically_in_a_fresh_process(saved_classifier, tmp_path):
    clf, path, images = saved_classifier
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, sktransfer\n"
        "clf = sktransfer.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], clf.predict_proba(np.load(sys.argv[2])))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(sktransfer.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script, path, str(tmp_path / "images.npy"), str(tmp_path / "p.npy")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), clf.predict_proba(images))


def test_a_loaded_classifier_keeps_its_parameters_and_attributes(saved_classifier):
    clf, path, images = saved_classifier
    loaded = load_model(path)
    assert loaded.get_params() == clf.get_params()
    assert loaded.classes_.tolist() == ["cat", "dog"] and loaded.input_size_ == (32, 32)
    assert loaded.history_ == clf.history_ and loaded.layer_names_ == clf.layer_names_
    np.testing.assert_array_equal(loaded.predict(images), clf.predict(images))


def test_a_crafted_model_with_a_lambda_layer_is_refused_unrun(saved_classifier, tmp_path):
    _, path, _ = saved_classifier
    marker = tmp_path / "ran"
    crafted = rewritten(path, tmp_path / "crafted.sktransfer", model_keras=lambda_model_bytes(marker))
    with pytest.raises(UnsafeFileError, match=r"crafted\.sktransfer' \(model\.keras\) holds Python bytecode"):
        load_model(crafted)
    assert not marker.exists()


def test_a_newer_format_is_a_clear_error(saved_classifier, tmp_path):
    _, path, _ = saved_classifier
    metadata = {**member(path, "metadata.json"), "format_version": 2}
    newer = rewritten(path, tmp_path / "newer.sktransfer", metadata_json=metadata)
    with pytest.raises(CorruptFileError, match="format version 2.*reads version 1: upgrade sktransfer"):
        load_model(newer)


def test_other_library_versions_warn(saved_classifier, tmp_path):
    _, path, images = saved_classifier
    metadata = member(path, "metadata.json")
    metadata["versions"]["keras"] = "2.15.0"
    older = rewritten(path, tmp_path / "older.sktransfer", metadata_json=metadata)
    with pytest.warns(ModelVersionWarning, match=r"keras 2\.15\.0 \(here 3\."):
        loaded = load_model(older)
    assert loaded.predict(images[:2]).shape == (2,)


def test_inconsistent_or_foreign_content_is_refused(saved_classifier, tmp_path):
    clf, path, _ = saved_classifier
    attributes = member(path, "attributes.json")
    attributes["classes_"] = {"__ndarray__": ["a", "b", "c"], "dtype": "<U1", "shape": [3]}
    wrong = rewritten(path, tmp_path / "wrong.sktransfer", attributes_json=attributes)
    with pytest.raises(CorruptFileError, match="does not fit input_size_=.* and 3 classes"):
        load_model(wrong)
    params = {**member(path, "params.json"), "evil": 1}
    extra = rewritten(path, tmp_path / "extra.sktransfer", params_json=params)
    with pytest.raises(CorruptFileError, match=r"parameters \['evil'\] do not match"):
        load_model(extra)
    metadata = {**member(path, "metadata.json"), "estimator": "os.system"}
    foreign = rewritten(path, tmp_path / "foreign.sktransfer", metadata_json=metadata)
    with pytest.raises(CorruptFileError, match="holds an estimator 'os.system'"):
        load_model(foreign)


def test_a_pickle_is_not_read_as_a_model(saved_classifier, tmp_path):
    clf, _, _ = saved_classifier
    pickled = tmp_path / "model.joblib"
    joblib.dump({"not": "a model"}, pickled)
    with pytest.raises(CorruptFileError, match="not a zip archive.*looks like a pickle"):
        load_model(pickled)


def test_what_cannot_be_saved_safely_is_refused_on_save(saved_classifier, tmp_path):
    from sklearn.pipeline import make_pipeline

    clf, _, _ = saved_classifier
    with pytest.raises(TypeError, match="not Pipeline.*joblib.dump, a pickle"):
        save_model(make_pipeline(clf), tmp_path / "p.sktransfer")
    extractor = CNNFeatureExtractor(
        backbone="mobilenet_v2", weights=None, input_size=32, preprocessing=lambda x: x / 255
    ).fit(make_images(1))
    with pytest.raises(ValueError, match="parameter preprocessing is a function"):
        save_model(extractor, tmp_path / "e.sktransfer")
    assert not os.listdir(tmp_path)


def test_an_extractor_with_a_keras_model_backbone_round_trips(tmp_path):
    from .conftest import tiny_backbone

    images = make_images(4)
    extractor = CNNFeatureExtractor(backbone=tiny_backbone(), input_size=(32, 32)).fit(images)
    save_model(extractor, tmp_path / "e.sktransfer")
    loaded = load_model(tmp_path / "e.sktransfer")
    assert loaded.get_params()["input_size"] == (32, 32)
    np.testing.assert_array_equal(loaded.transform(images), extractor.transform(images))
