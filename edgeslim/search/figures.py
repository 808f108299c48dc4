"""Budgets, and the figures a candidate is judged on, measured rather than estimated.

Figures per backend (the same rule before training, on the shipped bundle, and in
``search.json``):

* ``--backend c``: flash = text + rodata + data of the generated C library compiled
  for the target's core with ``-Os`` (``arm-none-eabi-size``; the library has no
  interpreter, so nothing else of edgeslim's is linked); RAM = the static memory
  plan's arena The library comes in variants with the same outputs bit for
  bit (codegen.generate): the core's optimized kernels or the reference ones, the
  smallest memory plan (fused and in-place layers) or layer by layer. Each is compiled;
  the first in the search's order (fastest first) that meets the budgets is the
  candidate's, so a model the optimized kernels would not fit in flash still ships,
  with the kernels that fit.
* TFLite Micro (microcontroller targets): flash = the ``.tflite`` bytes plus the
  profile's ``runtime_flash``; RAM = the tensor arena measured with the tflite-micro
  interpreter plus the profile's ``arena_margin`` (as ``edgeslim check``).
* every target: MACs counted from the model's static shapes.

Channel counts (hence MACs, arena, code and weight bytes) are fixed before any
fine-tuning, so the figures measured on an untrained slimmed model are those of the
trained one: the search spends no training on a candidate over a budget.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeslim.errors import EdgeslimError

_COUNT_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)\s*$")


def parse_count(value) -> int:
    """``"1.2M"`` -> 1200000 (k = 1000, M = 10**6, G = 10**9): MACs are counts, not bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _COUNT_RE.match(str(value))
    if not m:
        raise EdgeslimError(f"bad --max-macs value {value!r}",
                            "Write a count with an optional unit: 800000, 800k, 1.2M (k = 1000).")
    return int(round(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]))


@dataclass(frozen=True)
class Budgets:
    """The most flash and RAM (bytes) and MACs a shipped model may take; None: no limit."""

    flash: int | None = None
    ram: int | None = None
    macs: int | None = None

    @classmethod
    def parse(cls, *, max_flash=None, max_ram=None, max_macs=None) -> "Budgets":
        from edgeslim.targets import TargetError, parse_size

        out = {}
        for key, value in (("flash", max_flash), ("ram", max_ram)):
            if value is None:
                continue
            try:
                out[key] = parse_size(value)
            except TargetError as exc:
                raise EdgeslimError(f"bad --max-{key} value {value!r}: {exc.message}",
                                    "Write a size such as 24k, 12000 or 1.2m (k = 1024).") from None
        if max_macs is not None:
            out["macs"] = parse_count(max_macs)
        return cls(**out)

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.flash, self.ram, self.macs))

    def items(self):
        return [(k, getattr(self, k)) for k in ("flash", "ram", "macs") if getattr(self, k) is not None]

    def over(self, figures: dict) -> dict[str, int]:
        """Budget -> by how much ``figures`` exceed it (only the budgets exceeded)."""
        return {k: figures[k] - v for k, v in self.items() if figures.get(k) is not None
                and figures[k] > v}

    def to_dict(self) -> dict:
        return {"flash_bytes": self.flash, "ram_bytes": self.ram, "macs": self.macs}


def check_budgets_apply(budgets: Budgets, target, backend: str) -> None:
    """Flash and RAM budgets need a figure the target has: microcontrollers only."""
    if (budgets.flash is not None or budgets.ram is not None) and not target.is_mcu:
        raise EdgeslimError(
            f"--max-flash and --max-ram apply to microcontroller targets; {target.name} is a "
            f"{target.kind} target",
            "Use --max-macs for a Raspberry Pi or Android target, or a cortex-m* target.")


def measure(model_bytes: bytes, keras_model, *, target, backend: str, pack_weights: bool,
            c_name: str = "model", work: Path | None = None, budgets: "Budgets | None" = None,
            variants=(("optimized", "smallest"),)) -> dict:
    """Flash, RAM and MACs of one int8 model as it would ship (see the module docstring).
    ``--backend c``: every library variant of ``variants`` ((kernels, memory plan) pairs,
    fastest first: SearchSpace.library_variants) is compiled; the figures are those of the
    first that meets ``budgets`` (``kernels``, ``memory_plan`` name it), with every
    variant's in ``variants`` and the least flash of any in ``flash_min``."""
    figs = {"macs": macs_of(model_bytes, keras_model), "tflite_bytes": len(model_bytes),
            "flash": None, "ram": None}
    if backend == "c":
        rows = []
        for kernels, plan in variants:
            with tempfile.TemporaryDirectory(prefix="es-figs-", dir=work) as tmp:
                rows.append({"kernels": kernels, "memory_plan": plan, **c_library_figures(
                    model_bytes, Path(tmp), core=target.profile, target=target,
                    pack_weights=pack_weights, name=c_name, kernels=kernels,
                    layer_by_layer=plan == "layer-by-layer")})
        figs.update(choose_variant(rows, budgets))
        figs["variants"] = [{k: r[k] for k in ("kernels", "memory_plan", "flash", "ram")}
                            for r in rows]
        figs["flash_min"] = min(r["flash"] for r in rows)
    elif target.is_mcu:
        from edgeslim import micro
        from edgeslim.targets import arena_with_margin

        arena = micro.measure_arena(model_bytes)
        figs.update(flash=len(model_bytes) + target.runtime_flash_bytes,
                    ram=arena_with_margin(arena, target.arena_margin),
                    flash_rule=f".tflite + runtime_flash {target.runtime_flash_bytes} B",
                    ram_rule=f"TFLite Micro arena measured ({arena} B) + "
                             f"{target.arena_margin:.0%} margin")
    return figs


