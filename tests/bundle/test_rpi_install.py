"""The Raspberry Pi bundle's install.sh, run for real on this machine (x86, no systemd
running, as in a chroot): a complete install with --service installs and reports the unit
for the next boot; an unreachable package index is reported as such (not as a missing
wheel); a Python without venv support gets the apt command."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgeslim.bundle import write_target_files
from edgeslim.bundle.manifest import write_manifest
from edgeslim.targets import load_target


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_cnn_bytes):
    d = tmp_path_factory.mktemp("rpi_install")
    (d / "model.tflite").write_bytes(tiny_cnn_bytes)
    target = load_target("rpi4")
    write_target_files(d, target, model_bytes=tiny_cnn_bytes, fp16_bytes=None, model_name="tiny cnn",
                       labels=["zero", "one", "two"], check=None)
    write_manifest(d, target=target, model_path=d / "model.tflite", extra={})
    return d


def _install(bundle, tmp_path, *args, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    e.update(INSTALL_DIR=str(tmp_path / "inst"), SYSTEMD_UNIT_DIR=str(tmp_path / "units"),
             PYTHON=env.pop("PYTHON", shutil.which("python3") or sys.executable), **env)
    return subprocess.run(["sh", str(bundle / "install.sh"), *args], capture_output=True, text=True,
                          env=e, timeout=900)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(900)
def test_service_install_without_systemd_installs_the_unit_for_next_boot(bundle, tmp_path):
    assert not Path("/run/systemd/system").is_dir(), "this test needs a machine without a running systemd"
    r = _install(bundle, tmp_path, "--service")
    assert r.returncode == 0, r.stdout + r.stderr
    unit = tmp_path / "units" / "edgeslim-tiny_cnn.service"
    text = unit.read_text()
    assert f"ExecStart={tmp_path / 'inst'}/venv/bin/python {tmp_path / 'inst'}/agent.py watch" in text
    assert "@INSTALL_DIR@" not in text and "@USER@" not in text
    assert "systemd is not running here" in r.stdout and "next boot" in r.stdout
    assert '"manifest_match": true' in r.stdout  # agent.py info ran in the new venv
    for d in ("inbox", "outbox", "rejected"):
        assert (tmp_path / "inst" / d).is_dir()


@pytest.mark.timeout(300)
def test_unreachable_index_is_reported_as_a_network_failure(bundle, tmp_path):
    port = _closed_port()
    r = _install(bundle, tmp_path, PIP_INDEX_URL=f"http://127.0.0.1:{port}/simple", PIP_RETRIES="0",
                 PIP_TIMEOUT="3", PIP_NO_CACHE_DIR="1", PIP_EXTRA_INDEX_URL="", PIP_FIND_LINKS="",
                 PIP_CONFIG_FILE=os.devnull)
    assert r.returncode != 0
    assert "could not reach the package index" in r.stderr, r.stdout + r.stderr
    assert "tflite-runtime instead" not in r.stdout + r.stderr


def test_python_without_venv_gets_the_apt_command(bundle, tmp_path):
    # STATED STUB: Debian's python3 without the python3-venv package, which no machine here
    # has (its python3 has ensurepip): it fails `import ensurepip` as that python3 does.
    stub = tmp_path / "python3"
    stub.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ensurepip'\" >&2\nexit 1\n")
    stub.chmod(0o755)
    r = _install(bundle, tmp_path, PYTHON=str(stub))
    assert r.returncode != 0
    assert "python3-venv is missing" in r.stderr and "apt install python3-venv" in r.stderr
    assert not (tmp_path / "inst").exists()  # checked before anything is copied


def test_unknown_runtime_choice_is_refused_before_anything_happens(bundle, tmp_path):
    r = _install(bundle, tmp_path, EDGESLIM_RUNTIME="tensorflow")
    assert r.returncode != 0
    assert "EDGESLIM_RUNTIME=tensorflow: use ai-edge-litert or tflite-runtime" in r.stderr
    assert not (tmp_path / "inst").exists()
