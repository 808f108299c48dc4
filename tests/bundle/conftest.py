"""Fixtures shared by the bundle tests."""

from __future__ import annotations

import subprocess
import venv

import pytest


@pytest.fixture(scope="session")
def tflite_runtime_python(tmp_path_factory):
    """A separate venv with tflite-runtime 2.14 and numpy < 2 (as on older Pi OS
    images), created once per test session from PyPI; pip's cache makes it fast."""
    env_dir = tmp_path_factory.mktemp("tflite_runtime_venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "tflite-runtime==2.14.0", "numpy<2"], check=True, timeout=600)
    return py


def _litert_outputs(model_bytes, x):
    """LiteRT on the host, one sample at a time: the raw int8 outputs."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    ip = Interpreter(model_content=model_bytes)
    ip.allocate_tensors()
    i, o = ip.get_input_details()[0]["index"], ip.get_output_details()[0]["index"]
    out = []
    for n in range(len(x)):
        ip.set_tensor(i, x[n:n + 1])
        ip.invoke()
        out.append(ip.get_tensor(o)[0].copy())
    return np.stack(out)


@pytest.fixture(scope="session")
def litert_outputs():
    """``litert_outputs(model_bytes, x)``: the host interpreter's raw int8 outputs for the
    batch ``x``, run one sample at a time (the reference the Pi agent must equal)."""
    return _litert_outputs
