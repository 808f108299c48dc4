"""The `targets`, `check` and `flash` commands, through the real CLI group."""

from __future__ import annotations

import json
import subprocess

from click.testing import CliRunner

from edgeslim.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, list(args), obj={"debug": False})


def test_targets_lists_all_with_aliases():
    r = invoke("targets")
    assert r.exit_code == 0, r.output
    for name in ("cortex-m0plus", "cortex-m55", "rpi-zero2w", "rpi5", "android-gpu"):
        assert name in r.output
    assert "rpi (= rpi4)" in r.output and "cortex-m (= cortex-m4)" in r.output


def test_targets_show_one():
    r = invoke("targets", "show", "cortex-m4", "--ram", "192k")
    assert r.exit_code == 0, r.output
    assert "RAM 192.0 KiB" in r.output and "inherits: cortex-m-base" in r.output
    assert "default recipe: channels" in r.output and "ratio = 0.5" in r.output
    assert "AddConv2D" not in r.output
    bad = invoke("targets", "show", "nope")
    assert bad.exit_code == 2 and "unknown target 'nope'" in bad.output


def test_check_ok_and_json(tmp_path, tiny_cnn_bytes):
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_cnn_bytes)
    r = invoke("check", str(model), "--target", "cortex-m4", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["target"] == "cortex-m4" and d["arena_bytes"] >= d["arena_measured_bytes"] > 0


def test_check_rejects_unsupported_op(tmp_path, gelu_bytes):
    model = tmp_path / "g.tflite"
    model.write_bytes(gelu_bytes)
    r = invoke("check", str(model), "-t", "cortex-m33")
    assert r.exit_code == 2 and "GELU" in r.output and "act_gelu" in r.output


def test_flash_mcu_needs_a_destination(tmp_path):
    (tmp_path / "tflm").mkdir()
    r = invoke("flash", str(tmp_path))
    assert r.exit_code == 2 and "--drive" in r.output and "Nothing was flashed" in r.output


def test_flash_mcu_without_tflm_tree_is_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("TFLM_DIR", raising=False)
    (tmp_path / "tflm").mkdir()
    (tmp_path / "tflm" / "Makefile").write_text("all:\n")
    drive = tmp_path / "drive"
    drive.mkdir()
    r = invoke("flash", str(tmp_path), "--drive", str(drive))
    assert r.exit_code == 2 and "TensorFlow Lite Micro tree" in r.output
    assert list(drive.iterdir()) == []


def test_flash_copies_binary_to_mbed_drive(tmp_path):
    """A temporary directory stands in for the board's mounted mbed (DAPLink) drive."""
    (tmp_path / "bundle" / "tflm").mkdir(parents=True)
    # The smallest image `flash` accepts as firmware: a vector table (initial SP in SRAM, a
    # Thumb reset address) and one byte of code, compiled and objcopy'd by the real toolchain.
    src = tmp_path / "vectors.c"
    src.write_text("const unsigned int g_vectors[2] = {0x20001000u, 0x00000009u};\n"
                   "const unsigned char g_code[1] = {5};\n")
    obj, binary = tmp_path / "m.o", tmp_path / "firmware.bin"
    subprocess.run(["arm-none-eabi-gcc", "-mthumb", "-mcpu=cortex-m4", "-c", str(src), "-o", str(obj)], check=True)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".rodata", str(obj), str(binary)], check=True)
    drive = tmp_path / "DAPLINK"
    drive.mkdir()
    r = invoke("flash", str(tmp_path / "bundle"), "--drive", str(drive), "--binary", str(binary))
    assert r.exit_code == 0, r.output
    assert (drive / "firmware.bin").read_bytes() == binary.read_bytes()
    assert binary.read_bytes()[:9] == bytes.fromhex("00100020" "09000000" "05")
    assert f"copied 9 bytes to {drive / 'firmware.bin'}" in r.output
    missing = invoke("flash", str(tmp_path / "bundle"), "--drive", str(tmp_path / "nodrive"), "--binary", str(binary))
    assert missing.exit_code == 2 and "not mounted" in missing.output


def test_flash_rpi_unreachable_host(tmp_path):
    (tmp_path / "agent.py").write_text("")
    r = invoke("flash", str(tmp_path), "--host", "nobody@127.0.0.1", "--port", "1")
    assert r.exit_code == 2 and "127.0.0.1" in r.output and "Nothing was deployed" in r.output
    assert "copied" not in r.output


def test_flash_android_without_device(tmp_path, monkeypatch):
    assets = tmp_path / "android" / "edgeslim-model" / "src" / "main" / "assets"
    assets.mkdir(parents=True)
    (assets / "model.tflite").write_bytes(b"x")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no adb on PATH
    r = invoke("flash", str(tmp_path))
    assert r.exit_code == 2 and "adb is not installed" in r.output and "pushed" not in r.output


def test_flash_not_a_bundle(tmp_path):
    r = invoke("flash", str(tmp_path))
    assert r.exit_code == 2 and "not an edgeslim bundle" in r.output


def test_check_with_a_users_board_file(tmp_path, tiny_cnn_bytes):
    """A board file outside the package, inheriting a shipped profile, with a tiny RAM."""
    board = tmp_path / "boards" / "tiny_board.toml"
    board.parent.mkdir()
    board.write_text('inherit = "cortex-m0plus"\ndescription = "2 KiB of arena"\n'
                     '[memory]\nram = "8k"\n')
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_cnn_bytes)
    r = invoke("check", str(model), "--target", str(board))
    assert r.exit_code == 2 and "tiny_board's RAM" in r.output and "2048 B available" in r.output
    ok = invoke("check", str(model), "--target", str(board), "--ram", "64k")
    assert ok.exit_code == 0, ok.output
    assert "fits tiny_board" in ok.output
