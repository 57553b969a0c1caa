"""sktransfer: CNN transfer learning as scikit-learn estimators.

Importing the package is cheap: TensorFlow is imported the first time a
network is built.
"""

from ._classifier import FineTunedCNNClassifier
from ._extractor import CNNFeatureExtractor
from ._folder import load_image_folder

__version__ = "0.1.0.dev0"

__all__ = [
    "CNNFeatureExtractor",
    "FineTunedCNNClassifier",
    "load_image_folder",
    "__version__",
]
