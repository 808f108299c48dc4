"""Per op: 20 seeded random single-op int8 models (tests/codegen/goldens/ops, made by
tools/gen_codegen_goldens.py) through the generated C, compiled with
gcc -std=c99 -Wall -Wextra -Werror -fsanitize=undefined, against the tflite-micro
interpreter: outputs must be equal to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim.codegen import generate

# golden family -> TFLite op(s) the family must exercise
FAMILIES = {
    "conv_2d": {"CONV_2D"},
    "depthwise_conv_2d": {"DEPTHWISE_CONV_2D"},
    "fully_connected": {"FULLY_CONNECTED"},
    "average_pool_2d": {"AVERAGE_POOL_2D"},
    "max_pool_2d": {"MAX_POOL_2D"},
    "mean": {"MEAN"},
    "add": {"ADD"},
    "mul": {"MUL"},
    "reshape": {"RESHAPE"},
    "softmax": {"SOFTMAX"},
    "logistic": {"LOGISTIC"},
    "tanh": {"TANH"},
    "hard_swish": {"HARD_SWISH"},
    "pad": {"PAD", "PADV2"},
    "concatenation": {"CONCATENATION"},
    "quantize": {"QUANTIZE", "DEQUANTIZE"},
    "const_operand": {"ADD", "MUL"},  # the second operand is a constant array in flash
}
N_INPUTS = 48
MIN_MODELS = 20


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_bit_exact_with_tflite_micro(family, tmp_path, chost):
    paths = sorted((chost.goldens / "ops").glob(f"{family}_*.tflite"))
    assert len(paths) >= MIN_MODELS, f"regenerate the goldens: only {len(paths)} {family} models"
    results, seen_ops = [], set()
    for i, p in enumerate(paths):
        r = generate(p.read_bytes(), tmp_path / "lib", name=f"{family}_{i:02d}")
        seen_ops |= {o.op for o in r.ops}
        results.append(r)
    # Every family exercises all of its op(s) somewhere in its 20 models.
    assert FAMILIES[family] <= seen_ops, seen_ops
    if family == "const_operand":
        assert all("_const[" in r.source.read_text() for r in results)
    exe = chost.build(results, tmp_path / "build")
    saturated = 0
    for i, p in enumerate(paths):
        model = p.read_bytes()
        x = chost.inputs(model, N_INPUTS, seed=1000 + i)
        ref = chost.tflm(model, x)
        got = chost.run(exe, i, x, ref.dtype, ref.shape[1:])
        np.testing.assert_array_equal(got, ref, err_msg=f"{p.name} differs from tflite-micro")
        if ref.dtype == np.int8:
            saturated += int(np.count_nonzero((ref == -128) | (ref == 127)))
    if family not in ("quantize",):
        # Random full-range inputs reach the int8 limits somewhere in the family.
        assert saturated > 0
