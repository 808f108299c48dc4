"""Target profiles (targets/*.toml) and the checks a model must pass for one.

A profile is data: one TOML file per board, loaded into a frozen
:class:`Target`. A profile may ``inherit = "base-name"`` (tables merge key by
key, the child wins; a base marked ``abstract = true`` is not listed or
selectable) or be an ``alias = "profile"`` (a generic name such as ``rpi``).
Adding a board is adding a file; a user's own file works by path
(``--target path/to/board.toml``), and may inherit the shipped profiles.

:func:`check_model` runs every check before anything is written: degenerate
quantization scales, op support (naming the op and the Keras layer it came
from), tensor types and fused activations, and for microcontrollers flash and
the tensor arena measured with TFLite Micro (edgeslim.micro).
"""

from __future__ import annotations

import copy
import math
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typing import Annotated, Literal, Union

from pydantic import Field

from edgeslim import modelgraph, schema
from edgeslim.modelgraph import Graph, Operator, Tensor
from edgeslim.errors import TargetError
from edgeslim.recipe import STAGES as _recipe_stages
from edgeslim.resources import targets_dir

KINDS = ("mcu", "rpi", "android", "web")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

# Top-level keys a profile may have, and the keys of its tables.
_TOP_KEYS = {
    "inherit", "alias", "abstract", "kind", "runtime", "description", "default_variant",
    "cpu", "memory", "ops", "build", "recipe", "variants", "runtime_options",
}
_TABLE_KEYS = {
    "cpu": {"arch", "core", "abi", "features", "clock_mhz", "cores"},
    "memory": {"ram", "flash", "runtime_flash", "ram_reserved", "arena_margin"},
    "ops": {"supported", "int16", "tensor_types", "fused_activations", "min_scale", "constraints"},
    "build": {"cflags", "optimized_kernels", "qemu_machine", "tflm_target_arch"},
}
# The schema of one profile file (pydantic, strict: see edgeslim/schema.py). Every key
# is optional here, because a file that inherits sets only what it changes; the keys a
# resolved profile must have are checked after the merge (_build_target).
_Size = Union[Annotated[int, Field(ge=0)], str]  # 65536 or "64k"; parse_size reads the string
_OpList = Union[Literal["builtin"], list[str]]  # the names are checked against TFLite's enum
_Positive = Union[Annotated[int, Field(gt=0)], Annotated[float, Field(gt=0)]]


class _Cpu(schema.Table):
    arch: str | None = None
    core: str | None = None
    abi: str | None = None
    features: list[str] | None = None
    clock_mhz: _Positive | None = None
    cores: Annotated[int, Field(gt=0)] | None = None


class _Memory(schema.Table):
    ram: _Size | None = None
    flash: _Size | None = None
    runtime_flash: _Size | None = None
    ram_reserved: _Size | None = None
    arena_margin: Annotated[float, Field(ge=0, lt=1)] | None = None


class _Ops(schema.Table):
    supported: _OpList | None = None
    int16: _OpList | None = None
    tensor_types: list[str] | None = None
    fused_activations: list[str] | None = None
    min_scale: Annotated[float, Field(ge=0)] | None = None
    constraints: dict[str, str] | None = None


class _Build(schema.Table):
    cflags: str | None = None
    optimized_kernels: str | None = None
    qemu_machine: str | None = None
    tflm_target_arch: str | None = None


class _Variant(schema.Table):
    delegate: str | None = None
    model: str | None = None
    precision: str | None = None
    num_threads: Annotated[int, Field(gt=0)] | None = None
    ops: _OpList | None = None


class _RuntimeOptions(schema.Table):
    num_threads: Annotated[int, Field(gt=0, le=1024)] | None = None


class _ProfileFile(schema.Table):
    inherit: str | None = None
    alias: str | None = None
    abstract: bool | None = None
    kind: Literal[KINDS] | None = None  # type: ignore[valid-type]  (the tuple's values)
    runtime: str | None = None
    description: str | None = None
    default_variant: str | None = None
    cpu: _Cpu | None = None
    memory: _Memory | None = None
    ops: _Ops | None = None
    build: _Build | None = None
    recipe: dict[str, dict[str, Any]] | None = None  # typed by the recipe schema at build time
    variants: dict[str, _Variant] | None = None
    runtime_options: _RuntimeOptions | None = None


