"""The subcommands: their options, named as the estimators' parameters, and
what runs each.

:func:`build_parser` gives the whole command line; each subcommand's
``run`` (set with ``set_defaults``) takes the parsed arguments and returns
the exit status. The work of ``extract`` is in :mod:`._extract`, that of
``fit``, ``predict`` and ``explain`` in :mod:`._model`.
"""

from __future__ import annotations

import argparse
import textwrap


def _layers(text: str):
    """``-1,-2`` -> [-1, -2]; layer names stay strings."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return [int(item) if item.lstrip("-").isdigit() else item for item in items]


def _input_size(text: str):
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use 224 or 224x160 (height x width)"
        ) from None
    return values[0] if len(values) == 1 else tuple(values)


def _weights(text: str):
    return None if text.lower() == "none" else text


def _layer(text: str):
    """``-1`` -> -1, ``block_13_expand_relu`` -> itself, ``-1,-2`` -> [-1, -2]."""
    layers = _layers(text)
    if not layers:
        raise argparse.ArgumentTypeError("give a block index, a layer name, or a list")
    return layers[0] if len(layers) == 1 else layers


def _pooling(text: str):
    from .._pooling import POOLING_OPTIONS

    if text.isdigit():
        return int(text)
    if text not in POOLING_OPTIONS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a pooling: use {', '.join(POOLING_OPTIONS)}, or an int k "
            "for a k x k grid of averages"
        )
    return text


def _trainable_blocks(text: str):
    if text in ("all", "auto"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use a number of blocks, 'all' or 'auto'"
        ) from None


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description; keeps the examples as written."""

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if paragraph.startswith("examples:"):
                paragraphs.append(textwrap.indent(paragraph, indent))
            else:
                paragraphs.append(
                    textwrap.fill(
                        " ".join(paragraph.split()), width,
                        initial_indent=indent, subsequent_indent=indent,
                    )
                )
        return "\n\n".join(paragraphs)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_backbone_options(parser, default_backbone: str, default_size=None) -> None:
    parser.add_argument(
        "--backbone",
        default=default_backbone,
        help=f"registered name, or path to a saved .keras/.h5 model (default: {default_backbone})",
    )
    parser.add_argument(
        "--weights",
        type=_weights,
        default="imagenet",
        help="'imagenet' (default), 'none' for random initialisation, or a weights file",
    )
    parser.add_argument(
        "--input-size",
        type=_input_size,
        default=default_size,
        help="image size fed to the network, e.g. 224 or 224x160 (default: "
        + (str(default_size) if default_size else "the backbone's native size")
        + ")",
    )


def _add_cut_options(parser) -> None:
    """``--layer``, ``--pooling`` and ``--batch-size``, as the estimators name them."""
    parser.add_argument(
        "--layer",
        type=_layer,
        default=-1,
        help="where to cut: a block index (-1 the deepest), a Keras layer name, a "
        "comma-separated list, e.g. --layer=-2 or --layer=-1,-2, or auto (the best "
        "of the top four blocks for a linear probe on the labelled images; "
        "default: -1)",
    )
    parser.add_argument(
        "--pooling",
        type=_pooling,
        default="avg",
        help="avg, max, avgmax, flatten, or an int k for a k x k grid (default: avg)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default: 32)"
    )


def _add_engine_option(parser) -> None:
    parser.add_argument(
        "--engine",
        choices=["auto", "tensorflow", "onnxruntime", "openvino"],
        default="auto",
        help="what runs the network for inference: auto (default: the fastest "
        "installed engine for the device), tensorflow, onnxruntime "
        '(pip install "sktransfer[fast]") or openvino ("sktransfer[openvino]")',
    )


def _add_progress_option(parser) -> None:
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar on stderr",
    )


def _add_allow_pickle_option(parser) -> None:
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load a pickle (joblib) MODEL: this runs any code the file holds, "
        "so only for files you or someone you trust wrote",
    )


def _extract(args) -> int:
    from ._common import images_from_arguments
    from ._extract import run_extract

    paths, labels = images_from_arguments(args.inputs, warn=args.warn)
    return run_extract(args, paths, labels, say=print, warn=args.warn)


def _fit(args) -> int:
    from ._model import run_fit

    return run_fit(args, say=print, warn=args.warn)


