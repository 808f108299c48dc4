"""The Pareto set of a budget search and its plot (pareto.png).

A candidate is on the Pareto front when no other candidate is at least as good on
validation drop, flash, RAM and MACs and better on one of them (figures a target
does not have, e.g. flash on a Raspberry Pi, are left out of the comparison).
"""

from __future__ import annotations

from pathlib import Path

AXES = (("flash", "flash (bytes)"), ("ram", "RAM (bytes)"), ("macs", "MACs"))


def _key(c: dict) -> tuple:
    f = c["figures"]
    return (c["val_drop"], *(f.get(k) for k, _ in AXES))


def pareto_front(cands: list[dict]) -> list[int]:
    """Indices (``c["index"]``) of the non-dominated candidates among those with a
    validation result."""
    scored = [c for c in cands if c.get("val_drop") is not None]
    front = []
    for a in scored:
        ka = _key(a)
        dominated = False
        for b in scored:
            if b is a:
                continue
            kb = _key(b)
            pairs = [(x, y) for x, y in zip(kb, ka) if x is not None and y is not None]
            if all(x <= y for x, y in pairs) and any(x < y for x, y in pairs):
                dominated = True
                break
        if not dominated:
            front.append(a["index"])
    return sorted(front)


def plot(cands: list[dict], path: Path, *, chosen: int | None, budgets: dict, metric: str,
         float_val: float, title: str) -> Path:
    """Validation metric against flash, RAM and MACs; the chosen candidate marked, the
    Pareto front joined, each budget a dashed line. Written atomically."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = set(pareto_front(cands))
    scored = [c for c in cands if c.get("val_metric") is not None]
    axes = [(k, label) for k, label in AXES if any(c["figures"].get(k) is not None for c in scored)]
    fig, axs = plt.subplots(1, max(1, len(axes)), figsize=(5 * max(1, len(axes)), 4.2), squeeze=False)
    limits = {"flash": budgets.get("flash_bytes"), "ram": budgets.get("ram_bytes"),
              "macs": budgets.get("macs")}
    for ax, (key, label) in zip(axs[0], axes):
        pts = [c for c in scored if c["figures"].get(key) is not None]
        xs = [c["figures"][key] for c in pts]
        ys = [c["val_metric"] for c in pts]
        colors = ["tab:blue" if c["index"] in front else "tab:gray" for c in pts]
        ax.scatter(xs, ys, c=colors, s=22, label="candidates (blue: Pareto front)")
        on_front = sorted((c["figures"][key], c["val_metric"]) for c in pts if c["index"] in front)
        if on_front:
            ax.plot(*zip(*on_front), color="tab:blue", lw=0.8, alpha=0.6)
        win = [c for c in pts if c["index"] == chosen]
        if win:
            ax.scatter([win[0]["figures"][key]], [win[0]["val_metric"]], marker="*", s=260,
                       color="tab:red", zorder=5, label=f"chosen: c{chosen:03d}")
        if limits.get(key) is not None:
            ax.axvline(limits[key], color="tab:red", ls="--", lw=1, label=f"budget {limits[key]:,}")
        if budgets.get("min_val_metric") is not None:
            ax.axhline(budgets["min_val_metric"], color="tab:orange", ls="--", lw=1,
                       label="max drop")
        ax.axhline(float_val, color="black", ls=":", lw=0.8, label="float model")
        ax.set_xlabel(label)
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    axs[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