def _check_schema(path: Path, raw: dict) -> None:
    """Refuse a profile file whose keys have the wrong type, naming the file and the key."""
    problem = schema.check(_ProfileFile, raw)
    if problem is None:
        return
    key, expected, got = problem
    if expected == "unknown key":
        table, _, _ = key.rpartition(".")
        fields = {"": _ProfileFile, "runtime_options": _RuntimeOptions}.get(table)
        if table.startswith("variants."):
            fields = _Variant
        allowed = sorted(fields.model_fields if fields else _TABLE_KEYS.get(table, ()))
        raise TargetError(f"target profile {path}: unknown key {key!r}",
                          hint=f"Allowed{f' in [{table}]' if table else ''}: {', '.join(allowed)}.")
    raise TargetError(f"target profile {path}: key {key!r} must be {expected}, got {got!r}",
                      hint="See the shipped targets/*.toml for the format of each key.")


# The recipe tables a profile may set: the stages recipe.py knows, and [build].
_RECIPE_SECTIONS = {"build", *_recipe_stages, "coreset"}


def parse_size(value: int | str) -> int:
    """``"192k"`` -> 196608 (k = 1024, m = 1024**2, g = 1024**3; a trailing
    ``b``/``ib`` is accepted); an int is returned as it is."""
    if isinstance(value, bool):
        raise TargetError(f"bad size {value!r}", hint="Write a size such as 192k, 1m or 65536.")
    if isinstance(value, int):
        if value < 0:
            raise TargetError(f"bad size {value!r}: negative", hint="Sizes are positive.")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise TargetError(
            f"bad size {value!r}",
            hint="Write a number of bytes with an optional unit: 65536, 192k, 1m (k = 1024).",
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1024**2 and n % (1024**2 // 16) == 0:
        return f"{n / 1024**2:g} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"


@dataclass(frozen=True)
class Variant:
    """One way to run the model on a device (android: "cpu" or "gpu")."""

    name: str
    delegate: str
    model: str
    precision: str
    num_threads: int | None = None
    ops: frozenset[str] | None = None  # None: every op of the target


@dataclass(frozen=True)
class Target:
    """A resolved, validated target profile. Sizes in bytes."""

    name: str  # as typed ("rpi", "cortex-m4", or a path)
    profile: str  # the resolved profile name ("rpi4")
    kind: str  # "mcu" | "rpi" | "android"
    description: str
    runtime: str  # "tflite-micro" | "litert"
    cpu: str  # architecture, e.g. "armv7e-m", "aarch64"
    core: str | None
    features: tuple[str, ...]
    clock_mhz: int | None
    ram_bytes: int | None
    flash_bytes: int | None  # mcu only
    runtime_flash_bytes: int  # flash the runtime and application take (mcu), stated estimate
    ram_reserved_bytes: int  # RAM kept out of the arena budget (stack, heap, app)
    arena_margin: float  # fraction added to the measured arena (mcu)
    ops: frozenset[str]
    op_constraints: dict[str, str] = field(hash=False, compare=False)
    # Ops the runtime runs with int16 activations and int8 weights (16x8); empty: no 16x8.
    int16_ops: frozenset[str] = frozenset()
    tensor_types: frozenset[str] = frozenset()
    fused_activations: frozenset[str] = frozenset()
    min_scale: float = 1e-6
    recipe: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    variants: tuple[Variant, ...] = ()
    default_variant: str | None = None
    build: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    runtime_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: Path | None = None
    inherits: tuple[str, ...] = ()  # the chain of bases, nearest first
    overrides: dict[str, int] = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_mcu(self) -> bool:
        return self.kind == "mcu"

    @property
    def allows_float(self) -> bool:
        """True when the runtime runs float ops (the profile's ops.tensor_types has float32):
        float layers in an int8 model are allowed."""
        return "float32" in self.tensor_types

    @property
    def wants_fp16(self) -> bool:
        """True when the bundle needs a float16 model (a GPU-delegate variant)."""
        return any(v.precision == "float16" for v in self.variants)

    @property
    def arena_budget_bytes(self) -> int | None:
        """RAM the tensor arena may take: RAM minus the reserved part."""
        if self.ram_bytes is None or not self.is_mcu:
            return None
        return max(0, self.ram_bytes - self.ram_reserved_bytes)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise TargetError(f"target {self.profile} has no variant {name!r}",
                          hint=f"Variants: {', '.join(v.name for v in self.variants) or 'none'}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.profile,
            "kind": self.kind,
            "description": self.description,
            "runtime": self.runtime,
            "cpu": self.cpu,
            "core": self.core,
            "features": list(self.features),
            "clock_mhz": self.clock_mhz,
            "ram_bytes": self.ram_bytes,
            "flash_bytes": self.flash_bytes,
            "runtime_flash_bytes": self.runtime_flash_bytes if self.is_mcu else None,
            "ram_reserved_bytes": self.ram_reserved_bytes if self.is_mcu else None,
            "arena_margin": self.arena_margin if self.is_mcu else None,
            "variants": [v.name for v in self.variants],
            "default_variant": self.default_variant,
            "overrides": dict(self.overrides),
            "source": str(self.source) if self.source else None,
        }


def target_wants_fp16(target: Target) -> bool:
    return target.wants_fp16


# --------------------------------------------------------------------------- loading


def _profile_dirs(extra: Path | None = None) -> list[Path]:
    dirs = []
    if extra is not None:
        dirs.append(extra)
    dirs.append(targets_dir())
    return dirs


def _find_profile(name: str, search: list[Path]) -> Path | None:
    for d in search:
        p = d / f"{name}.toml"
        if p.is_file():
            return p
    return None


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"target profile {path} is not valid TOML: {exc}",
                          hint="Fix the syntax of the file (see the shipped targets/*.toml).") from None
    except UnicodeDecodeError as exc:
        raise TargetError(f"target profile {path} is not UTF-8 text (byte {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r})",
                          hint="TOML files are UTF-8: save the file as UTF-8.") from None
    except RecursionError:
        raise TargetError(f"target profile {path} nests tables or arrays too deeply",
                          hint="A board profile needs two levels at most.") from None
    except OSError as exc:
        raise TargetError(f"cannot read target profile {path}: {exc.strerror}") from exc


def _merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _known_names() -> list[str]:
    return sorted(t.name for t in list_targets())


def _unknown(spec: str) -> TargetError:
    return TargetError(
        f"unknown target {spec!r}",
        hint=f"Known targets: {', '.join(_known_names())} (or a path to a .toml profile).",
    )


def _load_raw(path: Path, search: list[Path], chain: tuple[str, ...] = ()) -> tuple[dict, tuple[str, ...]]:
    """The profile at ``path`` with its bases merged in; also the base names."""
    raw = _read_toml(path)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise TargetError(f"target profile {path}: unknown key {sorted(unknown)[0]!r}",
                          hint=f"Allowed top-level keys: {', '.join(sorted(_TOP_KEYS))}.")
    _check_schema(path, raw)
    base_name = raw.get("inherit")
    if base_name is None:
        return raw, ()
    if not isinstance(base_name, str):
        raise TargetError(f"target profile {path}: key 'inherit' must be a profile name")
    if base_name in chain or base_name == path.stem:
        raise TargetError(f"target profile {path}: inheritance cycle through {base_name!r}")
    base_path = _find_profile(base_name, [path.parent] + search)
    if base_path is None:
        raise TargetError(f"target profile {path}: key 'inherit' names {base_name!r}, which does not exist",
                          hint=f"Known profiles: {', '.join(_known_names())}.")
    base_raw, bases = _load_raw(base_path, search, chain + (path.stem,))
    base_raw = {k: v for k, v in base_raw.items() if k not in ("abstract", "inherit")}
    merged = _merge(base_raw, {k: v for k, v in raw.items() if k != "inherit"})
    return merged, (base_name,) + bases


def load_target(spec: str, *, ram: int | str | None = None, flash: int | str | None = None) -> Target:
    """A profile name ("cortex-m4", "rpi", "android-gpu", ...) or a path to a
    .toml file -> Target. ``ram``/``flash`` override the profile's budgets
    (``"192k"``, k = 1024)."""
    if not isinstance(spec, str) or not spec.strip():
        raise _unknown(str(spec))
    spec = spec.strip()
    as_path = Path(spec).expanduser()
    search = _profile_dirs()
    if as_path.is_dir():
        raise TargetError(f"target profile {spec} is a folder, not a .toml file",
                          hint=f"Give a board .toml file inside it, or one of: {', '.join(_known_names())}.")
    if spec.endswith(".toml") or as_path.is_file() or "/" in spec or "\\" in spec:
        if not as_path.is_file():
            raise TargetError(f"target profile file {spec} does not exist",
                              hint=f"Give an existing .toml, or one of: {', '.join(_known_names())}.")
        path = as_path.resolve()
    else:
        path = _find_profile(spec, search)
        if path is None:
            raise _unknown(spec)
    raw, bases = _load_raw(path, search)
    seen = {path.stem}
    while "alias" in raw:  # a generic name: resolve to the named profile
        alias = raw["alias"]
        if not isinstance(alias, str) or alias in seen:
            raise TargetError(f"target profile {path}: key 'alias' must name another profile")
        seen.add(alias)
        apath = _find_profile(alias, [path.parent] + search)
        if apath is None:
            raise TargetError(f"target profile {path}: key 'alias' names {alias!r}, which does not exist")
        path = apath
        raw, bases = _load_raw(path, search)
    if raw.get("abstract"):
        raise TargetError(f"target {spec!r} is an abstract base profile ({path.name})",
                          hint=f"Choose a concrete target: {', '.join(_known_names())}.")
    return _check_budget_overrides(_build_target(spec, path, raw, bases, ram=ram, flash=flash),
                                   ram=ram, flash=flash)


# A microcontroller addresses at most 4 GiB (32-bit Cortex-M): a --ram or --flash beyond that is a typo.
_MCU_ADDRESS_SPACE = 1 << 32


def _check_budget_overrides(target: Target, *, ram, flash) -> Target:
    """Refuse a --ram/--flash override no microcontroller can have (more than its 4 GiB
    address space, e.g. --ram 1e23), naming the option and the largest value allowed."""
    if target.kind != "mcu":
        return target
    for option, given, value in (("--ram", ram, target.ram_bytes), ("--flash", flash, target.flash_bytes)):
        if given is not None and value is not None and value > _MCU_ADDRESS_SPACE:
            raise TargetError(
                f"{option} {given} is {value} bytes, more than a 32-bit microcontroller "
                f"({target.profile}) can address (4 GiB)",
                hint=f"Give the board's real {option[2:]} size, e.g. {option} 256k.")
    return target


def _req(raw: dict, path: Path, key: str, typ):
    if key not in raw:
        raise TargetError(f"target profile {path}: missing key {key!r}",
                          hint="See the shipped targets/*.toml for a complete profile.")
    val = raw[key]
    if not isinstance(val, typ):
        raise TargetError(f"target profile {path}: key {key!r} must be {typ.__name__}, got {val!r}")
    return val


def _size_key(table: dict, path: Path, key: str, default=None) -> int | None:
    if key not in table:
        return default
    try:
        return parse_size(table[key])
    except TargetError as exc:
        raise TargetError(f"target profile {path}: key 'memory.{key}': {exc.message}", hint=exc.hint) from None


def _all_builtin_ops() -> frozenset[str]:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    skip = {"CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"}
    return frozenset(k for k, v in vars(schema.BuiltinOperator).items()
                     if not k.startswith("_") and isinstance(v, int) and k not in skip)


def _op_list(val, path: Path, key: str) -> frozenset[str]:
    if val == "builtin":
        return _all_builtin_ops()
    if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
        raise TargetError(f"target profile {path}: key {key!r} must be a list of TFLite op names or \"builtin\"")
    known = _all_builtin_ops()
    bad = [x for x in val if x not in known]
    if bad:
        raise TargetError(f"target profile {path}: key {key!r} lists {bad[0]!r}, not a TFLite builtin op",
                          hint="Use the names of tflite's BuiltinOperator enum, e.g. CONV_2D.")
    return frozenset(val)


def _build_target(name: str, path: Path, raw: dict, bases: tuple[str, ...], *, ram, flash) -> Target:
    for table, keys in _TABLE_KEYS.items():
        sub = raw.get(table, {})
        if not isinstance(sub, dict):
            raise TargetError(f"target profile {path}: [{table}] must be a table")
        bad = set(sub) - keys
        if bad:
            raise TargetError(f"target profile {path}: unknown key '{table}.{sorted(bad)[0]}'",
                              hint=f"Allowed in [{table}]: {', '.join(sorted(keys))}.")
    kind = _req(raw, path, "kind", str)
    if kind not in KINDS:
        raise TargetError(f"target profile {path}: key 'kind' is {kind!r}",
                          hint=f"kind is one of {', '.join(KINDS)}.")
    runtime = _req(raw, path, "runtime", str)
    description = _req(raw, path, "description", str)
    cpu = raw.get("cpu", {})
    mem = raw.get("memory", {})
    ops = raw.get("ops", {})
    if "supported" not in ops:
        raise TargetError(f"target profile {path}: missing key 'ops.supported'",
                          hint="List the TFLite builtin ops the runtime has, or \"builtin\" for all.")
    clock = cpu.get("clock_mhz")
    if clock is not None and (not isinstance(clock, (int, float)) or clock <= 0):
        raise TargetError(f"target profile {path}: key 'cpu.clock_mhz' must be a positive number, got {clock!r}")
    ram_bytes = _size_key(mem, path, "ram")
    flash_bytes = _size_key(mem, path, "flash")
    overrides = {}
    if ram is not None:
        ram_bytes = overrides["ram_bytes"] = parse_size(ram)
    if flash is not None:
        flash_bytes = overrides["flash_bytes"] = parse_size(flash)
    if kind == "mcu" and (ram_bytes is None or flash_bytes is None):
        raise TargetError(f"target profile {path}: a microcontroller needs 'memory.ram' and 'memory.flash'")
    margin = mem.get("arena_margin", 0.10)
    if not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise TargetError(f"target profile {path}: key 'memory.arena_margin' must be a fraction in [0, 1), got {margin!r}")
    min_scale = ops.get("min_scale", 1e-6)
    if not isinstance(min_scale, (int, float)) or min_scale < 0:
        raise TargetError(f"target profile {path}: key 'ops.min_scale' must be a non-negative number")
    constraints = ops.get("constraints", {})
    if not isinstance(constraints, dict):
        raise TargetError(f"target profile {path}: [ops.constraints] must be a table of op = \"text\"")
    recipe = raw.get("recipe", {})
    if not isinstance(recipe, dict) or set(recipe) - _RECIPE_SECTIONS:
        bad = sorted(set(recipe) - _RECIPE_SECTIONS) if isinstance(recipe, dict) else ["recipe"]
        raise TargetError(f"target profile {path}: unknown recipe section 'recipe.{bad[0]}'",
                          hint=f"Recipe sections: {', '.join(sorted(_RECIPE_SECTIONS))}.")
    variants = []
    for vname, v in (raw.get("variants") or {}).items():
        if not isinstance(v, dict):
            raise TargetError(f"target profile {path}: [variants.{vname}] must be a table")
        try:
            variants.append(Variant(
                name=vname, delegate=str(v["delegate"]), model=str(v["model"]),
                precision=str(v.get("precision", "int8")), num_threads=v.get("num_threads"),
                ops=_op_list(v["ops"], path, f"variants.{vname}.ops") if "ops" in v else None,
            ))
        except KeyError as exc:
            raise TargetError(f"target profile {path}: missing key 'variants.{vname}.{exc.args[0]}'") from None
    default_variant = raw.get("default_variant")
    if default_variant is not None and default_variant not in {v.name for v in variants}:
        raise TargetError(f"target profile {path}: key 'default_variant' is {default_variant!r}, "
                          f"not one of its variants")
    features = cpu.get("features", [])
    if not isinstance(features, list):
        raise TargetError(f"target profile {path}: key 'cpu.features' must be a list")
    return Target(
        name=name,
        profile=path.stem,
        kind=kind,
        description=description,
        runtime=runtime,
        cpu=str(cpu.get("arch", "")),
        core=cpu.get("core"),
        features=tuple(features),
        clock_mhz=clock,
        ram_bytes=ram_bytes,
        flash_bytes=flash_bytes if kind == "mcu" else None,
        runtime_flash_bytes=_size_key(mem, path, "runtime_flash", 0) or 0,
        ram_reserved_bytes=_size_key(mem, path, "ram_reserved", 0) or 0,
        arena_margin=float(margin),
        ops=_op_list(ops["supported"], path, "ops.supported"),
        op_constraints={str(k): str(v) for k, v in constraints.items()},
        int16_ops=_op_list(ops["int16"], path, "ops.int16") if "int16" in ops else frozenset(),
        tensor_types=frozenset(ops.get("tensor_types", ["int8", "int16", "int32", "bool", "float32"])),
        fused_activations=frozenset(ops.get("fused_activations", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])),
        min_scale=float(min_scale),
        recipe=copy.deepcopy(recipe),
        variants=tuple(variants),
        default_variant=default_variant,
        build={str(k): str(v) for k, v in raw.get("build", {}).items()},
        runtime_options=dict(raw.get("runtime_options", {})),
        source=path,
        inherits=bases,
        overrides=overrides,
    )