def _predict(args) -> int:
    from ._model import run_predict

    return run_predict(args, say=print, warn=args.warn)


def _explain(args) -> int:
    from ._model import run_explain

    return run_explain(args, say=print, warn=args.warn)


def _demo(args) -> int:
    from .._demo import run_demo

    run_demo(
        args.path,
        dataset=args.dataset,
        data_home=args.data_home,
        download=args.download,
        backbone=args.backbone,
        weights=args.weights,
        layers=_layers(args.layers),
        samples_per_class=args.samples_per_class,
        input_size=args.input_size,
        output_dir=args.output_dir,
        seed=args.seed,
        figure=not args.no_figure,
        fine_tune=not args.no_fine_tune,
        fine_tune_layer=args.fine_tune_layer,
        trainable_blocks=args.trainable_blocks,
        head_epochs=args.head_epochs,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        time_budget=args.time_budget,
        engine=args.engine,
    )
    return 0


def _backbones(args) -> int:
    from .. import backbones

    names = [args.name] if args.name else backbones.list_backbones()
    for name in names:
        size = backbones.native_size(name)
        line = f"{backbones.get_spec(name).name:<22} native size {size[0]}x{size[1]}"
        if args.blocks or args.name:
            info = backbones.block_info(name)
            line += "\n" + "\n".join(
                f"    layer {i - len(info):>3} = {i:>2}: {b.name} ({b.height}x{b.width}x{b.channels})"
                for i, b in enumerate(info)
            )
        print(line, flush=True)
    return 0


def _add_extract_parser(commands) -> None:
    from ._extract import CHUNK_IMAGES

    extract = commands.add_parser(
        "extract",
        help="CNN features of a folder of images, to .npy, .parquet or .csv",
        formatter_class=_HelpFormatter,
        description=(
            "Features of images from a pretrained CNN cut at --layer "
            "(CNNFeatureExtractor), written to a file. INPUT is one folder (with one "
            "subfolder per class, giving a 'label' column, or a flat folder of "
            "images) or image files (@list.txt reads them from a file, one per "
            "line).\n\n"
            ".csv and .parquet: a 'path' column, a 'label' column for a class "
            "folder, then one column per feature, named by get_feature_names_out(). "
            ".npy: the float32 features only, rows in the order of <output>.paths.csv "
            "(written beside it, with the path and label columns). Parquet needs "
            "pyarrow.\n\n"
            "Resumable: features are cached on disk every "
            f"{CHUNK_IMAGES} images, in <output>.cache/ by default (deleted once the "
            "output is written) or in --cache-dir (kept, and shared by later runs: "
            "another output format, or avg/max/avgmax pooling of the same block, "
            "costs no forward pass). After an interruption, run the same command again: only "
            "the images not cached yet go through the network."
        ),
        epilog=_examples(
            "sktransfer extract photos/ -o features.parquet",
            "sktransfer extract photos/ --backbone resnet50 --layer=-2 --pooling 2 -o f.npy",
            "sktransfer extract scans/*.png --input-size 128 --cache-dir ~/.cache/sktransfer -o f.csv",
        ),
    )
    extract.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="a folder, or image files"
    )
    extract.add_argument(
        "-o", "--output", required=True,
        help="features.npy, features.parquet or features.csv (the extension decides)",
    )
    _add_backbone_options(extract, "efficientnet_lite0")
    _add_cut_options(extract)
    extract.add_argument(
        "--on-error",
        choices=["raise", "nan"],
        default="raise",
        help="unreadable images: stop with an error naming the file (default), or "
        "give them NaN features and list them at the end",
    )
    extract.add_argument(
        "--cache-dir",
        help="disk feature cache (the estimators' memory=), kept after the run "
        "(default: <output>.cache, deleted once the output is written)",
    )
    extract.add_argument(
        "--no-cache", action="store_true", help="no disk cache: not resumable"
    )
    _add_engine_option(extract)
    _add_progress_option(extract)
    extract.set_defaults(run=_extract)