def macs_of(model_bytes: bytes, keras_model=None) -> int:
    """Multiply-accumulates of the int8 model that ships, read from its operators
    (modelgraph.graph_macs); a model that cannot be read is counted on the Keras model's
    shapes."""
    from edgeslim import modelgraph
    from edgeslim.errors import EdgeslimError as _Err

    try:
        return modelgraph.graph_macs(modelgraph.read(bytes(model_bytes)))
    except _Err:
        if keras_model is None:
            return None
        from edgeslim.compress.channels import count_macs

        return int(count_macs(keras_model))


def choose_variant(rows: list[dict], budgets: "Budgets | None") -> dict:
    """The first row (a library variant's figures) within ``budgets``; if none is, the one
    closest to them (least worst relative excess, then the earliest)."""
    if budgets is None or not budgets.any:
        return dict(rows[0])
    fit = [r for r in rows if not budgets.over(r)]
    if fit:
        return dict(fit[0])

    def excess(r):
        return max(v / getattr(budgets, k) for k, v in budgets.over(r).items())

    return dict(min(rows, key=excess))


def c_library_figures(model_bytes: bytes, work: Path, *, core: str, pack_weights: bool,
                      lib_dir: Path | None = None, name: str = "model", target=None,
                      kernels: str = "optimized", layer_by_layer: bool = False) -> dict:
    """Generate (unless ``lib_dir`` holds it already) and cross-compile the C library.
    ``name``: its C identifier prefix, as the bundle's (it is in the library's strings);
    ``target``: the profile whose cpu.features choose the kernels, as the bundle's build does;
    ``kernels`` and ``layer_by_layer``: the variant (codegen.generate)."""
    from edgeslim.harness import toolchain

    arena = None
    if lib_dir is None:
        from edgeslim.codegen import generate

        lib_dir = work / "c"
        cg = generate(model_bytes, lib_dir, name=name, pack_weights=pack_weights, target=target or core,
                      kernels=kernels, layer_by_layer=layer_by_layer)
        arena = cg.arena_size
    objs = toolchain.cross_compile(sorted(Path(lib_dir).glob("*.c")), work / "obj", core=core,
                                   include_dirs=[lib_dir], opt="-Os")
    s = toolchain.section_sizes(objs)
    return {"flash": s.flash, "ram": arena, "sections": s.as_dict(),
            "flash_rule": f"C library text+rodata+data, arm-none-eabi-gcc -Os for {core}",
            "ram_rule": "static memory plan arena"}


def measure_bundle(bundle_dir: Path, *, target, backend: str) -> dict:
    """The figures re-measured on a written bundle: its model.tflite, its C library
    cross-compiled again, its report's memory plan."""
    import json

    bundle_dir = Path(bundle_dir)
    report = json.loads((bundle_dir / "report.json").read_text())
    model_bytes = (bundle_dir / "model.tflite").read_bytes()
    figs = {"tflite_bytes": len(model_bytes), "macs": macs_of(model_bytes), "flash": None,
            "ram": None}
    if backend == "c":
        with tempfile.TemporaryDirectory(prefix="es-bundle-") as tmp:
            figs.update(c_library_figures(model_bytes, Path(tmp), core=target.profile, target=target,
                                          pack_weights=False, lib_dir=bundle_dir / "c"))
        figs["ram"] = int(report["codegen"]["arena_bytes"])
        lib = report["codegen"].get("library") or {}
        figs.update(kernels=lib.get("kernels"), memory_plan=lib.get("memory_plan"))
    elif target.is_mcu:
        from edgeslim import micro
        from edgeslim.targets import arena_with_margin

        figs["flash"] = len(model_bytes) + target.runtime_flash_bytes
        figs["ram"] = arena_with_margin(micro.measure_arena(model_bytes), target.arena_margin)
    return figs