def list_targets(directory: Path | None = None) -> list[Target]:
    """Every selectable profile (abstract bases left out), aliases included,
    sorted by kind then name. ``directory`` lists another folder of profiles."""
    d = directory or targets_dir()
    out = []
    for path in sorted(d.glob("*.toml")):
        raw = _read_toml(path)
        if raw.get("abstract"):
            continue
        t = load_target(str(path))
        out.append(_rename(t, path.stem))
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(out, key=lambda t: (order.get(t.kind, 9), t.name))


def _rename(t: Target, name: str) -> Target:
    from dataclasses import replace

    return replace(t, name=name)


# --------------------------------------------------------------------------- the model


# The model is read by edgeslim.modelgraph (the one verified .tflite reader); read_model
# is kept as the name the checks, the bundles and `build model.tflite` call it by.
read_model = modelgraph.read


# --------------------------------------------------------------------------- checks

_REPLACEMENTS = {
    "GELU": "use activation='relu' or 'hard_swish' (TFLM has HARD_SWISH), or a Linux target (rpi4, android) whose LiteRT has GELU",
    "FLEX": "remove the layer that needs TensorFlow (SELECT_TF_OPS) ops",
    "LSTM": "use keras.layers.LSTM with unroll=False and int8 16x8 conversion, or a Conv1D/GRU-free model",
}