def _add_fit_parser(commands) -> None:
    fit = commands.add_parser(
        "fit",
        help="fine-tune a classifier on a class-per-subfolder folder; save it",
        formatter_class=_HelpFormatter,
        description=(
            "Fine-tune a pretrained CNN (FineTunedCNNClassifier) on FOLDER, which "
            "holds one subfolder of images per class, and save the fitted "
            "classifier in sktransfer's safe model format (sktransfer.save_model: "
            "JSON and a Keras file in a zip, which runs no code when loaded, so it "
            "can be shared; sktransfer.load_model reads it). Stage 1 trains a new "
            "top on the frozen "
            "network cut at --layer (up to --head-epochs epochs); stage 2 unfreezes "
            "the top --trainable-blocks blocks (up to --epochs epochs at "
            "--learning-rate). Early stopping on a stratified --validation-fraction "
            "of the images keeps the best weights. Prints the classes, the epochs "
            "run and the validation accuracy of the weights kept."
        ),
        epilog=_examples(
            "sktransfer fit photos/ -o model.sktransfer",
            "sktransfer fit photos/ --backbone resnet50 --layer=-2 --trainable-blocks 2 "
            "--epochs 20 -o model.sktransfer",
            "sktransfer fit photos/ --learning-rate auto --random-state 0 -o model.sktransfer",
            "sktransfer fit photos/ --trainable-blocks 0 --no-augment --random-state 0 "
            "-o model.sktransfer",
        ),
    )
    fit.add_argument("folder", metavar="FOLDER", help="one subfolder of images per class")
    fit.add_argument("-o", "--output", required=True, help="where the model goes (model.sktransfer)")
    _add_backbone_options(fit, "efficientnet_lite0")
    _add_cut_options(fit)
    fit.add_argument(
        "--trainable-blocks", type=_trainable_blocks, default=1,
        help="top blocks unfrozen in stage 2: 0 trains the new top only, 'all' the "
        "whole network, 'auto' by the rule of thumb from the images per class and "
        "the cut (default: 1)",
    )
    fit.add_argument("--learning-rate", type=_learning_rate, default=1e-4,
                     help="learning rate of stage 2, fine tuning, or 'auto': found by "
                     "a learning-rate range test before stage 2 (default: 1e-4)")
    fit.add_argument("--head-learning-rate", type=_learning_rate, default=1e-3,
                     help="learning rate of stage 1, the new top, or 'auto' "
                     "(default: 1e-3)")
    fit.add_argument("--head-epochs", type=int, default=10,
                     help="maximum epochs of stage 1 (default: 10)")
    fit.add_argument("--epochs", type=int, default=10,
                     help="maximum epochs of stage 2; 0 skips it (default: 10)")
    fit.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=True,
        help="random flips, rotations, zooms and shifts in training (default: on)",
    )
    fit.add_argument(
        "--validation-fraction", type=float, default=0.1,
        help="images held out (stratified) for early stopping (default: 0.1)",
    )
    fit.add_argument(
        "--no-early-stopping", dest="early_stopping", action="store_false",
        help="train every epoch, on all images (no validation split)",
    )
    fit.add_argument("--random-state", type=int, default=None,
                     help="seed: the same seed gives the same model on the CPU")
    fit.add_argument(
        "--cache-dir",
        help="disk feature cache for stage 1 (the estimator's memory=), shared "
        "with extract (default: none)",
    )
    fit.add_argument(
        "--verbose", type=int, nargs="?", const=1, default=0,
        help="Keras' training logs: 1 (or --verbose alone) progress bars, 2 one "
        "line per epoch (default: 0)",
    )
    _add_engine_option(fit)
    fit.set_defaults(run=_fit)


