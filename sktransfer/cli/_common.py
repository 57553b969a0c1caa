"""What the command line's subcommands share: image arguments, estimator
parameters from options, output checks, a progress bar and the error class.

Image arguments are either one folder or image files. A folder with
subfolders is a class-per-subfolder tree (read by :func:`load_image_folder`,
so its images come with labels); a folder without subfolders is a flat folder
of images, without labels.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..datasets import check_no_empty_class, image_extensions, load_image_folder
from ..exceptions import SktransferError


class CommandError(SktransferError, ValueError):
    """A usage or data error of the command line: printed, exit status 2."""


def _has_subfolders(folder: str) -> bool:
    return any(
        entry.is_dir() and not entry.name.startswith(".") for entry in os.scandir(folder)
    )


def _flat_images(folder: str) -> list[str]:
    extensions = image_extensions()
    return sorted(
        entry.path
        for entry in os.scandir(folder)
        if entry.is_file() and os.path.splitext(entry.name)[1].lower() in extensions
    )


def images_from_arguments(
    arguments: list[str], *, warn=None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(paths, labels or None) from one folder or a list of image files.

    Parameters
    ----------
    arguments : list of str
        One folder (class-per-subfolder tree or flat folder of images), or
        one or more image files.
    warn : callable, optional
        Receives a message about images that are ignored (files directly in
        a class-per-subfolder tree).
    """
    if len(arguments) == 1 and os.path.isdir(arguments[0]):
        folder = arguments[0]
        if _has_subfolders(folder):
            paths, labels = load_image_folder(folder)
            loose = _flat_images(folder)
            if loose and warn is not None:
                warn(
                    f"{len(loose)} image file(s) directly in {folder!r} are ignored "
                    f"(e.g. {os.path.basename(loose[0])!r}): in a folder with "
                    "subfolders, each subfolder is a class."
                )
            return paths, labels
        paths = _flat_images(folder)
        if not paths:
            raise CommandError(
                f"no image files in {folder!r} (looked for extensions Pillow reads, "
                "such as .jpg and .png)."
            )
        return np.asarray(paths, dtype=object), None
    folders = [argument for argument in arguments if os.path.isdir(argument)]
    if folders:
        raise CommandError(
            f"{folders[0]!r} is a folder: give one folder, or image files (not both, "
            "nor several folders)."
        )
    missing = [argument for argument in arguments if not os.path.exists(argument)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CommandError(f"no such file or folder: {missing[0]!r}{more}.")
    return np.asarray(arguments, dtype=object), None


def estimator_params(estimator_class, args, **overrides) -> dict:
    """The parameters of ``estimator_class`` given as options of the same name.

    ``--input-size`` sets ``input_size``: options are named after the
    parameters they set, so no option is mapped by hand.
    """
    names = estimator_class().get_params(deep=False)
    params = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return {**params, **overrides}


def class_folder(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(paths, labels) of a class-per-subfolder tree, or a CommandError."""
    if not os.path.isdir(folder):
        what = "a file" if os.path.exists(folder) else "not found"
        raise CommandError(
            f"{folder!r} is {what}; expected a folder with one subfolder per class "
            "(e.g. photos/cat/*.jpg, photos/dog/*.jpg)."
        )
    paths, labels = load_image_folder(folder)
    check_no_empty_class(folder, labels)
    return paths, labels


def image_error(exc, paths=None) -> CommandError:
    """An unreadable image's error, named by its path only.

    The library counts images within the call that failed (a chunk of the
    command's images), which would mislead here.
    """
    path = exc.path
    if path is None and paths is not None:
        path = paths[exc.index]
    reason = exc.__context__ if exc.__context__ is not None else exc
    if path is not None and not os.path.exists(path):
        return CommandError(f"image file not found: {path!r}.")
    return CommandError(f"cannot read image {path!r}: {reason}")


def check_output(path: str, extensions: tuple[str, ...] | None = None) -> str:
    """The lower-case extension of an output path, after checking its folder."""
    extension = os.path.splitext(path)[1].lower()
    if extensions is not None and extension not in extensions:
        raise CommandError(
            f"-o {path!r}: the output must end in {', '.join(extensions[:-1])} or "
            f"{extensions[-1]}, which decides its format."
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"-o {path!r}: the folder {folder!r} does not exist.")
    if os.path.isdir(path):
        raise CommandError(f"-o {path!r} is a folder; name a file.")
    return extension


def chunks(n: int, size: int):
    """(start, stop) of consecutive chunks of ``size`` over ``n`` items."""
    for start in range(0, n, size):
        yield start, min(start + size, n)


class Progress:
    """A progress bar on stderr.

    On a terminal one line is redrawn; otherwise (a log file, a pipe) a line
    is printed at every tenth of the work, so logs stay short.
    """

    WIDTH = 30

    def __init__(self, total: int, label: str, *, enabled: bool = True, stream=None):
        self.total = total
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled and total > 0
        self.interactive = self.enabled and getattr(self.stream, "isatty", lambda: False)()
        self.done = 0
        self.start = time.monotonic()
        self._tenths = 0
        if self.enabled:
            self._draw()

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        tenths = 10 * self.done // self.total
        if self.interactive or tenths > self._tenths:
            self._tenths = tenths
            self._draw()

    def _draw(self) -> None:
        fraction = self.done / self.total
        filled = int(self.WIDTH * fraction)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 and self.done else 0.0
        line = f"{self.label} [{bar}] {self.done}/{self.total} images"
        if rate:
            left = (self.total - self.done) / rate
            line += f", {rate:.1f}/s, {_duration(elapsed)} elapsed, {_duration(left)} left"
        if self.interactive:
            self.stream.write("\r" + line + "\x1b[K")
        elif self.done:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
