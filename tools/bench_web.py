"""The web bundle in a real browser: latency per inference against host LiteRT, output
agreement, bundle size.

For the digits model and the keyword model (DS-CNN-S on ../shared/data/spoken_digits_kws.npz;
both trained with Keras 3 by tools/bench_compress.py's float_model, cached), each converted
int8 with float32 I/O (the web profile's int8_io = false) and written as a web bundle:

- in headless Chromium (tests/bundle/web_browser.py; LiteRT.js 2.5.3, WebAssembly, one
  thread), served by the same server as `edgeslim serve` on loopback: the page's own
  benchmark panel (median and p90 per inference, warm-up excluded; each timed sample runs
  the model enough times to last >= 20 ms, as the browser's clock is coarsened to 0.1 ms);
- on the host in the same run: LiteRT (ai-edge-litert, XNNPACK, num_threads=1, as the
  browser's wasm build has no threads), timed the same way (set input, invoke, read
  output, as the page's inference does: Tensor in, run, array out);
- agreement: the test inputs (up to --n) run in the page through its .npz input and
  compared with host LiteRT in int8 steps of the output quantization: bit-exact count,
  within-1-step count, top-1 agreement count, largest difference;
- spoken words (kws): the ten digit words spoken by espeak-ng in three voices, given to
  the page as WAV files: its own front end (audio.js, MLPerf Tiny MFCC) and the model;
- size: model, runtime files (LiteRT.js: JS + both wasm builds), page (HTML, JS, CSS,
  service worker, manifest, icon, web.json, reference.npz).

Wall-clock figures are ratios to the host in the same run; absolute times depend on the
machine and its load. Usage:

    .venv/bin/python tools/bench_web.py                       # digits and kws
    .venv/bin/python tools/bench_web.py --task digits --runs 30
    .venv/bin/python tools/bench_web.py --kws-model path/to/dscnn.keras   # skip training
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests" / "bundle"))

PAGE = ("index.html", "app.js", "npy.js", "sha256.js", "style.css", "sw.js", "app.webmanifest",
        "icon.svg", "web.json", "reference.npz")


def _log(msg: str) -> None:
    print(f"[bench_web] {msg}", file=sys.stderr, flush=True)


def host_latency(model_bytes: bytes, x: np.ndarray, *, runs: int, warmup: int = 5) -> dict:
    """Host LiteRT per inference, timed as the page times itself (samples of >= 20 ms), input
    set and output read included as in the page."""
    from ai_edge_litert.interpreter import Interpreter

    ip = Interpreter(model_content=model_bytes, num_threads=1)
    ip.allocate_tensors()
    i, o = ip.get_input_details()[0]["index"], ip.get_output_details()[0]["index"]
    x1 = x[:1].astype(np.float32)

    def one():  # what the page's infer() does: input in, run, output out
        ip.set_tensor(i, x1)
        ip.invoke()
        return ip.get_tensor(o)

    for _ in range(warmup):
        one()
    inner = 1
    while True:
        t = time.perf_counter()
        for _ in range(inner):
            one()
        if time.perf_counter() - t >= 0.02 or inner >= 4096:
            break
        inner *= 2
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(inner):
            one()
        samples.append((time.perf_counter() - t) * 1e3 / inner)
    s = sorted(samples)
    return {"median_ms": float(np.median(s)), "p90_ms": float(s[min(len(s) - 1, int(np.ceil(0.9 * len(s))) - 1)]),
            "runs": runs, "inner": inner}


def sizes(bundle: Path) -> dict:
    runtime = sum(p.stat().st_size for p in (bundle / "litert").rglob("*") if p.is_file())
    page = sum((bundle / p).stat().st_size for p in PAGE)
    model = (bundle / "model.tflite").stat().st_size
    return {"model": model, "runtime": runtime, "page": page, "total": model + runtime + page}


def write_bundle(model_path: Path, arrays: dict, labels, out: Path, name: str,
                 front_end: dict | None = None) -> tuple[Path, bytes]:
    from edgeslim.bundle import write_target_files
    from edgeslim.bundle.manifest import write_manifest
    from edgeslim.convert import to_int8_tflite
    from edgeslim.io.models import load_model
    from edgeslim.targets import load_target

    model = load_model(model_path).model
    model_bytes = to_int8_tflite(model, arrays["x_train"][:200], int8_io=False)
    target = load_target("web")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.tflite").write_bytes(model_bytes)
    write_target_files(out, target, model_bytes=model_bytes, fp16_bytes=None, model_name=name,
                       labels=labels, check=None, reference=(arrays["x_test"], arrays["y_test"]),
                       front_end=front_end)
    write_manifest(out, target=target, model_path=out / "model.tflite", extra={})
    return out, (out / "model.tflite").read_bytes()


WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = ("en", "en-us", "en-gb-x-rp")


def spoken_words(work: Path) -> list[tuple[Path, str]]:
    """The ten digit words, spoken by espeak-ng (Debian) in a few voices, as WAV files:
    real sound through the page's WAV -> MFCC path (the data set was made with espeak-ng
    too, but these voices' exact variants are not in it)."""
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        return []
    out = []
    for voice in VOICES:
        for word in WORDS:
            wav = work / f"{voice}-{word}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), word], check=True,
                           capture_output=True, timeout=60)
            out.append((wav, word))
    return out


