"""Grad-CAM, class activation maps and the inspection displays.

Maps are checked for meaning, not only shape: on synthetic images whose
class is the presence of a bright square, the heat of the "square" class
must lie on the square. Displays render headless (Agg) to PNG and the
pixels and line data are checked.
"""

import io

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC

from sktransfer import CNNFeatureExtractor, FineTunedCNNClassifier
from sktransfer.inspection import (
    GradCAMDisplay,
    LayerTransferDisplay,
    TrainingHistoryDisplay,
    class_activation_maps,
)

from .conftest import SIZE, make_images, save_pngs, tiny_backbone

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def squares(n: int, seed: int):
    """Dark noisy images; every other one has a bright 8x8 square somewhere.

    Returns the images, their labels ("blank"/"square") and each square's
    top-left corner.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, SIZE, SIZE, 3)).astype(np.uint8)
    labels = np.array(["blank", "square"] * (n // 2))
    corners = rng.integers(0, SIZE - 8, size=(n, 2))
    for image, label, (row, col) in zip(images, labels, corners):
        if label == "square":
            image[row : row + 8, col : col + 8] = 255
    return images, labels, corners


def square_contrast(maps, labels, corners) -> np.ndarray:
    """Mean heat on the square over mean heat elsewhere, per square image."""
    ratios = []
    for heat, label, (row, col) in zip(maps, labels, corners):
        if label != "square":
            continue
        inside = np.zeros(heat.shape, dtype=bool)
        inside[row : row + 8, col : col + 8] = True
        ratios.append(heat[inside].mean() / max(heat[~inside].mean(), 1e-6))
    return np.array(ratios)


@pytest.fixture(scope="module")
def square_data():
    return squares(40, seed=0), squares(20, seed=1)


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone()


@pytest.fixture(scope="module")
def square_classifier(square_data, backbone):
    (X, y, _), _ = square_data
    return FineTunedCNNClassifier(
        backbone,
        layer=-2,
        preprocessing="tf",
        head_epochs=60,
        head_learning_rate=0.05,
        epochs=0,
        dropout=0.0,
        augment=False,
        early_stopping=False,
        batch_size=16,
        random_state=0,
    ).fit(X, y)


@pytest.fixture(scope="module")
def square_pipeline(square_data, backbone):
    (X, y, _), _ = square_data
    extractor = CNNFeatureExtractor(backbone, layer=-2, preprocessing="tf")
    return make_pipeline(extractor, StandardScaler(), LogisticRegression()).fit(X, y)


# Grad-CAM ------------------------------------------------------------------


def test_grad_cam_heat_lies_on_the_square(square_data, square_classifier):
    _, (X, y, corners) = square_data
    assert square_classifier.score(X, y) >= 0.9
    maps = square_classifier.explain(X, target="square")
    assert maps.shape == (20, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0 and np.isclose(maps.max(), 1)
    assert (square_contrast(maps, y, corners) > 2).mean() >= 0.9


def test_grad_cam_targets(square_data, square_classifier):
    _, (X, _, _) = square_data
    predicted = square_classifier.predict(X)
    by_prediction = square_classifier.explain(X)
    np.testing.assert_allclose(
        by_prediction, square_classifier.explain(X, target=predicted)
    )
    targets = np.where(predicted == "square", "blank", "square")
    swapped = square_classifier.explain(X, target=list(targets))
    np.testing.assert_allclose(
        swapped[:1], square_classifier.explain(X[:1], target=targets[0])
    )
    with pytest.raises(ValueError, match=r"valid classes are \['blank', 'square'\]"):
        square_classifier.explain(X, target="circle")
    with pytest.raises(ValueError, match=r"valid classes are"):
        square_classifier.explain(X[:2], target=["square", 3])
    with pytest.raises(ValueError, match="one label per image"):
        square_classifier.explain(X, target=["square", "blank"])


def hand_made_classifier():
    """Grad-CAM with a known answer: logit("red") is the image's mean red.

    The backbone averages 4x4 pixel cells; after a minimal fit the top is
    set by hand so that logit("red") = mean red / 100 = -logit("plain"). The
    Grad-CAM of "red" is then the red channel, of "plain" nothing. The
    augmentation flips images in training: a map flipped at inference would
    show augmentation running where it must not.
    """
    pixels = keras.Input((SIZE, SIZE, 3))
    cells = keras.layers.AveragePooling2D(4, name="cells")(pixels)
    model = keras.Model(pixels, cells, name="cells")
    images = make_images(8)
    clf = FineTunedCNNClassifier(
        model,
        layer="cells",
        preprocessing=None,
        head_epochs=1,
        epochs=0,
        trainable_blocks=0,
        dropout=0.0,
        augment={"flip": "horizontal_and_vertical"},
        early_stopping=False,
        random_state=0,
    ).fit(images, ["plain", "red"] * 4)
    kernel = np.zeros((3, 2), dtype=np.float32)
    kernel[0] = [-0.01, 0.01]
    clf.model_.get_layer("logits").set_weights([kernel, np.zeros(2, np.float32)])
    return clf


def test_grad_cam_exact_on_a_known_network():
    clf = hand_made_classifier()
    images = np.zeros((2, SIZE, SIZE, 3), dtype=np.uint8)
    images[0, :8, :8, 0] = 255  # top left
    images[1, 20:, 24:, 0] = 255  # bottom right
    maps = clf.explain(images)
    np.testing.assert_array_equal(clf.predict(images), ["red", "red"])
    assert maps[0, :6, :6].min() > 0.9 and maps[0, 12:, 12:].max() == 0
    assert maps[1, 22:, 26:].min() > 0.9 and maps[1, :16, :16].max() == 0
    assert not clf.explain(images, target="plain").any()


@pytest.mark.parametrize(
    "backbone_name, weights, input_size, layer",
    [
        ("mobilenet_v2", None, 32, -1),
        ("mobilenet_v2", None, 64, [-1, -3]),
        ("efficientnet_lite0", "imagenet", 64, -2),
    ],
)
def test_grad_cam_any_backbone_and_cut(backbone_name, weights, input_size, layer):
    X = make_images(6)  # 32 px, resized to input_size by the network
    clf = FineTunedCNNClassifier(
        backbone_name,
        weights=weights,
        input_size=input_size,
        layer=layer,
        head_epochs=1,
        epochs=0,
        augment=False,
        early_stopping=False,
        random_state=0,
    ).fit(X, ["a", "b", "c"] * 2)
    maps = clf.explain(X)
    assert maps.shape == (6, SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps, clf.explain(X, target=clf.predict(X)), atol=1e-6)
    if input_size == 64 and layer == -2:  # a 4x4 map: heat has a place
        assert maps.std(axis=(1, 2)).min() > 0


def test_maps_follow_each_image_size(tmp_path, square_classifier):
    images = make_images(3)
    wide = Image.fromarray(make_images(1, size=40)[0]).resize((40, 24))
    (path,) = save_pngs(make_images(1, size=20, seed=3), tmp_path)
    maps = square_classifier.explain([wide, images[0], path, images[1][:10]])
    assert isinstance(maps, list)
    assert [m.shape for m in maps] == [(24, 40), (SIZE, SIZE), (20, 20), (10, SIZE)]
    assert all(m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1 for m in maps)
    same_size = square_classifier.explain(list(images))  # one size: an array
    assert isinstance(same_size, np.ndarray) and same_size.shape == (3, SIZE, SIZE)


def test_unreadable_images_get_nan_maps(tmp_path, square_classifier):
    paths = save_pngs(make_images(2), tmp_path)
    paths[1] = str(tmp_path / "missing.png")
    clf = square_classifier.set_params(on_error="nan")
    try:
        with pytest.warns(UserWarning, match="could not be read"):
            maps = clf.explain(paths)
    finally:
        clf.set_params(on_error="raise")
    assert np.isfinite(maps[0]).all() and np.isnan(maps[1]).all()


# Class activation maps -----------------------------------------------------


def test_cam_heat_lies_on_the_square(square_data, square_pipeline):
    _, (X, y, corners) = square_data
    assert square_pipeline.score(X, y) >= 0.9
    maps = class_activation_maps(square_pipeline, X, target="square")
    assert maps.shape == (20, SIZE, SIZE) and maps.dtype == np.float32
    assert (square_contrast(maps, y, corners) > 2).mean() >= 0.9
    # The other class's evidence is the background, not the square.
    assert (
        square_contrast(
            class_activation_maps(square_pipeline, X, target="blank"), y, corners
        )
        < 1
    ).mean() >= 0.9


@pytest.mark.parametrize(
    "steps",
    [
        [MinMaxScaler(), LinearSVC()],
        [RidgeClassifier()],
        [StandardScaler(), LogisticRegression()],
    ],
)
def test_cam_linear_classifiers(square_data, backbone, steps):
    (X, _, _), _ = square_data
    y = np.array(["a", "b", "c", "d"] * 10)
    pipeline = make_pipeline(
        CNNFeatureExtractor(backbone, layer=-2, pooling="max"), *steps
    ).fit(X, y)
    maps = class_activation_maps(pipeline, X[:8])
    assert maps.shape == (8, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    assert all(np.isclose(m.max(), 1) or not m.any() for m in maps)


def test_cam_search_and_binary_linear_svc(square_data, square_pipeline):
    (X, y, _), (X_test, _, _) = square_data
    search = GridSearchCV(square_pipeline, {"logisticregression__C": [1.0]}, cv=2)
    np.testing.assert_allclose(
        class_activation_maps(search.fit(X, y), X_test),
        class_activation_maps(search.best_estimator_, X_test),
    )
    svc = make_pipeline(square_pipeline[0], LinearSVC()).fit(X, y)
    assert class_activation_maps(svc, X_test, target="square").shape == (20, SIZE, SIZE)


def test_cam_errors(square_data, backbone, square_classifier):
    (X, y, _), _ = square_data

    def pipeline(*steps, **extractor_params):
        return make_pipeline(CNNFeatureExtractor(backbone, **extractor_params), *steps)

    with pytest.raises(ValueError, match="pooling='avg' \\(exact\\) or 'max'"):
        class_activation_maps(pipeline(RidgeClassifier(), pooling=2).fit(X, y), X)
    with pytest.raises(ValueError, match="single layer"):
        class_activation_maps(pipeline(RidgeClassifier(), layer=[-1, -2]).fit(X, y), X)
    with pytest.raises(TypeError, match="KNeighborsClassifier has no coef_"):
        class_activation_maps(pipeline(KNeighborsClassifier()).fit(X, y), X)
    with pytest.raises(TypeError, match=r"steps \['PCA'\]"):
        class_activation_maps(pipeline(PCA(4), RidgeClassifier()).fit(X, y), X)
    with pytest.raises(TypeError, match="explain"):
        class_activation_maps(square_classifier, X)
    with pytest.raises(TypeError, match="CNNFeatureExtractor"):
        class_activation_maps(LogisticRegression(), X)
    with pytest.raises(ValueError, match="valid classes"):
        class_activation_maps(pipeline(RidgeClassifier()).fit(X, y), X, target=0)


# Displays ------------------------------------------------------------------


def rendered(figure) -> np.ndarray:
    """The figure as saved to PNG, as an (h, w, 3) uint8 array."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=60)
    return np.asarray(Image.open(buffer).convert("RGB"))


