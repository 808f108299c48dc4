"""Shared set-up of the search tests: a tiny search space, and a two-node Ray cluster on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_env(token_path: str) -> dict:
    env = dict(os.environ)
    # Ray >= 2.59 authenticates a cluster's nodes with a token: one of the test's own, in its
    # temp dir, for both nodes and the driver (never the user's ~/.ray/auth_token).
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token_path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _ports() -> list[str]:
    return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--metrics-export-port", str(free_port()), "--dashboard-agent-listen-port",
            str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port())]


def _small() -> list[str]:
    return ["--object-store-memory", str(200 * 1024 * 1024), "--disable-usage-stats"]


def _ours(temp_dir: str) -> list:
    """The processes of the cluster this fixture started (their command lines name its
    own temp dir): the only ones the teardown ends."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if temp_dir in cmd:
            found.append(p)
            try:
                found.extend(p.children(recursive=True))
            except psutil.Error:
                pass
    return found


@pytest.fixture(scope="module")
def two_node_ray():
    """``ray start --head`` + one worker node, 1 CPU each, on 127.0.0.1 with free ports;
    yields the head's address; ends exactly the processes it started."""
    import psutil

    if not RAY.exists():
        pytest.fail(f"{RAY} is missing: install the search extra (pip install -e .[search])")
    temp_dir = tempfile.mkdtemp(prefix="esray", dir="/tmp")  # short: Ray's socket paths
    port = free_port()
    import secrets

    token_path = os.path.join(temp_dir, "auth_token")
    with open(token_path, "w") as f:
        f.write(secrets.token_hex(32))
    env = _ray_env(token_path)
    head = [str(RAY), "start", "--head", "--num-cpus", "1", "--num-gpus", "0",
            "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false",
            "--temp-dir", temp_dir, "--ray-client-server-port", str(free_port()),
            "--min-worker-port", "0", "--max-worker-port", "0", *_small(), *_ports()]
    worker = [str(RAY), "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
              "--num-gpus", "0", "--node-ip-address", "127.0.0.1", "--min-worker-port", "0",
              "--max-worker-port", "0", *_small(), *_ports()]
    started = []
    try:
        for cmd in (head, worker):
            proc = subprocess.run(cmd, env=env, timeout=120, capture_output=True, text=True)
            started = _ours(temp_dir)
            if proc.returncode != 0:
                pytest.fail(f"{' '.join(cmd[:3])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            started = _ours(temp_dir)
        yield {"address": f"127.0.0.1:{port}", "temp_dir": temp_dir,
               "env": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}}
    finally:
        procs = {p.pid: p for p in started + _ours(temp_dir)}
        for p in procs.values():
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(list(procs.values()), timeout=20)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        time.sleep(0.5)
        shutil.rmtree(temp_dir, ignore_errors=True)
