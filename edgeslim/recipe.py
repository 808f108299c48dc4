"""The recipe: which stages run, in which order, with which settings.

A recipe is TOML (documented in docs/recipe.md). Layers of settings, each
overriding the one before: built-in defaults < the target profile's recipe <
the user's recipe file < command-line flags. The recipe actually used is
written into every bundle (recipe.toml) and parses back to the same Recipe.

Every stage's settings are a frozen dataclass owned by the stage's module
(``edgeslim.compress.prune.PruneConfig``, ...); this module only maps TOML
tables onto them, so adding a setting to a stage is adding a field there.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeslim import schema
from edgeslim.errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# stage name -> (module, config class, function). Order here is the default order.
STAGES: dict[str, tuple[str, str, str]] = {
    "distill": ("edgeslim.compress.distill", "DistillConfig", "distill_stage"),
    "channels": ("edgeslim.compress.channels", "ChannelsConfig", "prune_channels"),
    "lowrank": ("edgeslim.compress.lowrank", "LowRankConfig", "lowrank"),
    "prune": ("edgeslim.compress.prune", "PruneConfig", "prune"),
    "cluster": ("edgeslim.compress.cluster", "ClusterConfig", "cluster"),
    "qat": ("edgeslim.compress.qat", "QATConfig", "qat"),
}
DEFAULT_STAGES = ("prune", "cluster", "qat")
# How the int8 conversion's calibration samples are chosen (edgeslim.compress.coreset).
CALIBRATIONS = ("random", "coreset")


@dataclass(frozen=True)
class BuildConfig:
    """Settings of the whole build (the ``[build]`` table)."""

    seed: int | None = None
    representative_samples: int = 200
    allow_float_fallback: bool = False
    int8_io: bool = True
    batch_size: int = 32
    patience: int = 2
    learning_rate: float = 1e-3
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    stages: tuple[str, ...] = DEFAULT_STAGES
    calibration: str = "random"
    # The accuracy guard (edgeslim.guard): the most a shipped model may lose on the
    # validation split, in accuracy points (classification) or percent of MSE increase
    # (regression); None: 1.0 point / 10 %. guard = false ships the recipe's model whatever
    # it scores; backoff_steps: rungs of the back-off ladder tried before plain int8.
    max_drop: float | None = None
    guard: bool = True
    backoff_steps: int = 2

    def validate(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise RecipeError(
                f"build.calibration = {self.calibration!r} is not one of "
                + ", ".join(repr(c) for c in CALIBRATIONS),
                '"random": a seeded random draw; "coreset": k-center greedy on the model\'s '
                "penultimate-layer embeddings, stratified by class.",
            )
        if self.representative_samples < 1:
            raise RecipeError("build.representative_samples must be at least 1",
                              "Use e.g. 100-500 calibration samples.")
        if self.batch_size < 1:
            raise RecipeError("build.batch_size must be at least 1")
        if self.max_drop is not None and not 0 <= self.max_drop < 1000:
            raise RecipeError(f"build.max_drop = {self.max_drop!r} must be 0 or more",
                              "Accuracy points (e.g. 1.0), or percent of MSE increase for "
                              "regression (e.g. 10).")
        if not 0 <= self.backoff_steps <= 5:
            raise RecipeError(f"build.backoff_steps = {self.backoff_steps!r} must be 0 to 5",
                              "Each step retrains every stage: 2 is the default.")
        if self.patience < 0:
            raise RecipeError("build.patience must be 0 or more")
        if not 0 < self.learning_rate < 1:
            raise RecipeError("build.learning_rate must be between 0 and 1")
        for key in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, key) < 0.9:
                raise RecipeError(f"build.{key} must be between 0 and 0.9")
        for s in self.stages:
            if s not in STAGES:
                raise RecipeError(
                    f"build.stages names an unknown stage {s!r}",
                    f"Valid stages: {', '.join(STAGES)}.",
                )
        if len(set(self.stages)) != len(self.stages):
            raise RecipeError("build.stages lists a stage twice")


def _convert_config_class():
    # edgeslim.convert imports TensorFlow; its config class is fetched only when a recipe
    # is built (the same lazy import as the stages' classes).
    return getattr(importlib.import_module("edgeslim.convert"), "ConvertConfig")


def stage_config_class(name: str):
    module, cls, _ = STAGES[name]
    return getattr(importlib.import_module(module), cls)


def stage_function(name: str):
    module, _, fn = STAGES[name]
    return getattr(importlib.import_module(module), fn)


@dataclass(frozen=True)
class Recipe:
    """The build settings and one config per known stage (used or not)."""

    build: BuildConfig = field(default_factory=BuildConfig)
    stages: dict = field(default_factory=dict)  # stage name -> config dataclass
    convert: Any = None  # edgeslim.convert.ConvertConfig; None: the default (plain int8)

    def __post_init__(self):
        if self.convert is None:
            object.__setattr__(self, "convert", _convert_config_class()())

    def config(self, stage: str):
        return self.stages[stage]

    @property
    def active_stages(self) -> tuple[str, ...]:
        return self.build.stages

    def to_dict(self) -> dict:
        """Every table, the stages that did not run included, so the file written
        into a bundle rebuilds exactly this recipe."""
        out: dict[str, Any] = {"build": _to_toml_value(dataclasses.asdict(self.build))}
        out["convert"] = _config_to_table(self.convert)
        for name in STAGES:
            out[name] = _config_to_table(self.stages[name])
        return out

    def to_toml(self) -> str:
        import tomli_w

        header = "# edgeslim recipe: the settings this bundle was built with (docs/recipe.md)\n"
        return header + tomli_w.dumps(self.to_dict())


# -- TOML <-> dataclasses --------------------------------------------------------


def _to_toml_value(value):
    """TOML has no null: None values are left out; tuples become lists."""
    if isinstance(value, dict):
        return {k: _to_toml_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_to_toml_value(v) for v in value]
    return value


def _config_to_table(cfg) -> dict:
    table = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "overrides":
            if value:
                table["override"] = [_to_toml_value(dataclasses.asdict(o)) for o in value]
            continue
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if value is not None:
            table[f.name] = _to_toml_value(value)
    return table


@functools.lru_cache(maxsize=None)
def _schema(cls):
    """The strict schema of one config dataclass's TOML table (edgeslim/schema.py), made
    from the dataclass's own type hints: adding a field to a stage types its key."""
    hints = typing.get_type_hints(cls)
    return schema.partial_model(f"{cls.__name__}Table", {k: t for k, t in hints.items() if k != "overrides"})


