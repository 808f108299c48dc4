"""Target profiles: loading, aliases, inheritance, overrides, malformed files, and check_model."""

from __future__ import annotations

import math

import pytest

from edgeslim.errors import ModelFormatError, TargetError
from edgeslim.targets import (
    arena_with_margin, check_model, list_targets, load_target, parse_size, read_model,
    target_wants_fp16,
)

REQUIRED = {"cortex-m0plus", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "cortex-m",
            "rpi3", "rpi4", "rpi5", "rpi-zero2w", "rpi", "android", "android-gpu"}


def test_parse_size():
    assert parse_size("192k") == 196608
    assert parse_size("1m") == 1048576
    assert parse_size("512K") == 524288
    assert parse_size("64KiB") == 65536
    assert parse_size(4096) == 4096
    for bad in ("12q", "", "k", "-5k"):
        with pytest.raises(TargetError, match="bad size"):
            parse_size(bad)


def test_list_has_every_required_target_and_no_abstract_base():
    names = {t.name for t in list_targets()}
    assert REQUIRED <= names
    assert "cortex-m-base" not in names and "rpi-base" not in names


def test_generic_names_resolve_to_defaults():
    rpi = load_target("rpi")
    assert (rpi.name, rpi.profile, rpi.kind) == ("rpi", "rpi4", "rpi")
    mcu = load_target("cortex-m")
    assert (mcu.name, mcu.profile, mcu.kind) == ("cortex-m", "cortex-m4", "mcu")
    assert mcu.ram_bytes == 256 * 1024 and mcu.flash_bytes == 1024 * 1024


def test_mcu_profiles_inherit_the_base():
    m0 = load_target("cortex-m0plus")
    m55 = load_target("cortex-m55")
    assert m0.inherits == ("cortex-m-base",) and m55.inherits == ("cortex-m-base",)
    # inherited from the base, untouched by the child
    assert m0.ops == m55.ops and "CONV_2D" in m0.ops and "GELU" not in m0.ops
    assert m0.recipe["build"]["stages"] == ["channels"]
    assert m0.recipe["channels"] == {"ratio": 0.5, "importance": "taylor", "allocation": "uniform"}
    # overridden by the child
    assert m0.ram_bytes == 32 * 1024 and m55.ram_bytes == 512 * 1024
    assert "mve-int" in m55.features and m0.features == ()
    assert m0.build["tflm_target_arch"] == "cortex-m0plus"
    assert load_target("cortex-m4").build["tflm_target_arch"] == "cortex-m4+fp"


def test_linux_profiles():
    for name in ("rpi3", "rpi4", "rpi5", "rpi-zero2w"):
        t = load_target(name)
        assert t.kind == "rpi" and t.cpu == "aarch64" and "GELU" in t.ops and t.flash_bytes is None
        assert t.recipe["build"]["stages"] == ["channels"]
    android = load_target("android")
    gpu = load_target("android-gpu")
    assert {v.name for v in android.variants} == {"cpu", "gpu"}
    assert android.default_variant == "cpu" and gpu.default_variant == "gpu"
    assert gpu.variant("gpu").precision == "float16" and gpu.variant("gpu").model == "model_fp16.tflite"
    assert target_wants_fp16(android) and target_wants_fp16(gpu)
    assert not target_wants_fp16(load_target("rpi4")) and not target_wants_fp16(load_target("cortex-m4"))


def test_cli_overrides():
    t = load_target("cortex-m4", ram="192k", flash="512k")
    assert t.ram_bytes == 196608 and t.flash_bytes == 524288
    assert t.overrides == {"ram_bytes": 196608, "flash_bytes": 524288}
    assert t.arena_budget_bytes == 196608 - t.ram_reserved_bytes
    with pytest.raises(TargetError, match="bad size"):
        load_target("cortex-m4", ram="lots")


def test_unknown_target_lists_known():
    with pytest.raises(TargetError) as e:
        load_target("cortex-m99")
    assert "cortex-m99" in e.value.message
    assert "cortex-m4" in e.value.hint and "rpi5" in e.value.hint and "android-gpu" in e.value.hint
    with pytest.raises(TargetError, match="abstract"):
        load_target("cortex-m-base")


