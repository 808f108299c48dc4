"""The search space: which compression settings a budget search tries, as recipes.

A *candidate* is one point of the space: a global channel ratio with its allocation,
an unstructured sparsity, a cluster count, packed C weights or not, the channel
stage's fine-tune distilled from the user's model or not, and the calibration draw.
Each turns into an ordinary :class:`edgeslim.recipe.Recipe` (plus ``--pack-weights``),
so whatever the search picks can be rebuilt with ``edgeslim build --recipe``.

Candidates are numbered in the order :func:`enumerate_candidates` yields them; that
number (not a Ray trial id, not a completion order) is what every choice breaks ties
on, so the same flags and seed pick the same winner.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

from edgeslim import recipe as recipe_mod
from edgeslim.errors import RecipeError

SPACE_KEYS = ("ratios", "allocations", "group_ratios", "group_shapes", "sparsities", "clusters",
              "pack_weights", "distill", "calibrations", "kernels", "memory_plans")
_LIST_KEYS = tuple(k for k in SPACE_KEYS if k != "group_shapes")


@dataclass(frozen=True)
class SearchSpace:
    """The values each knob takes (the ``[search]`` table of a space file).

    ``ratios``: channel-pruning ratios (0: no channel stage); ``allocations``: how a ratio
    spreads over layer groups (``uniform``, ``sensitivity``); ``group_ratios``: the ratios
    each layer group (channels.py's dependency groups) may take on its own, and
    ``group_shapes``: how many such per-group width vectors are measured and trained at
    most (among the widest that the figures counted before training let fit, see shapes.py;
    ``group_ratios = []`` or ``group_shapes = 0``: uniform ratios only); ``sparsities``: magnitude
    pruning (0: none); ``clusters``: shared weight values per layer (0: none);
    ``pack_weights``: 4-bit packed clustered weights in the C library (``--backend c``
    only, with at most 16 clusters); ``distill``: the channel stage's fine-tune
    distilled from the user's model or trained on labels alone; ``calibrations``:
    ``random`` or ``coreset`` int8 calibration samples; ``kernels`` (``optimized``,
    ``reference``) and ``memory_plans`` (``smallest``, ``layer-by-layer``): the C library
    variants a candidate may ship with (``--backend c``), tried in this order (kernels
    first) and the first within the budgets taken; none is trained (their outputs are the
    same bit for bit). ``kernels = ["optimized"]`` keeps the fast kernels at any cost.
    """

    ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.5625, 0.625, 0.75)
    allocations: tuple[str, ...] = ("uniform",)
    group_ratios: tuple[float, ...] = (0.25, 0.5, 0.5625, 0.625, 0.75)
    group_shapes: int = 4
    sparsities: tuple[float, ...] = (0.0, 0.5)
    clusters: tuple[int, ...] = (0, 16)
    pack_weights: tuple[bool, ...] = (False, True)
    distill: tuple[bool, ...] = (True, False)
    calibrations: tuple[str, ...] = ("random", "coreset")
    kernels: tuple[str, ...] = ("optimized", "reference")
    memory_plans: tuple[str, ...] = ("smallest", "layer-by-layer")

    def __post_init__(self):
        for key in _LIST_KEYS:
            value = getattr(self, key)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise RecipeError(f"search.{key} must be a list, got {value!r}",
                                  hint=f"Write e.g. {key} = {list(getattr(SearchSpace, key))}.")
            value = tuple(value)
            if not value and key != "group_ratios":
                raise RecipeError(f"search.{key} is empty", hint="Give at least one value.")
            object.__setattr__(self, key, value)
        for key in ("ratios", "group_ratios"):
            for r in getattr(self, key):
                if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 <= r < 1:
                    raise RecipeError(f"search.{key} holds {r!r}: ratios are in [0, 1)",
                                      hint="0 means no channel pruning; 0.5 removes half the filters.")
        g = self.group_shapes
        if not isinstance(g, int) or isinstance(g, bool) or g < 0:
            raise RecipeError(f"search.group_shapes = {g!r} must be a whole number >= 0",
                              hint="How many per-group width vectors to train at most; 0: none.")
        for s in self.sparsities:
            if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 <= s < 1:
                raise RecipeError(f"search.sparsities holds {s!r}: sparsities are in [0, 1)")
        for c in self.clusters:
            if not isinstance(c, int) or isinstance(c, bool) or not (c == 0 or 2 <= c <= 256):
                raise RecipeError(f"search.clusters holds {c!r}: 0 (no clustering) or 2 to 256")
        from edgeslim.compress.channels import ALLOCATIONS

        for a in self.allocations:
            if a not in ALLOCATIONS:
                raise RecipeError(f"search.allocations holds {a!r}",
                                  hint=f"One of {', '.join(ALLOCATIONS)}.")
        for c in self.calibrations:
            if c not in recipe_mod.CALIBRATIONS:
                raise RecipeError(f"search.calibrations holds {c!r}",
                                  hint=f"One of {', '.join(recipe_mod.CALIBRATIONS)}.")
        for key in ("pack_weights", "distill"):
            if not all(isinstance(v, bool) for v in getattr(self, key)):
                raise RecipeError(f"search.{key} must hold true/false values")
        from edgeslim.codegen import KERNELS, MEMORY_PLANS

        for key, known in (("kernels", KERNELS), ("memory_plans", MEMORY_PLANS)):
            for v in getattr(self, key):
                if v not in known:
                    raise RecipeError(f"search.{key} holds {v!r}", hint=f"One of {', '.join(known)}.")
            if len(set(getattr(self, key))) != len(getattr(self, key)):
                raise RecipeError(f"search.{key} names a value twice: {list(getattr(self, key))}",
                                  hint="The order is the order of preference; give each once.")

    @property
    def library_variants(self) -> tuple[tuple[str, str], ...]:
        """(kernels, memory plan) pairs in the order tried: fastest kernels first."""
        return tuple(itertools.product(self.kernels, self.memory_plans))

    @classmethod
    def from_table(cls, table: dict, *, source: str = "search space") -> "SearchSpace":
        unknown = sorted(set(table) - set(SPACE_KEYS))
        if unknown:
            raise RecipeError(f"{source}: unknown key(s) {', '.join(unknown)} in [search]",
                              hint=f"Valid keys: {', '.join(SPACE_KEYS)}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})

    @classmethod
    def load(cls, path) -> "SearchSpace":
        table = recipe_mod.load_toml(path)
        inner = table.get("search", table)
        if not isinstance(inner, dict):
            raise RecipeError(f"{path}: [search] must be a table")
        return cls.from_table(inner, source=str(path))

    def to_dict(self) -> dict:
        return {k: list(getattr(self, k)) if k in _LIST_KEYS else getattr(self, k)
                for k in SPACE_KEYS}


@dataclass(frozen=True)
class Candidate:
    """One point of the space. ``index`` orders everything the search decides."""

    index: int
    ratio: float
    allocation: str
    sparsity: float
    clusters: int
    pack_weights: bool
    distill: bool
    calibration: str
    # Per-group widths: ((producers of a layer group, its ratio), ...) in the groups' order;
    # () for a global ``ratio`` (then ``ratio`` is the largest of these).
    groups: tuple = ()

    @property
    def name(self) -> str:
        if self.is_plain:
            return f"c{self.index:03d} plain int8 ({self.calibration})"
        parts = []
        if self.groups:
            parts.append("channels " + "/".join(f"{r:g}" for _, r in self.groups)
                         + " per group" + (" distilled" if self.distill else ""))
        elif self.ratio:
            parts.append(f"channels {self.ratio:g}" + ("" if self.allocation == "uniform"
                                                       else f" {self.allocation}")
                         + (" distilled" if self.distill else ""))
        if self.sparsity:
            parts.append(f"sparsity {self.sparsity:g}")
        if self.clusters:
            parts.append(f"{self.clusters} clusters" + (" packed" if self.pack_weights else ""))
        return f"c{self.index:03d} " + ", ".join(parts) + f" ({self.calibration})"

    @property
    def is_plain(self) -> bool:
        """No stage trains: plain int8 conversion (its figures do not depend on epochs)."""
        return not (self.ratio or self.sparsity or self.clusters)

    @property
    def structure(self) -> tuple:
        """What the figures measured before training depend on (not on sparsity: the
        runtimes store dense weights; not on distill or calibration)."""
        packed = self.clusters if self.pack_weights else 0
        if self.groups:
            return (tuple(r for _, r in self.groups), "groups", packed, self.pack_weights)
        return (self.ratio, self.allocation if self.ratio else "uniform", packed, self.pack_weights)

    @property
    def knobs(self) -> dict:
        out = {"ratio": self.ratio, "allocation": self.allocation, "sparsity": self.sparsity,
               "clusters": self.clusters, "pack_weights": self.pack_weights,
               "distill": self.distill, "calibration": self.calibration}
        if self.groups:
            out["group_ratios"] = {"+".join(p): r for p, r in self.groups}
        return out

    @property
    def gentleness(self) -> tuple:
        """Sorts a candidate after every one that costs no more accuracy in any knob
        (:meth:`costs_no_more_accuracy_than`): mean channel ratio, cluster coarseness,
        sparsity."""
        widths = self._widths(1)
        return (sum(widths) / len(widths), 0 if self.clusters == 0 else 1.0 / self.clusters,
                self.sparsity)

    def _widths(self, n: int) -> tuple:
        """Ratio per layer group (n groups when the ratio is global)."""
        return tuple(r for _, r in self.groups) if self.groups else (self.ratio,) * n

    def costs_no_more_accuracy_than(self, other: "Candidate") -> bool:
        """True when every accuracy-costing knob of ``self`` is at most as aggressive as
        ``other``'s and the free knobs (distill, calibration, allocation) are equal."""
        def coarseness(c):  # fewer clusters cost more accuracy; 0 = not clustered
            return 0 if c.clusters == 0 else 1.0 / c.clusters
        n = max(len(self.groups), len(other.groups), 1)
        if self.groups and other.groups and len(self.groups) != len(other.groups):
            return False
        gentler = all(a <= b for a, b in zip(self._widths(n), other._widths(n)))  # per group
        # A sensitivity allocation's per-group ratios are only known once measured.
        alloc_ok = self.allocation == other.allocation or not (self.ratio or self.groups)
        return (gentler and self.sparsity <= other.sparsity
                and coarseness(self) <= coarseness(other) and self.distill == other.distill
                and self.calibration == other.calibration and alloc_ok)


def enumerate_candidates(space: SearchSpace, *, backend: str) -> list[Candidate]:
    """Every distinct, valid point of the space, numbered in a fixed order.

    Dropped as meaningless: packed weights without the C backend or with more than 16
    clusters (or none); distill and allocation variants where no channel stage runs.
    """
    seen: set[tuple] = set()
    out: list[Candidate] = []
    for ratio, alloc, sparsity, clusters, pack, distill, calib in itertools.product(
            space.ratios, space.allocations, space.sparsities, space.clusters,
            space.pack_weights, space.distill, space.calibrations):
        if pack and (backend != "c" or not 0 < clusters <= 16):
            continue
        if not ratio:
            alloc, distill = "uniform", True
        key = (float(ratio), alloc, float(sparsity), int(clusters), bool(pack), bool(distill), calib)
        if key in seen:
            continue
        seen.add(key)
        out.append(Candidate(len(out), *key))
    return out


def group_candidates(shapes: list[tuple], space: SearchSpace, *, backend: str,
                     start: int) -> list[Candidate]:
    """Candidates for per-group width vectors (``shapes``: ((producers, ratio), ...) each),
    crossed with the other knobs as :func:`enumerate_candidates` does but never packed
    (packing would double the structures to measure for at most a few percent of flash),
    numbered from ``start`` (after the global-ratio ones)."""
    out: list[Candidate] = []
    for shape in shapes:
        top = max(r for _, r in shape)
        for sparsity, clusters, pack, distill, calib in itertools.product(
                space.sparsities, space.clusters, space.pack_weights, space.distill,
                space.calibrations):
            if pack:
                continue
            out.append(Candidate(start + len(out), float(top), "uniform", float(sparsity),
                                 int(clusters), bool(pack), bool(distill), calib,
                                 groups=tuple((tuple(p), float(r)) for p, r in shape)))
    return out


def candidate_recipe(base, cand: Candidate, *, epochs: int, seed: int | None, max_drop):
    """The recipe that builds ``cand`` with ``epochs`` of fine-tuning per stage.

    Built on ``base`` (the target's recipe with the user's flags), so settings the
    search does not vary (channel importance, batch size, learning rate, ...) stay the
    user's. The guard stays on without back-off: the search already chose.
    """
    stages: list[str] = []
    cfgs = dict(base.stages)
    if cand.ratio:
        stages.append("channels")
        ch = cfgs["channels"]
        overrides = ch.overrides
        if cand.groups:
            from edgeslim.compress.overrides import LayerOverride

            mine = {p for ps, _ in cand.groups for p in ps}
            overrides = tuple(LayerOverride(layer=p, ratio=float(r)) for ps, r in cand.groups
                              for p in ps) + tuple(o for o in ch.overrides if o.layer not in mine)
        cfgs["channels"] = dataclasses.replace(
            ch, ratio=float(cand.ratio), allocation=cand.allocation, distill=cand.distill,
            epochs=int(epochs), steps=None, overrides=overrides)
    if cand.sparsity:
        stages.append("prune")
        cfgs["prune"] = dataclasses.replace(cfgs["prune"], sparsity=float(cand.sparsity),
                                            epochs=max(1, int(epochs)))
    if cand.clusters:
        stages.append("cluster")
        cfgs["cluster"] = dataclasses.replace(cfgs["cluster"], clusters=int(cand.clusters),
                                              epochs=int(epochs))
    build = dataclasses.replace(base.build, stages=tuple(stages), calibration=cand.calibration,
                                seed=seed, max_drop=max_drop, guard=True, backoff_steps=0)
    rcp = dataclasses.replace(base, build=build, stages=cfgs)
    # Through TOML and back: the recipe a user re-runs is exactly this one.
    return recipe_mod.from_dict(rcp.to_dict(), source=f"candidate {cand.index}")


@dataclass
class Trial:
    """What the search learnt about one candidate: figures before training, and the
    result of every rung it was trained at."""

    cand: Candidate
    figures: dict = field(default_factory=dict)
    status: str = "pending"  # pruned | dominated | trained | stopped | lost | winner ...
    why: str = ""
    rungs: list = field(default_factory=list)  # [{"rung", "epochs", "val_metric", "val_drop", ...}]

    @property
    def last(self) -> dict | None:
        """The latest rung's result (what successive halving ranks on)."""
        ok = [r for r in self.rungs if r.get("val_drop") is not None]
        return ok[-1] if ok else None

    @property
    def best(self) -> dict | None:
        """The rung result with the least validation drop (fewer epochs on a tie): each is a
        configuration the candidate's recipe at that rung's epochs rebuilds exactly."""
        ok = [r for r in self.rungs if r.get("val_drop") is not None and not r.get("reused")
              and not r.get("failed")]
        return min(ok, key=lambda r: (r["val_drop"], r["epochs"])) if ok else self.last