def _op_hint(op: str, target: Target) -> str:
    alt = _REPLACEMENTS.get(op)
    if alt:
        return f"Replace the layer: {alt}."
    if target.kind == "mcu":
        return (f"Replace the layer with one TFLite Micro has (see `edgeslim targets show {target.profile}`), "
                "or choose a target whose runtime has it (rpi4, android).")
    return "Replace the layer, or choose another target (see `edgeslim targets`)."


@dataclass
class CheckResult:
    """What `check_model` found; ``to_dict()`` goes into report.json."""

    target: str
    kind: str
    ops: list[str]
    op_counts: dict[str, int]
    model_bytes: int
    flash_needed_bytes: int | None = None
    flash_budget_bytes: int | None = None
    arena_measured_bytes: int | None = None
    arena_bytes: int | None = None  # measured + margin, rounded up to 16: the bundle's constant
    arena_margin: float | None = None
    ram_budget_bytes: int | None = None
    gpu_fallback_ops: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def flash_headroom_bytes(self) -> int | None:
        if self.flash_needed_bytes is None or self.flash_budget_bytes is None:
            return None
        return self.flash_budget_bytes - self.flash_needed_bytes

    @property
    def ram_headroom_bytes(self) -> int | None:
        if self.arena_bytes is None or self.ram_budget_bytes is None:
            return None
        return self.ram_budget_bytes - self.arena_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "ops": list(self.ops),
            "op_counts": dict(self.op_counts),
            "model_bytes": self.model_bytes,
            "flash_needed_bytes": self.flash_needed_bytes,
            "flash_budget_bytes": self.flash_budget_bytes,
            "flash_headroom_bytes": self.flash_headroom_bytes,
            "arena_measured_bytes": self.arena_measured_bytes,
            "arena_margin": self.arena_margin,
            "arena_bytes": self.arena_bytes,
            "ram_budget_bytes": self.ram_budget_bytes,
            "ram_headroom_bytes": self.ram_headroom_bytes,
            "gpu_fallback_ops": list(self.gpu_fallback_ops),
            "notes": list(self.notes),
        }


