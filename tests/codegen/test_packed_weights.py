"""4-bit packed weights (beyond TFLite Micro): clustered layers stored as packed indices
into per-channel tables, decoded in the kernel. Outputs stay bit-exact with the
interpreter running the unpacked model; flash shrinks; the decode buffer is a scratch
buffer in the arena plan."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from edgeslim.codegen import generate

ARM = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
       "-mfpu=fpv4-sp-d16", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror",
       "-ffunction-sections", "-fdata-sections", "-c"]


def _flash(source, obj) -> int:
    """text + rodata of the compiled library for Cortex-M4."""
    subprocess.run([*ARM, str(source), "-o", str(obj)], check=True, capture_output=True)
    out = subprocess.run(["arm-none-eabi-size", "-A", str(obj)], capture_output=True,
                         text=True, check=True).stdout
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith((".text", ".rodata")) and parts[1].isdigit():
            total += int(parts[1])
    return total


def test_clustered_layers_packed_and_bit_exact(tmp_path, chost):
    paths = sorted((chost.goldens / "ops").glob("clustered_*.tflite"))
    assert len(paths) >= 20
    results = []
    for i, p in enumerate(paths):
        packed = generate(p.read_bytes(), tmp_path / "lib", name=f"clustered_{i:02d}",
                          pack_weights=True)
        plain = generate(p.read_bytes(), tmp_path / "plain", name=f"clustered_{i:02d}")
        weighted = [o for o in packed.ops if o.op in
                    ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
        assert weighted and all(o.packed_weights for o in weighted)
        assert all(o.function.endswith("_lut4") for o in weighted)
        assert packed.const_bytes < plain.const_bytes
        assert packed.report()["scratch_buffers"] == len(weighted)
        results.append(packed)
    exe = chost.build(results, tmp_path / "build")
    for i, p in enumerate(paths):
        model = p.read_bytes()
        x = chost.inputs(model, 32, seed=2000 + i)
        ref = chost.tflm(model, x)
        np.testing.assert_array_equal(chost.run(exe, i, x, ref.dtype, ref.shape[1:]), ref)


def test_unclustered_layers_are_left_alone(tmp_path, chost):
    model = (chost.goldens / "models" / "mobilenet.tflite").read_bytes()
    r = generate(model, tmp_path / "c", name="m", pack_weights=True)
    assert not any(o.packed_weights for o in r.ops)


def test_clustered_mobilenet_flash_and_exactness(tmp_path, chost):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.fail("arm-none-eabi-gcc is required (Debian package gcc-arm-none-eabi)")
    model = (chost.goldens / "models" / "mobilenet_c16.tflite").read_bytes()
    packed = generate(model, tmp_path / "packed", name="mnet", pack_weights=True)
    plain = generate(model, tmp_path / "plain", name="mnet")
    n_packed = sum(o.packed_weights for o in packed.ops)
    assert n_packed >= 5
    flash_packed = _flash(packed.source, tmp_path / "packed.o")
    flash_plain = _flash(plain.source, tmp_path / "plain.o")
    # TFLite Micro's own compression tool (LUT, 4-bit, per channel) on the same model.
    from tflite_micro.tensorflow.lite.micro.compression import compress, spec

    from edgeslim.modelgraph import read as read_graph

    g = read_graph(model)
    specs = []
    for op in g.operators:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = g.tensors[op.inputs[1]]
            axis = 3 if op.opcode == "DEPTHWISE_CONV_2D" else 0
            specs.append(spec.Tensor(0, w.index, [spec.LookUpTableCompression(
                4, spec.PerChannel(axis))]))
    tflm_compressed = len(compress(model, specs))
    print(f"mobilenet_c16: .tflite {len(model)} B, TFLM-compressed .tflite {tflm_compressed} B; "
          f"C flash plain {flash_plain} B, packed {flash_packed} B "
          f"({n_packed} layers packed, {flash_plain - flash_packed} B saved)")
    # Small layers (<= 33 weights per channel) stay unpacked: a 16-byte table per channel
    # would cost more than the nibbles save. The packed ones must save what they promise.
    assert flash_packed < flash_plain
    expected = 0
    for op in g.operators:
        info = next(o for o in packed.ops if o.index == op.index)
        if info.packed_weights:
            w = g.tensors[op.inputs[1]]
            channels = w.shape[3] if op.opcode == "DEPTHWISE_CONV_2D" else w.shape[0]
            n = w.size // channels
            assert n > 33  # packing pays only above this
            expected += w.size - channels * ((n + 1) // 2 + 16)
    assert plain.const_bytes - packed.const_bytes == expected > 1000
    assert packed.arena_size >= plain.arena_size  # the decode buffer is in the plan
    # Same outputs as the interpreter on the unpacked model.
    x = chost.inputs(model, 64, seed=7)
    ref = chost.tflm(model, x)
    exe = chost.build([packed], tmp_path / "build")
    np.testing.assert_array_equal(chost.run(exe, 0, x, ref.dtype, ref.shape[1:]), ref)