def test_user_board_file_inherits_shipped_profile(tmp_path):
    board = tmp_path / "myboard.toml"
    board.write_text(
        'inherit = "cortex-m4"\n'
        'description = "my STM32L4 board"\n'
        '[memory]\nram = "96k"\n'
        '[cpu]\nclock_mhz = 80\n'
    )
    t = load_target(str(board))
    assert t.profile == "myboard" and t.name == str(board)
    assert t.ram_bytes == 96 * 1024 and t.flash_bytes == 1024 * 1024  # flash from cortex-m4
    assert t.clock_mhz == 80 and t.inherits == ("cortex-m4", "cortex-m-base")
    assert t.ops == load_target("cortex-m4").ops


def test_adding_a_board_is_adding_a_file(tmp_path):
    (tmp_path / "nrf52840.toml").write_text(
        'inherit = "cortex-m-base"\n'
        'description = "nRF52840: Cortex-M4F, 64 MHz, 256 KiB RAM, 1 MiB flash"\n'
        '[cpu]\nfeatures = ["fpu-sp", "dsp"]\nclock_mhz = 64\n'
    )
    listed = {t.name: t for t in list_targets(tmp_path)}
    assert set(listed) == {"nrf52840"}
    assert listed["nrf52840"].kind == "mcu" and listed["nrf52840"].clock_mhz == 64


@pytest.mark.parametrize("text, key", [
    ('inherit = "cortex-m4"\ncolour = "red"\n', "colour"),
    ('inherit = "cortex-m4"\n[memory]\nram = "lots"\n', "memory.ram"),
    ('inherit = "cortex-m4"\n[memory]\nsram = "64k"\n', "memory.sram"),
    ('inherit = "cortex-m4"\nkind = "fpga"\n', "kind"),
    ('inherit = "no-such-base"\n', "inherit"),
    ('kind = "mcu"\nruntime = "tflite-micro"\ndescription = "x"\n[memory]\nram = "1k"\nflash = "1k"\n', "ops.supported"),
    ('inherit = "cortex-m4"\n[ops]\nsupported = ["CONV_2D", "CONV_3DD"]\n', "ops.supported"),
    ('inherit = "cortex-m4"\n[memory]\narena_margin = 2\n', "memory.arena_margin"),
    ('inherit = "cortex-m4"\n[recipe.prunee]\nsparsity = 0.5\n', "recipe.prunee"),
    ('inherit = "cortex-m4"\n[memory\n', "not valid TOML"),
])
def test_malformed_profile_names_file_and_key(tmp_path, text, key):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(TargetError) as e:
        load_target(str(bad))
    assert str(bad) in e.value.message and key in e.value.message


def test_inheritance_cycle(tmp_path):
    (tmp_path / "a.toml").write_text('inherit = "b"\n')
    (tmp_path / "b.toml").write_text('inherit = "a"\n')
    with pytest.raises(TargetError, match="cycle"):
        load_target(str(tmp_path / "a.toml"))


# --------------------------------------------------------------------------- check_model


