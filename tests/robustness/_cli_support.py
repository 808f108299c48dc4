"""Shared by the tests/robustness/test_cli_*, test_flash_*, test_output_* and test_check_* files:
run the real CLI, checksum the user's files, and assert a clean failure.

Every bad input these tests try is listed (by its test's id) in the pytest output; a clean
failure is exit code 2, an ``error:`` paragraph naming the culprit, no traceback, and every
user file byte-identical before and after."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from edgeslim.cli import cli

REPO = Path(__file__).resolve().parents[2]


def run(args, *, cwd: Path | None = None):
    """`edgeslim ARGS` in this process (as main() runs it; --debug may stand anywhere)."""
    args = [str(a) for a in args]
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, args, obj={"debug": debug}, catch_exceptions=True)
    finally:
        os.chdir(old)


def run_as(uid: int, args, *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m edgeslim.cli ARGS` in a child process as another user (setpriv), for
    permission tests that root would walk through."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(cwd)}
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
           sys.executable, "-m", "edgeslim.cli", *[str(a) for a in args]]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def snapshot(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (and the roots themselves when files), by path."""
    out = {}
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_clean_failure(result, *words, output: str | None = None, code: int = 2):
    """Exit ``code``, an error paragraph holding every one of ``words``, no traceback."""
    text = result.output if output is None else output
    exit_code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert exit_code == code, (exit_code, text)
    assert "Traceback" not in text, text
    assert "error:" in text.lower(), text
    for w in words:
        assert w in text, (w, text)
