"""The undefined-behaviour guards that are not a kernel's arithmetic (that is fuzzed in
test_dsp.py): the arena's alignment check, SOFTMAX's depth limit at generation, and
const_bytes counting every constant array the library defines."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from edgeslim.codegen import CodegenError, generate

SIZES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4, "float": 4}


def test_invoke_with_arena_refuses_a_misaligned_arena(tmp_path, chost):
    model = (chost.goldens.parent / "test_qemu_models" / "dscnn.tflite").read_bytes()
    r = generate(model, tmp_path / "c", name="m")
    assert r.arena_size > 0
    exe = tmp_path / "drv"
    subprocess.run(
        ["gcc", *chost.cflags, "-DM_NO_STATIC_ARENA", '-DMODEL_HEADER="m.h"',
         "-DINVOKE=m_invoke_with_arena", f"-DARENA_BYTES={r.arena_size}",
         f"-DINPUT_BYTES={r.input_bytes}", f"-DOUTPUT_BYTES={r.output_bytes}",
         f"-I{r.header.parent}", str(chost.goldens.parent / "arena_driver.c"), str(r.source),
         "-o", str(exe), "-lm"], check=True, capture_output=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "-2"]
    assert "-2 for an arena that is\n * not 4-byte aligned" in r.header.read_text()


def _with_softmax_depth(model: bytes, depth: int) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    sg = m.subgraphs[0]
    softmax = [o for o in sg.operators
               if m.operatorCodes[o.opcodeIndex].builtinCode == schema.BuiltinOperator.SOFTMAX]
    sg.operators = softmax[:1]  # the SOFTMAX alone, between the model's new input and output
    sg.inputs = np.array(softmax[0].inputs[:1], np.int32)
    sg.outputs = np.array(softmax[0].outputs[:1], np.int32)
    for i in (sg.inputs[0], sg.outputs[0]):
        sg.tensors[i].shape = np.array([1, depth], np.int32)
        sg.tensors[i].shapeSignature = None
    b = flatbuffers.Builder(len(model) + 256)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_softmax_deeper_than_4095_is_refused(tmp_path, chost):
    """TFLite's int8 SOFTMAX sums up to depth * 2^19 in an int32: 4,095 fits, 4,096 not."""
    base = (chost.goldens / "ops" / "softmax_00.tflite").read_bytes()
    ok = generate(_with_softmax_depth(base, 4095), tmp_path / "ok", name="s")
    assert ok.ops[0].op == "SOFTMAX"
    with pytest.raises(CodegenError) as info:
        generate(_with_softmax_depth(base, 4096), tmp_path / "no", name="s")
    assert "SOFTMAX" in info.value.message and "4096 > 4095" in info.value.message
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("golden,target", [("const_operand_00", None),
                                           ("conv_2d_00", None), ("conv_2d_00", "cortex-m4"),
                                           ("depthwise_conv_2d_01", "cortex-m4")])
def test_const_bytes_counts_every_array_the_source_defines(golden, target, tmp_path, chost):
    model = (chost.goldens / "ops" / f"{golden}.tflite").read_bytes()
    r = generate(model, tmp_path / "c", name="m", target=target)
    text = r.source.read_text()
    total = 0
    for ctype, name, body in re.findall(
            r"static const (\w+) (\w+)\[\d+\] = \{\n(.*?)\n\};", text, flags=re.S):
        total += SIZES[ctype] * len([v for v in body.replace("\n", " ").split(",") if v.strip()])
    assert total > 0 and r.const_bytes == total
    if golden.startswith("const_operand"):
        assert re.search(r"static const int8_t t\d+_const\[", text)
