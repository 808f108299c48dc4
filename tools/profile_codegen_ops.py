#!/usr/bin/env python
"""Where the instructions go: per-operator instruction counts of the generated C library on
an emulated Cortex-M (the per-operator split in docs/c-backend.md).

The library's invoke function is built once per operator k, cut after operator k (a
``return 0;`` inserted before operator k + 1's call in a copy of the generated source), and
run on the board under ``-icount``; operator k's cost is the difference between consecutive
counts. The specialized kernel functions are marked ``noinline`` in every copy, so cutting
does not change what GCC inlines (a kernel shared by several operators is inlined once it
has a single caller, which confounds the split otherwise). A measurement aid only: the
copies are never shipped.

    .venv/bin/python tools/profile_codegen_ops.py kws.tflite --inputs-npy kws_inputs.npy \\
        --target cortex-m4                       # DSP kernels on mps2-an386
    .venv/bin/python tools/profile_codegen_ops.py kws.tflite --target cortex-m55
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def profile(model_bytes: bytes, x: np.ndarray, target: str | None, board: str | None,
            work: Path) -> list[tuple]:
    """[(index, op, function, MACs, instructions)] for one input ``x``."""
    from edgeslim import codegen
    from edgeslim.harness import _testfw, emulator, firmware

    board = board or (firmware.board_for_target(target)[0].machine if target else "mps2-an386")
    core = target if target else emulator.board_for(board).core
    r = codegen.generate(model_bytes, work / "lib", name="model", target=target)
    src = r.source.read_text().replace("static void es_", "static __attribute__((noinline)) void es_")
    rows, before = [], 0
    for k, op in enumerate(r.ops):
        d = work / f"cut{k}"
        shutil.copytree(r.header.parent, d)
        text = src
        if k + 1 < len(r.ops):
            marker = f"    /* {k + 1}: "
            if marker not in text:
                raise SystemExit(f"cannot find operator {k + 1}'s call in the generated source")
            text = text.replace(marker, "    return 0;\n" + marker, 1)
        (d / r.source.name).write_text(text)
        fw = firmware.firmware_for_library(d, work / f"fw{k}", name=r.name,
                                           input_bytes=r.input_bytes,
                                           output_bytes=r.output_bytes,
                                           arena_bytes=r.arena_size, board=board, core=core)
        total = int(np.mean(_testfw.run_firmware(fw, x[None], timeout=600).instructions))
        rows.append((k, op.op, op.function, op.macs, total - before))
        before = total
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tflite", type=Path, help="an int8 .tflite model")
    ap.add_argument("--inputs-npy", type=Path, help="int8 inputs; the first is used "
                                                     "(default: zeros)")
    ap.add_argument("--target", help="profile whose kernels to use (default: reference)")
    ap.add_argument("--board", help="QEMU board (default: the target's, else mps2-an386)")
    args = ap.parse_args(argv)
    from edgeslim.modelgraph import read as read_graph

    model = args.tflite.read_bytes()
    if args.inputs_npy:
        x = np.load(args.inputs_npy)[0]
    else:
        g = read_graph(model)
        x = np.zeros(g.tensors[g.inputs[0]].shape, np.int8)
    with tempfile.TemporaryDirectory(prefix="profile-ops-") as tmp:
        rows = profile(model, np.asarray(x, np.int8), args.target, args.board, Path(tmp))
    total = sum(r[4] for r in rows)
    print(f"{'op':>3}  {'operator':<18} {'function':<30} {'MACs':>10} {'instructions':>13} "
          f"{'instr/MAC':>9} {'share':>6}")
    for k, op, fn, macs, ins in rows:
        per = f"{ins / macs:.2f}" if macs else ""
        print(f"{k:>3}  {op:<18} {fn:<30} {macs:>10,} {ins:>13,} {per:>9} {ins / total:>6.1%}")
    print(f"{'':>3}  {'total':<18} {'':<30} {sum(r[3] for r in rows):>10,} {total:>13,}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
