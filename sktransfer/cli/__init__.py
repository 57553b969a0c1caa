"""The ``sktransfer`` command line.

Subcommands: ``extract`` (features of a folder of images to .npy, .parquet
or .csv), ``fit`` (fine-tune a classifier on a class-per-subfolder tree,
saved in sktransfer's safe model format), ``predict``, ``explain``
(Grad-CAM figure), ``demo`` and ``backbones``. Options mirror the estimators' parameter names
(``--input-size`` is ``input_size``).

Exit status: 0 on success; 2 for errors a user can fix (a bad option, a
missing or empty folder, an unreadable image, unavailable weights), printed
on stderr in one paragraph without a traceback; 1 for unexpected errors;
130 when interrupted. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
import warnings

from ..exceptions import SktransferError
from ._commands import build_parser

__all__ = ["build_parser", "main"]

#: Errors a user can fix: printed without a traceback, exit status 2.
USER_ERRORS = (SktransferError, ValueError, OSError, ImportError, RuntimeError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sktransfer`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    prefix = f"sktransfer {args.command}"

    def warn(message: str) -> None:
        print(f"{prefix}: warning: {message}", file=sys.stderr, flush=True)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        warn(str(message))

    args.warn = warn
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            # Every command needs TensorFlow: importing it first, through the
            # helper, keeps its start-up notices off the user's terminal.
            from ..backbones._tensorflow import tensorflow

            tensorflow()
            return args.run(args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"{prefix}: unexpected error: {type(exc).__name__}: {exc}\n"
            "Run again with --debug for the traceback, and please report it.",
            file=sys.stderr,
        )
        return 1

