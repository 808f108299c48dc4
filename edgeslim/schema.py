"""Typed configuration: the schemas of board profiles and recipes, checked with pydantic.

Both file kinds are TOML, so the schemas are strict (pydantic's strict mode): a
key's value must already have its type, nothing is coerced. ``true`` is not a
number, ``"int8"`` is not a list of strings, ``5`` is not a table. Only the two
conversions TOML makes necessary are allowed: an integer where a float is
expected, and (recipes) an array where the dataclass holds a tuple.

:func:`describe` turns a :class:`pydantic.ValidationError` into one sentence that
names the key (``cpu.features[0]``) and the type expected, in TOML's words; the
callers add the file.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

#: pydantic error type -> what a TOML writer should put there.
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dataclass_type": "a table",
    "list_type": "an array",
    "tuple_type": "an array",
    "literal_error": None,  # pydantic's message lists the allowed values
    "greater_than": None,
    "greater_than_equal": None,
    "less_than": None,
    "less_than_equal": None,
}

# NaN and infinity are never a setting (and NaN would make a recipe unequal to itself)
STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class Table(BaseModel):
    """A TOML table: its keys typed, unknown keys refused."""

    model_config = STRICT


def partial_model(name: str, hints: dict[str, Any]) -> type[BaseModel]:
    """A strict schema where every key is optional (validate what a table sets)."""
    return create_model(name, __config__=STRICT, **{k: (t | None, None) for k, t in hints.items()})


def _key_path(loc: tuple, data: Any) -> str:
    """``("cpu", "features", 0)`` -> ``cpu.features[0]``, dropping the parts of
    ``loc`` that are pydantic's names for union branches, not keys of ``data``
    (every key of these schemas is optional, so an error's key is always present)."""
    out = ""
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            out += ("." if out else "") + str(part)
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            out += f"[{part}]"
            node = node[part]
    return out


def describe(exc: ValidationError, data: Any) -> tuple[str, str, Any]:
    """(key path, what was expected, the value found) for the first key in error.

    Errors at one key from several union branches are joined with "or"."""
    errors = exc.errors(include_url=False)
    first = _key_path(errors[0]["loc"], data)
    wanted: list[str] = []
    value: Any = errors[0].get("input")
    for err in errors:
        if _key_path(err["loc"], data) != first:
            continue
        if err["type"] == "extra_forbidden":
            return first, "unknown key", err.get("input")
        text = _EXPECTED.get(err["type"])
        if text is None:
            text = err["msg"][0].lower() + err["msg"][1:]
            text = text.replace("input should be ", "")
        if text not in wanted:
            wanted.append(text)
        value = err.get("input")
    return first, " or ".join(wanted), value


def check(schema: type[BaseModel], data: Any) -> tuple[str, str, Any] | None:
    """None when ``data`` fits ``schema``; else :func:`describe`'s triple."""
    try:
        schema.model_validate(data)
    except ValidationError as exc:
        return describe(exc, data)
    return None
