"""The ``sktransfer`` command line.

Errors a user can fix (a missing file, a bad option value, unavailable
weights) are printed on stderr in one paragraph, without a traceback, with
exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from .exceptions import SktransferError


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


def _demo(args) -> int:
    from ._demo import run_demo

    run_demo(
        dataset=args.dataset,
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
    )
    return 0


def _backbones(args) -> int:
    from . import backbones

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sktransfer",
        description="CNN transfer learning with scikit-learn estimators.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="transfer learning vs raw pixels on real data (Fashion-MNIST or digits)",
        description=(
            "Logistic regression on raw pixels vs on CNN features of several "
            "layers, on Fashion-MNIST (100 training images per class, 10,000 "
            "test images) or scikit-learn's digits; prints a table and writes "
            "a figure."
        ),
    )
    demo.add_argument(
        "--dataset",
        choices=["auto", "fashion-mnist", "digits"],
        default="auto",
        help="'auto' (default): Fashion-MNIST where installed, else digits",
    )
    _add_backbone_options(demo, "efficientnet_lite0", default_size=128)
    demo.add_argument(
        "--layers", default="-1,-2,-3", help="comma-separated cut points (default: -1,-2,-3)"
    )
    demo.add_argument("--samples-per-class", type=int, default=100)
    demo.add_argument("--output-dir", default="sktransfer-demo", help="where the figure goes")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-figure", action="store_true", help="do not write the figure")
    demo.add_argument("--no-fine-tune", action="store_true", help="skip the fine-tuning row")
    demo.add_argument("--fine-tune-layer", type=int, default=-2,
                      help="cut point of the fine-tuned network (default: -2)")
    demo.add_argument("--trainable-blocks", type=int, default=1,
                      help="blocks fine-tuned in stage 2 (default: 1)")
    demo.add_argument("--head-epochs", type=int, default=8,
                      help="maximum epochs of stage 1, the new top (default: 8)")
    demo.add_argument("--epochs", type=int, default=4,
                      help="maximum epochs of stage 2, fine tuning (default: 4)")
    demo.set_defaults(run=_demo)

    listing = commands.add_parser(
        "backbones",
        help="list backbones with native sizes (and blocks)",
        description="List the registered backbones; with a name, its blocks.",
    )
    listing.add_argument("name", nargs="?", help="one backbone: show its blocks")
    listing.add_argument("--blocks", action="store_true", help="show every backbone's blocks")
    listing.set_defaults(run=_backbones)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sktransfer`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.run(args)
    except (SktransferError, ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"sktransfer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
