"""The one .tflite reader: the layer-name rule, the verified read, the MAC rule on real
converted models (hand-computed counts)."""

from __future__ import annotations

import pytest

from edgeslim import modelgraph
from edgeslim.errors import ModelFormatError


@pytest.mark.parametrize("name, known, prefer_last, want", [
    ("sequential/conv1/BiasAdd;sequential/conv1/Conv2D", None, False, "conv1"),
    ("model/bn1/FusedBatchNorm;model/conv1/Conv2D", None, True, "conv1"),  # the op fused last
    ("model/bn1/FusedBatchNorm;model/conv1/Conv2D", None, False, "bn1"),
    ("model/quant_conv1/Conv2D", None, False, "conv1"),  # QAT's wrapper: the Keras layer's name
    ("model/quant_conv1/Conv2D", ["quant_conv1"], False, "quant_conv1"),
    ("model/bn1/FusedBatchNorm;model/conv1/Conv2D", ["conv1"], False, "conv1"),  # the known one
    ("model/other/MatMul", ["conv1"], False, None),
    ("serving_default_input:0", None, False, None),
    ("StatefulPartitionedCall/sequential/conv1/Conv2D", None, False, None),  # generic scope skipped
    ("tfl.quantize", None, False, None),
])
def test_layer_rule(name, known, prefer_last, want):
    assert modelgraph.layer_of(name, known, prefer_last=prefer_last) == want


def test_layer_of_several_names_takes_the_first_that_names_one():
    assert modelgraph.layer_of(["StatefulPartitionedCall:0", "m/dense_out/MatMul"]) == "dense_out"


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 a zip", b"\x00" * 64, "text"])
def test_not_a_tflite_is_one_error(data):
    with pytest.raises(ModelFormatError) as err:
        modelgraph.read(data)
    assert "TFLite" in err.value.message or "bytes" in err.value.message
    assert err.value.hint and err.value.exit_code == 2


def test_truncated_model_is_a_format_error(macs_model):
    with pytest.raises(ModelFormatError):
        modelgraph.read(macs_model[: len(macs_model) // 3])


def test_ops_layers_and_macs_by_hand(macs_model):
    g = modelgraph.read(macs_model)
    assert [o.opcode for o in g.operators] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MEAN", "FULLY_CONNECTED"]
    assert [o.layer for o in g.operators] == ["conv", "dw", "pool", "gap", "fc"]
    macs = [modelgraph.op_macs(g, o) for o in g.operators]
    # conv: 5*5 outputs x 4 filters, each 3*3*3 weights; depthwise: 3*3*8 outputs x 3*3;
    # pooling and MEAN are not MACs; dense: 5 outputs x 8 inputs
    assert macs == [5 * 5 * 4 * 27, 3 * 3 * 8 * 9, 0, 0, 5 * 8] == [2700, 648, 0, 0, 40]
    assert modelgraph.graph_macs(g) == 3388
    conv = g.operators[0]
    assert conv.option("strideH") == 2 and modelgraph.padding_name(conv.option("padding")) == "SAME"
    assert conv.activation == "RELU"
    assert g.operators[1].option("depthMultiplier") == 2
    assert g.input_tensors[0].shape == (1, 9, 9, 3) and g.input_tensors[0].dtype == "INT8"
    w = g.weight_tensor(conv)
    assert w.shape == (4, 3, 3, 3) and w.data.shape == (4, 3, 3, 3) and w.scales.size == 4
