"""generate(): the files, the header's constants, the report, and the plan's buffers
matching the graph (no C compiler needed here)."""

from __future__ import annotations

import hashlib
import json
import re

from edgeslim.codegen import generate
from edgeslim.modelgraph import read as read_graph


def test_header_constants_and_report(tmp_path, chost):
    model = (chost.goldens / "models" / "ds_cnn.tflite").read_bytes()
    r = generate(model, tmp_path / "c", name="kws")
    h = r.header.read_text()
    c = r.source.read_text()
    sha = hashlib.sha256(model).hexdigest()
    assert r.model_sha256 == sha and f'#define KWS_MODEL_SHA256 "{sha}"' in h
    assert f"#define KWS_ARENA_SIZE {r.arena_size}" in h
    assert "int kws_invoke(const int8_t *input, int8_t *output);" in h
    g = read_graph(model)
    tin, tout = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    assert f"#define KWS_INPUT_SIZE {tin.size}" in h
    assert f"#define KWS_INPUT_ZERO_POINT ({tin.zero_point})" in h
    assert f"#define KWS_OUTPUT_ZERO_POINT ({tout.zero_point})" in h
    scale = re.search(r"#define KWS_INPUT_SCALE (\S+)f", h).group(1)
    assert float.fromhex(scale) == float(tin.scale)  # exact float literal
    # No main, no heap, no printf, no double.
    for banned in ("main(", "malloc", "printf", "double", "long "):
        assert banned not in c, banned
    rep = r.report()
    json.dumps(rep)  # serialisable for report.json
    assert rep["arena_bytes"] == r.arena_size
    assert rep["memory_plan"]["lower_bound"] == r.lower_bound <= r.peak <= r.arena_size
    assert rep["macs"] == sum(o["macs"] for o in rep["ops"]) == r.macs > 50_000
    assert [o["op"] for o in rep["ops"]] == [op.opcode for op in g.operators]
    # Keras layer names are traceable to C functions.
    by_layer = {o.layer: o.function for o in r.ops}
    assert any("pw0" in k and v == "es_conv2d_s8" for k, v in by_layer.items())
    assert any("dw1" in k and v == "es_depthwise_conv2d_s8" for k, v in by_layer.items())


def test_reshape_aliases_and_output_reshape_copies(tmp_path, chost):
    seen_alias = seen_copy = False
    for p in sorted((chost.goldens / "ops").glob("reshape_*.tflite")):
        g = read_graph(p.read_bytes())
        r = generate(p.read_bytes(), tmp_path / p.stem, name="m")
        last_is_reshape = g.operators[-1].opcode == "RESHAPE"
        src = r.source.read_text()
        reshapes = [o for o in r.ops if o.op == "RESHAPE"]
        if last_is_reshape:
            assert reshapes[-1].function == "es_copy_bytes" and "es_copy_bytes(" in src
            seen_copy = True
        else:
            assert all(o.function == "" for o in reshapes) and "es_copy_bytes(" not in src
            seen_alias = True
        # Buffers: one per written activation tensor minus aliases, I/O outside the arena.
        written = [op.outputs[0] for op in g.operators]
        aliased = sum(1 for o in reshapes if o.function == "")
        assert len(r.plan.buffers) == len(written) - 1 - aliased
    assert seen_alias and seen_copy
