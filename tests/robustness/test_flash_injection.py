"""Issue 13, point 2: nothing a user passes to `flash` becomes an option or a command.

Hosts, users, remote folders, adb serials and make variables are validated before any
tool runs; ssh, scp, rsync and adb get a `--` before their operands. Each hostile value is
run through the real CLI with the working directory in a fresh folder: the `touch pwned`
it smuggles must never create that file. The only network address used is 127.0.0.1, on a
free port nothing listens on."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest

from robustness._cli_support import assert_clean_failure, run, snapshot


def _rpi_bundle(folder):
    folder.mkdir()
    (folder / "agent.py").write_text("# the Pi agent\n")
    (folder / "model.tflite").write_bytes(b"model")
    (folder / "manifest.json").write_text(json.dumps(
        {"format": "edgeslim-bundle/1", "target": {"kind": "rpi"}, "tool": {"name": "edgeslim"},
         "files": []}))
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HOSTILE_HOSTS = [
    "-oProxyCommand=touch pwned",
    "-oProxyCommand=touch${IFS}pwned",
    "-oProxyCommand=sh -c 'touch pwned'",
    "-F/dev/null",
    "pi@-oProxyCommand=touch pwned",
    "-opi@127.0.0.1",
    "127.0.0.1;touch pwned",
    "127.0.0.1 touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "pi;touch pwned@127.0.0.1",
    "pi@127.0.0.1:/tmp",
    "pi@",
    "",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_hostile_host_is_refused_before_ssh_runs(tmp_path, host):
    bundle = _rpi_bundle(tmp_path / "bundle")
    before = snapshot(tmp_path)
    r = run(["flash", bundle, "--host", host, "--port", str(_free_port())], cwd=tmp_path)
    assert_clean_failure(r, "--host", "Nothing was copied")
    assert not (tmp_path / "pwned").exists()
    assert snapshot(tmp_path) == before


HOSTILE_DESTS = [
    "-oProxyCommand=touch pwned",
    "--rsync-path=touch pwned",
    "x;touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "a b",
    "x|touch pwned",
    "x\ntouch pwned",
    "~/x",
    "//x",
]


@pytest.mark.parametrize("dest", HOSTILE_DESTS)
def test_hostile_remote_folder_is_refused(tmp_path, dest):
    bundle = _rpi_bundle(tmp_path / "bundle")
    before = snapshot(tmp_path)
    r = run(["flash", bundle, "--host", "nobody@127.0.0.1", "--port", str(_free_port()), "--dest", dest],
            cwd=tmp_path)
    assert_clean_failure(r, "--dest", "Nothing was copied")
    assert not (tmp_path / "pwned").exists()
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs an OpenSSH client")
def test_valid_host_reaches_the_real_ssh_with_a_separator(tmp_path):
    """A valid host on a port nothing listens on: the real ssh parses our argument list
    (options, `--`, host, remote command) and fails to connect, a DeviceError with its words."""
    bundle = _rpi_bundle(tmp_path / "bundle-dir")
    port = _free_port()
    r = run(["flash", bundle, "--host", "nobody@127.0.0.1", "--port", str(port), "--dest", "edgeslim/b-1"],
            cwd=tmp_path)
    assert_clean_failure(r, "connecting to nobody@127.0.0.1", "Nothing was deployed")
    assert "Connection refused" in r.output or "connect to host" in r.output, r.output
    assert "usage: ssh" not in r.output.lower()


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs an OpenSSH client")
def test_the_issue_command_would_have_run_without_the_check(tmp_path):
    """The defect is real: the same host given to the real ssh as the old code did (no
    validation, no `--`) runs the ProxyCommand. With the check, the CLI above never lets it
    through. (ssh spends at most ConnectTimeout on 127.0.0.1; nothing leaves this machine.)"""
    subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-p", str(_free_port()),
                    "-oProxyCommand=touch pwned", "mkdir", "-p", "x"],
                   cwd=tmp_path, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert (tmp_path / "pwned").exists()
    # ... and with a `--` before the host, ssh takes it as a host name, not an option
    (tmp_path / "pwned").unlink()
    subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-p", str(_free_port()),
                    "--", "-oProxyCommand=touch pwned", "mkdir", "-p", "x"],
                   cwd=tmp_path, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("serial", ["-e", "-s x", "emulator-5554;touch pwned", "$(touch pwned)", ""])
def test_hostile_adb_serial_is_refused(tmp_path, serial):
    assets = tmp_path / "b" / "android" / "edgeslim-model" / "src" / "main" / "assets"
    assets.mkdir(parents=True)
    (assets / "model.tflite").write_bytes(b"model")
    before = snapshot(tmp_path)
    r = run(["flash", tmp_path / "b", "--serial", serial], cwd=tmp_path)
    assert_clean_failure(r, "--serial", "Nothing was pushed")
    assert not (tmp_path / "pwned").exists()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("make_arg", ["--eval=$(shell touch pwned)", "-f/dev/null", "all", "x y=1"])
def test_make_arg_must_be_a_variable(tmp_path, make_arg):
    bundle = tmp_path / "b"
    (bundle / "tflm").mkdir(parents=True)
    (bundle / "tflm" / "Makefile").write_text("all:\n\ttouch pwned\n")
    drive = tmp_path / "DAPLINK"
    drive.mkdir()
    before = snapshot(tmp_path)
    r = run(["flash", bundle, "--drive", drive, "--tflm-dir", tmp_path, "--make-arg", make_arg], cwd=tmp_path)
    assert_clean_failure(r, "--make-arg", "NAME=value")
    assert not (tmp_path / "pwned").exists() and not (bundle / "tflm" / "pwned").exists()
    assert snapshot(tmp_path) == before


def test_validators_accept_ordinary_values():
    """The checks refuse only what is wrong: ordinary hosts, folders and serials pass."""
    from edgeslim.bundle import deploy

    assert deploy.validate_host("pi@raspberrypi.local") == ("pi", "raspberrypi.local")
    assert deploy.validate_host("192.168.1.20") == (None, "192.168.1.20")
    assert deploy.validate_host("ubuntu@[fe80::1]") == ("ubuntu", "[fe80::1]")
    assert deploy.validate_host("my-pi4") == (None, "my-pi4")
    assert deploy.validate_remote_path("edgeslim/digits_cnn-v2.1") == "edgeslim/digits_cnn-v2.1"
    assert deploy.validate_remote_path("/home/pi/models") == "/home/pi/models"
    assert deploy.validate_serial("emulator-5554") == "emulator-5554"
    assert deploy.validate_serial("192.168.1.5:5555") == "192.168.1.5:5555"
    assert deploy.validate_make_args(["LDSCRIPT=board.ld", "OPT=-O2"]) == ["LDSCRIPT=board.ld", "OPT=-O2"]
