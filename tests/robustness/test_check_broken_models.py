"""Issue 13, point 6: `check` refuses a broken model, naming the tensor, instead of "fits".

Each model is the tiny int8 CNN converted by the real TFLiteConverter, edited with the
flatbuffers object API (tflite-micro's generated schema) to carry one defect, re-serialized,
and checked through the real CLI for a microcontroller and a Linux target. `--json` prints
JSON on error too."""

from __future__ import annotations

import json
import math

import pytest

from robustness._cli_support import assert_clean_failure, run, snapshot


def _edit(model_bytes: bytes, change) -> tuple[bytes, str]:
    """Apply ``change(model_t) -> described name`` and serialize again."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    name = change(m)
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()), name


def _first(m, *, constant: bool, typ: int | None = None):
    """The first quantized tensor with (or without) data in the file."""
    for t in m.subgraphs[0].tensors:
        buf = m.buffers[t.buffer] if t.buffer else None
        has_data = buf is not None and buf.data is not None and len(buf.data) > 0
        if has_data == constant and t.quantization is not None and t.quantization.scale is not None \
                and (typ is None or t.type == typ):
            return t
    raise AssertionError("no such tensor")


def _scale(value, constant=False):
    def change(m):
        t = _first(m, constant=constant)
        t.quantization.scale = [value] * len(t.quantization.scale)
        return t.name.decode()
    return change


def _zero_point(value):
    def change(m):
        t = _first(m, constant=False, typ=9)  # TensorType.INT8
        t.quantization.zeroPoint = [value] * len(t.quantization.zeroPoint)
        return t.name.decode()
    return change


def _buffer(index):
    def change(m):
        t = _first(m, constant=True)
        t.buffer = index
        return t.name.decode()
    return change


def _opcode(index):
    def change(m):
        m.subgraphs[0].operators[0].opcodeIndex = index
        return "operator 0"
    return change


def _op_tensor(index):
    def change(m):
        op = m.subgraphs[0].operators[0]
        op.inputs = [index] + [int(i) for i in op.inputs[1:]]
        return "operator 0"
    return change


def _zero_point_count():
    def change(m):
        t = _first(m, constant=True)
        t.quantization.zeroPoint = [0] * (len(t.quantization.scale) + 2)
        return t.name.decode()
    return change


BROKEN = {
    "nan activation scale": (_scale(math.nan), "scale nan"),
    "inf activation scale": (_scale(math.inf), "scale inf"),
    "negative activation scale": (_scale(-0.5), "scale -0.5"),
    "nan weight scale": (_scale(math.nan, constant=True), "scale nan"),
    "zero point 10**6": (_zero_point(10**6), "zero point 1000000 outside the int8 range -128..127"),
    "zero point 128": (_zero_point(128), "zero point 128 outside the int8 range"),
    "zero point -129": (_zero_point(-129), "zero point -129 outside the int8 range"),
    "weight buffer 9999": (_buffer(9999), "points at buffer 9999"),
    "zero points not matching scales": (_zero_point_count(), "zero points"),
    "opcode index 9999": (_opcode(9999), "opcode 9999"),
    "tensor index 9999": (_op_tensor(9999), "tensor 9999"),
}


@pytest.mark.parametrize("target", ["cortex-m4", "rpi4"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_check_refuses_a_broken_model_naming_the_tensor(tmp_path, tiny_cnn_bytes, case, target):
    change, words = BROKEN[case]
    data, name = _edit(tiny_cnn_bytes, change)
    model = tmp_path / "broken.tflite"
    model.write_bytes(data)
    before = snapshot(tmp_path)
    r = run(["check", model, "--target", target])
    assert_clean_failure(r, name, words)
    assert "fits" not in r.output
    assert snapshot(tmp_path) == before


def test_the_unedited_model_fits(tmp_path, tiny_cnn_bytes):
    """The control: the same model before editing passes, so the edits are what is refused."""
    from edgeslim.targets import check_model, load_target

    data, _ = _edit(tiny_cnn_bytes, lambda m: "none")  # the round trip itself is harmless
    assert check_model(data, load_target("cortex-m4")).ops


@pytest.mark.parametrize("case, error_type", [("nan activation scale", "TargetError"),
                                              ("weight buffer 9999", "ModelFormatError")])
def test_check_json_prints_json_on_error(tmp_path, tiny_cnn_bytes, case, error_type):
    data, name = _edit(tiny_cnn_bytes, BROKEN[case][0])
    model = tmp_path / "broken.tflite"
    model.write_bytes(data)
    r = run(["check", model, "--target", "cortex-m4", "--json"])
    assert r.exit_code == 2, r.output
    verdict = json.loads(r.stdout)
    assert verdict["fits"] is False and name in verdict["error"] and verdict["error_type"] == error_type
    assert "Traceback" not in r.output


@pytest.mark.parametrize("args, words", [
    (["missing.tflite", "--target", "cortex-m4"], "does not exist"),
    (["model.tflite", "--target", "pdp11"], "unknown target 'pdp11'"),
    (["model.tflite", "--target", "cortex-m4", "--ram", "lots"], "bad size 'lots'"),
])
def test_check_json_on_other_errors(tmp_path, tiny_cnn_bytes, args, words):
    (tmp_path / "model.tflite").write_bytes(tiny_cnn_bytes)
    r = run(["check", *[tmp_path / a if a.endswith(".tflite") else a for a in args], "--json"])
    assert r.exit_code == 2
    verdict = json.loads(r.stdout)
    assert verdict["fits"] is False and words in verdict["error"]


def test_check_json_on_success_says_fits(tmp_path, tiny_cnn_bytes):
    (tmp_path / "m.tflite").write_bytes(tiny_cnn_bytes)
    r = run(["check", tmp_path / "m.tflite", "--target", "rpi4", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["fits"] is True
