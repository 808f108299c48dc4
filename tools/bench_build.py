#!/usr/bin/env python3
"""Time each step of `edgeslim build` on the built-in digits example.

Machines here are noisy, so every figure is also printed as a ratio to a
baseline measured in the same run: one epoch of plain tf_keras training of the
same float model on the same data (what a user would pay without edgeslim).

    .venv/bin/python tools/bench_build.py [--target cortex-m4] [--repeat 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="cortex-m4")
    ap.add_argument("--repeat", type=int, default=1, help="builds to run (median reported)")
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per stage")
    args = ap.parse_args()

    from edgeslim import examples
    from edgeslim import recipe as R
    from edgeslim.compress.context import StageContext
    from edgeslim.io.data import load_data
    from edgeslim.io.models import load_model
    from edgeslim.pipeline import build

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz = examples.write_digits_npz(tmp / "digits.npz", seed=0)
        model_path = examples.train_digits_model(tmp / "digits.keras", npz, seed=0)

        # Baseline: one epoch of plain float training, same model and data.
        ds = load_data(npz, seed=0)
        model = load_model(model_path).model
        ctx = StageContext(data=ds, seed=0, patience=10)
        ctx.fit(model, 1, stage="warm-up")
        t = time.perf_counter()
        ctx.fit(model, 1, stage="baseline")
        epoch_s = time.perf_counter() - t

        runs = []
        for i in range(args.repeat):
            res = build(model_path, npz, target=args.target, out=tmp / f"out{i}",
                        flags=R.flags_to_table(seed=0, epochs=args.epochs))
            runs.append(res.report["timings_s"])

    steps = list(runs[0])
    print(f"edgeslim build on the digits example, target {args.target}, {args.epochs} epoch(s) per stage, "
          f"{args.repeat} run(s); baseline = one epoch of plain float training = {epoch_s:.3f} s")
    print(f"{'step':<12}{'seconds':>10}{'x baseline':>12}")
    for step in steps:
        s = statistics.median(r[step] for r in runs)
        print(f"{step:<12}{s:>10.2f}{s / epoch_s:>12.1f}")


if __name__ == "__main__":
    main()
