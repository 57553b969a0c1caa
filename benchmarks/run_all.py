"""The benchmark suite in one command, printed and written into benchmarks/README.md.

    python benchmarks/run_all.py            # full sizes, about 12-15 min on 2 CPU cores
    python benchmarks/run_all.py --quick    # tiny sizes, a smoke test (< 3 minutes)

Runs the sections of ``bench_cache.py`` (a-e: the feature cache in grid
searches, the cost of the eager parts, stage-1 epochs of fine tuning, a
fine-tuning search against scikeras; every row with its peak RSS growth) and
``bench_extractor.py`` for several backbones. When TensorFlow sees a GPU,
the extractor table gets GPU rows (more images) next to the CPU rows, which
then run in a subprocess with ``CUDA_VISIBLE_DEVICES=-1``; the other
sections run where TensorFlow places them (the GPU).

The markdown block (machine line and date first, then every table with its
settings) replaces what lies between ``<!-- suite:begin -->`` and
``<!-- suite:end -->`` in benchmarks/README.md; the section "The suite" and
its markers are added above the first table if missing. A full run writes
the README unless ``--no-write``; ``--quick`` writes it only with
``--write`` (smoke-test numbers are not results). Nothing is written when a
section fails: its traceback goes to stderr, the others still run, and the
exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import textwrap
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bench_cache
from _common import machine

README = os.path.join(HERE, "README.md")
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
SECTION_TITLE = "## The suite (issue: compute each image once)"
SECTION_INTRO = textwrap.fill(
    "`python benchmarks/run_all.py` runs the tables of this section and writes "
    "them here, between the markers (`--quick`: tiny sizes, a smoke test, not "
    "written). Targets of the feature-cache issue: a grid search over C or over "
    "`layer` costs at most 1.3x one extraction plus the same search on "
    "precomputed features; a stage-1 epoch on cached features is at least 10x "
    "faster than one through the network.",
    width=76,
)
PLACEHOLDER = "Not run yet: `python benchmarks/run_all.py` writes the tables here."

#: Sizes of every section. "gpu_images": images per backbone on a GPU.
PLANS = {
    "full": {
        "a": dict(n_images=1000, input_size=64, cv=5, repeats=1),
        "b": dict(n_images=1000, input_size=64, cv=5, repeats=1),
        "c": dict(n_images=1000, input_size=64, repeats=3),
        "d": dict(per_class=100, input_size=128, network_epochs=2, cached_epochs=20),
        "e": dict(n_images=300, input_size=64, cv=3, head_epochs=3, epochs=2),
        "extractor": dict(
            cpu_images={"mobilenet_v2": 256, "efficientnet_lite0": 256, "resnet50": 32},
            gpu_images={
                "mobilenet_v2": 2048,
                "efficientnet_lite0": 2048,
                "resnet50": 1024,
            },
            size=224,
            batch_size=32,
            repeats=3,
        ),
    },
    "quick": {
        "a": dict(n_images=100, input_size=64, cv=3, repeats=1),
        "b": dict(n_images=100, input_size=64, cv=3, repeats=1),
        "c": dict(n_images=100, input_size=64, repeats=1),
        "d": dict(per_class=10, input_size=128, network_epochs=1, cached_epochs=5),
        "e": dict(
            n_images=60,
            input_size=64,
            cv=2,
            learning_rates=(1e-3,),
            head_epochs=1,
            epochs=1,
        ),
        "extractor": dict(
            cpu_images={"mobilenet_v2": 16, "efficientnet_lite0": 16, "resnet50": 8},
            gpu_images={"mobilenet_v2": 64, "efficientnet_lite0": 64, "resnet50": 32},
            size=128,
            batch_size=16,
            repeats=1,
        ),
    },
}


def visible_gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def extractor_table(plan: dict) -> bench_cache.Table:
    """bench_extractor.run for each backbone, on the GPU (if any) and the CPU."""
    gpus = visible_gpus()
    size, batch, repeats = plan["size"], plan["batch_size"], plan["repeats"]
    table = bench_cache.Table(
        "Extractor throughput by backbone",
        f"`bench_extractor.py`: `CNNFeatureExtractor.transform` (`cache=False`) "
        f"against a hand-written compiled forward pass (`tf.function` over the "
        f"same truncated network + `preprocess_input` + average pooling) and "
        f"Keras' `Model.predict` on the same network; random uint8 images of "
        f"{size}x{size} in memory, random weights (the same network for all "
        f"three), batch {batch}, median of {repeats} after a warm-up; fewer "
        f"images for resnet50 (slow on a CPU), the numbers of images are in the "
        f"table. Targets (issue: foundation): >= "
        f"0.95x the compiled pass and >= 1.2x `Model.predict`."
        + (" CPU rows in a subprocess with `CUDA_VISIBLE_DEVICES=-1`." if gpus else ""),
        [
            "backbone",
            "device",
            "images",
            "hand-written compiled (img/s)",
            "Model.predict (img/s)",
            "CNNFeatureExtractor (img/s)",
            "ours / compiled",
            "ours / predict",
        ],
    )
    import bench_extractor

    runs = []
    if gpus:
        for backbone, n in plan["gpu_images"].items():
            runs.append(
                (
                    backbone,
                    "GPU",
                    n,
                    bench_extractor.run(backbone, n, size, batch, repeats),
                )
            )
        cpu = cpu_rates_in_subprocess(plan["cpu_images"], size, batch, repeats)
    else:
        cpu = {
            backbone: bench_extractor.run(backbone, n, size, batch, repeats)
            for backbone, n in plan["cpu_images"].items()
        }
    for backbone, n in plan["cpu_images"].items():
        runs.append((backbone, "CPU", n, cpu[backbone]))
    for backbone, device, n, r in runs:
        table.add(
            backbone,
            device,
            n,
            f"{r['compiled']:.1f}",
            f"{r['predict']:.1f}",
            f"{r['ours']:.1f}",
            f"{r['ours'] / r['compiled']:.2f}",
            f"{r['ours'] / r['predict']:.2f}",
        )
    return table


def cpu_rates_in_subprocess(images: dict, size: int, batch: int, repeats: int) -> dict:
    """bench_extractor.run on the CPU only, in a process that sees no GPU."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import bench_extractor; "
        "plan = json.loads(sys.argv[2]); "
        "print('RATES ' + json.dumps({b: bench_extractor.run(b, n, *plan['args']) "
        "for b, n in plan['images'].items()}))"
    )
    plan = json.dumps({"images": images, "args": [size, batch, repeats]})
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1")
    done = subprocess.run(
        [sys.executable, "-c", code, HERE, plan],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"CPU extractor rows failed (exit {done.returncode}).")
    line = [l for l in done.stdout.splitlines() if l.startswith("RATES ")][-1]
    return json.loads(line[len("RATES ") :])


