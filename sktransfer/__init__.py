"""sktransfer: CNN transfer learning as scikit-learn estimators.

Importing the package is cheap: TensorFlow is imported the first time a
network is built.
"""

from ._classifier import FineTunedCNNClassifier
from ._extractor import CNNFeatureExtractor
from ._inputs import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels
from ._persistence import load_model, save_model
from ._version import __version__
from .datasets import load_image_folder

__all__ = [
    "CNNFeatureExtractor",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "FineTunedCNNClassifier",
    "load_image_folder",
    "load_model",
    "save_model",
    "set_max_image_pixels",
    "__version__",
]
