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
