"""``sktransfer demo`` as a new user meets it: wall time, memory, choice.

Three runs of the real console script, each in a fresh process:

* the built-in demo on a machine without Fashion-MNIST and without network
  (Debian's folder and Keras' cache hidden, the download mirror a closed
  port), which falls back to scikit-learn's digits;
* ``sktransfer demo PATH`` on a folder of real photos, 8 classes of 20;
* the same on 1,000 photos (8 classes of 125).

The photos are crops (random position, 15 to 40 % of the photograph's
shorter side, 256x256 JPEG) of eight
photographs that scikit-image ships (astronaut, cat, coffee, rocket, Hubble
deep field, immunohistochemistry, retina, motorcycle): one class per
photograph. For each run the table gives the wall time, the peak resident
memory, the best row of the demo's own table and the row it recommends,
and for fine tuning the time the budget planner estimated against the time
it took.

    python benchmarks/bench_demo.py [--quick]

``--quick`` runs only the 160-photo folder.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
from PIL import Image

from _common import machine

PHOTOS = [
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "stereo_motorcycle",
]

#: The real command line, then the process's own peak memory on stderr.
COMMAND_LINE = textwrap.dedent(
    """
    import resource, sys
    from sktransfer.cli import main
    code = main(sys.argv[1:])
    print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
    sys.exit(code)
    """
)
#: Fashion-MNIST and the network faked away first, as tests/test_demo.py does.
FRESH_MACHINE = textwrap.dedent(
    """
    import os, socket, tempfile
    import sktransfer.datasets as datasets
    home = tempfile.mkdtemp()
    os.environ.pop("SKTRANSFER_DATA", None)
    os.environ["KERAS_HOME"] = home
    datasets.DEBIAN_FASHION_MNIST = os.path.join(home, "none")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    datasets._ORIGIN = f"http://127.0.0.1:{port}/"
    """
)


def make_photos(root: str, per_class: int, seed: int = 0) -> str:
    import skimage.data

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        photo = photo[0] if isinstance(photo, tuple) else photo
        folder = os.path.join(root, name)
        os.makedirs(folder)
        side = min(photo.shape[:2])
        for i in range(per_class):
            size = int(side * rng.uniform(0.15, 0.4))
            top = rng.integers(0, photo.shape[0] - size + 1)
            left = rng.integers(0, photo.shape[1] - size + 1)
            crop = Image.fromarray(photo[top : top + size, left : left + size])
            crop.convert("RGB").resize((256, 256)).save(os.path.join(folder, f"{i}.jpg"))
    return root


def run(arguments: list[str], fresh_machine: bool = False) -> dict:
    code = (FRESH_MACHINE if fresh_machine else "") + COMMAND_LINE
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *arguments], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{arguments} failed ({done.returncode}):\n{done.stderr}")
    out = done.stdout
    rows = [line for line in out.splitlines() if re.match(r"\| 1 \|", line)]
    estimate = re.search(r"about (\d+) s estimated", out)
    return {
        "seconds": seconds,
        "peak_mb": int(re.search(r"PEAK_KB (\d+)", done.stderr).group(1)) / 1024,
        "best": rows[0].split("|")[2:5],
        "chosen": re.search(r"Recommendation: (.*)", out).group(1),
        "fine_tune_s": sum(
            float(s) for s in re.findall(r"fit \d+ of \d+: .*, (\d+) s", out)
        ),
        "estimate_s": float(estimate.group(1)) if estimate else float("nan"),
        "output": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(machine())
    work = tempfile.mkdtemp()
    runs = [
        ("160 photos, 8 classes", [make_photos(os.path.join(work, "p160"), 20)], False),
    ]
    if not args.quick:
        runs.insert(0, ("no Fashion-MNIST, no network (digits)", [], True))
        runs.append(
            ("1,000 photos, 8 classes", [make_photos(os.path.join(work, "p1000"), 125)], False)
        )
    print(
        "\n| run | wall time | peak RSS | best row (accuracy) | recommended | "
        "fine tuning: estimated / taken |\n|---|---|---|---|---|---|"
    )
    for title, arguments, fresh in runs:
        result = run(["demo", *arguments, "--no-figure"], fresh_machine=fresh)
        method, layer, accuracy = (cell.strip() for cell in result["best"])
        print(
            f"| {title} | {result['seconds'] / 60:.1f} min | {result['peak_mb']:.0f} MB | "
            f"{method}, {layer} ({accuracy}) | {result['chosen']} | "
            f"{result['estimate_s']:.0f} s / {result['fine_tune_s']:.0f} s |",
            flush=True,
        )
        with open(os.path.join(work, re.sub(r"\W+", "_", title) + ".txt"), "w") as f:
            f.write(result["output"])
    print(f"\nFull outputs in {work}")


if __name__ == "__main__":
    main()
