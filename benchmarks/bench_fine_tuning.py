"""Fine tuning: FineTunedCNNClassifier against the same network trained by hand and by wrappers.

Same data (Fashion-MNIST, ``--per-class`` training images per class, the
first ``--n-test`` test images), same backbone (EfficientNet-Lite0 with its
real ImageNet weights, cut at the top), same top (average pooling, dropout
0.2, softmax), same input size, batch size and number of epochs, no
augmentation and no early stopping, so that only the training machinery
differs:

* ``sktransfer``: ``FineTunedCNNClassifier`` (stage 1: new top on the frozen
  network; stage 2: top block unfrozen at the small learning rate);
* ``keras by hand``: the same two-stage recipe written in plain Keras, on
  arrays prepared in memory;
* ``scikeras``: ``scikeras.wrappers.KerasClassifier`` around a model with
  the top block trainable, one ``fit`` of all the epochs (a wrapper fits
  once; two stages would need subclassing);
* ``keras SKLearnClassifier``: Keras 3's ``keras.wrappers.SKLearnClassifier``
  around the same model and single stage; it accepts only 2-D ``X``, so the
  images go in flattened and the model reshapes them.

Wall time covers fit + predict on the test images; for the peers, preparing
the in-memory arrays (resizing) is excluded, for sktransfer nothing is (it
reads and resizes images itself, batch by batch).

    python benchmarks/bench_fine_tuning.py --per-class 100 --size 96
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import machine

SEED = 0


def load(per_class: int, n_test: int, size: int):
    from sktransfer._inputs import as_images
    from sktransfer.datasets import load_fashion_mnist

    train = load_fashion_mnist(subset="train")
    test = load_fashion_mnist(subset="test")
    rng = np.random.default_rng(SEED)
    chosen = np.concatenate(
        [rng.choice(np.flatnonzero(train.target == c), per_class, replace=False) for c in range(10)]
    )
    X_train, y_train = train.images[chosen], train.target[chosen]
    X_test, y_test = test.images[:n_test], test.target[:n_test]

    def pixels(images):  # the arrays a Keras user would prepare by hand
        source = as_images(images)
        return source.load(0, len(source), (size, size))[0]

    return X_train, y_train, X_test, y_test, pixels(X_train), pixels(X_test)


def lite0_model(size: int, trainable_top_block: bool, flat_input: bool = False):
    """EfficientNet-Lite0 + new top, as a Keras user would write it."""
    import keras

    from sktransfer.backbones._efficientnet_lite import EfficientNetLite

    base = EfficientNetLite("lite0", include_top=False, weights="imagenet", input_shape=(size, size, 3))
    if flat_input:
        inputs = keras.Input((size * size * 3,))
        x = keras.layers.Reshape((size, size, 3))(inputs)
    else:
        inputs = x = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)  # lite0's preprocessing
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2, seed=SEED)(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    set_top_block(base, trainable_top_block)
    return model, base


def set_top_block(base, trainable: bool):
    import keras

    names = [layer.name for layer in base.layers]
    first = names.index("block6a_expand_relu")  # the block below the top one
    base.trainable = trainable
    for position, layer in enumerate(base.layers):
        layer.trainable = (
            trainable and position > first and not isinstance(layer, keras.layers.BatchNormalization)
        )


def by_hand(P_train, y_train, P_test, args):
    import keras

    keras.utils.set_random_seed(SEED)
    model, base = lite0_model(args.size, trainable_top_block=False)
    model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(P_train, y_train, epochs=args.head_epochs, batch_size=args.batch_size, verbose=0)
    set_top_block(base, True)
    model.compile(keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(P_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    return model.predict(P_test, batch_size=args.batch_size, verbose=0).argmax(axis=1)


def single_stage_model(size):
    import keras

    model, _ = lite0_model(size, trainable_top_block=True)
    model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def with_scikeras(P_train, y_train, P_test, args):
    import keras
    from scikeras.wrappers import KerasClassifier

    keras.utils.set_random_seed(SEED)
    clf = KerasClassifier(
        model=lambda: single_stage_model(args.size),
        epochs=args.head_epochs + args.epochs,
        batch_size=args.batch_size,
        verbose=0,
        random_state=SEED,
    )
    clf.fit(P_train, y_train)
    return clf.predict(P_test)


def with_keras_wrapper(P_train, y_train, P_test, args):
    import keras
    from keras.wrappers import SKLearnClassifier

    def build(X, y):
        # SKLearnClassifier accepts only 2-D X: images go in flattened.
        model, _ = lite0_model(args.size, trainable_top_block=True, flat_input=True)
        model.compile(keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
        return model

    keras.utils.set_random_seed(SEED)
    clf = SKLearnClassifier(
        model=build,
        fit_kwargs={"epochs": args.head_epochs + args.epochs, "batch_size": args.batch_size, "verbose": 0},
    )
    clf.fit(P_train.reshape(len(P_train), -1), y_train)
    return clf.predict(P_test.reshape(len(P_test), -1))


def with_sktransfer(X_train, y_train, X_test, args):
    from sktransfer import FineTunedCNNClassifier

    clf = FineTunedCNNClassifier(
        "efficientnet_lite0",
        input_size=args.size,
        trainable_blocks=1,
        head_epochs=args.head_epochs,
        epochs=args.epochs,
        head_learning_rate=1e-3,
        learning_rate=1e-4,
        batch_size=args.batch_size,
        augment=False,
        early_stopping=False,
        random_state=SEED,
    )
    clf.fit(X_train, y_train)
    return clf.predict(X_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()

    X_train, y_train, X_test, y_test, P_train, P_test = load(args.per_class, args.n_test, args.size)
    runs = {
        "sktransfer FineTunedCNNClassifier (2 stages)": lambda: with_sktransfer(X_train, y_train, X_test, args),
        "keras by hand (same 2 stages)": lambda: by_hand(P_train, y_train, P_test, args),
        "scikeras KerasClassifier (1 stage)": lambda: with_scikeras(P_train, y_train, P_test, args),
        "keras.wrappers.SKLearnClassifier (1 stage)": lambda: with_keras_wrapper(P_train, y_train, P_test, args),
    }
    print(f"Machine: {machine()}\n")
    print(f"Fashion-MNIST, {10 * args.per_class} training images, {args.n_test} test images, "
          f"EfficientNet-Lite0 (ImageNet) at {args.size}x{args.size}, {args.head_epochs} + "
          f"{args.epochs} epochs, batch {args.batch_size}\n")
    print("| method | fit + predict (s) | test accuracy |")
    print("|---|---|---|")
    for name, run in runs.items():
        if args.only and not any(key in name for key in args.only):
            continue
        import keras

        keras.backend.clear_session()
        start = time.perf_counter()
        predicted = run()
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(np.asarray(predicted) == y_test))
        print(f"| {name} | {seconds:.1f} | {accuracy:.4f} |", flush=True)


if __name__ == "__main__":
    main()
