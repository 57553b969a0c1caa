"""Shared fixtures: small real images made on the fly (no data is committed)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

#: Small images keep every test fast on 2 CPU cores.
SIZE = 32


def make_images(n: int = 12, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 RGB images: blobs of colour, not white noise.

    Noise images give near-constant features from a random network; smooth
    ones exercise the network the way photos do.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.stack(
        [
            np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
            for image in coarse
        ]
    )


def two_classes(
    n: int = 16, seed: int = 0, names=("a", "b"), darken: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Two classes any block tells apart: images, every other one darkened."""
    images = make_images(n, seed=seed)
    labels = np.array(list(names) * (n // 2))
    images[labels == names[1]] //= darken
    return images, labels


def bright_and_dark(n: int = 24, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Classes "bright" and "dark" (a quarter of the brightness)."""
    return two_classes(n, seed, ("bright", "dark"), 4)


@pytest.fixture
def empty_cache():
    """An empty feature cache before and after the test."""
    from sktransfer import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def images() -> np.ndarray:
    return make_images()


@pytest.fixture
def labels() -> np.ndarray:
    return np.array(["cat", "dog", "eel"] * 4)


def save_pngs(images, folder, labels=None) -> list[str]:
    """Save images as PNG files (in a subfolder per label if given); their paths."""
    paths = []
    for index, image in enumerate(images):
        target = folder / labels[index] if labels is not None else folder
        target.mkdir(exist_ok=True)
        path = target / f"{index:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def image_folder(tmp_path, images, labels):
    """The images saved as PNG in a class-per-subfolder tree; returns the paths."""
    return tmp_path, save_pngs(images, tmp_path, labels)


def he_initialize(model, seed: int = 0):
    """Give a Keras model random weights whose features depend on the image.

    Keras' default initialisation with fresh BatchNorm statistics makes deep
    features nearly constant across images (they vanish through ReLU6 chains),
    which would let a comparison pass between near-equal numbers. He-scaled
    normal kernels with identity BatchNorm keep activations of order one and
    different for every image.
    """
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = weights
            layer.set_weights(
                [np.ones_like(gamma), np.zeros_like(beta), np.zeros_like(mean), np.ones_like(variance)]
            )
            continue
        kernel = weights[0]
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            fan_in = np.prod(kernel.shape[:2])
        else:
            fan_in = np.prod(kernel.shape[:-1])
        scale = np.sqrt(2.0 / fan_in)
        layer.set_weights([rng.normal(0, scale, kernel.shape).astype("float32"), *weights[1:]])
    return model


def tiny_backbone(seed: int = 0):
    """A three-block CNN for 32x32 images: fast to build, trace and train.

    Each block is conv (stride 2) -> BatchNorm -> ReLU, so the recipe's
    freezing and BatchNorm handling are exercised as on a real backbone.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = inputs
    for index, filters in enumerate([8, 16, 32], start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    model = he_initialize(keras.Model(inputs, x, name="tiny"), seed)
    # Non-trivial BatchNorm statistics, so a drift would be visible.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, beta, mean + 0.1, variance * 2.0])
    return model


@pytest.fixture(scope="session")
def tiny_backbone_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("backbones") / "tiny.keras"
    tiny_backbone().save(path)
    return str(path)


@pytest.fixture(scope="session")
def saved_classifier(tmp_path_factory):
    """A small fitted classifier, saved with sktransfer.save_model: (clf, path, images)."""
    from sktransfer import FineTunedCNNClassifier, save_model

    images = make_images(8)
    clf = FineTunedCNNClassifier(
        backbone="mobilenet_v2", weights=None, input_size=SIZE, layer=-2,
        head_epochs=1, epochs=0, early_stopping=False, random_state=0,
    ).fit(images, ["cat", "dog"] * 4)
    path = tmp_path_factory.mktemp("models") / "model.sktransfer"
    save_model(clf, path)
    return clf, str(path), images