def arena_with_margin(measured: int, margin: float) -> int:
    """Measured arena plus the margin, rounded up to a multiple of 16."""
    return int(math.ceil(measured * (1.0 + margin) / 16.0)) * 16


# The zero points a quantized tensor of each type can hold (TFLite: the zero point is a value
# of the tensor's own integer type).
_ZERO_POINT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
                     "int4": (-8, 7)}


def _tensor_error(t: Tensor, what: str) -> TargetError:
    layer = modelgraph.layer_of(t.name)
    where = f" (layer {layer!r})" if layer else ""
    return TargetError(
        f"tensor {t.name!r}{where} {what}",
        hint="The .tflite file is corrupt or was edited by hand: no converter writes this. "
             "Convert the model again from the Keras model.")


def check_quantization(info: Graph) -> None:
    """Refuse quantization parameters no runtime can use: a NaN, infinite or negative scale
    (NaN passes every ``<`` comparison, so it is tested for explicitly), a zero point outside
    the range of the tensor's type (int8: -128..127), or scale and zero-point lists of
    different lengths."""
    for t in info.tensors:
        bad = [float(s) for s in t.scales if not math.isfinite(s) or s < 0]
        if bad:
            raise _tensor_error(t, f"has the quantization scale {bad[0]!r} "
                                   "(a scale must be a finite number above zero)")
        if t.scales.size and t.zero_points.size and t.zero_points.size not in (1, t.scales.size):
            raise _tensor_error(t, f"has {len(t.scales)} quantization scales but "
                                   f"{len(t.zero_points)} zero points")
        lo_hi = _ZERO_POINT_RANGE.get(t.dtype.lower())
        if lo_hi and t.scales.size:
            out = [int(z) for z in t.zero_points if not lo_hi[0] <= z <= lo_hi[1]]
            if out:
                raise _tensor_error(t, f"has the zero point {out[0]} outside the {t.dtype.lower()} range "
                                       f"{lo_hi[0]}..{lo_hi[1]}")


