"""Helpers for the code generator's tests: the TFLite Micro reference, host builds of
generated libraries, and tiny int8 models made with the TFLite converter."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
GOLDENS = HERE / "goldens"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O0", "-fsanitize=undefined",
          "-fno-sanitize-recover=undefined"]


def tflm_run(model_bytes: bytes, inputs: np.ndarray) -> np.ndarray:
    """Reference outputs from the tflite-micro interpreter, one invoke per input."""
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=4 * 1024 * 1024)
    outs = []
    for x in inputs:
        interp.set_input(x[None] if x.ndim < len(interp.get_input_details(0)["shape"]) else x, 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)).copy())
    return np.stack(outs)


def _ctypes_of(result) -> tuple[str, str]:
    text = result.header.read_text()
    import re

    m = re.search(r"_invoke\(const (\w+) \*input, (\w+) \*output\)", text)
    return m.group(1), m.group(2)


def build_host(results, workdir: Path, *, extra_flags=()) -> Path:
    """Compile generated libraries (CodegenResult list) with a driver into one binary."""
    workdir.mkdir(parents=True, exist_ok=True)
    models = []
    for r in results:
        ic, oc = _ctypes_of(r)
        models.append(dict(name=r.name, NAME=r.name.upper(), in_ctype=ic, out_ctype=oc))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE)), trim_blocks=True,
                             lstrip_blocks=True)
    runner = workdir / "runner.c"
    runner.write_text(env.get_template("host_runner.c.j2").render(models=models))
    exe = workdir / "runner"
    incs = sorted({f"-I{r.header.parent}" for r in results})
    cmd = ["gcc", *CFLAGS, *extra_flags, *incs, str(runner), *[str(r.source) for r in results],
           "-o", str(exe), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


def run_host(exe: Path, index: int, inputs: np.ndarray, out_dtype, out_shape) -> np.ndarray:
    data = np.ascontiguousarray(inputs).tobytes()
    proc = subprocess.run([str(exe), str(index), str(len(inputs))], input=data,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode()[-2000:])
    out = np.frombuffer(proc.stdout, dtype=out_dtype)
    return out.reshape((len(inputs),) + tuple(out_shape))


def random_inputs(model_bytes: bytes, n: int, seed: int) -> np.ndarray:
    """Inputs over the whole int8 range (saturation included), or N(0, 2) floats."""
    from edgeslim.modelgraph import read as read_graph

    g = read_graph(model_bytes)
    t = g.tensors[g.inputs[0]]
    rng = np.random.default_rng(seed)
    if t.dtype == "INT8":
        return rng.integers(-128, 128, size=(n,) + t.shape, dtype=np.int8)
    return rng.normal(0, 2, size=(n,) + t.shape).astype(np.float32)


@pytest.fixture(scope="session")
def chost():
    """The helpers above, for test modules (importlib mode cannot import conftest)."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is required for the code generator's host tests")
    import types

    return types.SimpleNamespace(build=build_host, run=run_host, tflm=tflm_run,
                                 inputs=random_inputs, goldens=GOLDENS, cflags=CFLAGS)


def build_mux_firmware(results, work: Path, board: str):
    """One test firmware running every generated library of ``results`` (the first input
    byte picks the library), so many models cost one build and one QEMU start.
    Returns (firmware, input bytes per row, output bytes per row)."""
    from edgeslim.harness import firmware

    lib_dir = work / "mux"
    lib_dir.mkdir(parents=True, exist_ok=True)
    in_bytes = 1 + max(r.input_bytes for r in results)
    out_bytes = max(r.output_bytes for r in results)
    (lib_dir / "mux.h").write_text(
        "#include <stdint.h>\n"
        f"#define MUX_INPUT_BYTES {in_bytes}\n#define MUX_OUTPUT_BYTES {out_bytes}\n"
        "int mux_invoke(const int8_t *input, int8_t *output);\n")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE)), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    (lib_dir / "mux.c").write_text(
        env.get_template("mux_library.c.j2").render(models=[r.name for r in results]))
    fw = firmware.build_test_firmware(
        [lib_dir / "mux.c", *[r.source for r in results]], lib_dir / "mux.h", work / f"fw-{board}",
        name="mux", input_bytes=in_bytes, output_bytes=out_bytes,
        arena_bytes=max(r.arena_size for r in results), board=board,
        library_flags=sorted({f"-I{r.header.parent}" for r in results}))
    return fw, in_bytes, out_bytes


@pytest.fixture(scope="session")
def mux_firmware():
    """:func:`build_mux_firmware`, for tests that run many libraries on one emulated core."""
    return build_mux_firmware

