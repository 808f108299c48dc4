"""Issue 13, point 8: the smaller cases. Each bad input through the real CLI: exit code 2,
a message naming what is wrong, no traceback, and the user's files byte-identical."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import numpy as np
import pytest

from robustness._cli_support import assert_clean_failure, run, snapshot

WORK_MARKERS = ("[baseline]", "[guard]", "[example] training")


def _no_work(output: str) -> None:
    for marker in WORK_MARKERS:
        assert marker not in output, (marker, output)


def _npz(path, n=60, *, y=None, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n) if y is None else y
    np.savez(path, x_train=rng.random((len(y), 8, 8, 1), dtype=np.float32), y_train=y)
    return path


# --------------------------------------------------------------------------- --seed


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999", "4294967296", "1.5"])
@pytest.mark.parametrize("command", ["build", "example", "distill"])
def test_seed_out_of_range(tmp_path, digits_keras3_path, digits_npz, seed, command):
    args = {"build": ["build", digits_keras3_path, "--data", digits_npz, "-o", tmp_path / "o"],
            "example": ["example", "-o", tmp_path / "o"],
            "distill": ["distill", "--teacher", digits_keras3_path, "--data", digits_npz, "--width", "0.5",
                        "-o", tmp_path / "s.keras"]}[command]
    r = run(args + ["--seed", seed])
    assert_clean_failure(r, "--seed", seed)
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.keras").exists()


def test_seed_out_of_range_in_a_recipe(tmp_path, digits_keras3_path, digits_npz):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[build]\nseed = -1\n")
    r = run(["build", digits_keras3_path, "--data", digits_npz, "--recipe", recipe, "-o", tmp_path / "o"])
    assert_clean_failure(r, "seed", "-1")
    _no_work(r.output)


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("label", [2**40, 2**20, 2**62])
def test_huge_label_is_refused_without_allocating(tmp_path, digits_keras3_path, label):
    y = np.arange(60) % 10
    y[5] = label
    data = _npz(tmp_path / "big.npz", y=y)
    before = snapshot(tmp_path)
    r = run(["build", digits_keras3_path, "--data", data, "-o", tmp_path / "o"])
    assert_clean_failure(r, str(label), "not a class index")
    _no_work(r.output)
    assert snapshot(tmp_path) == before


def test_three_samples_are_refused(tmp_path, digits_keras3_path):
    data = _npz(tmp_path / "three.npz", y=np.array([0, 1, 2]))
    r = run(["build", digits_keras3_path, "--data", data, "-o", tmp_path / "o"])
    assert_clean_failure(r, "too few samples", "test split")
    _no_work(r.output)
    assert not (tmp_path / "o").exists()


def test_a_single_class_is_refused(tmp_path, digits_keras3_path):
    data = _npz(tmp_path / "one.npz", y=np.zeros(200, dtype=np.int64))
    r = run(["build", digits_keras3_path, "--data", data, "-o", tmp_path / "o"])
    assert_clean_failure(r, "single class", "at least two classes")
    _no_work(r.output)


def test_one_hot_labels_are_read_as_classes(tmp_path):
    from edgeslim.io.data import load_data

    y = np.arange(80) % 10
    one_hot = np.eye(10, dtype=np.float32)[y]
    data = tmp_path / "onehot.npz"
    np.savez(data, x_train=np.zeros((80, 8, 8, 1), np.float32), y_train=one_hot)
    ds = load_data(data, seed=0)
    assert ds.task == "classification" and ds.num_classes == 10
    assert np.array_equal(np.sort(np.concatenate([ds.y_train, ds.y_val, ds.y_test])), np.sort(y))
    assert any("one-hot" in n for n in ds.notes)
    # no note or hint tells a CLI user to pass an option the CLI lacks
    assert not any("pass task=" in n for n in ds.notes)


def test_data_hints_name_no_cli_option_that_does_not_exist(tmp_path, digits_keras3_path):
    y = np.arange(60).astype(np.float32) % 10 + 0.5  # fractional: regression, then a shape clash
    data = tmp_path / "frac.npz"
    np.savez(data, x_train=np.zeros((60, 8, 8, 1), np.float32), y_train=np.stack([y, y], 1))
    r = run(["build", digits_keras3_path, "--data", data, "-o", tmp_path / "o"])
    assert r.exit_code == 2, r.output
    assert "--task" not in r.output and "pass task=" not in r.output


def _deep_keras(path, depth: int):
    """A .keras archive whose config.json nests ``depth`` levels deep (written as text:
    Python's own json encoder would refuse to)."""
    text = ('{"class_name": "Sequential", "config": {"name": "s", "layers": '
            + "[" * depth + "]" * depth + "}}")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", text)
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
    return path


@pytest.mark.parametrize("depth", [480, 100_000])
def test_deeply_nested_keras_config_is_refused(tmp_path, digits_npz, depth):
    model = _deep_keras(tmp_path / "deep.keras", depth)
    before = snapshot(tmp_path)
    r = run(["build", model, "--data", digits_npz, "-o", tmp_path / "o"])
    assert_clean_failure(r, "deep.keras", "nested more than")
    assert "RecursionError" not in r.output
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("content, words", [
    (bytes(range(256)) * 4, "not a UTF-8 text file"),
    (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64, "control characters"),
    (b"\n\n  \n", "no class names"),
])
def test_labels_file_that_is_not_text(tmp_path, digits_keras3_path, digits_npz, content, words):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(content)
    before = snapshot(tmp_path)
    r = run(["build", digits_keras3_path, "--data", digits_npz, "--labels", labels, "-o", tmp_path / "o"])
    assert_clean_failure(r, "--labels", words)
    _no_work(r.output)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("count", [3, 11])
def test_labels_count_is_checked_against_the_classes(tmp_path, digits_keras3_path, digits_npz, count):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(count)))
    r = run(["build", digits_keras3_path, "--data", digits_npz, "--labels", labels, "-o", tmp_path / "o"])
    assert_clean_failure(r, f"{count} class names", "10 output classes")
    _no_work(r.output)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- flags and targets


