"""Rendering firmware_templates/ with Jinja2 (strict: an undefined name is an error)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import jinja2

from edgeslim.resources import templates_dir

_C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "class", "namespace", "template", "new",
    "delete", "this", "operator", "private", "public", "protected", "virtual", "bool", "true",
    "false", "main",
}


def c_identifier(name: str) -> str:
    """A valid C identifier derived from a model name ("digits-cnn v2" -> "digits_cnn_v2")."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name.strip()).strip("_").lower()
    ident = re.sub(r"_+", "_", ident) or "model"
    if ident[0].isdigit():
        ident = "m_" + ident
    if ident in _C_KEYWORDS:
        ident += "_model"
    return ident


def c_string(value: str) -> str:
    """A C string literal (JSON escapes are valid C escapes for printable text)."""
    return json.dumps(str(value), ensure_ascii=True)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["c_string"] = c_string
    env.filters["shell_quote"] = _shell_quote
    return env


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(str(value))


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def render_to(path: Path, template: str, *, mode: int | None = None, **context) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(template, **context), encoding="utf-8")
    if mode is not None:
        path.chmod(mode)
    return path
