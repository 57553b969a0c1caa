"""Grad-CAM: where does a fine-tuned network look?

A ``FineTunedCNNClassifier`` (EfficientNet-Lite0, ImageNet weights offline)
is fine-tuned on 60 Fashion-MNIST images per class at 96x96, then
``GradCAMDisplay`` draws test images with the heat map of the gradient of
their predicted class with respect to the last cut layer.

Run: ``python examples/grad_cam.py`` (about two minutes on 2 CPU cores);
writes ``grad_cam.png`` in ``$SKTRANSFER_EXAMPLES_OUT``.
"""

import os

import numpy as np

from sktransfer import FineTunedCNNClassifier
from sktransfer.datasets import load_fashion_mnist
from sktransfer.inspection import GradCAMDisplay

output = os.environ.get("SKTRANSFER_EXAMPLES_OUT", ".")
rng = np.random.default_rng(0)
train, test = load_fashion_mnist(subset="train"), load_fashion_mnist(subset="test")
names = np.asarray(train.target_names)
chosen = np.concatenate(
    [rng.choice(np.flatnonzero(train.target == c), 60, replace=False) for c in range(10)]
)
clf = FineTunedCNNClassifier(
    "efficientnet_lite0", layer=-2, input_size=96, trainable_blocks=1,
    learning_rate=3e-4, head_epochs=40, epochs=4, random_state=0,
).fit(train.images[chosen], names[train.target[chosen]])
print(f"test accuracy on 1000 images: "
      f"{clf.score(test.images[:1000], names[test.target[:1000]]):.3f}")

display = GradCAMDisplay.from_estimator(
    clf, test.images[:8], names[test.target[:8]], n_cols=4
)
display.figure_.savefig(os.path.join(output, "grad_cam.png"), dpi=100)
