"""report.json (schema in docs/report.md, versioned) and report.md; report.html is in html.py.

The report is built from what the other steps measured; nothing here measures.
"""

from __future__ import annotations

import platform
from pathlib import Path

import jinja2

from edgeslim import __version__

SCHEMA_VERSION = 1
_TEMPLATES = Path(__file__).parent / "templates"


def library_versions() -> dict:
    from edgeslim.bundle.manifest import library_versions as _versions

    return {"edgeslim": __version__, "python": platform.python_version(), **_versions()}


def _target_dict(target) -> dict:
    to_dict = getattr(target, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return {"name": target.name, "profile": getattr(target, "profile", None), "kind": target.kind}


def make_report(
    *, model_name, model_source, model_notes, target, dataset, recipe, stages, float_metric,
    int8_metric, micro_metric, micro_agreement, float_tflite_bytes, float_tflite_gzip, final,
    per_class, qat_ran, qat_skipped, check, timings, total_s, not_reached, qat_choice=None,
    float_val_metric=None, int8_val_metric=None,
) -> dict:
    higher = dataset.higher_is_better

    def worse_by(before, after):
        """How much worse ``after`` is: lost accuracy, or gained MSE."""
        return (before - after) if higher else (after - before)

    drop = worse_by(float_metric, int8_metric)
    inspect = final["inspect"]
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "edgeslim", "versions": library_versions()},
        "model": {"name": model_name, **model_source, "notes": model_notes},
        "target": _target_dict(target),
        "data": {
            "source": dataset.source, "task": dataset.task, "num_classes": dataset.num_classes,
            "class_names": list(dataset.class_names) if dataset.class_names else None,
            "train": int(len(dataset.x_train)), "val": int(len(dataset.x_val)),
            "test": int(len(dataset.x_test)), "notes": list(dataset.notes),
        },
        "recipe": recipe.to_dict(),
        "metric": {
            "name": dataset.metric_name,
            "higher_is_better": higher,
            "evaluated_on": "test",
            "test_origin": dataset.test_origin,
            "float": float_metric,
            "int8": int8_metric,
            "int8_tflm": micro_metric,
            "tflm_litert_top1_agreement": micro_agreement,
            "drop": drop,
            "validation": {
                "float": float_val_metric, "int8": int8_val_metric,
                "drop": None if float_val_metric is None or int8_val_metric is None
                else worse_by(float_val_metric, int8_val_metric),
            },
        },
        "size": {
            "float_tflite_bytes": float_tflite_bytes,
            "float_tflite_gzip_bytes": float_tflite_gzip,
            "int8_tflite_bytes": final["bytes"],
            "int8_tflite_gzip_bytes": final["gzip_bytes"],
            "gzip_ratio": float_tflite_gzip / final["gzip_bytes"],
        },
        "stages": stages,
        "per_class": per_class,
        "ops": inspect.get("op_names"),
        "layers": inspect.get("weights"),
        "targets_not_reached": not_reached,
        "qat": {
            "ran": qat_ran,
            "shipped": bool(qat_ran and (qat_choice is None or qat_choice["shipped"] == "qat")),
            "choice": qat_choice,
            "left_out": [{"layer": k, "reason": v} for k, v in sorted((qat_skipped or {}).items())],
        },
        "check": check.to_dict() if hasattr(check, "to_dict") else check,
        "timings_s": {**timings, "total": total_s},
    }


def render_markdown(report: dict) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
    env.filters["num"] = lambda v, d=4: "n/a" if v is None else f"{v:.{d}f}"
    env.filters["kib"] = lambda v: "n/a" if v is None else f"{v / 1024:.1f} KiB"
    template = "report_prebuilt.md.j2" if report.get("kind") == "prebuilt" else "report.md.j2"
    return env.get_template(template).render(r=report)
