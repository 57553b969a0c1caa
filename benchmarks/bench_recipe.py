"""The fine-tuning recipe, one component at a time: the ablation behind the defaults.

Fashion-MNIST, ``--per-class`` training images per class drawn with each
seed. Each configuration trains ``FineTunedCNNClassifier`` on 80 % of the
draw and is **selected on the other 20 %** (a stratified validation split of
the training data: the "val" column); the test images are only reported,
never used to choose. A row is one configuration: the base recipe plus one
change (or the final combination), over ``--seeds`` draws, printed as mean
± standard deviation.

Results are appended to ``--out`` (JSON lines) as each fit ends, so a long
run can be stopped and resumed: rows already there are not run again.

    python benchmarks/bench_recipe.py --rows base smoothing cosine --seeds 0 1 2
    python benchmarks/bench_recipe.py --final --n-test 10000   # the chosen recipe
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import machine

#: Today's best hand-picked point (issue 15): layer -2, 2 blocks, 3e-4, 128 px.
BASE = dict(
    backbone="efficientnet_lite0", layer=-2, trainable_blocks=2, learning_rate=3e-4,
    input_size=128, augment=True, head_epochs=10, epochs=10, batch_size=32,
)
#: One change to the base per row.
ROWS = {
    "base": {},
    "defaults": "defaults",  # FineTunedCNNClassifier() as shipped, at the base's size
    "smoothing": dict(label_smoothing=0.1),
    "cosine": dict(schedule="cosine"),
    "one_cycle": dict(schedule="one_cycle"),
    "adamw": dict(optimizer="adamw", weight_decay=0.05),
    "strong_augment": dict(augment="strong"),
    "blocks4_decay": dict(trainable_blocks=4, layer_decay=0.7),
    "blocks4": dict(trainable_blocks=4),
    "unfreeze_steps": dict(trainable_blocks=4, unfreeze_steps=2),
    "lr1e-3_decay": dict(learning_rate=1e-3, layer_decay=0.5),
    "epochs20_cosine": dict(epochs=20, schedule="cosine"),
    "size160": dict(input_size=160),
}


def draw(seed: int, per_class: int):
    """Training images of one draw, split 80/20 (stratified), and the test set."""
    from sklearn.model_selection import train_test_split

    from sktransfer.datasets import load_fashion_mnist

    train = load_fashion_mnist(subset="train")
    test = load_fashion_mnist(subset="test")
    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [rng.choice(np.flatnonzero(train.target == c), per_class, replace=False)
         for c in range(10)]
    )
    X, y = train.images[chosen], train.target[chosen]
    X_fit, X_val, y_fit, y_val = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=seed
    )
    return X, y, X_fit, y_fit, X_val, y_val, test.images, test.target


def params_of(row: str) -> dict:
    from sktransfer import FineTunedCNNClassifier

    change = ROWS[row]
    if change == "defaults":
        return {**FineTunedCNNClassifier().get_params(), "input_size": BASE["input_size"]}
    return {**BASE, **change}


def run(row: str, seed: int, per_class: int, n_test: int, final: dict | None) -> dict:
    import keras

    from sktransfer import FineTunedCNNClassifier

    X, y, X_fit, y_fit, X_val, y_val, X_test, y_test = draw(seed, per_class)
    X_test, y_test = X_test[:n_test], y_test[:n_test]
    params = final if final is not None else params_of(row)
    keras.backend.clear_session()
    clf = FineTunedCNNClassifier(**{**params, "random_state": seed})
    # The final recipe trains on the whole draw (as a user would); ablation
    # rows on 80 % of it, scored on the rest.
    fit_X, fit_y = (X, y) if final is not None else (X_fit, y_fit)
    start, cpu = time.perf_counter(), time.process_time()
    clf.fit(fit_X, fit_y)
    fit_wall, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    result = dict(row=row, seed=seed, per_class=per_class, n_test=len(y_test),
                  fit_s=round(fit_wall, 1), fit_cpu_s=round(fit_cpu, 1),
                  epochs={k: len(v["loss"]) for k, v in clf.history_.items()})
    if final is None:
        result["val"] = float(np.mean(clf.predict(X_val) == y_val))
    start = time.perf_counter()
    result["test"] = float(np.mean(clf.predict(X_test) == y_test))
    result["predict_s"] = round(time.perf_counter() - start, 1)
    if clf.test_time_augmentation is False and row == "base":
        # Test-time augmentation needs no training: the same fitted model.
        clf.set_params(test_time_augmentation=True)
        result["val_tta"] = float(np.mean(clf.predict(X_val) == y_val))
        result["test_tta"] = float(np.mean(clf.predict(X_test) == y_test))
    return result


def table(results: list[dict]) -> str:
    rows = {}
    for r in results:
        rows.setdefault(r["row"], []).append(r)
    lines = ["| row | change | seeds | val | test | fit s (cpu/2) | predict s |",
             "|---|---|---|---|---|---|---|"]

    def stat(values):
        return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if values else "-"

    for name, runs in rows.items():
        change = ROWS.get(name, "final")
        lines.append(
            f"| {name} | {change if isinstance(change, str) else change or 'base'} "
            f"| {len(runs)} | {stat([r['val'] for r in runs if 'val' in r])} "
            f"| {stat([r['test'] for r in runs])} "
            f"| {np.mean([r['fit_s'] for r in runs]):.0f} "
            f"({np.mean([r['fit_cpu_s'] for r in runs]) / 2:.0f}) "
            f"| {np.mean([r['predict_s'] for r in runs]):.0f} |"
        )
        if any("val_tta" in r for r in runs):
            tta = [r for r in runs if "val_tta" in r]
            lines.append(
                f"| tta | test_time_augmentation=True on {name}'s models | {len(tta)} "
                f"| {stat([r['val_tta'] for r in tta])} | {stat([r['test_tta'] for r in tta])} "
                "| 0 | - |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=2000,
                        help="test images scored per ablation row (first N)")
    parser.add_argument("--final", default=None,
                        help="JSON of parameters: train on the whole draw, score on --n-test")
    parser.add_argument("--out", default="bench_recipe.jsonl")
    args = parser.parse_args()
    final = json.loads(args.final) if args.final else None
    rows = ["final"] if final is not None else args.rows

    done = []
    if os.path.exists(args.out):
        with open(args.out) as file:
            done = [json.loads(line) for line in file if line.strip()]
    print(machine(), flush=True)
    for row in rows:
        for seed in args.seeds:
            if any(r["row"] == row and r["seed"] == seed and r["n_test"] == args.n_test
                   for r in done):
                continue
            result = run(row, seed, args.per_class, args.n_test, final)
            if final is not None:
                result["params"] = final
            print(json.dumps(result), flush=True)
            with open(args.out, "a") as file:
                file.write(json.dumps(result) + "\n")
            done.append(result)
    print(table([r for r in done if r["row"] in rows]))


if __name__ == "__main__":
    main()
