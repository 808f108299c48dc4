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
        report = res.report

    steps = list(runs[0])
    print(f"edgeslim build on the digits example, target {args.target}, {args.epochs} epoch(s) per stage, "
          f"{args.repeat} run(s); baseline = one epoch of plain float training = {epoch_s:.3f} s")
    print(f"{'step':<12}{'seconds':>10}{'x baseline':>12}")
    for step in steps:
        s = statistics.median(r[step] for r in runs)
        print(f"{step:<12}{s:>10.2f}{s / epoch_s:>12.1f}")
    m, size = report["metric"], report["size"]
    print(f"\nwhat the last build produced: {m['name']} float {m['float']:.4f} -> int8 {m['int8']:.4f} "
          f"(TFLite Micro {m['int8_tflm']}); gzip'd .tflite {size['float_tflite_gzip_bytes']} -> "
          f"{size['int8_tflite_gzip_bytes']} B ({size['gzip_ratio']:.2f}x)")
    for st in report["stages"]:
        print(f"  {st['name']:<10} {m['name']} {st['metric']:.4f}  {st['tflite_bytes']:>7} B  "
              f"gzip {st['tflite_gzip_bytes']:>7} B")


if __name__ == "__main__":
    main()