def check_scales(info: Graph, min_scale: float = 1e-6) -> None:
    """Refuse degenerate activation scales (TFLM's int8 SOFTMAX aborts on ~1e-8).

    Weight tensors are left alone: a per-channel weight scale of ~1e-9 is what the
    converter gives an output channel that pruning zeroed entirely, and it is
    harmless (the requantization multiplier flushes to zero, as in TFLM's
    QuantizeMultiplier)."""
    check_quantization(info)
    for t in info.tensors:
        if t.dtype not in ("INT8", "UINT8", "INT16") or not t.scales.size or t.constant:
            continue
        smallest = float(t.scales.min())
        if smallest < min_scale:
            layer = modelgraph.layer_of(t.name)
            where = f" (layer {layer!r})" if layer else ""
            raise TargetError(
                f"tensor {t.name!r}{where} has a degenerate quantization scale {smallest:.3g} "
                f"(below {min_scale:g})",
                hint="This happens when a model is converted from untrained or collapsed weights, "
                     "or with a representative data set that does not exercise the layer: train "
                     "the model and calibrate with real samples.",
            )


def runs_at_16x8(o: modelgraph.Operator) -> bool:
    """An op runs at 16x8 when its data input or its output is int16. (Int8 LSTM and SVDF
    keep int16 state tensors among their other inputs: those are int8 kernels.)"""
    return o.input_dtypes[:1] == ["INT16"] or o.output_dtypes[:1] == ["INT16"]


