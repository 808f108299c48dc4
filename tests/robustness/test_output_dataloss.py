"""Issue 13, point 1 (data loss) and point 4 (output checked first).

`build`, `example` and `distill` replace only what edgeslim itself wrote (a bundle whose
manifest.json says so, holding no file the manifest does not list) and check the output
location before any work. Each case checksums the user's files before and after."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from robustness._cli_support import assert_clean_failure, run, run_as, snapshot

TARGETS_DIR = Path(__file__).resolve().parents[2] / "targets"
# Printed by the first step of a build and of `example`: their absence proves nothing trained.
WORK_MARKERS = ("[load]", "[baseline]", "[example] training", "[guard]")


def _no_work(output: str) -> None:
    for marker in WORK_MARKERS:
        assert marker not in output, (marker, output)


# --------------------------------------------------------------------------- point 1


def test_build_into_the_users_folder_named_like_the_target(tmp_path, digits_keras3_path, digits_npz):
    """The issue's first case: model, data and notes in c/rpi4, then -o c --target rpi4."""
    c = tmp_path / "c"
    (c / "rpi4").mkdir(parents=True)
    shutil.copy(digits_keras3_path, c / "rpi4" / "tiny.keras")
    shutil.copy(digits_npz, c / "rpi4" / "good.npz")
    (c / "rpi4" / "NOTES.txt").write_text("notes\n")
    before = snapshot(c)
    r = run(["build", c / "rpi4" / "tiny.keras", "--data", c / "rpi4" / "good.npz", "-o", c,
             "--target", "rpi4"])
    assert_clean_failure(r, str(c / "rpi4"), "not a bundle edgeslim wrote", "no manifest.json")
    _no_work(r.output)
    assert snapshot(c) == before
    assert sorted(p.name for p in c.iterdir()) == ["rpi4"]  # no temporary folder left behind


def test_build_onto_a_savedmodel_folder_named_like_the_target(tmp_path, digits_tfk_model, digits_npz):
    """The issue's second case: the model itself is a SavedModel folder at OUT/<target>."""
    c = tmp_path / "c"
    digits_tfk_model.save(c / "rpi4", save_format="tf")
    before = snapshot(c)
    assert len(before) >= 3  # saved_model.pb, keras_metadata.pb, variables/...
    r = run(["build", c / "rpi4", "--data", digits_npz, "-o", c, "--target", "rpi4"])
    assert_clean_failure(r, str(c / "rpi4"), "not a bundle edgeslim wrote")
    _no_work(r.output)
    assert snapshot(c) == before


def test_board_file_next_to_a_photo_folder(tmp_path, digits_keras3_path, digits_npz):
    """The issue's third case: --target d/photos.toml -o d would have replaced d/photos/."""
    d = tmp_path / "d"
    (d / "photos").mkdir(parents=True)
    (d / "photos" / "holiday.jpg").write_bytes(bytes(range(256)) * 40)
    (d / "photos.toml").write_text('inherit = "rpi4"\ndescription = "my board"\n')
    before = snapshot(d)
    r = run(["build", digits_keras3_path, "--data", digits_npz, "--target", d / "photos.toml", "-o", d])
    assert_clean_failure(r, str(d / "photos"), "not a bundle edgeslim wrote")
    _no_work(r.output)
    assert snapshot(d) == before


def _bundle(folder: Path) -> Path:
    """A bundle written by edgeslim's own write_manifest (no training needed)."""
    from edgeslim.bundle.manifest import write_manifest
    from edgeslim.targets import load_target

    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(b"TFL3 stand-in bytes")
    (folder / "report.md").write_text("# report\n")
    write_manifest(folder, target=load_target("rpi4"), model_path=folder / "model.tflite")
    return folder


@pytest.mark.parametrize("added, refused", [
    (None, False),                         # the bundle as written: replaceable
    ("bench.json", False),                 # `edgeslim bench` wrote it
    ("tflm/firmware.bin", False),          # `edgeslim flash` built it
    ("NOTES.txt", True),                   # the user's file: the folder is theirs now
    ("data/train.npz", True),
])
def test_a_bundle_is_replaceable_only_without_user_files(tmp_path, added, refused):
    from edgeslim.bundle.manifest import not_a_bundle_reason

    b = _bundle(tmp_path / "rpi4")
    if added:
        (b / added).parent.mkdir(parents=True, exist_ok=True)
        (b / added).write_text("user data\n")
    reason = not_a_bundle_reason(b)
    if refused:
        assert reason is not None and added in reason, reason
    else:
        assert reason is None, reason


@pytest.mark.parametrize("manifest", [
    "{not json",
    '{"format": "something-else/1", "tool": {"name": "edgeslim"}, "files": []}',
    '{"format": "edgeslim-bundle/1", "tool": {"name": "other"}, "files": []}',
    '[1, 2, 3]',
])
def test_a_manifest_edgeslim_did_not_write_does_not_make_a_bundle(tmp_path, manifest):
    from edgeslim.bundle.manifest import not_a_bundle_reason

    folder = tmp_path / "rpi4"
    folder.mkdir()
    (folder / "manifest.json").write_text(manifest)
    assert not_a_bundle_reason(folder) is not None


def test_build_refuses_a_bundle_holding_a_user_file(tmp_path, digits_keras3_path, digits_npz):
    """A real bundle the user added notes to is not replaced either (the notes would go)."""
    out = tmp_path / "out"
    b = _bundle(out / "rpi4")
    (b / "NOTES.txt").write_text("measurements from the bench, do not lose\n")
    before = snapshot(out)
    r = run(["build", digits_keras3_path, "--data", digits_npz, "-o", out, "--target", "rpi4"])
    assert_clean_failure(r, str(out / "rpi4"), "NOTES.txt")
    _no_work(r.output)
    assert snapshot(out) == before


