"""``sktransfer fit``, ``predict`` and ``explain``: a fine-tuned model through model files.

``fit`` writes sktransfer's safe model format (:func:`sktransfer.save_model`);
``predict`` and ``explain`` read it, and read a pickle (joblib) file only
with ``--allow-pickle``, because loading a pickle runs any code it holds.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from ._common import (
    CommandError,
    Progress,
    check_output,
    chunks,
    class_folder,
    estimator_params,
    image_error,
    images_from_arguments,
)
from ..exceptions import ImageLoadError

#: Images per prediction call: the granularity of the progress bar.
CHUNK_IMAGES = 256

FIGURE_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def run_fit(args, *, say, warn) -> int:
    """Fine-tune on a class-per-subfolder tree and save the classifier."""
    from .._classifier import FineTunedCNNClassifier
    from .._persistence import save_model

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
    save_model(clf, args.output)
    for line in training_summary(clf):
        say(line)
    say(f"saved to {args.output}")
    return 0


def training_summary(clf) -> list[str]:
    """Epochs run per stage and the validation accuracy of the weights kept."""
    lines = []
    if hasattr(clf, "depth_reason_"):  # layer or trainable_blocks "auto"
        lines.append(f"chosen from the images: {clf.depth_reason_}")
    last = None
    for number, stage in enumerate(clf.stages_, start=1):
        history = clf.history_.get(stage.name)
        if not history:
            continue
        epochs = len(history.get("loss", []))
        title = f"stage {number} ({stage.title})"
        if stage.trainable_blocks:
            title += f", {stage.trainable_blocks} block(s) unfrozen"
        line = f"{title}: {epochs} epoch(s)"
        found = getattr(clf, "lr_find_", {}).get(stage.name)
        if found is not None:
            line += f", learning rate {stage.learning_rate:.2g} " + (
                "from a range test"
                if found["suggestion"] is not None
                else "(the default: the range test found no clear descent)"
            )
        lines.append(line)
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


def load_model(path: str, *, allow_pickle: bool = False, warn=None):
    """A fitted estimator that takes image paths, or a CommandError.

    Reads sktransfer's safe format; a pickle (joblib) file only when
    ``allow_pickle``, since unpickling runs any code the file holds.
    """
    from .._persistence import check_model_file
    from .._persistence import load_model as load_safe

    if not os.path.exists(path):
        raise CommandError(f"model file not found: {path!r}.")
    if not os.path.isfile(path):
        raise CommandError(f"model {path!r} is not a file.")
    kind = check_model_file(path)
    if kind == "safe":
        model = load_safe(path)
    elif not allow_pickle:
        what = (
            "a pickle (joblib) file" if kind == "pickle"
            else "not a model saved by 'sktransfer fit' or sktransfer.save_model"
        )
        raise CommandError(
            f"{path!r} is {what}. Loading a pickle runs whatever code it holds, so "
            "it is done only when asked: pass --allow-pickle if you (or someone you "
            "trust) wrote this file; to share a model, save it with 'sktransfer "
            "fit' or sktransfer.save_model, a format that runs no code."
        )
    else:
        if warn is not None and kind == "pickle":
            warn(f"loading the pickle {path!r}: this runs any code it holds.")
        model = _unpickle(path)
    model_check = getattr(model, "best_estimator_", model)
    if not hasattr(model_check, "predict"):
        raise CommandError(
            f"{path!r} holds a {type(model).__name__}, not a classifier with predict."
        )
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)
    if not _takes_images(model_check):
        raise CommandError(
            f"{path!r} holds a {type(model_check).__name__}, which does not take "
            "images: expected a FineTunedCNNClassifier (as written by 'sktransfer "
            "fit'), or a pipeline starting with a CNNFeatureExtractor."
        )
    return model


def _unpickle(path: str):
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # pickle's errors have no common base class
        raise CommandError(
            f"cannot load a model from {path!r} ({type(exc).__name__}: {exc}); expected "
            "a file written by 'sktransfer fit' or joblib.dump."
        ) from None


def _takes_images(model) -> bool:
    """Whether ``model`` predicts from images: ours, or a pipeline starting with ours."""
    from .._classifier import FineTunedCNNClassifier
    from .._extractor import CNNFeatureExtractor

    if isinstance(model, FineTunedCNNClassifier):
        return True
    steps = getattr(model, "steps", None)
    return bool(steps) and isinstance(steps[0][1], CNNFeatureExtractor)


def _tsv(row: list[str]) -> str:
    """One tab-separated line; a field holding a tab, newline or quote is quoted.

    A path may contain a newline: written as is, it would split its row in two.
    """
    buffer = io.StringIO()
    # The line terminator is what makes the writer quote a field's newlines.
    csv.writer(buffer, delimiter="\t", lineterminator="\n").writerow(row)
    return buffer.getvalue()[:-1]


def _use_engine(model, engine: str) -> None:
    """Run a loaded model's inference on ``engine`` (its steps', for a pipeline)."""
    from .._classifier import FineTunedCNNClassifier
    from .._engines import choose
    from .._extractor import CNNFeatureExtractor

    steps = getattr(model, "named_steps", {})
    for estimator in [model, *steps.values()]:
        if isinstance(estimator, (CNNFeatureExtractor, FineTunedCNNClassifier)):
            estimator.set_params(engine=engine)
            # A missing extra: said before any image is read.
            choose(engine, estimator.precision)


def run_predict(args, *, say, warn) -> int:
    """Print (or write as CSV) the predicted label, and probabilities, of each image."""
    paths, _ = images_from_arguments(args.files, warn=warn)
    if args.output is not None:
        check_output(args.output, (".csv",))
    model = load_model(args.model, allow_pickle=args.allow_pickle, warn=warn)
    _use_engine(model, args.engine)
    if args.proba and not hasattr(model, "predict_proba"):
        raise CommandError(
            f"--proba: the {type(model).__name__} in {args.model!r} has no predict_proba."
        )
    classes = [str(c) for c in getattr(model, "classes_", [])]
    header = ["path", "label"] + [f"proba_{c}" for c in classes] * bool(args.proba)
    if args.output is None:
        write, file, temporary = (lambda row: say(_tsv(row))), None, None
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
    model = load_model(args.model, allow_pickle=args.allow_pickle, warn=warn)
    model = getattr(model, "best_estimator_", model)  # a saved search
    pipeline = hasattr(model, "steps")
    if not (hasattr(model, "explain") or pipeline):
        raise CommandError(
            f"{args.model!r} holds a {type(model).__name__}; heat maps need a "
            "FineTunedCNNClassifier (as written by 'sktransfer fit') or a pipeline "
            "of CNNFeatureExtractor and a linear classifier."
        )
    try:
        from ..inspection import GradCAMDisplay
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