def n_colours(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, 3), axis=0))


@pytest.mark.parametrize("kind", ["classifier", "pipeline"])
def test_grad_cam_display(square_data, square_classifier, square_pipeline, kind):
    _, (X, y, _) = square_data
    estimator = square_classifier if kind == "classifier" else square_pipeline
    display = GradCAMDisplay.from_estimator(estimator, X[:6], y[:6], n_cols=3)
    assert display.axes_.shape == (6,) and len(display.overlays_) == 6
    assert display.figure_.axes[0] is display.axes_[0]
    title = display.axes_[1].get_title()
    assert "pred: " in title and "true: square" in title
    heat = display.overlays_[1].get_array()
    expected = (
        square_classifier.explain(X[1:2])
        if kind == "classifier"
        else class_activation_maps(square_pipeline, X[1:2])
    )
    np.testing.assert_allclose(heat, expected[0], atol=1e-6)
    with_heat = rendered(display.figure_)
    assert n_colours(with_heat) > 500
    # The same figure without the overlay: the heat changed the image area.
    for overlay in display.overlays_:
        overlay.set_alpha(0.0)
    raw = rendered(display.figure_)
    changed = np.abs(with_heat.astype(int) - raw.astype(int)).sum(axis=-1) > 30
    assert changed.mean() > 0.1