def write_readme(block: str, path: str = README) -> None:
    """Put ``block`` between the markers, adding the section if missing."""
    with open(path) as file:
        text = file.read()
    text = ensure_section(text)
    start = text.index(BEGIN) + len(BEGIN)
    stop = text.index(END)
    text = text[:start] + "\n" + block.strip() + "\n" + text[stop:]
    with open(path, "w") as file:
        file.write(text)


def ensure_section(text: str) -> str:
    """``text`` with the suite section and its markers (above the first table)."""
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        return text
    section = f"{SECTION_TITLE}\n\n{SECTION_INTRO}\n\n{BEGIN}\n{PLACEHOLDER}\n{END}\n\n"
    lines = text.splitlines(keepends=True)
    # Above the first "## " section of the tables (after the intro and the
    # command list).
    for index, line in enumerate(lines):
        if line.startswith("## "):
            return "".join(lines[:index]) + section + "".join(lines[index:])
    return text.rstrip("\n") + "\n\n" + section


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument(
        "--write", action="store_true", help="write README.md even with --quick"
    )
    parser.add_argument("--no-write", action="store_true", help="only print")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        choices=[*bench_cache.SECTIONS, "extractor"],
        help="run these sections only (the README is then not written unless --write)",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="threads of scikit-learn's BLAS/OpenMP pools (0: leave them)",
    )
    args = parser.parse_args()

    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    threads = args.blas_threads or None
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    started = datetime.datetime.now()
    start = time.perf_counter()
    head = [
        f"Machine: {machine()}",
        "",
        f"Date: {started:%Y-%m-%d %H:%M}; `{command}`"
        + (f" (sections {' '.join(args.only)})" if args.only else "")
        + ("; **quick sizes: a smoke test, not results**" if args.quick else "")
        + ".",
        "",
        bench_cache.threads_note(threads),
    ]
    print("\n".join(head) + "\n", flush=True)

    parts, failed = [], []
    for name in [*bench_cache.SECTIONS, "extractor"]:
        if args.only and name not in args.only:
            continue
        section_start = time.perf_counter()
        try:
            if name == "extractor":
                table = extractor_table(plan["extractor"])
            else:
                table = bench_cache.run_section(name, plan[name], threads)
        except Exception as exc:  # keep going: one failure must not lose the rest
            traceback.print_exc()
            failed.append(name)
            text = f"### Section {name}\n\n**Failed**: {type(exc).__name__}: {exc}"
        else:
            text = table.markdown()
        seconds = time.perf_counter() - section_start
        parts.append(text + f"\n\n(Section time: {seconds:.0f} s.)")
        print(parts[-1] + "\n", flush=True)

    total = time.perf_counter() - start
    head[2] = head[2][:-1] + f"; whole suite {total / 60:.1f} min."
    block = "\n".join(head) + "\n\n" + "\n\n".join(parts)
    print(f"Whole suite: {total / 60:.1f} min.", flush=True)

    write = not args.no_write and (args.write or (not args.quick and not args.only))
    if failed:
        print(
            f"Sections failed: {', '.join(failed)}; README.md not written.",
            file=sys.stderr,
        )
        sys.exit(1)
    if write:
        write_readme(block)
        print(f"Written into {README} between {BEGIN} and {END}.", flush=True)


if __name__ == "__main__":
    main()