def _build_dataclass(cls, table: dict, where: str, override_cls=None, *, source: str = "recipe"):
    names = {f.name for f in dataclasses.fields(cls)}
    valid = sorted((names - {"overrides"}) | ({"override"} if "overrides" in names else set()))
    plain = {}
    kwargs = {}
    for key, value in table.items():
        if key == "override" and "overrides" in names:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise RecipeError(
                    f"recipe key {where}.override in {source} must be an array of tables "
                    f"([[{where}.override]])"
                )
            kwargs["overrides"] = tuple(
                _build_dataclass(override_cls, v, f"{where}.override[{i}]", source=source)
                for i, v in enumerate(value)
            )
            continue
        if key not in names or key == "overrides":
            raise RecipeError(
                f"unknown recipe key {where}.{key} in {source}",
                f"Valid keys in [{where}]: {', '.join(valid)}.",
            )
        # TOML arrays are the configs' tuples; the schema checks every element's type
        plain[key] = tuple(value) if isinstance(value, list) else value
    try:
        kwargs.update(_schema(cls).model_validate(plain).model_dump(exclude_unset=True))
    except ValidationError as exc:
        key, expected, got = schema.describe(exc, plain)
        raise RecipeError(
            f"recipe key {where}.{key} in {source} must be {expected}, got {got!r}",
            f"See docs/recipe.md for {where}.{key.split('[')[0]}.",
        ) from None
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"invalid settings in [{where}] of {source}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except RecipeError:
            raise
        except ValueError as exc:
            raise RecipeError(f"invalid settings in [{where}] of {source}: {exc}") from None
    return obj