def _add_predict_parser(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="predict the classes of images with a saved model",
        formatter_class=_HelpFormatter,
        description=(
            "Predict the class of each image with a model saved by 'sktransfer fit' "
            "or sktransfer.save_model. A pickle (joblib) file, e.g. of a pipeline "
            "starting with a CNNFeatureExtractor, is loaded only with "
            "--allow-pickle: loading a pickle runs whatever code it holds. Prints "
            "'path<TAB>label' per image (a path holding a tab, newline or quote "
            "is quoted, as in CSV); with --proba, a header line then the "
            "probability of each class (the label is then the most probable "
            "class). With -o, writes the same columns as CSV (probability columns "
            "named proba_<class>)."
        ),
        epilog=_examples(
            "sktransfer predict model.sktransfer new/*.jpg",
            "sktransfer predict model.sktransfer new/ --proba -o predictions.csv",
            "sktransfer predict model.sktransfer @paths.txt | cut -f2 | sort | uniq -c",
        ),
    )
    predict.add_argument("model", metavar="MODEL", help="model.sktransfer")
    predict.add_argument(
        "files", nargs="+", metavar="FILE",
        help="image files, or one folder (all its images; @list.txt reads paths from a file)",
    )
    predict.add_argument("-o", "--output", help="write predictions.csv instead of printing")
    predict.add_argument("--proba", action="store_true", help="add class probabilities")
    _add_allow_pickle_option(predict)
    _add_engine_option(predict)
    _add_progress_option(predict)
    predict.set_defaults(run=_predict)


def _add_explain_parser(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="Grad-CAM heat maps of a saved model over images, as a figure",
        formatter_class=_HelpFormatter,
        description=(
            "Where does the model look? Writes one figure with the Grad-CAM heat "
            "map of each image over it (FineTunedCNNClassifier.explain, "
            "sktransfer.inspection.GradCAMDisplay), for the predicted class of each "
            "image or for --target. Needs matplotlib."
        ),
        epilog=_examples(
            "sktransfer explain model.sktransfer photo.jpg -o heatmap.png",
            "sktransfer explain model.sktransfer test/cat/*.jpg --target dog -o why-dog.png",
        ),
    )
    explain.add_argument("model", metavar="MODEL", help="model.sktransfer from 'sktransfer fit'")
    explain.add_argument(
        "files", nargs="+", metavar="FILE", help="image files, or one folder"
    )
    explain.add_argument(
        "-o", "--output", required=True, help="heatmap.png (or .pdf, .svg, .jpg)"
    )
    explain.add_argument(
        "--target", metavar="LABEL",
        help="explain this class for every image (default: each image's predicted class)",
    )
    explain.add_argument("--n-cols", type=int, default=4, help="images per row (default: 4)")
    explain.add_argument("--alpha", type=float, default=0.5,
                         help="opacity of the heat map over the image (default: 0.5)")
    explain.add_argument("--cmap", default="jet", help="matplotlib colormap (default: jet)")
    explain.add_argument("--dpi", type=int, default=100, help="resolution of the figure")
    _add_allow_pickle_option(explain)
    explain.set_defaults(run=_explain)


