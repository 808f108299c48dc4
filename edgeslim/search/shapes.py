"""Per-group channel widths: which width vectors are worth measuring and training.

Every layer group (the channels that must go together, see compress/channels.py) may
take its own ratio from ``search.group_ratios``: with 5 groups and 4 ratios that is
1,024 vectors, far too many to build. They are ranked with figures that need no model
at all, counted from the dependency graph (``channels.WidthPlanner``):

* MACs, as counted on the slimmed Keras model (the int8 model's operators, on which the
  budget is checked, count slightly more: 2.5% on the digits example);
* flash, estimated by a straight line through the parameter counts and the flash the
  global-ratio structures measured for real (the C library cross-compiled, or the
  ``.tflite`` bytes plus the runtime);

then only vectors that fit the flash and MAC budgets by these figures are kept, and of
those only the *widest*: a vector that another fitting vector keeps at least as many
channels as in every group cannot be more accurate. The ``group_shapes`` of them whose
narrowest group is widest (a narrow group is a bottleneck for everything after it), then
with the most weights, are proposed; the search measures them for real like any structure
(estimates only choose what to measure: nothing is pruned or shipped on an estimate).
RAM has no estimate here: it is checked on the real measurement.

The line fits the global ratios, not uneven vectors: in the C library every distinct layer
shape is code of its own, so an uneven vector takes more flash than its weights say (on
the DS-CNN-S keyword model about 2,000 B more than the line, which fits the even ones to
30 B). The search therefore measures one vector at a time and adds what the uneven
vectors measured so far needed beyond the line (``correction``) to the next estimates.
"""

from __future__ import annotations

import itertools

import numpy as np

MAX_BANDS = 6  # more groups than this: neighbouring groups share a ratio (in depth order)


def propose(kmodel, channels_cfg, space, budgets, measured: dict, *, correction: float = 0.0,
            exclude=frozenset(), limit: int | None = None) -> tuple[list[tuple], dict]:
    """Per-group width vectors to try, and what was done to pick them (for search.json).

    ``measured``: global ratio -> the figures its (unpacked) structure measured for real.
    ``correction``: bytes added to the flash line's estimate of an uneven vector (what the
    uneven vectors measured so far needed beyond it); ``exclude``: ratio vectors already
    tried; ``limit``: how many to return (default ``space.group_shapes``).
    A vector is ((producers of group 1, ratio), (producers of group 2, ratio), ...).
    """
    info: dict = {"levels": sorted(set(float(r) for r in space.group_ratios)),
                  "max_shapes": space.group_shapes}
    if not space.group_ratios or space.group_shapes == 0:
        return [], {**info, "why": "off (search.group_ratios empty or search.group_shapes 0)"}
    if budgets.flash is None and budgets.macs is None:
        return [], {**info, "why": "no --max-flash or --max-macs to rank per-group widths by"}
    from edgeslim.compress.channels import WidthPlanner

    planner = WidthPlanner(kmodel, round_to=channels_cfg.round_to,
                           min_channels=channels_cfg.min_channels)
    groups = planner.groups
    if len(groups) < 2:
        return [], {**info, "why": f"{len(groups)} prunable layer group(s): nothing to vary"}
    n_bands = min(len(groups), MAX_BANDS)
    bands = [list(b) for b in np.array_split(np.arange(len(groups)), n_bands)]
    info.update(groups=[list(g.producers) for g in groups],
                bands=[[groups[i].id for i in b] for b in bands])

    fit = None
    if budgets.flash is not None:
        # the least flash of the C library's variants (figures.measure): a vector that fits
        # with any variant is worth measuring
        pts = sorted({(planner.figures({g.id: r for g in groups})["params"],
                       f.get("flash_min", f["flash"]))
                      for r, f in measured.items() if f.get("flash") is not None})
        if len({p for p, _ in pts}) < 2:
            return [], {**info, "why": "fewer than two global ratios measured: no flash estimate"}
        slope, icpt = np.polyfit([p for p, _ in pts], [f for _, f in pts], 1)
        fit = (float(slope), float(icpt))
        resid = max(abs(f - (slope * p + icpt)) for p, f in pts)
        info["flash_estimate"] = {"bytes_per_param": fit[0], "intercept": fit[1],
                                  "points": len(pts), "max_residual_bytes": float(resid)}

    levels = info["levels"]
    rows = []
    # The global ratios too (even vectors): a per-group vector one of them beats is not kept.
    evens = [(float(r),) * n_bands for r in sorted(set(space.ratios)) if float(r) not in levels]
    for vec in [*itertools.product(levels, repeat=n_bands), *evens]:
        ratios = {groups[i].id: vec[b] for b, band in enumerate(bands) for i in band}
        figs = planner.figures(ratios)
        line = fit[0] * figs["params"] + fit[1] if fit else None
        even = len(set(vec)) == 1
        est = None if line is None else line + (0.0 if even else correction)
        ok = ((budgets.flash is None or est <= budgets.flash)
              and (budgets.macs is None or figs["macs"] <= budgets.macs))
        rows.append({"vec": vec, "ratios": ratios, "kept": tuple(figs["kept"][g.id] for g in groups),
                     "macs": figs["macs"], "params": figs["params"], "flash_est": est,
                     "flash_line": line, "ok": ok})
    fitting = [r for r in rows if r["ok"]]
    # The widest fitting vectors: none other fitting keeps >= channels in every group.
    widest = [r for r in fitting
              if not any(o is not r and o["kept"] != r["kept"]
                         and all(a >= b for a, b in zip(o["kept"], r["kept"])) for o in fitting)]
    uneven = [r for r in widest if len(set(r["vec"])) > 1  # even ones are the global ratios'
              and tuple(r["ratios"][g.id] for g in groups) not in exclude]
    # Narrow groups are bottlenecks: the widest narrowest group first, then the most weights.
    uneven.sort(key=lambda r: (-min(k / g.channels for k, g in zip(r["kept"], groups)),
                               -r["params"], -r["macs"], r["vec"]))
    chosen = uneven[:space.group_shapes if limit is None else limit]
    info.update(vectors=len(rows), fitting_by_estimate=len(fitting), widest=len(widest),
                correction_bytes=correction,
                chosen=[{"ratios": [r["ratios"][g.id] for g in groups], "kept": list(r["kept"]),
                         "macs": r["macs"], "params": r["params"],
                         "flash_estimate": None if r["flash_est"] is None else round(r["flash_est"]),
                         "flash_line": None if r["flash_line"] is None else round(r["flash_line"])}
                        for r in chosen])
    shapes = [tuple((tuple(g.producers), float(r["ratios"][g.id])) for g in groups) for r in chosen]
    return shapes, info