def check_int16_ops(info: modelgraph.Graph, target: Target) -> None:
    """Refuse ops with int16 activations (16x8) that the target's runtime lacks at 16x8
    (the profile's ``ops.int16``), naming each op, its layer and the target."""
    missing: dict[str, modelgraph.Operator] = {}
    for o in info.operators:
        if runs_at_16x8(o) and o.opcode not in target.int16_ops:
            missing.setdefault(o.opcode, o)
    if not missing:
        return
    parts = [f"{name} (from layer {o.layer!r})" if o.layer else f"{name} (operator {o.index})"
             for name, o in missing.items()]
    if target.int16_ops:
        hint = ("Convert with int8 activations (drop convert.activations = \"int16\"), replace the "
                f"layer(s), or choose a target that runs them at 16x8 (`edgeslim targets show "
                f"{target.profile}` lists its 16x8 ops).")
    else:
        hint = ("Convert with int8 activations (drop convert.activations = \"int16\"), or choose a "
                "target whose profile lists 16x8 ops (ops.int16), e.g. rpi4, android or cortex-m4.")
    raise TargetError(
        f"the model runs {'an op' if len(missing) == 1 else 'ops'} with int16 activations (16x8) "
        f"that {target.runtime} on {target.profile} does not run at 16x8: {', '.join(parts)}",
        hint=hint)


def check_precision(target: Target, convert_cfg, *, backend: str = "tflm") -> None:
    """Before any work: refuse a mixed-precision conversion (``[convert]``) the target or the
    backend cannot run. The per-op 16x8 check runs on the converted model (check_int16_ops)."""
    if not convert_cfg.mixed:
        return
    if backend == "c":
        raise TargetError(
            f"--backend c generates int8 kernels only; convert: {convert_cfg.describe()} cannot "
            "be compiled to C",
            hint="Drop --backend c (the TFLite Micro bundle runs 16x8 for the ops the profile "
                 "lists in ops.int16), or convert to plain int8.")
    if convert_cfg.activations == "int16" and not target.int16_ops:
        raise TargetError(
            f"{target.runtime} on {target.profile} runs no op with int16 activations (its profile "
            "has no ops.int16 list): 16x8 conversion is not available for this target",
            hint="Convert with int8 activations, or choose a target that lists 16x8 ops "
                 "(rpi4, android, cortex-m4).")
    if convert_cfg.keeps_float and not target.allows_float:
        raise TargetError(
            f"{target.profile} runs fully-integer models only ({target.runtime}; ops.tensor_types "
            f"{', '.join(sorted(target.tensor_types))}): layers cannot be kept in float "
            f"(convert.float_layers / float_worst)",
            hint="Drop float_layers/float_worst (or use convert.activations = \"int16\" where the "
                 "profile lists 16x8 ops), or build for a target that runs float ops (rpi4, android).")


