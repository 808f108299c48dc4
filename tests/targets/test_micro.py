"""edgeslim.micro: TFLite Micro in a child process (arena search, inference, crashes)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim import micro
from edgeslim.errors import DeviceError


def _inputs(n=16, seed=7):
    return np.random.default_rng(seed).integers(-128, 128, size=(n, 8, 8, 1), dtype=np.int8)


def test_measured_arena_is_the_minimum(tiny_cnn_bytes):
    arena = micro.measure_arena(tiny_cnn_bytes)
    assert arena % micro.ARENA_STEP == 0 and arena > 0
    x = _inputs(2)
    micro.run(tiny_cnn_bytes, x, arena_size=arena)  # allocates and invokes
    with pytest.raises(DeviceError):  # one step less does not
        micro.run(tiny_cnn_bytes, x, arena_size=arena - micro.ARENA_STEP)


def test_run_matches_litert_bit_exact(tiny_cnn_bytes):
    from ai_edge_litert.interpreter import Interpreter

    x = _inputs(16)
    got = micro.run(tiny_cnn_bytes, x)
    ip = Interpreter(model_content=tiny_cnn_bytes)
    ip.allocate_tensors()
    i, o = ip.get_input_details()[0]["index"], ip.get_output_details()[0]["index"]
    want = []
    for n in range(len(x)):
        ip.set_tensor(i, x[n:n + 1])
        ip.invoke()
        want.append(ip.get_tensor(o)[0].copy())
    want = np.stack(want)
    assert got.dtype == np.int8 and got.shape == (16, 3)
    np.testing.assert_array_equal(got, want)
    assert len({tuple(r) for r in got}) > 1  # inputs differ, outputs differ


def test_model_tflm_cannot_run_is_a_clear_error(gelu_bytes):
    with pytest.raises(DeviceError) as e:
        micro.measure_arena(gelu_bytes, max_arena=256 * 1024)
    assert "GELU" in e.value.message and "262144" in e.value.message


def test_bad_inputs_rejected(tiny_cnn_bytes):
    from edgeslim.errors import TargetError

    with pytest.raises(TargetError, match="batch"):
        micro.run(tiny_cnn_bytes, [np.zeros((2, 8, 8, 1), np.int8), np.zeros((3, 8), np.int8)])


def test_softmax_abort_on_degenerate_scale_becomes_a_clear_error(tiny_cnn_bytes, scale_patcher):
    """The measured hazard: TFLM's int8 SOFTMAX aborts the whole process (SIGABRT)
    when its input scale is ~1e-8, whatever the arena. The child dies; we explain."""
    from edgeslim.targets import read_model

    graph = read_model(tiny_cnn_bytes)
    softmax = graph.operators[-1]
    assert softmax.opcode == "SOFTMAX"
    reads = graph.tensors[softmax.inputs[0]].name  # the tensor SOFTMAX reads
    bad, name = scale_patcher(tiny_cnn_bytes, reads, 1e-8)
    assert name == reads
    with pytest.raises(DeviceError) as e:
        micro.measure_arena(bad, max_arena=256 * 1024)
    msg = e.value.message
    assert "SIGABRT" in msg and "degenerate quantization scale" in msg and "the arena size is not the cause" in msg
    with pytest.raises(DeviceError) as e2:
        micro.run(bad, np.zeros((1, 8, 8, 1), np.int8))
    assert "SIGABRT" in e2.value.message and "degenerate quantization scale" in e2.value.message
    # this process is unharmed: the healthy model still runs
    assert micro.run(tiny_cnn_bytes, np.zeros((1, 8, 8, 1), np.int8)).shape == (1, 3)