def _bounded(convert, low, *, strict: bool, what: str):
    """An argparse type: ``convert`` the text, then require >= low (> if strict)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f"{text!r}: give {what}")
        return value

    return parse


_positive_int = _bounded(int, 1, strict=False, what="a whole number of at least 1")
_non_negative_int = _bounded(int, 0, strict=False, what="a whole number, 0 or more")
_positive_float = _bounded(float, 0, strict=True, what="a number greater than 0")


def _learning_rate(text: str):
    if text == "auto":
        return text
    return _bounded(float, 0, strict=True, what="a number greater than 0 or 'auto'")(text)


def _add_demo_parser(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="which transfer learning works on your images (or on Fashion-MNIST): "
        "raw pixels vs CNN features of several depths vs fine tuning",
        formatter_class=_HelpFormatter,
        description=(
            "Measures which transfer learning works: logistic regression on raw "
            "pixels, on CNN features of several depths (--layers, one forward pass "
            "for all), and a fine-tuned network cut at the best depth; prints a "
            "ranked table with accuracy and time, a recommendation (which depth, "
            "whether fine tuning paid for its cost), and writes a figure and "
            "results.md to --output-dir.\n\n"
            "With PATH (a folder with one subfolder of images per class, or a CSV "
            "file of path,label rows) it runs on your images, scored on a held-out "
            "20 % (classes of 50 images or more) or by 5-fold cross-validation, at "
            "the backbone's native size. Without PATH it runs on Fashion-MNIST "
            "(100 training images per class, the 10,000 test images, at 128 px), "
            "found in --data-home, $SKTRANSFER_DATA, Debian's "
            "/usr/share/datasets/fashion-mnist or ~/.keras/datasets, else "
            "downloaded (30 MB); where none of this works, on scikit-learn's "
            "digits, and it says why.\n\n"
            "--time-budget sizes the fine tuning to finish in time (fewer epochs, "
            "or the row skipped with a note). About 2 to 5 minutes on 2 CPU cores "
            "for the built-in data or 1,000 images of your own."
        ),
        epilog=_examples(
            "sktransfer demo",
            "sktransfer demo photos/                 # photos/<class>/*.jpg",
            "sktransfer demo labels.csv --layers=-1,-2,-3,-4 --input-size 160",
            "sktransfer demo photos/ --no-fine-tune --output-dir report/",
        ),
    )
    demo.add_argument(
        "path", nargs="?", metavar="PATH",
        help="your images: a folder with one subfolder per class, or a CSV of "
        "path,label (default: the built-in data)",
    )
    demo.add_argument(
        "--dataset",
        choices=["auto", "fashion-mnist", "digits"],
        default="auto",
        help="built-in data: 'auto' (default) is Fashion-MNIST where it can be "
        "found or downloaded, else digits",
    )
    demo.add_argument(
        "--data-home", metavar="FOLDER",
        help="a folder holding Fashion-MNIST's four IDX files",
    )
    demo.add_argument(
        "--no-download", dest="download", action="store_false",
        help="never download Fashion-MNIST (default: download it when it is "
        "nowhere on this machine and the network answers)",
    )
    _add_backbone_options(demo, "efficientnet_lite0")
    _add_engine_option(demo)
    demo.add_argument(
        "--layers", default="-1,-2,-3",
        help="comma-separated cut points, deepest first (default: -1,-2,-3)",
    )
    demo.add_argument(
        "--samples-per-class", type=_positive_int, default=None,
        help="built-in data: training images per class (default: 100, or all "
        "that the smallest class holds)",
    )
    demo.add_argument("--output-dir", default="sktransfer-demo",
                      help="where the figure and results.md go (default: sktransfer-demo)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the sampling, the splits and the fits (default: 0)")
    demo.add_argument("--no-figure", action="store_true", help="do not write the figure")
    demo.add_argument("--no-fine-tune", action="store_true", help="skip the fine-tuning row")
    demo.add_argument("--fine-tune-layer", type=int, default=None,
                      help="cut point of the fine-tuned network (default: the best "
                      "depth measured)")
    demo.add_argument("--trainable-blocks", type=_non_negative_int, default=1,
                      help="blocks fine-tuned in stage 2 (default: 1)")
    demo.add_argument("--head-epochs", type=_positive_int, default=60,
                      help="maximum epochs of stage 1, the new top, on cached "
                      "features (default: 60)")
    demo.add_argument("--epochs", type=_non_negative_int, default=10,
                      help="maximum epochs of stage 2, fine tuning (default: 10)")
    demo.add_argument("--learning-rate", type=_positive_float, default=3e-4,
                      help="learning rate of stage 2 (default: 3e-4)")
    demo.add_argument("--time-budget", type=_positive_float, default=600.0, metavar="SECONDS",
                      help="fine tuning is sized to end the demo within this time "
                      "(default: 600)")
    demo.set_defaults(run=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sktransfer",
        description="CNN transfer learning with scikit-learn estimators.",
        formatter_class=_HelpFormatter,
        fromfile_prefix_chars="@",
        epilog=_examples(
            "sktransfer extract photos/ -o features.parquet",
            "sktransfer fit photos/ -o model.sktransfer",
            "sktransfer predict model.sktransfer new/*.jpg",
            "sktransfer explain model.sktransfer new/1.jpg -o heatmap.png",
            "sktransfer demo photos/      # which transfer learning works on your images",
            "sktransfer COMMAND --help    # the options of a command",
        ),
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_extract_parser(commands)
    _add_fit_parser(commands)
    _add_predict_parser(commands)
    _add_explain_parser(commands)

    _add_demo_parser(commands)

    listing = commands.add_parser(
        "backbones",
        help="list backbones with native sizes (and blocks)",
        description="List the registered backbones; with a name, its blocks.",
    )
    listing.add_argument("name", nargs="?", help="one backbone: show its blocks")
    listing.add_argument("--blocks", action="store_true", help="show every backbone's blocks")
    listing.set_defaults(run=_backbones)
    return parser
