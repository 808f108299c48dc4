"""TensorFlow Lite Micro runs, always in a child process.

The `tflite-micro` Python interpreter is the host (x86-64) build of TFLM. It
kills its whole process (SIGSEGV/SIGABRT, no Python exception) on some
too-small arenas and when its int8 SOFTMAX meets a degenerate quantization
scale, so every call here runs it in a child process (``python -m
edgeslim.micro``) and turns a crash into an error that names the likely cause.

- :func:`measure_arena` finds the smallest tensor arena (16-byte steps) with
  which the model both allocates and invokes.
- :func:`run` runs a batch of int8 inputs through TFLM and returns the outputs:
  the bit-exact reference for the generated C and the TFLM accuracy figure.

This module imports only numpy (and tflite_micro in the child): no TensorFlow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeslim.errors import DeviceError, TargetError

#: Arena sizes are searched in steps of this many bytes (TFLM aligns to 16).
ARENA_STEP = 16
#: The largest arena the search tries before giving up.
MAX_ARENA = 64 * 1024 * 1024
_FIRST_GUESS = 64 * 1024


def measure_arena(model_bytes: bytes, *, max_arena: int = MAX_ARENA, timeout: float = 300.0) -> int:
    """The minimum arena (bytes, a multiple of 16) with which TFLM allocates the
    model's tensors AND invokes it on zero inputs.

    Measured with the tflite-micro Python interpreter, a 64-bit host build: a
    32-bit Cortex-M build needs slightly less (smaller pointers and structs).
    Targets add their stated margin on top (see edgeslim.targets).
    """
    with tempfile.TemporaryDirectory(prefix="edgeslim-micro-") as tmp:
        model_path = Path(tmp) / "model.tflite"
        model_path.write_bytes(model_bytes)
        prober = _Prober(model_path, timeout=timeout)
        try:
            # Grow until one size works; a crash or failure there is "too small".
            hi = _FIRST_GUESS
            while True:
                ok, detail = prober.try_size(hi)
                if ok:
                    break
                if hi >= max_arena:
                    raise _no_arena_error(max_arena, detail, prober)
                hi = min(hi * 4, max_arena)
            lo = 0  # known to fail (or untried and below any real need)
            while hi - lo > ARENA_STEP:
                mid = (lo + hi) // 2 // ARENA_STEP * ARENA_STEP
                if mid <= lo:
                    break
                ok, _ = prober.try_size(mid)
                if ok:
                    hi = mid
                else:
                    lo = mid
            return hi
        finally:
            prober.close()


def run(
    model_bytes: bytes,
    inputs: np.ndarray | list[np.ndarray],
    arena_size: int | None = None,
    *,
    output_index: int = 0,
    timeout: float = 600.0,
) -> np.ndarray:
    """Run a batch through TFLite Micro (child process); returns output
    ``output_index`` for every sample, stacked along a new first axis
    (shape ``(batch,) + output_shape[1:]``).

    ``inputs`` is one array ``(batch, ...)`` for a single-input model, or a list
    of such arrays, one per model input, in the model's input order. Values are
    passed as they are (int8 for a fully-integer model); no quantization here.
    """
    arrays = [np.asarray(a) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    if not arrays or any(a.ndim < 1 for a in arrays):
        raise TargetError(
            "TFLite Micro run: inputs must be a batch array (batch, ...) or a list of them",
            hint="Pass e.g. x_test[:100] quantized to the model's input type.",
        )
    batch = arrays[0].shape[0]
    if any(a.shape[0] != batch for a in arrays):
        raise TargetError("TFLite Micro run: the input arrays have different batch sizes",
                          hint="Give every model input the same number of samples.")
    if arena_size is None:
        arena_size = max(4 * 1024 * 1024, 16 * len(model_bytes))
    with tempfile.TemporaryDirectory(prefix="edgeslim-micro-") as tmp:
        tmp_path = Path(tmp)
        model_path = tmp_path / "model.tflite"
        model_path.write_bytes(model_bytes)
        in_path = tmp_path / "inputs.npz"
        np.savez(in_path, *arrays)
        out_path = tmp_path / "outputs.npy"
        err_path = tmp_path / "stderr.txt"
        cmd = [sys.executable, "-m", "edgeslim.micro", "run", str(model_path), str(in_path),
               str(out_path), str(int(arena_size)), str(int(output_index))]
        with open(err_path, "wb") as err:
            try:
                proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                      env=_child_env(), timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise DeviceError(
                    f"TFLite Micro run did not finish within {timeout:.0f} s",
                    hint="Run fewer samples, or check the model in `edgeslim check`.",
                ) from exc
        stderr = _tail(err_path)
        if proc.returncode != 0:
            raise _crash_error("running the model", proc.returncode, stderr, arena_size)
        return np.load(out_path)


# --------------------------------------------------------------------------- parent side


class _Prober:
    """A child process that tries arena sizes sent on its stdin, one a line,
    answering ``ok N`` or ``fail N``; if it dies the size counts as failed and a
    new child is started for the next size."""

    def __init__(self, model_path: Path, *, timeout: float):
        self.model_path = model_path
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.crashes: list[tuple[int, int]] = []  # (size, returncode)
        self.err_path = model_path.with_suffix(".stderr")
        self._err = open(self.err_path, "wb")

    def _start(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "edgeslim.micro", "probe", str(self.model_path)]
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=self._err, env=_child_env(), text=True, bufsize=1)

    def try_size(self, size: int) -> tuple[bool, str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        try:
            self.proc.stdin.write(f"{size}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.proc.stdout.readline()
        if not line:  # the child died on this size
            try:
                rc = self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
            self.crashes.append((size, rc))
            self.proc = None
            return False, f"crashed ({_describe_rc(rc)})"
        word, _, rest = line.strip().partition(" ")
        return word == "ok", rest

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._err.close()


def _child_env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _describe_rc(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def _tail(path: Path, n: int = 600) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return text[-n:].strip()


def _crash_error(what: str, rc: int, stderr: str, arena_size: int) -> DeviceError:
    if rc < 0:
        cause = (
            f"The TFLite Micro interpreter crashed while {what} ({_describe_rc(rc)}), with an "
            f"arena of {arena_size} bytes. Possible causes: an arena too small for the model, "
            "a malformed model (a tensor, buffer or opcode index out of range, a NaN scale or a "
            "zero point outside its type), or a degenerate quantization scale (< 1e-6, e.g. from "
            "untrained weights) that makes TFLM's int8 SOFTMAX abort."
        )
    else:
        cause = f"TFLite Micro failed while {what} ({_describe_rc(rc)}): {stderr or 'no message'}"
    return DeviceError(
        cause,
        hint="Run `edgeslim check model.tflite --target cortex-m4`: it verifies the model's "
             "indices, scales and zero points and names the tensor or op at fault.",
    )


def _no_arena_error(max_arena: int, detail: str, prober: _Prober) -> DeviceError:
    msg = (f"TFLite Micro could not allocate and invoke the model with any arena up to "
           f"{max_arena} bytes (last try: {detail}).")
    if prober.crashes:
        msg += (" The interpreter crashed even with a large arena, so the arena size is not the "
                "cause: the model is malformed (an index out of range, a NaN scale, a zero point "
                "outside its type), has a degenerate quantization scale (int8 SOFTMAX aborts on "
                "scales ~1e-8), or uses an op TFLM cannot run. `edgeslim check` names which.")
    lines: dict[str, None] = {}
    for line in _tail(prober.err_path, 4000).splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "^")):
            lines.setdefault(line, None)
    if lines:
        msg += " TFLM said: " + " | ".join(list(lines)[-4:])
    return DeviceError(msg, hint="Run `edgeslim check` on the model to see which tensor or op "
                                 "is at fault; a model converted from untrained weights often is.")


# --------------------------------------------------------------------------- child side


def _child_interpreter(model_bytes: bytes, arena: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model_bytes, arena_size=arena)


def _n_inputs(model_bytes: bytes) -> int:
    from edgeslim import modelgraph

    return len(modelgraph.read(model_bytes).inputs)


def _child_probe(model_path: str) -> int:
    model_bytes = Path(model_path).read_bytes()
    n_inputs = _n_inputs(model_bytes)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        size = int(line)
        try:
            ip = _child_interpreter(model_bytes, size)
            for i in range(n_inputs):
                d = ip.get_input_details(i)
                ip.set_input(np.zeros(d["shape"], dtype=d["dtype"]), i)
            ip.invoke()
            del ip
            answer = f"ok {size}"
        except (RuntimeError, ValueError) as exc:
            answer = f"fail {size} {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
    return 0


def _child_run(model_path: str, in_path: str, out_path: str, arena: str, output_index: str) -> int:
    model_bytes = Path(model_path).read_bytes()
    with np.load(in_path) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    ip = _child_interpreter(model_bytes, int(arena))
    details = [ip.get_input_details(i) for i in range(len(arrays))]
    outs = []
    for n in range(arrays[0].shape[0]):
        for i, (a, d) in enumerate(zip(arrays, details)):
            ip.set_input(a[n:n + 1].astype(d["dtype"], copy=False).reshape(d["shape"]), i)
        ip.invoke()
        outs.append(np.array(ip.get_output(int(output_index)))[0])
    np.save(out_path, np.stack(outs) if outs else np.zeros((0,)))
    return 0


def _main(argv: list[str]) -> int:
    if argv[:1] == ["probe"] and len(argv) == 2:
        return _child_probe(argv[1])
    if argv[:1] == ["run"] and len(argv) == 6:
        return _child_run(*argv[1:])
    sys.stderr.write("usage: python -m edgeslim.micro probe MODEL | run MODEL IN OUT ARENA IDX\n")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
