"""The memory timeline of a .tflite model: bytes of live activations at each op, in execution order.

Every non-constant tensor lives from the op that writes it (the model input: from the first
op) to the last op that reads it (a model output: to the last op), as a planner that shares
memory between tensors whose lifetimes do not overlap sees them (TFLite Micro's greedy
planner, the C backend's :mod:`edgeslim.codegen.memplan`). The peak is the least any such
arena can be; the real arena adds alignment, fragmentation and the runtime's own state
(report.json's ``check.arena_measured_bytes`` for TFLite Micro, ``codegen.arena_bytes`` for
the C library). No aliasing is assumed (a RESHAPE's output counts as its own tensor).
"""

from __future__ import annotations

from edgeslim import modelgraph
from edgeslim.codegen import memplan


def activation_timeline(model_bytes: bytes) -> dict:
    """``{"steps": [{"op_index", "op", "layer", "live_bytes"}], "peak_live_bytes", "peak_op_index"}``
    (the lifetimes are edgeslim.inspection.activation_timeline's, the rule `edgeslim inspect` uses)."""
    from edgeslim.inspection import activation_timeline as lifetimes

    graph = modelgraph.read(model_bytes)
    _, live = lifetimes(graph)
    steps = [{"op_index": op.index, "op": op.opcode, "layer": graph.layer_name(op),
              "live_bytes": live[i]} for i, op in enumerate(graph.operators)]
    peak = max(live, default=0)
    return {
        "source": "tensor lifetimes of model.tflite (no aliasing)",
        "steps": steps,
        "peak_live_bytes": peak,
        "peak_op_index": live.index(peak) if live else None,
    }


def plan_timeline(memory_plan: dict) -> list[int]:
    """Live bytes per step of the C backend's memory plan (report.json's
    ``codegen.memory_plan``): its arena buffers and scratch, not the caller's input/output."""
    buffers = [memplan.Buffer(b["name"], b["size"], b["first"], b["last"])
               for b in memory_plan.get("buffers", [])]
    return memplan.live_bytes(buffers)
