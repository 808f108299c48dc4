"""`edgeslim bench`: measure a bundle's model on its device over the protocol.

The device's own clock times each inference (``infer 1 W%``: t1 - t0); the
host sends each input (``db`` chunks), reads the raw int8 outputs (``results
hex%``) and compares them with a host reference for the same inputs: TFLite
Micro's reference kernels for a microcontroller bundle (LiteRT's optimised
kernels differ from them by up to tens of int8 steps, so only TFLM can prove a
Cortex-M bit-exact), LiteRT for Raspberry Pi and Android bundles.

Nothing in the bundle is modified except ``bench.json``, written atomically.
When the link drops mid-run the inputs measured so far are written with
``"complete": false`` before the error is raised.

Under emulation (the device's ``info%`` has ``icount_shift``, or ``emulated=True``) the
device clock is the emulator's: ``latency_us`` is then microseconds of the emulated clock,
each input also gets the emulator's instruction count (``icount%``), and the link's cost
is compared with the inference's host wall time, never with the emulated latency (two
clocks).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from edgeslim.errors import DataError, DeviceError

BENCH_FILE = "bench.json"
FORMAT = "edgeslim-bench/1"


def run_bench(bundle_dir, port, *, data=None, n: int = 100, warmup: int = 1, runs: int = 1, timeout: float = 5.0,
              infer_timeout: float = 60.0, baud: int = 115200, seed: int = 0,
              on_input: Callable[[int, int], None] | None = None, emulated: bool | None = None) -> dict:
    """Bench ``bundle_dir``'s model on the device at ``port`` (a pyserial URL or an
    open link); return what is written to ``<bundle_dir>/bench.json``.

    ``data``: an .npz with ``x_test`` (float, quantized here with the model's
    input scale and zero point, or already int8) and optionally ``y_test``;
    without it, ``n`` seeded random int8 inputs. ``on_input(done, total)`` is
    called after each input (a progress bar). Each input is timed as ``infer
    runs warmup%``: ``warmup`` untimed inferences, then the mean of ``runs`` timed
    ones (more runs average out a coarse device clock). ``emulated``: the device is an
    emulator (None: the device says so in ``info%`` with ``icount_shift``)."""
    from edgeslim.evaluate import io_details
    from edgeslim.harness.protocol import DutClient

    bundle_dir = Path(bundle_dir)
    manifest, model_bytes = _read_bundle(bundle_dir)
    kind = manifest.get("target", {}).get("kind", "mcu" if (bundle_dir / "tflm").is_dir() else "rpi")
    bundle_sha = _sha256(model_bytes)
    check_single_io(model_bytes)
    qin, qout = io_details(model_bytes)
    if runs < 1 or warmup < 0:
        raise DeviceError(f"runs must be >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    if qout.dtype not in (np.int8, np.uint8, np.int16):
        raise DeviceError(f"bench compares raw int8 (or 16x8 models' int16) outputs; this model's "
                          f"output is {qout.dtype}",
                          hint="Bench an int8 build (the default).")
    if qout.dtype == np.int16 and kind != "mcu":
        raise DeviceError("bench runs 16x8 models (int16 input and output) on the TFLite Micro "
                          f"harness only; this is a {kind} bundle",
                          hint="Bench an int8 build of this model on this target.")
    x, labels, source = _inputs(data, qin, n, seed)
    reference_name = "tflite-micro" if kind == "mcu" else "litert"
    want = _reference(kind, model_bytes, x)

    result = {
        "format": FORMAT, "complete": False, "error": None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "port": port if isinstance(port, str) else getattr(port, "name", "link"),
        "bundle": {"kind": kind, "model_sha256": bundle_sha},
        "inputs": {"source": source, "count": int(len(x)), "warmup_per_input": int(warmup),
                   "runs_per_input": int(runs)},
        "reference": reference_name,
    }
    records: list[dict] = []
    is_emulated = bool(emulated)
    outputs: list[np.ndarray] = []
    try:
        with DutClient(port, baud=baud, timeout=timeout, infer_timeout=infer_timeout) as dut:
            info = dut.info()
            result["device"] = {"name": dut.device_name, **dut.profile(), "info": info}
            is_emulated = bool(emulated) if emulated is not None else "icount_shift" in info
            result["clock"] = _clock(info, is_emulated)
            if info.get("sha256") != bundle_sha:
                raise DeviceError(
                    f"the device runs a different model: device SHA-256 {info.get('sha256')}, "
                    f"bundle {bundle_dir / 'model.tflite'} SHA-256 {bundle_sha}",
                    hint="Deploy this bundle to the device (edgeslim flash), or bench the bundle it runs.")
            for i in range(len(x)):
                start = time.perf_counter()
                # the device's byte order: int16 elements (16x8 models) little-endian
                dut.load(np.ascontiguousarray(x[i], dtype=x.dtype.newbyteorder("<")).tobytes())
                infer_start = time.perf_counter()
                r = dut.infer(runs, warmup)
                infer_wall_us = (time.perf_counter() - infer_start) * 1e6
                raw = dut.results_hex()
                wall_us = (time.perf_counter() - start) * 1e6
                record = {"latency_us": r.latency_us, "link_us": wall_us,
                          # the infer command's host wall time per inference run (warm-up included)
                          "infer_wall_us": infer_wall_us / (runs + warmup)}
                if is_emulated:
                    record["instructions"] = dut.icount()["per_run"]
                got = np.frombuffer(raw, dtype=np.dtype(qout.dtype).newbyteorder("<"))
                if got.size != want[i].size:
                    raise DeviceError(f"the device returned {got.size} output values, the model has {want[i].size}")
                outputs.append(got.reshape(want[i].shape))
                records.append(record)
                if on_input:
                    on_input(i + 1, len(x))
        result["complete"] = True
    except DeviceError as exc:
        result["error"] = exc.message
        if records:  # a dropped link mid-run: keep what was measured
            result.update(_summary(records, outputs, want, labels, emulated=is_emulated))
            path = write_bench(bundle_dir, result)
            exc.hint = ((exc.hint + " ") if exc.hint else "") + \
                f"{len(records)} of {len(x)} inputs were measured; partial results in {path}."
        raise
    result.update(_summary(records, outputs, want, labels, emulated=is_emulated))
    write_bench(bundle_dir, result)
    return result


def write_bench(bundle_dir: Path, result: dict) -> Path:
    """Write bench.json atomically (a temporary file in the bundle, then renamed)."""
    from edgeslim.io.outputs import write_text_atomic

    return write_text_atomic(Path(bundle_dir) / BENCH_FILE, json.dumps(result, indent=2) + "\n")


def _read_bundle(bundle_dir: Path) -> tuple[dict, bytes]:
    if not bundle_dir.is_dir():
        raise DeviceError(f"bundle {bundle_dir} does not exist", hint="Give the folder `edgeslim build` wrote.")
    manifest_path = bundle_dir / "manifest.json"
    manifest = {}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DeviceError(f"{manifest_path} is not valid JSON: {exc}") from None
    model_path = bundle_dir / manifest.get("model", {}).get("path", "model.tflite")
    if not model_path.is_file():
        raise DeviceError(f"{bundle_dir} has no {model_path.name}", hint="Give the folder `edgeslim build` wrote.")
    return manifest, model_path.read_bytes()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def check_single_io(model_bytes: bytes) -> None:
    """Bench sends one input and compares one output per sample: a DeviceError for a model
    with several inputs or outputs (the C library and its harness firmware run those)."""
    from edgeslim.evaluate import litert_interpreter

    interp = litert_interpreter(model_bytes)
    n_in, n_out = len(interp.get_input_details()), len(interp.get_output_details())
    if (n_in, n_out) != (1, 1):
        raise DeviceError(
            f"bench compares one input and one output per sample; this model has {n_in} inputs "
            f"and {n_out} outputs",
            hint="Serve it with `edgeslim emulate <bundle>` (without --bench): the harness takes "
                 "the inputs concatenated (c/<model>.h: <NAME>_INPUT<i>_OFFSET) and returns the "
                 "outputs concatenated.")


def _inputs(data, qin, n: int, seed: int):
    """(int8 inputs (N, ...), labels or None, a description of where they came from)."""
    if n < 1:
        raise DataError(f"bench needs at least one input (n={n})")
    shape = tuple(int(d) for d in qin.shape[1:])
    if data is None:
        info = np.iinfo(qin.dtype)
        x = np.random.default_rng(seed).integers(info.min, info.max + 1, size=(n, *shape), dtype=qin.dtype)
        return x, None, f"random (seed {seed})"
    try:
        with np.load(data, allow_pickle=False) as npz:
            if "x_test" not in npz:
                raise DataError(f"{data} has no x_test array (it has {sorted(npz.files)})",
                                hint="Save the test split as x_test (and its labels as y_test).")
            x = np.asarray(npz["x_test"][:n])
            y = np.asarray(npz["y_test"][:n]) if "y_test" in npz else None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {data}: {exc}") from None
    if x.shape[1:] != shape:
        raise DataError(f"{data}: x_test samples have shape {x.shape[1:]}, the model takes {shape}")
    if np.issubdtype(x.dtype, np.floating):
        x = qin.quantize(x)
    elif x.dtype != qin.dtype:
        raise DataError(f"{data}: x_test is {x.dtype}; give float data or the model's {qin.dtype} inputs")
    if y is not None:
        y = y.argmax(axis=-1) if y.ndim > 1 else y.astype(np.int64)
    return x, y, str(data)


def _reference(kind: str, model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Raw outputs of the host reference, one sample at a time (as the device runs)."""
    if kind == "mcu":
        from edgeslim import micro

        return np.asarray(micro.run(model_bytes, x))
    from edgeslim._quiet import native_stderr_to
    from edgeslim.evaluate import litert_interpreter

    interp = litert_interpreter(model_bytes)
    with native_stderr_to([]):
        interp.allocate_tensors()
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    out = []
    for k in range(len(x)):
        interp.set_tensor(i, x[k:k + 1])
        interp.invoke()
        out.append(interp.get_tensor(o)[0].copy())
    return np.stack(out)


