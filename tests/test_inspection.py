"""`edgeslim inspect`: Huffman and entropy sizes, parameters and the activation timeline
against hand computation, and the command end to end (table, JSON/Markdown, errors)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslim import inspection
from edgeslim.cli import cli


def test_huffman_dyadic_case_by_hand():
    # counts 4, 2, 1, 1: code lengths 1, 2, 3, 3; 4*1 + 2*2 + 3 + 3 = 14 bits, which is
    # also the entropy (probabilities are powers of 1/2)
    counts = {"a": 4, "b": 2, "c": 1, "d": 1}
    assert inspection.huffman_code_lengths(counts) == {"a": 1, "b": 2, "c": 3, "d": 3}
    values = np.array([0] * 4 + [1] * 2 + [2, 3], np.int8)
    assert inspection.huffman_bits(values) == 14
    assert inspection.entropy_bits(values) == pytest.approx(14.0)


def test_huffman_non_dyadic_case_by_hand():
    # counts 5, 2, 1, 1, 1: merges 1+1=2, 1+2=3, 2+3=5, 5+5=10; the code's size is the sum
    # of the merged weights, 20 bits, above the entropy 10 * 1.961 = 19.61 bits
    values = np.array([7] * 5 + [-3] * 2 + [0, 1, 2], np.int8)
    lengths = inspection.huffman_code_lengths({7: 5, -3: 2, 0: 1, 1: 1, 2: 1})
    assert lengths[7] == 1 and sorted(lengths.values()) == [1, 3, 3, 3, 3]
    assert inspection.huffman_bits(values) == 20
    h = -(0.5 * math.log2(0.5) + 0.2 * math.log2(0.2) + 3 * 0.1 * math.log2(0.1))
    assert inspection.entropy_bits(values) == pytest.approx(10 * h) == pytest.approx(19.61, abs=0.01)
    # one value: 1 bit each, entropy 0
    assert inspection.huffman_bits(np.zeros(9, np.int8)) == 9
    assert inspection.entropy_bits(np.zeros(9, np.int8)) == 0.0


def test_parameters_and_activation_timeline_by_hand(macs_model):
    r = inspection.inspect_model(macs_model, measure_arena=False)
    # weights + biases: conv 3*3*3*4 + 4, depthwise 3*3*(4*2) + 8, dense 8*5 + 5
    assert [o["parameters"] for o in r.ops] == [112, 80, 0, 0, 45]
    assert r.totals["parameters"] == 237 and r.totals["macs"] == 2700 + 648 + 40
    # int8 activations: in 9*9*3 = 243, conv 5*5*4 = 100, dw 3*3*8 = 72, pool 2*2*8 = 32,
    # mean 8, fc 5; each op holds its input and output
    assert [s["live_bytes"] for s in r.memory["timeline"]] == [
        243 + 100, 100 + 72, 72 + 32, 32 + 8, 8 + 5]
    assert r.memory["activations_peak_bytes"] == 343 and r.memory["activations_peak_op"] == 0
    assert r.ops[0]["params"]["padding"] == "SAME" and r.ops[0]["params"]["strideW"] == 2
    assert r.ops[1]["params"]["depthMultiplier"] == 2
    assert r.ops[0]["outputs"][0]["shape"] == [1, 5, 5, 4] and r.ops[0]["outputs"][0]["dtype"] == "INT8"
    # weight sizes: int8 weights stored 1 B each; Huffman within 1 bit per value of the entropy
    w = {row["layer"]: row for row in r.weights}
    assert w["conv"]["stored_bytes"] == 108 and w["fc"]["stored_bytes"] == 40
    for row in r.weights:
        assert row["entropy_bits"] - 0.1 <= row["huffman_bits"] <= row["entropy_bits"] + row["values"]
    # the C backend's plan holds the intermediate activations (not the caller's input and
    # output buffers): conv out + dw out = 172 B live at op 1, and the greedy placement
    # reaches that bound (pool out and mean out reuse conv out's bytes)
    plan = r.memory["c_plan"]
    assert plan["lower_bound"] == plan["arena_size"] == 100 + 72
    assert [(b["size"], b["first"], b["last"]) for b in plan["buffers"]] == [
        (100, 0, 1), (72, 1, 2), (32, 2, 3), (8, 3, 4)]


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={"debug": False})


def test_cli_end_to_end(tmp_path, macs_model):
    model = tmp_path / "m.tflite"
    model.write_bytes(macs_model)
    out_json, out_md = tmp_path / "out" / "i.json", tmp_path / "i.md"
    out_md.write_text("an older report")
    r = _run("inspect", model, "--target", "cortex-m4", "--json", out_json, "--md", out_md)
    assert r.exit_code == 0, r.output
    for words in ("CONV_2D", "conv", "1x9x9x3 int8", "sh=2", "padding=SAME", "2,700", "3,388 MACs",
                  "237 parameters", "peak 343 B", "TFLite Micro arena", "target cortex-m4: fits"):
        assert words in r.output, words
    d = json.loads(out_json.read_text())
    arena = d["memory"]["tflm_arena_bytes"]
    assert arena > 0 and arena % 16 == 0
    assert d["target"]["fits"] and d["target"]["unsupported_ops"] == []
    assert d["target"]["ram_headroom_bytes"] == d["target"]["ram_budget_bytes"] - d["target"]["arena_bytes"]
    from edgeslim.targets import arena_with_margin, load_target

    m4 = load_target("cortex-m4")
    assert d["target"]["flash_needed_bytes"] == len(macs_model) + m4.runtime_flash_bytes
    assert d["target"]["flash_headroom_bytes"] == m4.flash_bytes - d["target"]["flash_needed_bytes"]
    assert d["target"]["arena_bytes"] == arena_with_margin(arena, m4.arena_margin)
    assert d["size"]["model_bytes"] == len(macs_model) and 0 < d["size"]["gzip_bytes"] < len(macs_model)
    md = out_md.read_text()
    assert md.startswith("# edgeslim inspect: m.tflite") and "| 0 | CONV_2D | conv |" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.md", "m.tflite", "out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["i.json"]  # no temporary left


def test_cli_target_that_lacks_an_op(tmp_path, gelu_bytes):
    model = tmp_path / "g.tflite"
    model.write_bytes(gelu_bytes)
    r = _run("inspect", model, "--target", "cortex-m4", "--no-arena")
    assert r.exit_code == 0, r.output
    assert "does NOT fit" in r.output and "GELU" in r.output and "act_gelu" in r.output


@pytest.mark.parametrize("case", ["not tflite", "missing", "unknown target", "json is the model"])
def test_cli_bad_input_exit_2(tmp_path, macs_model, case):
    model = tmp_path / "m.tflite"
    model.write_bytes(macs_model)
    report = tmp_path / "r.json"
    report.write_text("keep me")
    args = {
        "not tflite": ["inspect", tmp_path / "r.json"],
        "missing": ["inspect", tmp_path / "nope.tflite", "--json", report],
        "unknown target": ["inspect", model, "--target", "pdp11", "--json", report],
        "json is the model": ["inspect", model, "--json", model],
    }[case]
    words = {"not tflite": "not a TFLite model", "missing": "does not exist",
             "unknown target": "unknown target 'pdp11'", "json is the model": "also an input"}[case]
    r = _run(*args)
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and words in r.output and "Traceback" not in r.output
    assert report.read_text() == "keep me" and model.read_bytes() == macs_model