def test_read_model_names_layers(tiny_cnn_bytes):
    info = read_model(tiny_cnn_bytes)
    assert info.op_names == ["CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    layers = [o.layer for o in info.operators]
    assert layers[:2] == ["conv1", "dw1"] and layers[3] == "dense_out"
    assert info.input_tensors[0].dtype == "INT8" and info.input_tensors[0].shape == (1, 8, 8, 1)


def test_check_fits_cortex_m4_with_measured_arena(tiny_cnn_bytes):
    from edgeslim import micro

    t = load_target("cortex-m4")
    r = check_model(tiny_cnn_bytes, t)
    assert r.ops == ["CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert r.flash_needed_bytes == len(tiny_cnn_bytes) + t.runtime_flash_bytes
    assert r.flash_budget_bytes == 1024 * 1024
    assert r.arena_measured_bytes == micro.measure_arena(tiny_cnn_bytes)
    assert 1000 < r.arena_measured_bytes < 16 * 1024 and r.arena_measured_bytes % 16 == 0
    assert r.arena_bytes == arena_with_margin(r.arena_measured_bytes, 0.10)
    assert r.arena_bytes >= math.ceil(r.arena_measured_bytes * 1.1) and r.arena_bytes % 16 == 0
    d = r.to_dict()
    assert d["ram_headroom_bytes"] == t.arena_budget_bytes - r.arena_bytes
    assert d["flash_headroom_bytes"] == 1024 * 1024 - r.flash_needed_bytes


def test_unsupported_op_named_with_layer(gelu_bytes):
    with pytest.raises(TargetError) as e:
        check_model(gelu_bytes, load_target("cortex-m4"))
    assert "GELU" in e.value.message and "act_gelu" in e.value.message
    assert "relu" in e.value.hint and "rpi4" in e.value.hint
    # LiteRT has GELU: the same model passes on a Pi
    assert "GELU" in check_model(gelu_bytes, load_target("rpi4")).ops


def test_float_op_rejected_on_mcu_accepted_on_pi(cumsum_bytes):
    with pytest.raises(TargetError) as e:
        check_model(cumsum_bytes, load_target("cortex-m7"))
    assert "CUMSUM" in e.value.message and "'cum'" in e.value.message and "float32" in e.value.message
    r = check_model(cumsum_bytes, load_target("rpi5"))
    assert "CUMSUM" in r.ops


def test_gpu_fallback_reported_not_fatal(cumsum_bytes):
    r = check_model(cumsum_bytes, load_target("android-gpu"))
    assert r.gpu_fallback_ops == ["CUMSUM"]
    assert any("fall back to the CPU" in n for n in r.notes)


def test_over_flash_budget_gives_numbers(tiny_cnn_bytes):
    t = load_target("cortex-m4", flash="64k")  # runtime estimate alone is 80 KiB
    with pytest.raises(TargetError) as e:
        check_model(tiny_cnn_bytes, t)
    msg = e.value.message
    need = len(tiny_cnn_bytes) + t.runtime_flash_bytes
    assert "flash" in msg and str(need) in msg and "65536" in msg and str(need - 65536) in msg


def test_over_ram_budget_gives_numbers_and_margin(tiny_cnn_bytes):
    t = load_target("cortex-m0plus", ram="8k")  # 8 KiB - 6 KiB reserved = 2 KiB for the arena
    with pytest.raises(TargetError) as e:
        check_model(tiny_cnn_bytes, t)
    msg = e.value.message
    assert "RAM" in msg and "10% margin" in msg and "2048 B available" in msg
    assert "measured" in msg and "--ram" in e.value.hint


def test_degenerate_scale_names_tensor(tiny_cnn_bytes, request):
    with_scale = request.getfixturevalue("scale_patcher")
    bad, name = with_scale(tiny_cnn_bytes, "dense_out", 1e-8)
    assert name.startswith("tiny_cnn/dense_out/")
    with pytest.raises(TargetError) as e:
        check_model(bad, load_target("cortex-m4"))
    assert repr(name) in e.value.message and "1e-08" in e.value.message
    assert "(layer 'dense_out')" in e.value.message and "train" in e.value.hint
    # the same model with a healthy scale passes
    ok, _ = with_scale(tiny_cnn_bytes, "dense_out", 1e-3)
    check_model(ok, load_target("rpi4"))


def test_tiny_weight_scale_of_a_zeroed_channel_is_accepted(tiny_cnn_bytes):
    """Pruning can zero a whole output channel; the converter then gives that channel's
    weights a scale of ~1e-9. Harmless (the requantization multiplier flushes to zero),
    so it must not be refused like a degenerate activation scale."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tiny_cnn_bytes, 0))
    weights = next(t for t in m.subgraphs[0].tensors
                   if t.buffer and m.buffers[t.buffer].data is not None and len(m.buffers[t.buffer].data)
                   and t.quantization is not None and t.quantization.scale is not None
                   and len(t.quantization.scale) > 1)
    scales = [float(v) for v in weights.quantization.scale]
    scales[0] = 3.9e-9
    weights.quantization.scale = scales
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    result = check_model(bytes(b.Output()), load_target("cortex-m4"))
    assert result.arena_bytes > 0


def test_not_a_tflite_model():
    with pytest.raises(ModelFormatError, match="not a TFLite model"):
        check_model(b"this is not a model at all", load_target("rpi"))
