"""Where a command writes, checked before any work starts, and what it may replace.

Every command that writes (``build``, ``example``, ``distill``) checks its output here
first, so that a bad ``-o`` fails in a second with exit code 2, not after minutes of
training. The rule for replacing a folder: only a bundle edgeslim itself wrote (see
``bundle.manifest.not_a_bundle_reason``) is ever replaced; anything else at that path
is the user's, and the command stops naming it. No option overrides that rule.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgeslim.errors import OutputError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (anything: folder, file, broken link)."""
    p = path
    while not os.path.lexists(p):
        if p.parent == p:
            break
        p = p.parent
    return p


def check_output_folder(out: str | Path, *, option: str = "-o/--out") -> Path:
    """OUT is an existing writable folder, or can be created as one. Creates nothing.

    Raises OutputError when OUT is a file, lies under a file, or is (or would be made in)
    a folder the user cannot write."""
    out = Path(out).expanduser()
    found = _nearest_existing(out.absolute())
    if not found.is_dir():
        if found == out.absolute():
            raise OutputError(f"output folder {out} is a file, not a folder ({option})",
                              hint=f"Give a folder for {option}; the file is left as it is.")
        raise OutputError(f"output folder {out} cannot be created: {found} is a file ({option})",
                          hint=f"Give a folder for {option} that is not under a file.")
    if not os.access(found, os.W_OK | os.X_OK):
        what = "is not writable" if found == out.absolute() else f"cannot be created: {found} is not writable"
        raise OutputError(f"output folder {out} {what} ({option})",
                          hint=f"Choose a folder you can write to for {option}, or fix its permissions.")
    return out


def check_replaceable(folder: str | Path) -> Path:
    """``folder`` is absent, or a bundle edgeslim wrote (which may be replaced); else OutputError."""
    from edgeslim.bundle.manifest import not_a_bundle_reason

    folder = Path(folder)
    if not os.path.lexists(folder):
        return folder
    reason = not_a_bundle_reason(folder)
    if reason is not None:
        raise OutputError(
            f"{folder} already exists and is not a bundle edgeslim wrote ({reason}); "
            "it was left untouched",
            hint="edgeslim only replaces folders it wrote itself. Move your files elsewhere, "
                 "or choose another output folder with -o (or another --target name).")
    return folder


def check_output_file(path: str | Path, *, inputs: tuple = (), option: str = "-o/--out") -> Path:
    """A file about to be (over)written: its folder must be writable, it must not be a folder,
    and it must not be one of the command's own ``inputs``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"output {path} is a folder, not a file ({option})",
                          hint=f"Give a file name for {option}, e.g. student.keras.")
    try:
        check_output_folder(path.parent, option=option)
    except OutputError as exc:
        raise OutputError(f"output file {path} cannot be written: {exc.message}", hint=exc.hint) from None
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise OutputError(f"output file {path} is not writable ({option})",
                          hint="Choose another file name, or fix its permissions.")
    target = path.resolve()
    for given in inputs:
        if given is not None and isinstance(given, (str, Path)) and Path(given).resolve() == target:
            raise OutputError(f"output {path} is also an input of this command ({given}); "
                              "it would be overwritten",
                              hint=f"Give {option} a new file name.")
    return path


def check_example_folder(folder: str | Path, names: tuple[str, ...]) -> Path:
    """The folder `example` writes its model and data to holds nothing but those files
    (a user's file of the same name would be overwritten; another file means the folder is
    the user's)."""
    folder = Path(folder)
    if not os.path.lexists(folder):
        return folder
    if folder.is_symlink() or not folder.is_dir():
        raise OutputError(f"{folder} exists and is not a folder; the example writes its model and data there",
                          hint="Move it away, or choose another output folder with -o.")
    others = sorted(p.name for p in folder.iterdir()
                    if p.name not in names and not p.name.startswith(tuple(f".{n}." for n in names)))
    if others:
        raise OutputError(f"{folder} holds files the example did not write ({', '.join(others[:3])}); "
                          "it was left untouched",
                          hint="Choose another output folder with -o.")
    return folder


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed over
    it: a reader never sees half a file, and an error leaves the old file as it was."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