def test_build_replaces_its_own_bundle(tmp_path, digits_keras3_path, digits_npz):
    """The positive control: a second build over edgeslim's own bundle succeeds, and the
    bench.json a bench run added goes with the old bundle."""
    out = tmp_path / "out"
    args = ["build", digits_keras3_path, "--data", digits_npz, "-o", out, "--target", "rpi4",
            "--no-prune", "--no-cluster", "--no-qat", "--seed", "3"]
    first = run(args + ["--recipe", _plain_recipe(tmp_path)])
    assert first.exit_code == 0, first.output
    (out / "rpi4" / "bench.json").write_text("{}\n")
    second = run(args + ["--recipe", _plain_recipe(tmp_path)])
    assert second.exit_code == 0, second.output
    assert (out / "rpi4" / "manifest.json").is_file() and not (out / "rpi4" / "bench.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["rpi4"]


def _plain_recipe(tmp_path: Path) -> Path:
    """A recipe without compression stages: plain int8, the fastest real build."""
    p = tmp_path / "plain.toml"
    p.write_text('[build]\nstages = []\nrepresentative_samples = 32\n')
    return p


def test_example_refuses_a_user_folder_at_out_example(tmp_path):
    out = tmp_path / "out"
    (out / "example").mkdir(parents=True)
    (out / "example" / "thesis.pdf").write_bytes(b"%PDF-1.4 my thesis")
    before = snapshot(out)
    r = run(["example", "-o", out])
    assert_clean_failure(r, str(out / "example"), "thesis.pdf")
    _no_work(r.output)
    assert snapshot(out) == before


def test_example_refuses_a_user_folder_at_out_target(tmp_path):
    out = tmp_path / "out"
    (out / "rpi4").mkdir(parents=True)
    (out / "rpi4" / "holiday.jpg").write_bytes(b"\xff\xd8\xff photo")
    before = snapshot(out)
    r = run(["example", "-o", out, "--target", "rpi4"])
    assert_clean_failure(r, str(out / "rpi4"), "not a bundle edgeslim wrote")
    _no_work(r.output)
    assert snapshot(out) == before
    assert not (out / "example").exists()  # nothing started


# --------------------------------------------------------------------------- point 4


def _commands(out, digits_keras3_path, digits_npz):
    """The three writing commands with the output location ``out`` (a folder for build and
    example, a file inside it for distill)."""
    return {
        "build": ["build", digits_keras3_path, "--data", digits_npz, "-o", out],
        "example": ["example", "-o", out],
        "distill": ["distill", "--teacher", digits_keras3_path, "--data", digits_npz, "--width", "0.5",
                    "-o", Path(out) / "student.keras"],
    }


@pytest.mark.parametrize("command", ["build", "example", "distill"])
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_output_location_is_checked_before_any_work(tmp_path, digits_keras3_path, digits_npz, command, where):
    blocker = tmp_path / "results.csv"
    blocker.write_text("a,b\n1,2\n")
    out = blocker if where == "a file" else blocker / "sub"
    before = snapshot(tmp_path)
    r = run(_commands(out, digits_keras3_path, digits_npz)[command])
    assert_clean_failure(r, "results.csv", "is a file")
    _no_work(r.output)
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_distill_output_that_is_its_own_teacher_is_refused(tmp_path, digits_keras3_path, digits_npz):
    teacher = tmp_path / "teacher.keras"
    shutil.copy(digits_keras3_path, teacher)
    before = snapshot(tmp_path)
    r = run(["distill", "--teacher", teacher, "--data", digits_npz, "--width", "0.5", "-o", teacher])
    assert_clean_failure(r, "teacher.keras", "also an input")
    assert snapshot(tmp_path) == before


@pytest.fixture
def readonly_dir():
    """A folder nobody but root may write to, readable by uid 65534 (outside pytest's
    0700 tmp root, so the unprivileged child can reach it)."""
    top = Path(tempfile.mkdtemp(prefix="edgeslim-ro-"))
    ro = top / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("keep me\n")
    os.chmod(top, 0o755)
    os.chmod(ro, 0o555)
    yield ro
    os.chmod(ro, 0o755)
    shutil.rmtree(top)


NOBODY = 65534


@pytest.mark.parametrize("command", ["build", "example", "distill"])
def test_read_only_output_is_refused_before_any_work(readonly_dir, digits_keras3_path, digits_npz, command):
    """As root every folder is writable, so the command runs as uid 65534 (setpriv) in a
    child process; as any other user it runs here."""
    top = readonly_dir.parent
    model, data = top / "m.keras", top / "d.npz"
    shutil.copy(digits_keras3_path, model)
    shutil.copy(digits_npz, data)
    for p in (model, data):
        os.chmod(p, 0o644)
    out = readonly_dir / "out"
    args = _commands(out, model, data)[command]
    before = snapshot(top)
    if os.geteuid() == 0:
        proc = run_as(NOBODY, args, cwd=top, timeout=120)
        text = proc.stdout + proc.stderr
        assert_clean_failure(proc, str(readonly_dir), "not writable", output=text)
    else:
        r = run(args)
        text = r.output
        assert_clean_failure(r, str(readonly_dir), "not writable")
    _no_work(text)
    assert snapshot(top) == before
    assert not out.exists()