def check_model(model_bytes: bytes, target: Target, *, measure: bool = True) -> CheckResult:
    """Check an int8 .tflite against a target. Raises TargetError for a
    degenerate scale, an unsupported op, a float op or activation on an
    int8-only runtime, or a model over the flash or RAM budget. For
    microcontrollers the arena is measured with TFLite Micro (child process)."""
    info = read_model(model_bytes)
    check_scales(info, target.min_scale)
    counts: dict[str, int] = {}
    for o in info.operators:
        counts[o.opcode] = counts.get(o.opcode, 0) + 1
    result = CheckResult(target=target.profile, kind=target.kind, ops=info.op_names,
                         op_counts=counts, model_bytes=len(model_bytes))

    missing: dict[str, Operator] = {}
    for o in info.operators:
        if o.opcode not in target.ops and o.opcode not in missing:
            missing[o.opcode] = o
    if missing:
        parts = []
        for name, o in missing.items():
            layer = o.layer
            parts.append(f"{name} (from layer {layer!r})" if layer else
                         f"{name} (tensor {info.tensors[o.outputs[0]].name!r})" if o.outputs else f"{name} (operator {o.index})")
        first = next(iter(missing))
        raise TargetError(
            f"the model uses {'an op' if len(missing) == 1 else 'ops'} that {target.runtime} on "
            f"{target.profile} does not have: {', '.join(parts)}",
            hint=_op_hint(first, target),
        )
    check_int16_ops(info, target)
    for o in info.operators:
        bad = [t.lower() for t in o.input_dtypes + o.output_dtypes if t.lower() not in target.tensor_types]
        # QUANTIZE/DEQUANTIZE only bridge types; the float op between them is the fault.
        if bad and o.opcode not in modelgraph.BRIDGE_OPS:
            layer = o.layer
            raise TargetError(
                f"{o.opcode} from layer {layer!r} runs on {bad[0]} tensors; {target.profile} takes "
                f"{', '.join(sorted(target.tensor_types))} only (fully-integer models)",
                hint="Convert without float fallback (recipe: allow_float_fallback = false) and "
                     "replace the layer the int8 converter left in float, or choose a Linux target "
                     "(rpi4, android) that runs float ops.",
            )
        if o.activation is not None and o.activation not in target.fused_activations:
            raise TargetError(
                f"{o.opcode} from layer {o.layer!r} has fused activation {o.activation}, which "
                f"{target.runtime} does not implement for this target",
                hint=f"Use one of {', '.join(sorted(target.fused_activations))} as the layer's activation.",
            )
    for v in target.variants:
        if v.ops is not None:
            fb = [op for op in result.ops if op not in v.ops]
            if fb and v.precision == "float16":
                result.gpu_fallback_ops = fb
                result.notes.append(
                    f"{v.name} variant: {', '.join(fb)} not supported by the {v.delegate} delegate; "
                    "those ops fall back to the CPU")

    if target.kind == "mcu":
        result.flash_budget_bytes = target.flash_bytes
        result.flash_needed_bytes = len(model_bytes) + target.runtime_flash_bytes
        if result.flash_needed_bytes > target.flash_bytes:
            raise TargetError(
                f"the model does not fit {target.profile}'s flash: model {len(model_bytes)} B + "
                f"runtime estimate {target.runtime_flash_bytes} B = {result.flash_needed_bytes} B "
                f"> flash {target.flash_bytes} B (over by "
                f"{result.flash_needed_bytes - target.flash_bytes} B)",
                hint="Compress harder (higher prune sparsity, fewer clusters, a smaller model via "
                     "distill) or give the real budget with --flash.",
            )
        if measure:
            from edgeslim import micro

            measured = micro.measure_arena(model_bytes)
            result.arena_measured_bytes = measured
            result.arena_margin = target.arena_margin
            result.arena_bytes = arena_with_margin(measured, target.arena_margin)
            result.ram_budget_bytes = target.arena_budget_bytes
            result.notes.append(
                "arena measured with the 64-bit host TFLite Micro interpreter (a 32-bit build "
                f"needs slightly less); {target.arena_margin:.0%} margin added")
            if result.arena_bytes > result.ram_budget_bytes:
                raise TargetError(
                    f"the model does not fit {target.profile}'s RAM: tensor arena {measured} B "
                    f"measured + {target.arena_margin:.0%} margin = {result.arena_bytes} B > "
                    f"{result.ram_budget_bytes} B available (RAM {target.ram_bytes} B minus "
                    f"{target.ram_reserved_bytes} B reserved for stack/heap/application; over by "
                    f"{result.arena_bytes - result.ram_budget_bytes} B)",
                    hint="Shrink the activations (smaller input, fewer filters in the early "
                         "layers, a stride or pooling sooner) or give the real budget with --ram.",
                )
    return result
