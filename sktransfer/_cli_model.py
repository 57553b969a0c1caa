"""``sktransfer fit``, ``predict`` and ``explain``: a fine-tuned model through joblib files."""

from __future__ import annotations

import csv
import os

import numpy as np

from ._cli_common import (
    CommandError,
    Progress,
    check_output,
    chunks,
    class_folder,
    estimator_params,
    image_error,
    images_from_arguments,
)
from .exceptions import ImageLoadError

#: Images per prediction call: the granularity of the progress bar.
CHUNK_IMAGES = 256

FIGURE_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def run_fit(args, *, say, warn) -> int:
    """Fine-tune on a class-per-subfolder tree and save the classifier."""
    import joblib

    from ._classifier import FineTunedCNNClassifier

    check_output(args.output)
    paths, labels = class_folder(args.folder)
    classes, counts = np.unique(labels, return_counts=True)
    say(
        f"{len(paths)} images in {len(classes)} classes: "
        + ", ".join(f"{label} ({count})" for label, count in zip(classes, counts))
    )
    clf = FineTunedCNNClassifier(
        **estimator_params(FineTunedCNNClassifier, args, memory=args.cache_dir)
    )
    try:
        clf.fit(paths, labels)
    except ImageLoadError as exc:
        raise image_error(exc, paths) from None
    temporary = args.output + ".partial"
    try:
        joblib.dump(clf, temporary)
        os.replace(temporary, args.output)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    for line in training_summary(clf):
        say(line)
    say(f"saved to {args.output}")
    return 0


def training_summary(clf) -> list[str]:
    """Epochs run per stage and the validation accuracy of the weights kept."""
    stages = {"head": "stage 1 (new top)", "fine_tune": "stage 2 (fine tuning)"}
    lines = []
    last = None
    for key, title in stages.items():
        history = clf.history_.get(key)
        if not history:
            continue
        epochs = len(history.get("loss", []))
        if key == "fine_tune":
            title += f", {clf.trainable_blocks_} block(s) unfrozen"
        lines.append(f"{title}: {epochs} epoch(s)")
        last = history
    if last is not None and last.get("val_loss") and last.get("val_accuracy"):
        # Early stopping keeps the weights of the epoch of lowest validation loss.
        best = int(np.argmin(last["val_loss"]))
        lines.append(
            f"validation accuracy: {last['val_accuracy'][best]:.4f} (epoch {best + 1}, "
            "lowest validation loss, whose weights were kept)"
        )
    else:
        lines.append("validation accuracy: none (no validation split)")
    return lines


def load_model(path: str):
    """A fitted estimator from a joblib file, or a CommandError.

    joblib files are pickles: load only files you trust.
    """
    if not os.path.isfile(path):
        raise CommandError(f"model file not found: {path!r}.")
    import joblib

    try:
        model = joblib.load(path)
    except Exception as exc:  # pickle's errors have no common base class
        raise CommandError(
            f"cannot load a model from {path!r} ({type(exc).__name__}: {exc}); expected "
            "a file written by 'sktransfer fit' or joblib.dump."
        ) from None
    if not hasattr(model, "predict"):
        raise CommandError(
            f"{path!r} holds a {type(model).__name__}, not a classifier with predict."
        )
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)
    return model


def _use_engine(model, engine: str) -> None:
    """Run a loaded model's inference on ``engine`` (its steps', for a pipeline)."""
    steps = getattr(model, "named_steps", {})
    for estimator in [model, *steps.values()]:
        if hasattr(estimator, "_engine"):
            estimator.set_params(engine=engine)
            estimator._engine()  # a missing extra: said before any image is read