def test_grad_cam_display_axes_and_target(square_data, square_classifier):
    _, (X, _, _) = square_data
    figure, axes = plt.subplots(1, 3)
    display = GradCAMDisplay.from_estimator(
        square_classifier, X[:2], target="square", ax=axes, alpha=0.3
    )
    assert display.figure_ is figure and list(display.axes_) == list(axes[:2])
    assert "map of: square" in display.axes_[0].get_title()
    with pytest.raises(ValueError, match="ax has 1 Axes but 2 panels"):
        GradCAMDisplay.from_estimator(square_classifier, X[:2], ax=axes[0])
    with pytest.raises(ValueError, match="alpha"):
        display.plot(alpha=2)


def test_training_history_display(backbone):
    X = make_images(16)
    clf = FineTunedCNNClassifier(
        backbone,
        preprocessing="tf",
        head_epochs=3,
        epochs=2,
        trainable_blocks=1,
        patience=5,
        validation_fraction=0.25,
        augment=False,
        random_state=0,
    ).fit(X, ["a", "b"] * 8)
    history = clf.history_
    n_head = len(history["head"]["loss"])
    display = TrainingHistoryDisplay.from_estimator(clf)
    assert display.metrics_ == ["loss", "accuracy"] and len(display.axes_) == 2
    for metric in ("loss", "accuracy"):
        for kind, key in (("train", metric), ("validation", f"val_{metric}")):
            line = display.lines_[metric][kind]
            expected = history["head"][key] + history["fine_tune"][key]
            np.testing.assert_allclose(line.get_ydata(), expected)
            np.testing.assert_array_equal(
                line.get_xdata(), np.arange(1, len(expected) + 1)
            )
    boundaries = display.boundary_lines_
    assert len(boundaries) == 2 and boundaries[0].get_xdata()[0] == n_head + 0.5
    assert n_colours(rendered(display.figure_)) > 20
    with pytest.raises(TypeError, match="FineTunedCNNClassifier"):
        TrainingHistoryDisplay.from_estimator(LogisticRegression())


