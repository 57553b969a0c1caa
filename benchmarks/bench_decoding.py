"""Peak memory of decoding very large image files, with two loader threads.

A 12000x12000 PNG of one colour is a few hundred KB on disk and 576 MB
decoded. Each case runs in a fresh process that streams two copies of the
file through the input layer's two loader threads at once
(``_inputs.iter_batches`` with ``prefetch=2``, batch size 1, resized to
224x224, as an estimator does) and reports its peak resident set size
(``ru_maxrss``), TensorFlow included; the first row is that baseline with
two small files.

    python benchmarks/bench_decoding.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from PIL import Image

from _common import machine

CHILD = """
import json, os, resource, sys, time
import numpy as np
import sktransfer
from sktransfer import _inputs
from sktransfer.exceptions import ImageLoadError

path, limit = sys.argv[1], json.loads(sys.argv[2])
sktransfer.set_max_image_pixels(limit)
_inputs.resize(np.zeros((1, 8, 8, 3), np.float32), (4, 4))  # TensorFlow loaded: the baseline
start = time.perf_counter()
images = _inputs.as_images([path, path])
outcome = "decoded"
try:
    for _ in _inputs.iter_batches(images, (224, 224), batch_size=1, prefetch=2):
        pass
except ImageLoadError as exc:
    outcome = "refused: " + str(exc).split(": it is ")[-1].split(",")[0]
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak": peak}))
"""


def write(folder: str, name: str, side: int, fmt: str) -> str:
    path = os.path.join(folder, name)
    image = Image.new("RGB", (side, side), (120, 80, 200))
    image.paste((30, 160, 90), (side // 4, side // 4, side // 2, side // 2))
    image.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def run(path: str, limit) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, path, json.dumps(limit)],
        capture_output=True, text=True, env=env, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=12000, help="side of the large images")
    args = parser.parse_args()
    side = args.side
    with tempfile.TemporaryDirectory() as folder:
        small = write(folder, "small.png", 224, "PNG")
        png = write(folder, "large.png", side, "PNG")
        jpeg = write(folder, "large.jpg", side, "JPEG")
        medium = write(folder, "medium.png", 6000, "PNG")
        cases = [
            ("224x224 PNG (baseline)", small, "default"),
            (f"{side}x{side} PNG", png, "default"),
            (f"{side}x{side} PNG, limit raised", png, None),
            (f"{side}x{side} JPEG, limit raised", jpeg, None),
            ("6000x6000 PNG (under the default limit)", medium, "default"),
        ]
        print(f"Machine: {machine()}")
        print()
        print("| file | size on disk | limit | outcome | peak RSS, two threads | time |")
        print("|---|---|---|---|---|---|")
        for name, path, limit in cases:
            value = 40_000_000 if limit == "default" else limit
            result = run(path, value)
            limit_text = "40 M pixels (default)" if limit == "default" else "none"
            print(
                f"| {name} | {os.path.getsize(path) / 1e3:,.0f} KB | {limit_text} | "
                f"{result['outcome']} | {result['peak'] / 2**30:.2f} GiB | "
                f"{result['seconds']:.1f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
