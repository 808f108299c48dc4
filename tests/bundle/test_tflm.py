"""The TFLite Micro bundle: C array, op resolver, arena constant, and what a compiler can check."""

from __future__ import annotations

import re
import subprocess

import pytest

from edgeslim.bundle import write_target_files
from edgeslim.bundle.render import c_identifier
from edgeslim.bundle.tflm import resolver_method
from edgeslim.targets import arena_with_margin, check_model, load_target, read_model

# MicroMutableOpResolver's Add* methods for builtin ops (TFLite Micro's
# micro_mutable_op_resolver.h, 2025), the names the generated resolver may call.
TFLM_ADD_METHODS = set("""
AddAbs AddAdd AddAddN AddArgMax AddArgMin AddAssignVariable AddAveragePool2D AddBatchMatMul
AddBatchToSpaceNd AddBroadcastArgs AddBroadcastTo AddCallOnce AddCast AddCeil AddConcatenation
AddConv2D AddCos AddCumSum AddDepthToSpace AddDepthwiseConv2D AddDequantize AddDiv
AddEmbeddingLookup AddElu AddEqual AddExp AddExpandDims AddFill AddFloor AddFloorDiv AddFloorMod
AddFullyConnected AddGather AddGatherNd AddGreater AddGreaterEqual AddHardSwish AddIf
AddL2Normalization AddL2Pool2D AddLeakyRelu AddLess AddLessEqual AddLog AddLogicalAnd
AddLogicalNot AddLogicalOr AddLogistic AddLogSoftmax AddMaximum AddMaxPool2D AddMirrorPad AddMean
AddMinimum AddMul AddNeg AddNotEqual AddPack AddPad AddPadV2 AddPrelu AddQuantize AddReadVariable
AddReduceMax AddReduceMin AddRelu AddRelu6 AddReshape AddResizeBilinear AddResizeNearestNeighbor
AddReverseV2 AddRound AddRsqrt AddSelectV2 AddShape AddSin AddSlice AddSoftmax AddSpaceToBatchNd
AddSpaceToDepth AddSplit AddSplitV AddSqueeze AddSqrt AddSquare AddSquaredDifference
AddStridedSlice AddSub AddSum AddSvdf AddTanh AddTransposeConv AddTranspose AddUnpack
AddUnidirectionalSequenceLSTM AddVarHandle AddWhile AddZerosLike
""".split())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_cnn_bytes):
    d = tmp_path_factory.mktemp("tflm_bundle")
    target = load_target("cortex-m4")
    check = check_model(tiny_cnn_bytes, target)
    files = write_target_files(d, target, model_bytes=tiny_cnn_bytes, fp16_bytes=None,
                               model_name="tiny-cnn v2", labels=["zero", "one", 'say "two"'], check=check)
    return d / "tflm", files, check


def test_every_profile_op_has_a_real_resolver_method():
    ops = load_target("cortex-m4").ops
    assert {resolver_method(op) for op in ops} <= TFLM_ADD_METHODS
    assert resolver_method("CONV_2D") == "AddConv2D" and resolver_method("MAX_POOL_2D") == "AddMaxPool2D"
    assert resolver_method("UNIDIRECTIONAL_SEQUENCE_LSTM") == "AddUnidirectionalSequenceLSTM"


def test_files_in_tflm_folder(bundle):
    tflm, files, _ = bundle
    assert {p.name for p in files} == {"model_data.h", "model_data.cc", "model_settings.h", "op_resolver.h",
                                       "main.cc", "Makefile", "CMakeLists.txt", "README.md"}
    assert all(p.parent == tflm for p in files)


def test_c_array_parses_back_to_the_model_bytes(bundle, tiny_cnn_bytes):
    tflm, _, _ = bundle
    src = (tflm / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_tiny_cnn_v2_model[]" in src
    body = src[src.index("{") + 1: src.index("};")]
    parsed = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))
    assert parsed == tiny_cnn_bytes
    assert f"g_tiny_cnn_v2_model_len = {len(tiny_cnn_bytes)};" in src


def test_c_array_compiles_and_holds_the_model(bundle, tiny_cnn_bytes, tmp_path):
    """g++ compiles model_data.cc on its own; a host program dumps the array byte for byte."""
    tflm, _, _ = bundle
    dump = tmp_path / "dump.cc"
    dump.write_text(
        '#include <cstdio>\n#include <cstdint>\n#include "model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(g_tiny_cnn_v2_model) % 16 != 0) return 3;\n"
        "  std::fwrite(g_tiny_cnn_v2_model, 1, g_tiny_cnn_v2_model_len, stdout);\n  return 0;\n}\n")
    exe = tmp_path / "dump"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{tflm}",
                    str(tflm / "model_data.cc"), str(dump), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, check=True).stdout
    assert out == tiny_cnn_bytes


def test_c_array_goes_to_flash_aligned_for_cortex_m(bundle, tiny_cnn_bytes, tmp_path):
    tflm, _, _ = bundle
    obj = tmp_path / "model_data.o"
    subprocess.run(["arm-none-eabi-gcc", "-x", "c++", "-std=c++17", "-mthumb", "-mcpu=cortex-m4",
                    "-Wall", "-Wextra", "-Werror", f"-I{tflm}", "-c", str(tflm / "model_data.cc"),
                    "-o", str(obj)], check=True)
    headers = subprocess.run(["arm-none-eabi-objdump", "-h", str(obj)], capture_output=True,
                             text=True, check=True).stdout
    m = re.search(r"\.rodata\s+([0-9a-f]+)\s+\S+\s+\S+\s+\S+\s+2\*\*(\d+)", headers)
    assert m, headers
    assert int(m.group(1), 16) == len(tiny_cnn_bytes) + 4  # the array and its length constant
    assert int(m.group(2)) >= 4  # 16-byte aligned
    assert " .data " not in headers or re.search(r"\.data\s+00000000", headers)


