"""Running .tflite models on the host: LiteRT (what phones and Pis run) and
TFLite Micro's reference kernels (what microcontrollers run, in a child process)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edgeslim._quiet import native_stderr_to


@dataclass(frozen=True)
class IOQuant:
    """How a model's input/output tensor is typed and quantized."""

    dtype: np.dtype
    scale: float
    zero_point: int
    shape: tuple

    @property
    def quantized(self) -> bool:
        return self.dtype in (np.int8, np.uint8, np.int16) and self.scale > 0

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(x, dtype=self.dtype)
        info = np.iinfo(self.dtype)
        q = np.round(np.asarray(x, np.float64) / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(q, dtype=np.float32)
        return ((np.asarray(q, np.float32) - self.zero_point) * self.scale).astype(np.float32)


def _io(detail: dict) -> IOQuant:
    scale, zp = detail.get("quantization", (0.0, 0))
    return IOQuant(np.dtype(detail["dtype"]), float(scale), int(zp), tuple(detail["shape"]))


def litert_interpreter(model_bytes: bytes, *, preserve_all_tensors: bool = False):
    """LiteRT's interpreter, EDGESLIM_THREADS threads. ``preserve_all_tensors``: keep every
    intermediate tensor readable after ``invoke`` (which also leaves out the default XNNPACK
    delegate, whose fused kernels would hide them): for per-layer debugging."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    threads = int(os.environ.get("EDGESLIM_THREADS", "0")) or None
    if not preserve_all_tensors:
        return Interpreter(model_content=model_bytes, num_threads=threads)
    with warnings.catch_warnings():  # "intended for debugging purposes only": that is the purpose
        warnings.simplefilter("ignore", UserWarning)
        return Interpreter(model_content=model_bytes, num_threads=threads,
                           experimental_preserve_all_tensors=True)


def io_details(model_bytes: bytes) -> tuple[IOQuant, IOQuant]:
    interp = litert_interpreter(model_bytes)
    return _io(interp.get_input_details()[0]), _io(interp.get_output_details()[0])


def run_litert(model_bytes: bytes, x: np.ndarray, *, batch: int = 64) -> np.ndarray:
    """Run the model on float inputs ``x`` (quantized here when the model's input
    is int8) and return float outputs (dequantized)."""
    interp = litert_interpreter(model_bytes)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    qin, qout = _io(inp), _io(out)
    results = []
    current = None
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        if current != len(chunk):
            interp.resize_tensor_input(inp["index"], [len(chunk), *qin.shape[1:]])
            with native_stderr_to([]):  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                interp.allocate_tensors()
            current = len(chunk)
        interp.set_tensor(inp["index"], qin.quantize(chunk))
        interp.invoke()
        results.append(qout.dequantize(interp.get_tensor(out["index"]).copy()))
    return np.concatenate(results, axis=0)


def run_micro(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Float in, float out through TFLite Micro's reference kernels (child process)."""
    from edgeslim import micro

    qin, qout = io_details(model_bytes)
    q = micro.run(model_bytes, qin.quantize(x))
    return qout.dequantize(q)
