"""Where the shipped data lives: target profiles and firmware templates."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """``targets`` or ``firmware_templates``: inside the installed package
    (edgeslim/_data/, put there by setup.py) or, in a source checkout, at the
    top of the repository."""
    for candidate in (_HERE / "_data" / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"edgeslim's {name}/ folder is missing from this installation; reinstall edgeslim"
    )


def targets_dir() -> Path:
    return data_dir("targets")


def templates_dir() -> Path:
    return data_dir("firmware_templates")