def bench_one(name: str, bundle: Path, model_bytes: bytes, arrays: dict, *, n: int, runs: int,
              work: Path) -> dict:
    from edgeslim.bundle.web import make_server
    from web_browser import Browser, host_steps

    x, y = arrays["x_test"][:n], arrays["y_test"][:n]
    npz = work / f"{name}_inputs.npz"
    np.savez(npz, x_test=x, y_test=y)
    ref = host_steps(model_bytes, x)
    server = make_server(bundle, port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    browser = Browser(work / f"profile-{name}")
    try:
        st = browser.open(f"http://127.0.0.1:{server.server_address[1]}/", timeout=60)
        if not st["ready"]:
            raise SystemExit(f"{name}: the page did not start: {st['error']}")
        st = browser.upload(npz, timeout=600)
        if st["error"]:
            raise SystemExit(f"{name}: the page refused the inputs: {st['error']}")
        page = np.array(st["result"]["steps_all"])
        words = []
        if json.loads((bundle / "web.json").read_text())["front_end"].get("audio"):
            for wav, word in spoken_words(work):
                st = browser.upload(wav, element_id="sound-file")
                got = None if st["error"] else st["result"]["top"][0]["label"]
                words.append({"file": wav.name, "word": word, "page": got, "error": st["error"]})
        # alternate browser and host twice, so a load change hits both
        web_runs, host_runs = [], []
        for _ in range(2):
            web_runs.append(browser.run(f"edgeslim.runBenchmark({runs}, 5)"))
            host_runs.append(host_latency(model_bytes, x, runs=runs))
    finally:
        browser.quit()
        server.shutdown()
        server.server_close()
    web_med = float(np.median([r["median_ms"] for r in web_runs]))
    web_p90 = float(np.median([r["p90_ms"] for r in web_runs]))
    host_med = float(np.median([r["median_ms"] for r in host_runs]))
    host_p90 = float(np.median([r["p90_ms"] for r in host_runs]))
    diff = np.abs(page - ref).max(axis=1)
    return {
        "model": name,
        "inputs": int(n),
        "latency": {"browser_median_ms": web_med, "browser_p90_ms": web_p90,
                    "host_median_ms": host_med, "host_p90_ms": host_p90,
                    "ratio_median": web_med / host_med, "ratio_p90": web_p90 / host_p90,
                    "browser_inner": web_runs[0]["inner"], "host_inner": host_runs[0]["inner"],
                    "runs": runs},
        "agreement": {"bit_exact": int((diff == 0).sum()), "within_1_step": int((diff <= 1).sum()),
                      "top1_agree": int((page.argmax(1) == ref.argmax(1)).sum()),
                      "max_int8_diff": int(diff.max()),
                      "correct_browser": int((page.argmax(1) == y).sum()),
                      "correct_host": int((ref.argmax(1) == y).sum())},
        "size_bytes": sizes(bundle),
        "spoken_words": {"count": len(words), "right": sum(w["page"] == w["word"] for w in words),
                         "voices": list(VOICES), "words": words} if words else None,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | browser median / p90 (ms) | host LiteRT median / p90 (ms) | ratio median (p90) "
        "| bit-exact / within 1 step / top-1 same (of N) | max diff (int8 steps) | model / runtime / page (bytes) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat, ag, sz = r["latency"], r["agreement"], r["size_bytes"]
        lines.append(
            f"| {r['model']} | {lat['browser_median_ms']:.3f} / {lat['browser_p90_ms']:.3f} "
            f"| {lat['host_median_ms']:.3f} / {lat['host_p90_ms']:.3f} "
            f"| {lat['ratio_median']:.2f}x ({lat['ratio_p90']:.2f}x) "
            f"| {ag['bit_exact']} / {ag['within_1_step']} / {ag['top1_agree']} (of {r['inputs']}) "
            f"| {ag['max_int8_diff']} | {sz['model']:,} / {sz['runtime']:,} / {sz['page']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=["digits", "kws", "all"], default="all")
    ap.add_argument("--n", type=int, default=200, help="test inputs compared with host LiteRT")
    ap.add_argument("--runs", type=int, default=30, help="timed samples per latency measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kws-model", type=Path, help="a trained DS-CNN .keras (else trained and cached)")
    ap.add_argument("--kws-epochs", type=int, default=36)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgeslim-bench-web")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    import bench_compress as bc

    rows = []
    tasks = ["digits", "kws"] if args.task == "all" else [args.task]
    with tempfile.TemporaryDirectory(prefix="bench_web.") as tmp:
        work = Path(tmp)
        for task_name in tasks:
            task = bc.TASKS[task_name]
            folder = args.cache / task_name
            npz, arrays, labels = bc.prepare_data(task, folder, args.seed)
            if task_name == "kws" and args.kws_model:
                model_path = args.kws_model
            else:
                epochs = args.kws_epochs if task_name == "kws" else task.train_epochs
                model_path, _ = bc.float_model(task, npz, folder, seed=args.seed, epochs=epochs)
            _log(f"{task_name}: web bundle from {model_path}")
            front_end = {"audio": "mlperf-tiny-kws"} if task_name == "kws" else None
            bundle, model_bytes = write_bundle(model_path, arrays, labels, work / f"{task_name}-web", task_name,
                                               front_end=front_end)
            _log(f"{task_name}: in Chromium and on the host")
            rows.append(bench_one(task_name, bundle, model_bytes, arrays, n=min(args.n, len(arrays["x_test"])),
                                  runs=args.runs, work=work))
    result = {"rows": rows, "machine": bc._machine(), "chromium": _chromium_version(),
              "litertjs": "2.5.3", "date": time.strftime("%Y-%m-%d")}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    for r in rows:
        if r.get("spoken_words"):
            w = r["spoken_words"]
            print(f"\n{r['model']}: spoken words (espeak-ng, voices {', '.join(w['voices'])}) as WAV "
                  f"files through the page's MFCC front end: {w['right']} of {w['count']} right")
    return 0


def _chromium_version() -> str | None:
    import subprocess

    try:
        return subprocess.run(["chromium", "--version"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
