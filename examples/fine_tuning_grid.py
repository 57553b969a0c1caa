"""Fine tuning: how many blocks to unfreeze, and at what learning rate?

Fashion-MNIST, 40 training images per class, at 64x64. ``FineTunedCNNClassifier``
(EfficientNet-Lite0, ImageNet weights offline) trains a new top on the
frozen network, then unfreezes the top ``trainable_blocks`` blocks at
``learning_rate``; the grid search picks both. Without augmentation, stage 1
trains on cached features and stage 2 on cached maps of the frozen layer
below the unfrozen blocks, so the frozen network runs once per image, not
once per epoch and candidate.

Run: ``python examples/fine_tuning_grid.py`` (a few minutes on 2 CPU
cores); writes ``training_history.png`` in ``$SKTRANSFER_EXAMPLES_OUT``.
"""

import os
import time

import numpy as np
from sklearn.model_selection import GridSearchCV

from sktransfer import FineTunedCNNClassifier
from sktransfer.datasets import load_fashion_mnist
from sktransfer.inspection import TrainingHistoryDisplay

output = os.environ.get("SKTRANSFER_EXAMPLES_OUT", ".")
rng = np.random.default_rng(0)
train, test = load_fashion_mnist(subset="train"), load_fashion_mnist(subset="test")
names = np.asarray(train.target_names)
chosen = np.concatenate(
    [rng.choice(np.flatnonzero(train.target == c), 40, replace=False) for c in range(10)]
)
X_train, y_train = train.images[chosen], names[train.target[chosen]]
X_test, y_test = test.images[:2000], names[test.target[:2000]]

clf = FineTunedCNNClassifier(
    "efficientnet_lite0", layer=-2, input_size=64, augment=False,
    head_epochs=40, epochs=6, random_state=0,
)
grid = {"trainable_blocks": [0, 1, 2], "learning_rate": [1e-4, 3e-4]}
start = time.perf_counter()
search = GridSearchCV(clf, grid, cv=3).fit(X_train, y_train)
print(f"grid search of {len(search.cv_results_['params'])} candidates x 3 folds: "
      f"{time.perf_counter() - start:.1f} s")
print("best:", search.best_params_, f"cv accuracy {search.best_score_:.3f}")
print(f"test accuracy on {len(X_test)} images: {search.score(X_test, y_test):.3f}")

display = TrainingHistoryDisplay.from_estimator(search.best_estimator_)
display.figure_.savefig(os.path.join(output, "training_history.png"), dpi=100)
