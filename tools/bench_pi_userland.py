"""The Raspberry Pi bundle in the arm64 userland (tools/pi_userland.py): install time,
agreement with host LiteRT, and per-inference time as a ratio to host LiteRT in the same run.

EMULATED, NOT PI SPEED. The userland's programs run through qemu-user on this x86 machine:
an inference there costs what QEMU's translation of arm64 code costs on this host, which
says nothing about a Raspberry Pi's speed (a real Pi 4 is roughly as fast as a few-year-old
laptop core on this kind of model; emulation is far slower). The ratio is useful only to
see that the bundle runs, and to compare runs of this tool with each other.

For the digits example model (trained with Keras 3, seed 1234, converted int8 with int8
I/O, written as an rpi4 bundle):
- install: the bundle copied to ~/edgeslim/digits, `./install.sh` as the user pi (wall
  time; pip's downloads are cached between runs in the userland's cache);
- agreement: `agent.py run` on the 360 digits test samples in the userland, per board
  (rpi4: QEMU_CPU=cortex-a72, rpi5: cortex-a76) and per runtime (ai-edge-litert and, with
  --tflite-runtime, tflite-runtime 2.14) against host LiteRT: bit-exact rows, largest
  difference in output steps, top-1 identical rows;
- time: `agent.py serve --tcp` in the userland and `edgeslim bench` (library) on --n test
  samples: the agent's own time.perf_counter_ns around invoke() (median), against host
  LiteRT timed the same way (set input, invoke, read output) with the bundle's thread count
  in the same run.

    sudo .venv/bin/python tools/bench_pi_userland.py                  # rpi4 and rpi5, ai-edge-litert
    sudo .venv/bin/python tools/bench_pi_userland.py --tflite-runtime --n 100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import pi_userland  # noqa: E402

SEED = 1234


def _log(msg: str) -> None:
    print(f"[bench_pi_userland] {msg}", file=sys.stderr, flush=True)


def digits_bundle(work: Path) -> tuple[Path, Path, bytes]:
    """(bundle, digits .npz, model bytes): the digits example model as an rpi4 bundle."""
    from edgeslim import examples
    from edgeslim.bundle import write_target_files
    from edgeslim.bundle.manifest import write_manifest
    from edgeslim.convert import to_int8_tflite
    from edgeslim.io.models import load_model
    from edgeslim.targets import load_target

    npz = examples.write_digits_npz(work / "digits.npz", seed=SEED)
    keras_path = examples.train_digits_model(work / "digits.keras", npz, seed=SEED)
    with np.load(npz) as d:
        calib = d["x_train"][:200]
    model_bytes = to_int8_tflite(load_model(keras_path).model, calib)
    bundle = work / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(model_bytes)
    target = load_target("rpi4")
    write_target_files(bundle, target, model_bytes=model_bytes, fp16_bytes=None, model_name="digits",
                       labels=[str(i) for i in range(10)], check=None)
    write_manifest(bundle, target=target, model_path=bundle / "model.tflite", extra={})
    return bundle, npz, model_bytes


def host_litert(model_bytes: bytes, x: np.ndarray, *, threads: int, runs: int = 3) -> tuple[np.ndarray, float]:
    """(raw outputs, median microseconds per inference) with ai-edge-litert on the host,
    one sample at a time: set input, invoke, read output, as the agent does."""
    from ai_edge_litert.interpreter import Interpreter

    ip = Interpreter(model_content=model_bytes, num_threads=threads)
    ip.allocate_tensors()
    i, o = ip.get_input_details()[0]["index"], ip.get_output_details()[0]["index"]
    out, times = [], []
    for n in range(len(x)):
        for r in range(runs):
            t = time.perf_counter_ns()
            ip.set_tensor(i, x[n:n + 1])
            ip.invoke()
            y = ip.get_tensor(o)[0].copy()
            times.append((time.perf_counter_ns() - t) / 1e3)
        out.append(y)
    return np.stack(out), float(np.median(times))


def agreement(y: np.ndarray, ref: np.ndarray) -> dict:
    diff = np.abs(y.astype(int) - ref.astype(int)).reshape(len(y), -1)
    return {"rows": len(y), "bit_exact": int(np.sum(diff.max(axis=1) == 0)), "max_abs_diff": int(diff.max()),
            "top1_identical": int(np.sum(y.argmax(axis=1) == ref.argmax(axis=1)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", default="rpi4,rpi5")
    ap.add_argument("--n", type=int, default=60, help="test samples timed through serve (agreement uses all 360)")
    ap.add_argument("--tflite-runtime", action="store_true", help="also tflite-runtime 2.14 (a second install)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)

    from edgeslim.bundle.rpi import EXPECTED_AGREEMENT
    from edgeslim.evaluate import io_details
    from edgeslim.harness.bench import run_bench
    from edgeslim.targets import load_target

    ul = pi_userland.Userland()
    figures: dict = {"label": "EMULATED (qemu-user on x86): not Raspberry Pi speed", "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench_pi_userland_") as tmp:
        work = Path(tmp)
        bundle, npz, model_bytes = digits_bundle(work)
        threads = int(load_target("rpi4").runtime_options.get("num_threads", 4))  # the agent's
        with np.load(npz) as d:
            x = io_details(model_bytes)[0].quantize(d["x_test"])
        ref, host_us = host_litert(model_bytes, x, threads=threads)
        figures["host_litert_median_us"] = host_us
        runtimes = ["ai-edge-litert"] + (["tflite-runtime"] if args.tflite_runtime else [])
        for runtime in runtimes:
            home = work / f"home-{runtime}"
            t = time.monotonic()
            folder, res = ul.install(bundle, home=home, runtime=None if runtime == "ai-edge-litert" else runtime)
            install_s = time.monotonic() - t
            if res.returncode != 0:
                _log(f"install.sh failed ({runtime}):\n{res.stdout}{res.stderr}")
                return 1
            np.save(home / folder / "x.npy", x)
            for board in args.boards.split(","):
                t = time.monotonic()
                r = ul.run(["venv/bin/python", "agent.py", "run", "x.npy", "--out", "y.npy"], home=home,
                           board=board, cwd=folder, timeout=1200)
                run_s = time.monotonic() - t
                if r.returncode != 0:
                    _log(f"agent.py run failed ({runtime}, {board}): {r.stderr}")
                    return 1
                agree = agreement(np.load(home / folder / "y.npy"), ref)
                with ul.serving(folder, home=home, board=board) as port:
                    b = run_bench(bundle, f"socket://127.0.0.1:{port}", data=npz, n=args.n, warmup=1,
                                  runs=3, timeout=120)
                (bundle / "bench.json").unlink(missing_ok=True)
                emu_us = b["latency_us"]["median"]
                row = {"runtime": runtime, "board": board, "qemu_cpu": pi_userland.BOARDS[board]["qemu_cpu"],
                       "install_s": round(install_s, 1), "run_360_wall_s": round(run_s, 1),
                       "agreement": agree, "expected_max_abs_diff": EXPECTED_AGREEMENT[runtime]["max_abs_diff"],
                       "emulated_median_us": emu_us, "host_median_us": host_us,
                       "emulated_over_host": emu_us / host_us if host_us else None,
                       "bench_agreement": b["agreement"]}
                figures["runs"].append(row)
                _log(json.dumps(row))
    print(f"Raspberry Pi bundle in the arm64 userland -- {figures['label']}")
    print(f"host LiteRT (x86, {threads} threads): median {host_us:.1f} us per inference")
    print(f"{'runtime':16} {'board':5} {'install':>8} {'bit-exact':>10} {'max diff':>8} {'top-1':>8}"
          f" {'emulated us':>12} {'x host':>8}")
    for r in figures["runs"]:
        a = r["agreement"]
        print(f"{r['runtime']:16} {r['board']:5} {r['install_s']:7.0f}s {a['bit_exact']:>4}/{a['rows']:<5}"
              f" {a['max_abs_diff']:>8} {a['top1_identical']:>4}/{a['rows']:<3} {r['emulated_median_us']:12.0f}"
              f" {r['emulated_over_host']:7.0f}x")
    print("(emulated: qemu-user translating arm64 on this x86 host; a real Pi's time is not this)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