@pytest.mark.parametrize("flags, option", [
    (["--clusters", "16"], "--clusters 16"),                      # default recipe: channels only
    (["--sparsity", "0.5", "--no-prune"], "--sparsity 0.5"),
    (["--structure", "2:4"], "--structure 2:4"),
])
def test_a_flag_for_a_stage_that_does_not_run_is_refused(tmp_path, digits_keras3_path, digits_npz, flags, option):
    r = run(["build", digits_keras3_path, "--data", digits_npz, "-o", tmp_path / "o", *flags])
    assert_clean_failure(r, option, "it would be ignored")
    _no_work(r.output)


@pytest.mark.parametrize("command", ["build", "check"])
def test_target_that_is_a_folder(tmp_path, digits_keras3_path, digits_npz, tiny_cnn_bytes, command):
    boards = tmp_path / "boards"
    boards.mkdir()
    (tmp_path / "m.tflite").write_bytes(tiny_cnn_bytes)
    args = (["build", digits_keras3_path, "--data", digits_npz, "-o", tmp_path / "o"] if command == "build"
            else ["check", tmp_path / "m.tflite"])
    r = run(args + ["--target", boards])
    assert_clean_failure(r, str(boards), "is a folder, not a .toml file")
    assert "does not exist" not in r.output


@pytest.mark.parametrize("option, value", [
    ("--ram", "100000000000000000000000"), ("--ram", "1e23"), ("--ram", "5g"), ("--flash", "8g"),
])
def test_impossible_budget_for_a_microcontroller(tmp_path, tiny_cnn_bytes, option, value):
    (tmp_path / "m.tflite").write_bytes(tiny_cnn_bytes)
    r = run(["check", tmp_path / "m.tflite", "--target", "cortex-m4", option, value])
    assert_clean_failure(r, option if value[-1] == "g" or len(value) > 10 else value)
    assert "fits" not in r.output


