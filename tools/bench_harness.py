#!/usr/bin/env python
"""The device harness measured end to end: `edgeslim emulate` + `edgeslim bench` on real builds.

For the digits example (edgeslim.examples: the dataset and the trained Keras model), this runs
`edgeslim build` for cortex-m4 and cortex-m55 with ``--backend c`` and for rpi4, and optionally
for a DS-CNN keyword model (``--kws-model model.keras --kws-data spoken_digits_kws.npz``). Then,
per build:

- Cortex-M: the bundle's harness firmware on its emulated board (``bench_emulated``: QEMU,
  ``-icount``), benched over the socket with the test inputs;
- rpi4: the bundle's ``agent.py serve --tcp 0`` started locally, benched over TCP.

It reports per build:

- the device figure per inference: emulator instructions (``icount%``), or host microseconds
  for the agent (its ``m-lap-us`` clock is the host's ``perf_counter_ns``);
- the same figure from ``tools/bench_codegen.py``'s own measurement of the same library (its
  test firmware, imported, not copied): the protocol must not change what is measured; none for
  the agent (bench_codegen measures the C library only);
- the link's cost per input (load + infer + results, host wall time) over the inference's own
  host wall time (the ``infer`` command's wall time per run);
- outputs bit-exact with the reference (TFLite Micro for Cortex-M, LiteRT for the agent).

    .venv/bin/python tools/bench_harness.py --quick
    .venv/bin/python tools/bench_harness.py --kws-model kws.keras \\
        --kws-data ../shared/data/spoken_digits_kws.npz
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# target -> (bundle kind, QEMU board for bench_codegen's run, core)
TARGETS = {
    "cortex-m4": ("mcu", "mps2-an386", "cortex-m4"),
    "cortex-m55": ("mcu", "mps3-an547", "cortex-m55"),
    "rpi4": ("rpi", None, None),
}


def build(model: Path, data: Path, out: Path, target: str, *, quick: bool) -> Path:
    """`edgeslim build MODEL --data DATA --target TARGET` (``--backend c`` for Cortex-M)."""
    cmd = [sys.executable, "-m", "edgeslim.cli", "build", str(model), "--data", str(data),
           "--target", target, "--out", str(out), "--seed", "0"]
    if TARGETS[target][0] == "mcu":
        cmd += ["--backend", "c"]
    if quick:
        cmd += ["--no-prune", "--no-cluster", "--no-qat"]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, timeout=3600)
    return out / target


def _library_name(bundle: Path) -> str:
    (header,) = sorted((bundle / "c").glob("*.h"))
    return header.stem


def codegen_instructions(bundle: Path, x: np.ndarray, work: Path, *, board: str, core: str) -> float:
    """bench_codegen's measurement of the bundle's own C library: instructions per inference
    in its test firmware on ``board`` (mean over the inputs), every output checked there too."""
    import bench_codegen

    from edgeslim import codegen

    model_bytes = (bundle / "model.tflite").read_bytes()
    name = _library_name(bundle)
    # the generator's figures (sizes, arena) for this model; the library run is the bundle's own
    result = codegen.generate(model_bytes, work / "regen", name=name)
    _, run = bench_codegen._run_on_board(result, bundle / "c", x, work / "fw", board=board, core=core)
    return float(np.mean(run.instructions))


class Agent:
    """The rpi bundle's `agent.py serve --tcp 0`, in its own process group; stop() kills it."""

    def __init__(self, bundle: Path):
        self.proc = subprocess.Popen([sys.executable, str(bundle / "agent.py"), "serve", "--tcp", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.port = None
        out, deadline = b"", time.monotonic() + 120
        while self.port is None and time.monotonic() < deadline and self.proc.poll() is None:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                out += os.read(self.proc.stdout.fileno(), 4096)
                m = re.search(rb"tcp 127\.0\.0\.1:(\d+)", out)
                self.port = int(m.group(1)) if m else None
        if self.port is None:
            self.stop()
            raise RuntimeError(f"agent did not start: {out.decode(errors='replace')}")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def bench_build(bundle: Path, target: str, data: Path, n: int, work: Path) -> dict:
    from edgeslim.harness.bench import run_bench
    from edgeslim.harness.emulate import bench_emulated

    kind, board, core = TARGETS[target]
    if kind == "mcu":
        r = bench_emulated(bundle, work_dir=work / "emulate", data=data, n=n, timeout=20.0)
        figure, unit = r["instructions"]["mean"], "instructions"
        with np.load(data) as d:
            from edgeslim.evaluate import io_details

            qin, _ = io_details((bundle / "model.tflite").read_bytes())
            x = np.asarray(d["x_test"][:n])
            x = qin.quantize(x) if np.issubdtype(x.dtype, np.floating) else x
        reference = codegen_instructions(bundle, x, work / "codegen", board=board, core=core)
    else:
        agent = Agent(bundle)
        try:
            r = run_bench(bundle, f"socket://127.0.0.1:{agent.port}", data=data, n=n)
        finally:
            agent.stop()
        figure, unit, reference = r["latency_us"]["mean"], "host us", None
    link = r["link"]
    return {
        "target": target, "unit": unit, "figure": figure, "codegen": reference,
        "link_us": link["us_per_input"], "infer_wall_us": link["inference_host_wall_us"],
        "link_ratio": link["us_per_input"] / link["inference_host_wall_us"],
        "bit_exact": r["agreement"]["bit_exact"], "compared": r["agreement"]["compared"],
        "reference": r["reference"],
    }


def table(rows: list[dict]) -> str:
    lines = ["| model | build | device figure / inference | bench_codegen, same library | "
             "link per input (host ms) | link / inference (host wall) | bit-exact |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["unit"] == "instructions":
            fig = f"{r['figure']:,.0f} emulator instructions"
            ref = f"{r['codegen']:,.0f} instructions" if r["codegen"] is not None else "-"
        else:
            fig, ref = f"{r['figure']:,.0f} host us", "- (C library only)"
        lines.append(f"| {r['model']} | {r['target']} | {fig} | {ref} | {r['link_us'] / 1000:.1f} | "
                     f"{r['link_ratio']:.1f}x | {r['bit_exact']}/{r['compared']} vs {r['reference']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="post-training quantization only (no prune/cluster/QAT), fewer inputs")
    ap.add_argument("-n", type=int, default=None, help="inputs per build (default 50, 10 with --quick)")
    ap.add_argument("--targets", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--kws-model", type=Path, help="a DS-CNN keyword model (.keras)")
    ap.add_argument("--kws-data", type=Path, help="its .npz (e.g. ../shared/data/spoken_digits_kws.npz)")
    ap.add_argument("--work", type=Path, default=None, help="keep builds here (default: a temporary folder)")
    args = ap.parse_args(argv)
    n = args.n or (10 if args.quick else 50)
    if (args.kws_model is None) != (args.kws_data is None):
        ap.error("--kws-model and --kws-data go together")

    from edgeslim import examples

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        work = args.work or Path(tmp)
        data = examples.write_digits_npz(work / "digits.npz")
        model = examples.train_digits_model(work / "digits.keras", data)
        models = [("digits", model, data)]
        if args.kws_model:
            models.append(("kws (DS-CNN)", args.kws_model.resolve(), args.kws_data.resolve()))
        for name, model_path, data_path in models:
            for target in args.targets:
                out = work / "out" / name.split()[0]
                bundle = build(model_path, data_path, out, target, quick=args.quick)
                row = bench_build(bundle, target, data_path, n, work / "bench" / name.split()[0] / target)
                rows.append({"model": name, **row})
                print(f"{name} {target}: done", file=sys.stderr)
    print(table(rows))
    return 0 if all(r["bit_exact"] == r["compared"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