def test_training_history_display_head_only():
    display = TrainingHistoryDisplay(
        {"head": {"loss": [1.0, 0.5]}, "fine_tune": {}}
    ).plot()
    assert display.metrics_ == ["loss"] and display.boundary_lines_ == []
    assert "validation" not in display.lines_["loss"]


@pytest.fixture(scope="module")
def layer_search(square_data, backbone):
    (X, y, _), _ = square_data
    pipeline = make_pipeline(
        CNNFeatureExtractor(backbone, preprocessing="tf"), LogisticRegression()
    )
    grid = {
        "cnnfeatureextractor__layer": [-1, -3, -2],
        "logisticregression__C": [0.01, 1.0],
    }
    return GridSearchCV(pipeline, grid, cv=2).fit(X, y)


def test_layer_transfer_display(layer_search):
    display = LayerTransferDisplay.from_cv_results(layer_search)
    assert display.param_name == "cnnfeatureextractor__layer"
    assert display.values == [-3, -2, -1]
    assert display.line_labels == ["C=0.01", "C=1"]
    results = layer_search.cv_results_
    for line, C in zip(display.lines_, [0.01, 1.0]):
        expected = [
            results["mean_test_score"][
                np.asarray(results["param_cnnfeatureextractor__layer"] == layer)
                & np.asarray(results["param_logisticregression__C"] == C)
            ][0]
            for layer in [-3, -2, -1]
        ]
        np.testing.assert_allclose(line.get_ydata(), expected)
    assert len(display.fill_between_) == 2
    assert "deeper to the right" in display.ax_.get_xlabel()
    assert n_colours(rendered(display.figure_)) > 20

    by_C = LayerTransferDisplay.from_cv_results(
        dict(results), param="C", std_display_style="errorbar"
    )
    assert by_C.values == [0.01, 1.0] and len(by_C.lines_) == 3
    assert by_C.errorbar_ is not None and by_C.fill_between_ is None


def test_layer_transfer_display_errors(layer_search):
    with pytest.raises(ValueError, match="no searched parameter ending in 'layer'"):
        LayerTransferDisplay.from_cv_results(
            {"param_C": np.ma.array([1, 2]), "mean_test_score": np.ones(2)}
        )
    with pytest.raises(ValueError, match="not a searched parameter"):
        LayerTransferDisplay.from_cv_results(layer_search, param="gamma")
    with pytest.raises(ValueError, match="pass metric="):
        LayerTransferDisplay.from_cv_results(layer_search, metric="f1")
    with pytest.raises(ValueError, match="not fitted"):
        LayerTransferDisplay.from_cv_results(GridSearchCV(LogisticRegression(), {}))


def test_layer_transfer_display_of_the_auto_layer_probe(square_data, backbone):
    (X, y, _), _ = square_data
    pipeline = make_pipeline(
        CNNFeatureExtractor(backbone, preprocessing="tf", layer="auto"),
        LogisticRegression(),
    ).fit(X, y)
    extractor = pipeline[0]
    display = LayerTransferDisplay.from_estimator(pipeline)
    assert display.values == sorted(extractor.depth_scores_)  # deeper to the right
    np.testing.assert_allclose(
        display.lines_[0].get_ydata(), [extractor.depth_scores_[v] for v in display.values]
    )
    assert f"chose {extractor.layer_}" in display.line_labels[0]
    assert display.fill_between_ is None and display.errorbar_ is None
    with pytest.raises(ValueError, match="only a fit with layer='auto'"):
        LayerTransferDisplay.from_estimator(CNNFeatureExtractor(backbone).fit(X))


def test_displays_without_matplotlib(monkeypatch, square_classifier):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "sktransfer\[plot\]"'):
        TrainingHistoryDisplay.from_estimator(square_classifier)