def test_a_large_budget_stays_allowed_for_a_linux_board(tmp_path, tiny_cnn_bytes):
    (tmp_path / "m.tflite").write_bytes(tiny_cnn_bytes)
    r = run(["check", tmp_path / "m.tflite", "--target", "rpi4", "--ram", "8g"])
    assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------- flash


def _mcu_bundle(folder):
    (folder / "tflm").mkdir(parents=True)
    (folder / "tflm" / "Makefile").write_text("all:\n\ttouch built\n")
    return folder


def test_flash_to_a_missing_drive_names_the_drive(tmp_path, monkeypatch):
    monkeypatch.delenv("TFLM_DIR", raising=False)
    bundle = _mcu_bundle(tmp_path / "b")
    r = run(["flash", bundle, "--drive", "/missing"])
    assert_clean_failure(r, "/missing", "not mounted")
    assert "TensorFlow Lite Micro" not in r.output
    assert not (bundle / "tflm" / "built").exists()


def _elf(tmp_path):
    src = tmp_path / "f.c"
    src.write_text("int f(int x) { return x + 1; }\n")
    out = tmp_path / "firmware.elf"
    subprocess.run(["arm-none-eabi-gcc", "-mthumb", "-mcpu=cortex-m4", "-c", str(src), "-o", str(out)], check=True)
    return out


@pytest.mark.parametrize("name, make", [
    ("notes.txt", lambda p: p.write_text("not a firmware\n")),
    ("firmware.bin", lambda p: p.write_text("hello, this is text\n")),
    ("firmware.bin", lambda p: p.write_bytes(b"\x01\x02\x03\x04\x05")),
    ("model.tflite", lambda p: p.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)),
    ("firmware.hex", lambda p: p.write_text("not intel hex\n")),
    ("firmware.bin", lambda p: p.write_bytes(b"\x00\x10\x00\x20\x00\x10\x00\x00" + b"\x00" * 8)),  # even reset
])
def test_flash_refuses_a_file_that_is_not_firmware(tmp_path, name, make):
    bundle = _mcu_bundle(tmp_path / "b")
    binary = tmp_path / name
    make(binary)
    drive = tmp_path / "DAPLINK"
    drive.mkdir()
    before = snapshot(tmp_path)
    r = run(["flash", bundle, "--drive", drive, "--binary", binary])
    assert_clean_failure(r, name, "not a Cortex-M firmware image", "Nothing was flashed")
    assert "copied" not in r.output
    assert list(drive.iterdir()) == []
    assert snapshot(tmp_path) == before


def test_flash_refuses_an_elf(tmp_path):
    elf = _elf(tmp_path)
    bin_named = tmp_path / "firmware.bin"
    shutil.copy(elf, bin_named)
    drive = tmp_path / "DAPLINK"
    drive.mkdir()
    r = run(["flash", _mcu_bundle(tmp_path / "b"), "--drive", drive, "--binary", bin_named])
    assert_clean_failure(r, "ELF")
    assert list(drive.iterdir()) == []


# --------------------------------------------------------------------------- messages


def test_tflm_crash_hint_names_malformed_models_too():
    from edgeslim import micro

    err = micro._crash_error("measuring the arena", -11, "", 4096)
    assert "index out of range" in err.message and "degenerate quantization scale" in err.message
    assert "edgeslim check" in err.hint and "indices" in err.hint


def test_uncaught_error_is_one_paragraph_and_exit_2(tmp_path, tiny_cnn_bytes, monkeypatch):
    """An exception edgeslim did not anticipate (injected here: a bug in check_model) gives
    exit 2 and one paragraph; --debug gives the traceback."""
    import edgeslim.targets

    def broken(*a, **k):
        raise KeyError("tensors")

    monkeypatch.setattr(edgeslim.targets, "check_model", broken)
    (tmp_path / "m.tflite").write_bytes(tiny_cnn_bytes)
    r = run(["check", tmp_path / "m.tflite", "--target", "rpi4"])
    assert_clean_failure(r, "KeyError", "--debug")
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1
    debug = run(["check", tmp_path / "m.tflite", "--target", "rpi4", "--debug"])
    assert debug.exit_code != 0 and debug.exc_info[0] is KeyError