def run_predict(args, *, say, warn) -> int:
    """Print (or write as CSV) the predicted label, and probabilities, of each image."""
    paths, _ = images_from_arguments(args.files, warn=warn)
    if args.output is not None:
        check_output(args.output, (".csv",))
    model = load_model(args.model)
    _use_engine(model, args.engine)
    if args.proba and not hasattr(model, "predict_proba"):
        raise CommandError(
            f"--proba: the {type(model).__name__} in {args.model!r} has no predict_proba."
        )
    classes = [str(c) for c in getattr(model, "classes_", [])]
    header = ["path", "label"] + [f"proba_{c}" for c in classes] * bool(args.proba)
    if args.output is None:
        write, file, temporary = (lambda row: say("\t".join(row))), None, None
        if args.proba:
            write(header)
    else:
        temporary = args.output + ".partial"
        file = open(temporary, "w", newline="", encoding="utf-8")
        write = csv.writer(file).writerow
        write(header)
    progress = Progress(len(paths), "predict", enabled=args.progress)
    try:
        for start, stop in chunks(len(paths), CHUNK_IMAGES):
            chunk = paths[start:stop]
            try:
                if args.proba:
                    proba = model.predict_proba(chunk)
                    labels = np.asarray(model.classes_)[proba.argmax(axis=1)]
                else:
                    proba, labels = None, model.predict(chunk)
            except ImageLoadError as exc:
                raise image_error(exc, chunk) from None
            for i, path in enumerate(chunk):
                row = [str(path), str(labels[i])]
                if proba is not None:
                    row += [format(p, ".6g") for p in proba[i].tolist()]
                write(row)
            progress.update(stop - start)
    except BaseException:
        if file is not None:
            file.close()
            os.remove(temporary)
        raise
    finally:
        progress.close()
    if file is not None:
        file.close()
        os.replace(temporary, args.output)
        say(f"wrote the predictions of {len(paths)} image(s) to {args.output}")
    return 0


def _target(model, text):
    """The class of ``model`` whose text is ``text`` (labels may be ints)."""
    if text is None:
        return None
    for label in model.classes_:
        if str(label) == text:
            return label
    raise CommandError(
        f"--target {text!r} is not a class of the model; its classes are "
        f"{', '.join(repr(str(c)) for c in model.classes_)}."
    )


def run_explain(args, *, say, warn) -> int:
    """Grad-CAM heat maps of the images over them, as one figure."""
    extension = check_output(args.output, FIGURE_FORMATS)
    paths, labels = images_from_arguments(args.files, warn=warn)
    model = load_model(args.model)
    model = getattr(model, "best_estimator_", model)  # a saved search
    pipeline = hasattr(model, "steps")
    if not (hasattr(model, "explain") or pipeline):
        raise CommandError(
            f"{args.model!r} holds a {type(model).__name__}; heat maps need a "
            "FineTunedCNNClassifier (as written by 'sktransfer fit') or a pipeline "
            "of CNNFeatureExtractor and a linear classifier."
        )
    try:
        from .inspection import GradCAMDisplay
    except ModuleNotFoundError as exc:
        if exc.name != "sktransfer.inspection":
            raise
        raise CommandError(
            "this installation of sktransfer has no Grad-CAM display "
            "(sktransfer.inspection); update sktransfer."
        ) from None
    target = _target(model, args.target)
    os.environ.setdefault("MPLBACKEND", "Agg")  # files only: no display needed
    try:
        display = GradCAMDisplay.from_estimator(
            model, paths, labels, target=target,
            n_cols=args.n_cols, alpha=args.alpha, cmap=args.cmap,
        )
    except ImageLoadError as exc:
        raise image_error(exc, paths) from None
    except TypeError as exc:
        if not pipeline:
            raise
        raise CommandError(str(exc)) from None  # a pipeline the maps do not support
    figure = display.figure_
    temporary = args.output + ".partial"
    try:
        figure.savefig(temporary, format=extension[1:], dpi=args.dpi, bbox_inches="tight")
        os.replace(temporary, args.output)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
        import matplotlib.pyplot as plt

        plt.close(figure)
    what = f"class {args.target!r}" if target is not None else "the predicted classes"
    say(f"Grad-CAM of {len(paths)} image(s) for {what}: wrote {args.output}")
    return 0