def merge_tables(base: dict, top: dict) -> dict:
    """Deep-merge recipe tables: ``top`` wins; arrays (overrides, stages) are replaced."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(table: dict, *, source: str = "recipe") -> Recipe:
    """Build and validate a Recipe from TOML-shaped tables."""
    if not isinstance(table, dict):
        raise RecipeError(f"{source}: a recipe must be a table of tables")
    valid = ["build", "convert", *STAGES]
    for key in table:
        if key not in valid:
            raise RecipeError(
                f"unknown recipe key {key!r} in {source}",
                f"Valid top-level tables: {', '.join(valid)}.",
            )
        if not isinstance(table[key], dict):
            raise RecipeError(f"recipe key {key!r} in {source} must be a table ([{key}])")
    build = _build_dataclass(BuildConfig, table.get("build", {}), "build", source=source)
    build.validate()
    convert = _build_dataclass(_convert_config_class(), table.get("convert", {}), "convert", source=source)
    if convert.mixed and "qat" in build.stages:
        raise RecipeError(
            f"convert: {convert.describe()} cannot follow the qat stage in {source} (QAT trains the "
            "model for int8 activations everywhere)",
            "Drop qat from build.stages (--no-qat), or convert to plain int8.")
    stages = {}
    for name in STAGES:
        cls = stage_config_class(name)
        override_cls = getattr(importlib.import_module("edgeslim.compress.overrides"), "LayerOverride")
        stages[name] = _build_dataclass(cls, table.get(name, {}), name, override_cls, source=source)
    return Recipe(build=build, stages=stages, convert=convert)


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}", "Pass an existing .toml file with --recipe.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise RecipeError(f"recipe file {path} nests tables or arrays too deeply",
                          "A recipe has two levels of tables at most.") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file {path}: {exc.strerror}") from None


def resolve(
    *,
    target_recipe: dict | None = None,
    recipe_file: str | Path | None = None,
    recipe_table: dict | None = None,
    flags: dict | None = None,
    drop_stages: tuple[str, ...] = (),
    add_stages: tuple[str, ...] = (),
) -> Recipe:
    """Layer the settings: defaults < target < recipe file/table < CLI flags.

    ``drop_stages`` (from --no-prune etc.) removes stages from whatever list the
    layers above settled on; ``add_stages`` (from --teacher, --distill-width,
    --rank-energy) adds stages missing from it, at their place in STAGES' order.
    """
    table: dict = {}
    if target_recipe:
        from_dict(target_recipe, source="the target profile's [recipe] tables")  # its own errors
        table = merge_tables(table, target_recipe)
    source = "recipe"
    if recipe_file is not None:
        from_file = load_toml(recipe_file)
        from_dict(from_file, source=str(recipe_file))  # its own errors name the file
        table = merge_tables(table, from_file)
        source = str(recipe_file)
    if recipe_table:
        table = merge_tables(table, recipe_table)
    if flags:
        table = merge_tables(table, flags)
    if add_stages:
        stages = list(table.get("build", {}).get("stages", list(DEFAULT_STAGES)))
        for new in add_stages:
            if new in stages or new not in STAGES:
                continue
            order = list(STAGES)
            later = [i for i, s in enumerate(stages) if s in order and order.index(s) > order.index(new)]
            stages.insert(later[0] if later else len(stages), new)
        table = merge_tables(table, {"build": {"stages": stages}})
    if drop_stages:
        stages = table.get("build", {}).get("stages", list(DEFAULT_STAGES))
        table = merge_tables(table, {"build": {"stages": [s for s in stages if s not in drop_stages]}})
    return from_dict(table, source=source)


def stage_flags(flags: dict, *, teachers=()) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The stages the flags drop (no_prune, no_cluster, no_qat) and add (prune_channels,
    teachers, distill_width, rank_energy), for ``resolve``; pops the no_* keys."""
    drop = tuple(s for s in ("prune", "cluster", "qat") if flags.pop(f"no_{s}", False))
    add = tuple(s for s, on in (
        ("distill", bool(teachers) or flags.get("distill_width") is not None),
        ("channels", flags.get("prune_channels") is not None),
        ("lowrank", flags.get("rank_energy") is not None)) if on)
    return drop, add


def flags_to_table(
    *,
    seed: int | None = None,
    sparsity: float | None = None,
    structure: str | None = None,
    clusters: int | None = None,
    epochs: int | None = None,
    prune_epochs: int | None = None,
    cluster_epochs: int | None = None,
    qat_epochs: int | None = None,
    representative_samples: int | None = None,
    allow_float_fallback: bool = False,
    distill_width: float | None = None,
    distill_epochs: int | None = None,
    temperature: float | None = None,
    alpha: float | None = None,
    rank_energy: float | None = None,
    calibration: str | None = None,
    max_drop: float | None = None,
    no_guard: bool = False,
    prune_channels: float | None = None,
    channels_epochs: int | None = None,
    activations: str | None = None,
    float_layers: tuple[str, ...] | list[str] | None = None,
    float_worst: int | None = None,
) -> dict:
    """The common CLI flags as recipe tables (only what the user set)."""
    t: dict[str, dict] = {"build": {}, "prune": {}, "cluster": {}, "qat": {}, "distill": {},
                          "lowrank": {}, "channels": {}, "convert": {}}
    if activations is not None:
        t["convert"]["activations"] = activations
    if float_layers:
        t["convert"]["float_layers"] = list(float_layers)
    if float_worst is not None:
        t["convert"]["float_worst"] = float_worst
    if prune_channels is not None:
        t["channels"]["ratio"] = prune_channels
    if channels_epochs is not None:
        t["channels"]["epochs"] = channels_epochs
    for key, value in (("width", distill_width), ("epochs", distill_epochs),
                       ("temperature", temperature), ("alpha", alpha)):
        if value is not None:
            t["distill"][key] = value
    if rank_energy is not None:
        t["lowrank"]["rank_energy"] = rank_energy
    if calibration is not None:
        t["build"]["calibration"] = calibration
    if max_drop is not None:
        t["build"]["max_drop"] = max_drop
    if no_guard:
        t["build"]["guard"] = False
    if seed is not None:
        t["build"]["seed"] = seed
    if representative_samples is not None:
        t["build"]["representative_samples"] = representative_samples
    if allow_float_fallback:
        t["build"]["allow_float_fallback"] = True
    if sparsity is not None:
        t["prune"]["sparsity"] = sparsity
    if structure is not None:
        t["prune"]["structure"] = structure
    if clusters is not None:
        t["cluster"]["clusters"] = clusters
    for stage in ("prune", "cluster", "qat"):
        if epochs is not None:
            t[stage]["epochs"] = epochs
    for stage, value in (("prune", prune_epochs), ("cluster", cluster_epochs), ("qat", qat_epochs)):
        if value is not None:
            t[stage]["epochs"] = value
    return {k: v for k, v in t.items() if v}