def _clock(info: dict, emulated: bool) -> dict:
    """What the device's latencies are measured in."""
    if emulated:
        return {"kind": "emulated", "counter": info.get("counter"), "icount_shift": info.get("icount_shift"),
                "note": "latency_us is microseconds of the emulator's clock (qemu -icount) and "
                        "instructions its instruction counts: not device time"}
    return {"kind": "device", "counter": info.get("counter"), "hz": info.get("clock")}


def _stats(values: np.ndarray) -> dict:
    return {"min": float(values.min()), "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)), "p99": float(np.percentile(values, 99)),
            "mean": float(values.mean())}


def _summary(records: list[dict], outputs: list[np.ndarray], want: np.ndarray, labels, *,
             emulated: bool = False) -> dict:
    lat = np.array([r["latency_us"] for r in records], dtype=np.float64)
    link = np.array([r["link_us"] for r in records], dtype=np.float64)
    k = len(outputs)
    got = np.stack(outputs).astype(np.int32)
    ref = want[:k].astype(np.int32)
    diff = np.abs(got - ref).reshape(k, -1)
    agreement = {
        "compared": k,
        "bit_exact": int(np.sum(diff.max(axis=1) == 0)),
        "max_abs_diff": int(diff.max()),
        "output_type": str(want.dtype),  # the unit of max_abs_diff: int8 steps, int16 for 16x8
    }
    flat_got, flat_ref = got.reshape(k, -1), ref.reshape(k, -1)
    if flat_got.shape[1] > 1:
        top_dev, top_ref = flat_got.argmax(axis=1), flat_ref.argmax(axis=1)
        agreement["top1_agreement"] = float(np.mean(top_dev == top_ref))
        if labels is not None:
            agreement["accuracy_device"] = float(np.mean(top_dev == labels[:k]))
            agreement["accuracy_reference"] = float(np.mean(top_ref == labels[:k]))
    mean = float(lat.mean())
    infer_wall = float(np.mean([r["infer_wall_us"] for r in records]))
    if emulated:
        # the emulated latency is another clock than the host's: compare the link with the
        # inference's host wall time instead
        inference, against = infer_wall, "inference_host_wall_us"
    else:
        inference, against = mean, "latency_us"
    summary = {
        "measured": k,
        "latency_us": _stats(lat),
        "throughput_per_s": (1e6 / mean) if mean > 0 and not emulated else None,
        "agreement": agreement,
        # the host's wall time per input (load + infer + results) against the inference's time
        "link": {"us_per_input": float(link.mean()), "inference_host_wall_us": infer_wall,
                 "ratio_to_inference": (float(link.mean()) / inference) if inference > 0 else None,
                 "ratio_against": against},
        "per_input": [dict(r, max_abs_diff=int(d.max())) for r, d in zip(records, diff)],
    }
    if emulated:
        summary["instructions"] = _stats(np.array([r["instructions"] for r in records], dtype=np.float64))
    return summary
