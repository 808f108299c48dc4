"""The Cortex-M bundle: TensorFlow Lite Micro sources in <bundle>/tflm/.

model_data.cc/.h (the model as a 16-byte aligned const C array), op_resolver.h
(a MicroMutableOpResolver<N> with exactly the model's ops), model_settings.h
(arena size from the measurement plus the target's margin, input/output
quantization, labels), main.cc, Makefile, CMakeLists.txt and a README. Every
file is rendered from firmware_templates/tflm/.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgeslim import __version__
from edgeslim.bundle.render import c_identifier, render_to
from edgeslim.errors import TargetError
from edgeslim.targets import CheckResult, Target, arena_with_margin, check_model, read_model

BYTES_PER_ROW = 12

# TFLite builtin op -> MicroMutableOpResolver method, where the method name is
# not the op name in CamelCase (CONV_2D -> AddConv2D follows the rule).
_METHOD_EXCEPTIONS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    "PADV2": "AddPadV2",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}


def resolver_method(op: str) -> str:
    """The MicroMutableOpResolver method that registers a builtin op."""
    if op in _METHOD_EXCEPTIONS:
        return _METHOD_EXCEPTIONS[op]
    if op.startswith("CUSTOM:"):
        raise TargetError(f"custom op {op[7:]!r} has no TFLite Micro builtin registration",
                          hint="Replace the layer that produced the custom op.")
    name = "Add" + "".join(part[:1].upper() + part[1:].lower() for part in op.split("_"))
    return name.replace("2d", "2D")  # CONV_2D -> AddConv2D, MAX_POOL_2D -> AddMaxPool2D


def c_array_rows(data: bytes, per_row: int = BYTES_PER_ROW) -> list[str]:
    return [
        ", ".join(f"0x{b:02x}" for b in data[i:i + per_row]) + ","
        for i in range(0, len(data), per_row)
    ]


def _tensor_ctx(t) -> dict:
    elements = 1
    for d in t.shape:
        elements *= max(int(d), 1)
    return {
        "name": t.name,
        "shape": [int(d) for d in t.shape],
        "type": t.type,
        "elements": elements,
        "scale": repr(float(t.scales[0])) if t.scales else "1.0",
        "zero_point": int(t.zero_points[0]) if t.zero_points else 0,
    }


def write_tflm(bundle_dir: Path, target: Target, *, model_bytes: bytes, model_name: str,
               labels: list[str] | None, check: CheckResult | None) -> list[Path]:
    if check is None or check.arena_measured_bytes is None:
        check = check_model(model_bytes, target)
    info = read_model(model_bytes)
    if len(info.inputs) < 1 or len(info.outputs) < 1:
        raise TargetError("the model has no input or output tensor", hint="Convert the model again.")
    for t in (info.inputs[0], info.outputs[0]):
        if t.type != "int8":
            raise TargetError(
                f"the TFLite Micro bundle expects int8 input and output; tensor {t.name!r} is {t.type}",
                hint="Convert with inference_input_type/inference_output_type int8 (edgeslim does by default).")
    ident = c_identifier(model_name)
    arena = arena_with_margin(check.arena_measured_bytes, target.arena_margin)
    ctx = {
        "version": __version__,
        "model_name": model_name,
        "ident": ident,
        "guard": "EDGESLIM_" + ident.upper(),
        "array": f"g_{ident}_model",
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "length": len(model_bytes),
        "model_bytes": len(model_bytes),
        "rows": c_array_rows(model_bytes),
        "ops": [{"name": op, "method": resolver_method(op)} for op in info.op_names],
        "arena_size": arena,
        "arena_measured": check.arena_measured_bytes,
        "margin_pct": round(target.arena_margin * 100),
        "input": _tensor_ctx(info.inputs[0]),
        "output": _tensor_ctx(info.outputs[0]),
        "labels": list(labels) if labels else [],
        "target": target,
        "cflags": target.build.get("cflags", ""),
        "tflm_target_arch": target.build.get("tflm_target_arch", "cortex-m4+fp"),
        "optimized_kernels": target.build.get("optimized_kernels", ""),
        "flash_needed": len(model_bytes) + target.runtime_flash_bytes,
        "runtime_flash": target.runtime_flash_bytes,
        "flash_budget": target.flash_bytes,
        "ram_budget": target.arena_budget_bytes,
        "ram_bytes": target.ram_bytes,
        "ram_reserved": target.ram_reserved_bytes,
    }
    ctx["ops_names"] = [o["name"] for o in ctx["ops"]]
    out = bundle_dir / "tflm"
    files = [
        ("model_data.h", "tflm/model_data.h.j2"),
        ("model_data.cc", "tflm/model_data.cc.j2"),
        ("model_settings.h", "tflm/model_settings.h.j2"),
        ("op_resolver.h", "tflm/op_resolver.h.j2"),
        ("main.cc", "tflm/main.cc.j2"),
        ("Makefile", "tflm/Makefile.j2"),
        ("CMakeLists.txt", "tflm/CMakeLists.txt.j2"),
    ]
    written = [render_to(out / name, tpl, **ctx) for name, tpl in files]
    readme_ctx = dict(ctx, ops=ctx["ops_names"])
    written.append(render_to(out / "README.md", "tflm/README.md.j2", **readme_ctx))
    return written
