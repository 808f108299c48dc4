"""report.html: the report as one self-contained page, with plots, viewable offline.

:func:`render_html` takes a report dict (report.json's content, schema in docs/report.md) and
returns the page; nothing here measures. The plots are drawn by matplotlib (Agg) and inlined as
SVG with text as paths, so the page needs no network, no font and no other file. Sections
whose figures the report lacks (a prebuilt .tflite has no stages) say so instead of a plot.

`edgeslim inspect --html` uses :func:`render_inspection` (templates/inspect.html.j2, on the same
base template and stylesheet). Other commands reuse it: :func:`render_html` accepts any dict with the keys it draws
(``summary`` figures at the top level, ``stages``, ``layers``, ``quantization_error``,
``memory_timeline``), and each ``plot_*`` function returns one SVG string or None.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import jinja2

_TEMPLATES = Path(__file__).parent / "templates"
# The sections, in order: (id, title). Tests check each id is on the page.
SECTIONS = (
    ("summary", "Summary"),
    ("stages", "Metric and size after each stage"),
    ("layers", "Per-layer sparsity and clusters"),
    ("quantization", "Per-layer quantization error"),
    ("memory", "Activation memory timeline"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(fig, prefix: str) -> str:
    """The figure as an inline <svg> element (text drawn as paths: no fonts needed), its ids
    (clip paths, glyphs, groups) prefixed with ``prefix-`` so that plots on one page never
    share an id. Deterministic: the same figures give the same page."""
    plt = _pyplot()
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "path", "svg.hashsalt": "edgeslim"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    return re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "\u2026"


def plot_stages(stages: list[dict], metric_name: str) -> str | None:
    """Validation and test metric, and .tflite bytes (raw and gzip'd), after each stage."""
    if not stages:
        return None
    plt = _pyplot()
    names = [s["name"] for s in stages]
    xs = range(len(stages))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, label, marker in (("metric_val", "validation", "o"), ("metric", "test", "s")):
        ys = [s.get(key) for s in stages]
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if pts:
            ax1.plot(*zip(*pts), marker=marker, label=label)
    ax1.set_xticks(list(xs), [_short(n, 12) for n in names], rotation=20)
    ax1.set_ylabel(metric_name)
    ax1.set_title(f"{metric_name} after each stage", fontsize=10)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    width = 0.4
    raw = [s.get("tflite_bytes") or 0 for s in stages]
    gz = [s.get("tflite_gzip_bytes") or 0 for s in stages]
    ax2.bar([x - width / 2 for x in xs], [b / 1024 for b in raw], width, label=".tflite")
    ax2.bar([x + width / 2 for x in xs], [b / 1024 for b in gz], width, label="gzip'd")
    ax2.set_xticks(list(xs), [_short(n, 12) for n in names], rotation=20)
    ax2.set_ylabel("KiB")
    ax2.set_title("model size after each stage (float32 baseline, int8 after)", fontsize=10)
    ax2.grid(alpha=0.3, axis="y")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return _svg(fig, "plot-stages")


def plot_layers(layers: list[dict]) -> str | None:
    """Sparsity and unique int8 values per output channel of each weight-bearing layer."""
    if not layers:
        return None
    plt = _pyplot()
    names = [_short(str(w.get("layer") or f"op {w.get('op_index')}")) for w in layers]
    xs = range(len(layers))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax1.bar(xs, [100 * (w.get("sparsity") or 0) for w in layers], color="tab:purple")
    ax1.set_ylim(0, 100)
    ax1.set_ylabel("zero weights (%)")
    ax1.set_title("sparsity of the shipped int8 weights", fontsize=10)
    ax2.bar(xs, [w.get("unique_per_channel_max") or 0 for w in layers], color="tab:green",
            label="max over channels")
    ax2.plot(list(xs), [w.get("unique_per_channel_mean") or 0 for w in layers], "k_", ms=14,
             label="mean")
    ax2.set_ylabel("unique values per output channel")
    ax2.set_title("clusters: distinct int8 weights per channel (256 at most)", fontsize=10)
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks(list(xs), names, rotation=30, ha="right")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _svg(fig, "plot-layers")


def plot_quantization(qerr: dict | None) -> str | None:
    """Cumulative SNR per layer (line) and the dB each layer adds (bars), in execution order."""
    layers = (qerr or {}).get("layers") or []
    if not layers:
        return None
    plt = _pyplot()
    names = [_short(e["layer"]) for e in layers]
    xs = list(range(len(layers)))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    added = [e["added_snr_db"] for e in layers]
    colors = ["#c00000" if e.get("suggestion") else "tab:orange" for e in layers]
    ax.bar(xs, added, color=colors, alpha=0.8, label="dB this layer adds (red: needs attention)")
    ax.plot(xs, [min(e["snr_db"], 99.0) for e in layers], "o-", color="tab:blue",
            label="cumulative SNR (int8 vs float)")
    ax.axhline(30, color="gray", ls=":", lw=1, label="30 dB")
    ax.set_xticks(xs, names, rotation=30, ha="right")
    ax.set_ylabel("dB")
    ax.set_title(f"int8 vs float on {qerr.get('samples', '?')} validation samples", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _svg(fig, "plot-quantization")


def plot_memory(memory: dict | None, plan_live: list[int] | None = None,
                arena: dict | None = None) -> str | None:
    """Bytes of live activations at each op; the C library's plan and the measured arena if known."""
    steps = (memory or {}).get("steps") or []
    if not steps:
        return None
    plt = _pyplot()
    xs = list(range(len(steps)))
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.step(xs, [s["live_bytes"] for s in steps], where="mid", color="tab:blue",
            label="live activations (tensor lifetimes)")
    ax.fill_between(xs, [s["live_bytes"] for s in steps], step="mid", alpha=0.2)
    if plan_live:
        ax.step(list(range(len(plan_live))), plan_live, where="mid", color="tab:green", ls="--",
                label="C library's memory plan (arena buffers + scratch)")
    for key, label, color in (("tflm_arena", "TFLite Micro arena (measured)", "tab:red"),
                              ("c_arena", "C library arena", "tab:green")):
        if (arena or {}).get(key):
            ax.axhline(arena[key], color=color, ls=":", lw=1, label=f"{label}: {arena[key]:,} B")
    ax.set_xticks(xs, [f"{s['op_index']} {_short(s['layer'] or s['op'], 12)}" for s in steps],
                  rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("bytes")
    ax.set_title("activation memory per op, in execution order", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
    fig.tight_layout()
    return _svg(fig, "plot-memory")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        undefined=jinja2.ChainableUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def missing(v) -> bool:
        return v is None or isinstance(v, jinja2.Undefined)

    env.filters["num"] = lambda v, d=4: "n/a" if missing(v) else f"{v:.{d}f}"
    env.filters["pct"] = lambda v: "n/a" if missing(v) else f"{100 * v:.1f}%"
    env.filters["bytes"] = lambda v: "n/a" if missing(v) else f"{int(v):,} B"
    env.filters["db"] = lambda v: "n/a" if missing(v) else ("exact" if v >= 999 else f"{v:.1f} dB")
    return env


def render_html(report: dict) -> str:
    """The whole page for ``report`` (a report.json dict)."""
    codegen = report.get("codegen") or {}
    check = report.get("check") or {}
    plan_live = None
    if codegen.get("memory_plan"):
        from edgeslim.report.memory import plan_timeline

        plan_live = plan_timeline(codegen["memory_plan"])
    arena = {"tflm_arena": check.get("arena_measured_bytes"), "c_arena": codegen.get("arena_bytes")}
    metric = report.get("metric") or {}
    plots = {
        "stages": plot_stages(report.get("stages") or [], metric.get("name") or "metric"),
        "layers": plot_layers(report.get("layers") or []),
        "quantization": plot_quantization(report.get("quantization_error")),
        "memory": plot_memory(report.get("memory_timeline"), plan_live, arena),
    }
    html = _environment().get_template("report.html.j2").render(
        r=report, plots=plots, sections=SECTIONS, arena=arena)
    return re.sub(r"\n{3,}", "\n\n", html)


# `edgeslim inspect --html`'s sections, in order: (id, title). Tests check each id is on the page.
INSPECT_SECTIONS = (
    ("summary", "Summary"),
    ("ops", "Operators"),
    ("memory", "Activation memory"),
    ("size", "Size"),
    ("target", "Target fit"),
    ("quantization", "Per-layer quantization error"),
)


def inspection_memory(memory: dict) -> tuple[dict, list[int] | None, dict]:
    """The inspection's memory dict in :func:`plot_memory`'s terms: its timeline as ``steps``,
    the C backend plan's live bytes per step, and the two arenas."""
    steps = [{"op_index": s["op"], "op": s["op_type"], "layer": s["layer"], "live_bytes": s["live_bytes"]}
             for s in memory.get("timeline") or []]
    plan = memory.get("c_plan")
    plan_live = None
    if plan and plan.get("buffers"):
        from edgeslim.report.memory import plan_timeline

        plan_live = plan_timeline(plan)
    arena = {"tflm_arena": memory.get("tflm_arena_bytes"), "c_arena": (plan or {}).get("arena_size")}
    return {"steps": steps}, plan_live, arena


def render_inspection(data: dict, *, title: str) -> str:
    """`edgeslim inspect --html`: the page for an inspection (``Inspection.to_dict()``), in the
    look of report.html (same base template and stylesheet, same quantization table)."""
    from edgeslim.inspection import params_text, shapes_text

    timeline, plan_live, arena = inspection_memory(data.get("memory") or {})
    env = _environment()
    env.filters["shapes"] = shapes_text
    env.filters["params"] = params_text
    html = env.get_template("inspect.html.j2").render(
        d=data, title=title, sections=INSPECT_SECTIONS,
        plot_memory=plot_memory(timeline, plan_live, arena),
        plot_quantization=plot_quantization(data.get("quantization_error")))
    return re.sub(r"\n{3,}", "\n\n", html)


def write_html(report: dict, path: Path) -> Path:
    """Render ``report`` to ``path`` atomically (a temporary file beside it, then renamed)."""
    from edgeslim.io.outputs import write_text_atomic

    return write_text_atomic(path, render_html(report))


__all__ = ["render_html", "render_inspection", "inspection_memory", "INSPECT_SECTIONS", "write_html", "SECTIONS", "plot_stages", "plot_layers",
           "plot_quantization", "plot_memory"]