def test_resolver_registers_exactly_the_models_ops(bundle, tiny_cnn_bytes):
    tflm, _, _ = bundle
    src = (tflm / "op_resolver.h").read_text()
    calls = re.findall(r"resolver\.(Add\w+)\(\)", src)
    n = int(re.search(r"kModelOpCount = (\d+);", src).group(1))
    ops = read_model(tiny_cnn_bytes).op_names
    assert n == len(calls) == len(ops) == 5
    assert calls == [resolver_method(op) for op in ops]
    assert len(set(calls)) == len(calls)
    assert "MicroMutableOpResolver<kModelOpCount>" in src


def test_arena_constant_is_measurement_plus_margin(bundle):
    tflm, _, check = bundle
    src = (tflm / "model_settings.h").read_text()
    arena = int(re.search(r"kTensorArenaSize = (\d+);", src).group(1))
    measured = int(re.search(r"kTensorArenaMeasured = (\d+);", src).group(1))
    assert measured == check.arena_measured_bytes
    assert arena == arena_with_margin(measured, 0.10) == check.arena_bytes
    assert arena % 16 == 0 and arena >= measured * 1.1
    assert 'kLabels[kLabelCount]' in src and r'"say \"two\""' in src


STUB = """
#include <cstddef>
#include <cstdint>
typedef enum {{ kTfLiteOk = 0, kTfLiteError = 1 }} TfLiteStatus;
#define TFLITE_SCHEMA_VERSION 3
struct TfLiteTensor {{ union {{ int8_t* int8; }} data; }};
namespace tflite {{
struct Model {{ int version() const {{ return 3; }} }};
inline const Model* GetModel(const void*) {{ return nullptr; }}
inline void InitializeTarget() {{}}
inline void MicroPrintf(const char*, ...) {{}}
{open_micro}
template <unsigned int N> class MicroMutableOpResolver {{
 public:
{methods}
}};
class MicroInterpreter {{
 public:
  template <class R> MicroInterpreter(const Model*, const R&, uint8_t*, size_t) {{}}
  TfLiteStatus AllocateTensors() {{ return kTfLiteOk; }}
  TfLiteStatus Invoke() {{ return kTfLiteOk; }}
  TfLiteTensor* input(size_t) {{ return nullptr; }}
  TfLiteTensor* output(size_t) {{ return nullptr; }}
  size_t arena_used_bytes() const {{ return 0; }}
}};
{close_micro}
}}  // namespace tflite
"""


@pytest.mark.parametrize("layout", ["tflite::micro", "tflite"])
def test_main_compiles_against_a_stub_of_the_tflm_api(bundle, tmp_path, layout):
    """TFLM's sources are not available here: main.cc and op_resolver.h are
    syntax-checked against stub headers declaring the public API they use, with
    the classes in tflite::micro (as the pinned tflite-micro build has them) and
    in tflite (older trees)."""
    tflm, _, _ = bundle
    methods = "\n".join(f"  TfLiteStatus {m}() {{ return kTfLiteOk; }}" for m in sorted(TFLM_ADD_METHODS))
    inner = layout == "tflite::micro"
    stub = STUB.format(methods=methods, open_micro="namespace micro {" if inner else "",
                       close_micro="}  // namespace micro" if inner else "")
    for rel in ("tensorflow/lite/micro/micro_mutable_op_resolver.h",
                "tensorflow/lite/micro/micro_interpreter.h", "tensorflow/lite/micro/micro_log.h",
                "tensorflow/lite/micro/system_setup.h", "tensorflow/lite/schema/schema_generated.h"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("#pragma once\n#include \"stub.h\"\n")
    (tmp_path / "stub.h").write_text("#pragma once\n" + stub)
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                    f"-I{tflm}", f"-I{tmp_path}", str(tflm / "main.cc")], check=True)


def test_build_files_name_tflm_dir_and_core(bundle):
    tflm, _, _ = bundle
    mk = (tflm / "Makefile").read_text()
    assert "TFLM_DIR" in mk and "TARGET=cortex_m_generic" in mk and "cortex-m4+fp" in mk
    assert "-mcpu=cortex-m4" in mk and "-DTF_LITE_STATIC_MEMORY" in mk
    # recipe lines of a Makefile must start with a tab
    assert "\tmake" not in mk and "\t$(CXX) $(CXXFLAGS) -c $< -o $@" in mk
    cm = (tflm / "CMakeLists.txt").read_text()
    assert "TFLM_DIR" in cm and "add_library(tiny_cnn_v2_model STATIC model_data.cc)" in cm
    readme = (tflm / "README.md").read_text()
    assert "make TFLM_DIR=" in readme and "edgeslim flash" in readme


def test_make_without_tflm_dir_says_so(bundle):
    tflm, _, _ = bundle
    r = subprocess.run(["make", "-C", str(tflm), "-n"], capture_output=True, text=True)
    assert r.returncode != 0 and "Set TFLM_DIR" in r.stderr


def test_c_identifier():
    assert c_identifier("digits-cnn v2") == "digits_cnn_v2"
    assert c_identifier("3layers") == "m_3layers"
    assert c_identifier("int") == "int_model"
    assert re.fullmatch(r"[A-Za-z_]\w*", c_identifier("ünï©ode!!"))
