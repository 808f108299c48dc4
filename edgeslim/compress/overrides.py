"""Per-layer overrides for the compression stages.

A recipe section (``[prune]``, ``[cluster]``) may carry ``[[<section>.override]]``
tables that change what happens to some layers::

    [[prune.override]]
    layer = "dense_out"     # exact Keras layer name
    skip = true
    [[prune.override]]
    regex = "^conv"         # Python regular expression, matched with re.search
    sparsity = 0.3

Precedence (``resolve``), most specific first:

1. an override whose ``layer`` equals the layer's name exactly;
2. the first override, in recipe order, whose ``regex`` matches the name;
3. the stage's default.

The winning override decides alone: ``skip = true`` skips the layer, a value it
sets (``sparsity``, ``clusters`` or ``ratio``) replaces the default, a value it leaves
unset comes from the default (never from a less specific override).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from edgeslim.errors import RecipeError

EXACT = "layer"
REGEX = "regex"
DEFAULT = "default"


@dataclass(frozen=True)
class LayerOverride:
    """One ``[[<stage>.override]]`` table: select by exact ``layer`` name or ``regex``."""

    layer: str | None = None
    regex: str | None = None
    skip: bool = False
    sparsity: float | None = None
    clusters: int | None = None
    ratio: float | None = None  # [channels]: fraction of the layer's filters removed

    def describe(self) -> str:
        return f"layer = {self.layer!r}" if self.layer is not None else f"regex = {self.regex!r}"

    def matches(self, layer_name: str) -> str | None:
        """EXACT or REGEX when this override selects ``layer_name``, else None."""
        if self.layer is not None:
            return EXACT if self.layer == layer_name else None
        if self.regex is not None and re.search(self.regex, layer_name):
            return REGEX
        return None


@dataclass(frozen=True)
class Resolution:
    """What applies to one layer: skip it, or use ``value``; ``source`` says why."""

    skip: bool
    value: Any
    source: str  # EXACT, REGEX or DEFAULT
    override: LayerOverride | None = None

    def describe(self) -> str:
        if self.override is None:
            return "default"
        return f"override ({self.override.describe()})"


def resolve(
    layer_name: str,
    overrides: Sequence[LayerOverride],
    default: Any,
    *,
    key: str = "sparsity",
) -> Resolution:
    """The setting ``key`` for ``layer_name``: exact layer name > first matching regex > default."""
    winner: LayerOverride | None = None
    source = DEFAULT
    for ov in overrides:
        if ov.matches(layer_name) == EXACT:
            winner, source = ov, EXACT
            break
    if winner is None:
        for ov in overrides:
            if ov.matches(layer_name) == REGEX:
                winner, source = ov, REGEX
                break
    if winner is None:
        return Resolution(skip=False, value=default, source=DEFAULT)
    value = getattr(winner, key)
    return Resolution(
        skip=winner.skip,
        value=default if value is None else value,
        source=source,
        override=winner,
    )


def validate_overrides(
    overrides: Iterable[LayerOverride], section: str, *, allowed: Sequence[str]
) -> tuple[LayerOverride, ...]:
    """Check a section's overrides; ``allowed`` names the value keys this stage uses.

    Raises RecipeError naming ``<section>.override`` and the offending entry.
    """
    checked = []
    for i, ov in enumerate(overrides, start=1):
        where = f"{section}.override #{i}"
        if not isinstance(ov, LayerOverride):
            raise RecipeError(
                f"{where} is a {type(ov).__name__}, not a layer override",
                hint="Write it as a [[" + section + ".override]] table with `layer` or `regex`.",
            )
        if (ov.layer is None) == (ov.regex is None):
            raise RecipeError(
                f"{where} must set exactly one of `layer` (exact name) or `regex`",
                hint="Use `layer = \"conv1\"` for one layer or `regex = \"^conv\"` for several.",
            )
        if ov.regex is not None:
            try:
                re.compile(ov.regex)
            except re.error as exc:
                raise RecipeError(
                    f"{where}: regex {ov.regex!r} is not a valid regular expression ({exc})",
                    hint="Use Python `re` syntax, e.g. \"^conv\" or \"dense_[0-9]+$\".",
                ) from None
        for key in ("sparsity", "clusters", "ratio"):
            if getattr(ov, key) is not None and key not in allowed:
                raise RecipeError(
                    f"{where} ({ov.describe()}) sets `{key}`, which [{section}] does not use",
                    hint=f"[{section}] overrides accept: skip"
                    + "".join(f", {k}" for k in allowed) + ".",
                )
        if ov.sparsity is not None:
            check_fraction(ov.sparsity, f"{where}.sparsity")
        if ov.clusters is not None:
            check_clusters(ov.clusters, f"{where}.clusters")
        if ov.ratio is not None:
            check_ratio(ov.ratio, f"{where}.ratio")
        if not ov.skip and all(getattr(ov, k) is None for k in allowed):
            raise RecipeError(
                f"{where} ({ov.describe()}) changes nothing",
                hint="Set `skip = true` or one of: " + ", ".join(allowed) + ".",
            )
        checked.append(ov)
    return tuple(checked)


def check_unknown_layers(
    overrides: Sequence[LayerOverride], layer_names: Iterable[str], section: str
) -> list[str]:
    """Exact names that are not in the model raise; regexes matching nothing are returned."""
    names = list(layer_names)
    unmatched = []
    for ov in overrides:
        if ov.layer is not None and ov.layer not in names:
            raise RecipeError(
                f"{section}.override names layer {ov.layer!r}, which the model does not have",
                hint="The model's layers are: " + ", ".join(names),
            )
        if ov.regex is not None and not any(re.search(ov.regex, n) for n in names):
            unmatched.append(ov.regex)
    return unmatched


def _check_unit_fraction(value: Any, key: str, what: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise RecipeError(f"{key} = {value!r} is not {what} in [0, 1)", hint=hint)
    return float(value)


def check_fraction(value: Any, key: str) -> float:
    """A sparsity: a number in [0, 1)."""
    return _check_unit_fraction(value, key, "a sparsity",
                                "Give the fraction of weights to set to zero, e.g. 0.5 for half.")


def check_ratio(value: Any, key: str) -> float:
    """A channel-pruning ratio: the fraction of a layer's filters removed, in [0, 1)."""
    return _check_unit_fraction(value, key, "a ratio",
                                "Give the fraction of filters/units to remove, e.g. 0.5 for half.")


def check_choice(value: Any, choices: Sequence[str], key: str, hint: str) -> str:
    """A setting that must be one of ``choices``."""
    if value not in choices:
        raise RecipeError(f"{key} = {value!r} is not one of " + ", ".join(repr(c) for c in choices),
                          hint=hint)
    return value


def check_clusters(value: Any, key: str) -> int:
    """A number of weight clusters: an integer >= 2."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise RecipeError(
            f"{key} = {value!r} is not a number of clusters (an integer >= 2)",
            hint="Typical values are 8, 16 or 32 distinct weight values per layer.",
        )
    return value


def check_epochs(value: Any, key: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecipeError(
            f"{key} = {value!r} is not a whole number of epochs >= {minimum}",
            hint="Give an integer, e.g. 2.",
        )
    return value


__all__ = [
    "LayerOverride",
    "Resolution",
    "resolve",
    "validate_overrides",
    "check_unknown_layers",
    "check_fraction",
    "check_clusters",
    "check_ratio",
    "check_choice",
    "check_epochs",
    "EXACT",
    "REGEX",
    "DEFAULT",
]
