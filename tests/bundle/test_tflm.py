"""The TFLite Micro bundle: C array, op resolver, arena constant, and what a compiler can check."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import zlib

import pytest

from edgeslim.bundle import write_target_files
from edgeslim.bundle.render import c_identifier
from edgeslim.resources import templates_dir
from edgeslim.bundle.tflm import BOARD_FILES, HARNESS_FILES, resolver_method, tflm_library_path
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
    assert {str(p.relative_to(tflm)) for p in files if p.parent == tflm} == {
        "model_data.h", "model_data.cc", "model_settings.h", "op_resolver.h", "main.cc", "board_log.h",
        "board_log.cc", "harness_main.cc", "Makefile", "CMakeLists.txt", "arm-none-eabi.cmake", "README.md"}
    assert {str(p.relative_to(tflm)) for p in files if p.parent != tflm} == {
        *(f"harness/{n}" for n in HARNESS_FILES),
        *(f"boards/mps2-an386/{n}" for n in (*BOARD_FILES, "board.h", "link.ld"))}
    assert all(p.is_file() for p in files)


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


# --- The TFLite Micro flavour of the harness firmware, and the build as shipped -------------
# TFLM's sources are not here: what does not need them is checked for real (the copied
# protocol and board sources cross-compiled, the CRC the device computes, the Makefile's
# library path and rebuild rule, the CMake project's flags).

CORTEX_M = templates_dir() / "cortex_m"


def test_protocol_and_board_files_are_the_c_backend_harness_ones(bundle):
    """harness/ and boards/<machine>/ hold the C-backend harness's files unchanged (copied at
    render time, not kept twice in the repo); board.h and link.ld are the board's."""
    tflm, _, _ = bundle
    for name in HARNESS_FILES:
        assert (tflm / "harness" / name).read_bytes() == (CORTEX_M / name).read_bytes(), name
    board = tflm / "boards" / "mps2-an386"
    for name in BOARD_FILES:
        assert (board / name).read_bytes() == (CORTEX_M / name).read_bytes(), name
    assert '#define ESLM_BOARD_NAME "mps2-an386"' in (board / "board.h").read_text()
    assert "#define ESLM_UART0_BASE 0x40004000u" in (board / "board.h").read_text()
    ld = (board / "link.ld").read_text()
    assert "FLASH (rx)  : ORIGIN = 0x00000000, LENGTH = 0x00400000" in ld
    assert "RAM   (rwx) : ORIGIN = 0x20000000, LENGTH = 0x00400000" in ld
    assert "ENTRY(Reset_Handler)" in ld


def test_harness_and_board_c_sources_cross_compile(bundle, tmp_path):
    """The protocol module and the emulated board's startup, UART and SysTick port compile
    for the profile's core with -Wall -Wextra -Werror, and link (with a stand-in for the TFLM
    main, which needs TFLM's tree) with -nostartfiles: no _init/_fini clash, no missing
    symbol of the protocol or port layer."""
    tflm, _, _ = bundle
    cflags = shlex.split(load_target("cortex-m4").build["cflags"])
    board = tflm / "boards" / "mps2-an386"
    sources = [tflm / "harness" / "dut.c", *sorted(board.glob("*.c"))]
    objs = []
    for src in sources:
        obj = tmp_path / (src.stem + ".o")
        subprocess.run(["arm-none-eabi-gcc", *cflags, "-std=c11", "-Os", "-ffunction-sections",
                        "-fdata-sections", "-Wall", "-Wextra", "-Werror", f"-I{tflm / 'harness'}",
                        f"-I{board}", "-c", str(src), "-o", str(obj)], check=True)
        objs.append(obj)
    # A main that serves a 1-byte identity model: only to prove the objects link as a firmware.
    main = tmp_path / "main.c"
    main.write_text('#include "dut.h"\n'
                    "static int8_t in[1], out[1];\n"
                    "static int copy(const int8_t *i, int8_t *o) { o[0] = i[0]; return 0; }\n"
                    "int main(void) {\n  static eslm_dut_model m;\n  m.name = \"t\"; m.sha256 = \"\";\n"
                    "  m.input_bytes = m.output_bytes = 1; m.output_scale = 1.0f; m.invoke = copy;\n"
                    "  m.input = in; m.output = out;\n  eslm_dut_run(&m);\n}\n")
    objs.append(tmp_path / "main.o")
    subprocess.run(["arm-none-eabi-gcc", *cflags, "-Wall", "-Wextra", "-Werror", f"-I{tflm / 'harness'}",
                    "-c", str(main), "-o", str(objs[-1])], check=True)
    elf = tmp_path / "fw.elf"
    r = subprocess.run(["arm-none-eabi-gcc", *cflags, "-nostartfiles", "--specs=nano.specs",
                        "--specs=nosys.specs", "-Wl,--gc-sections", f"-T{board / 'link.ld'}",
                        *map(str, objs), "-o", str(elf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    syms = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^00000000 [RrTt] eslm_vectors$", syms, re.M), syms  # the vector table at the boot address
    assert " T eslm_dut_run" in syms and " T SysTick_Handler" in syms


def test_weights_crc_expected_is_zlib_crc32_of_the_model_and_the_device_computes_it(bundle, tiny_cnn_bytes,
                                                                                      tmp_path):
    """The CRC the harness expects is zlib.crc32 of the model bytes, and eslm_crc32 (dut.c, the
    code the device runs at boot) over the model_data.cc array gives the same value."""
    tflm, _, _ = bundle
    src = (tflm / "harness_main.cc").read_text()
    expected = int(re.search(r"kModelCrc32 = 0x([0-9A-F]{8})u;", src).group(1), 16)
    assert expected == zlib.crc32(tiny_cnn_bytes)
    assert "dut.weights = g_tiny_cnn_v2_model;" in src and "dut.weights_bytes = g_tiny_cnn_v2_model_len;" in src
    assert f'kModelSha256[] = "{hashlib.sha256(tiny_cnn_bytes).hexdigest()}"' in src
    prog = tmp_path / "crc.cc"
    prog.write_text(
        '#include <cstdio>\n#include "model_data.h"\n'
        'extern "C" {\n#include "dut.h"\n#include "port.h"\n'
        "void eslm_port_init(void) {}\nuint8_t eslm_port_uart_getc(void) { return 0; }\n"
        "void eslm_port_uart_putc(uint8_t) {}\nuint64_t eslm_port_ticks(void) { return 0; }\n"
        "uint64_t eslm_port_timer_sync(void) { return 0; }\nuint32_t eslm_port_tick_hz(void) { return 1; }\n"
        'const char *eslm_port_counter(void) { return "none"; }\n}\n'
        "int main() {\n  std::printf(\"%08X\\n\", (unsigned)eslm_crc32(g_tiny_cnn_v2_model, g_tiny_cnn_v2_model_len));\n"
        "  return 0;\n}\n")
    dut_obj = tmp_path / "dut.o"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-c", str(tflm / "harness" / "dut.c"),
                    "-o", str(dut_obj)], check=True)
    exe = tmp_path / "crc"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", f"-I{tflm}", f"-I{tflm / 'harness'}",
                    str(prog), str(tflm / "model_data.cc"), str(dut_obj), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    assert int(out, 16) == expected


HARNESS_STUB_EXTRA = """
#pragma once
#include <cstddef>
#include "stub.h"
extern "C" {
typedef void (*DebugLogCallback)(const char* s);
void RegisterDebugLogCallback(DebugLogCallback callback);
}
"""


@pytest.mark.parametrize("source", ["harness_main.cc", "board_log.cc"])
def test_harness_main_compiles_for_the_core_against_a_stub_of_the_tflm_api(bundle, tmp_path, source):
    """harness_main.cc and board_log.cc with arm-none-eabi-g++ (the profile's flags, the
    Makefile's C++ flags, -Werror) against stub headers of the TFLM API they use, the
    cortex_m_generic debug-log callback included."""
    tflm, _, _ = bundle
    methods = "\n".join(f"  TfLiteStatus {m}() {{ return kTfLiteOk; }}" for m in sorted(TFLM_ADD_METHODS))
    stub = STUB.format(methods=methods, open_micro="namespace micro {", close_micro="}  // namespace micro")
    stub = stub.replace("struct TfLiteTensor { union { int8_t* int8; } data; };",
                        "struct TfLiteTensor { union { int8_t* int8; void* data; } data; size_t bytes; };")
    assert "size_t bytes;" in stub
    for rel in ("tensorflow/lite/micro/micro_mutable_op_resolver.h",
                "tensorflow/lite/micro/micro_interpreter.h", "tensorflow/lite/micro/micro_log.h",
                "tensorflow/lite/micro/system_setup.h", "tensorflow/lite/schema/schema_generated.h"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("#pragma once\n#include \"stub.h\"\n")
    cb = tmp_path / "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
    cb.parent.mkdir(parents=True, exist_ok=True)
    cb.write_text(HARNESS_STUB_EXTRA)
    (tmp_path / "stub.h").write_text("#pragma once\n" + stub)
    cflags = shlex.split(load_target("cortex-m4").build["cflags"])
    subprocess.run(["arm-none-eabi-g++", *cflags, "-std=c++17", "-Os", "-fno-rtti", "-fno-exceptions",
                    "-fno-threadsafe-statics", "-fno-use-cxa-atexit", "-Wall", "-Wextra", "-Werror",
                    "-DESLM_ICOUNT_SHIFT=6", f"-I{tflm}", f"-I{tflm / 'harness'}", f"-I{tmp_path}",
                    "-c", str(tflm / source), "-o", str(tmp_path / "out.o")], check=True)


def _make(tflm, *args):
    return subprocess.run(["make", "-C", str(tflm), *args], capture_output=True, text=True)


def test_makefile_links_the_exact_library_and_does_not_rerun_tflm_make_when_it_exists(bundle, tmp_path):
    """The library path is TFLM's GENDIR for the profile and build type (no search); a present
    library is up to date (a file target: TFLM's make, and so its python3 needs, not re-run)."""
    tflm, _, _ = bundle
    tflm_dir = tmp_path / "tflite-micro"
    # A stand-in for TFLM's Makefile (its tree is not here): it only receives the arguments.
    tflm_mk = tflm_dir / "tensorflow/lite/micro/tools/make/Makefile"
    tflm_mk.parent.mkdir(parents=True)
    tflm_mk.write_text("microlite:\n\t@true\n")
    lib_rel = tflm_library_path(load_target("cortex-m4"))
    assert lib_rel == "gen/cortex_m_generic_cortex-m4+fp_release_with_logs_cmsis_nn_gcc/lib/libtensorflow-microlite.a"
    mk = (tflm / "Makefile").read_text()
    assert "find " not in mk
    r = _make(tflm, "-n", "tflm-lib", f"TFLM_DIR={tflm_dir}")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if " microlite" in l)
    for arg in ("TARGET=cortex_m_generic", "TARGET_ARCH=cortex-m4+fp", "BUILD_TYPE=release_with_logs",
                "OPTIMIZED_KERNEL_DIR=cmsis_nn", "TARGET_TOOLCHAIN_ROOT=/", "TARGET_TOOLCHAIN_PREFIX=arm-none-eabi-"):
        assert arg in line.split() or any(a.startswith(arg) for a in line.split()), (arg, line)
    lib = tflm_dir / lib_rel
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"!<arch>\n")
    r = _make(tflm, "-n", "tflm-lib", f"TFLM_DIR={tflm_dir}")
    assert r.returncode == 0 and " microlite" not in r.stdout, r.stdout
    # A release library has its own folder, and this folder's code then gets its define.
    r = _make(tflm, "-n", "tflm-lib", f"TFLM_DIR={tflm_dir}", "BUILD_TYPE=release")
    assert " microlite" in r.stdout
    r = _make(tflm, "-n", "-B", "objects", f"TFLM_DIR={tflm_dir}", "BUILD_TYPE=release")
    main_cc = next(l for l in r.stdout.splitlines()
                   if l.endswith("-o build/custom/cortex_m_generic_cortex-m4+fp_release_cmsis_nn_gcc/main.o"))
    assert "-DTF_LITE_STRIP_ERROR_STRINGS" in main_cc.split() and "-DCMSIS_NN" in main_cc.split()
    r = _make(tflm, "-n", "-B", "objects", f"TFLM_DIR={tflm_dir}", "BOARD=mps2-an386")
    lines = r.stdout.splitlines()
    assert all("-DTF_LITE_STRIP_ERROR_STRINGS" not in l for l in lines)
    c_lines = [l for l in lines if l.startswith("arm-none-eabi-gcc ")]
    assert len(c_lines) == 6  # harness/dut.c and the board's 5 C files
    assert all("-fno-rtti" not in l and "-fno-threadsafe-statics" not in l for l in c_lines)
    assert any("-DESLM_ICOUNT_SHIFT=6" in l.split() for l in lines if "harness_main.cc" in l)
    link = _make(tflm, "-n", "harness", f"TFLM_DIR={tflm_dir}", "BOARD=mps2-an386").stdout
    link_line = next(l for l in link.splitlines() if "-o harness.elf" in l)
    assert "-nostartfiles" in link_line.split() and str(lib) in link_line.split()
    assert "-T boards/mps2-an386/link.ld" in link_line
    # No board given: a clear message, not a firmware for the wrong board.
    r = _make(tflm, "harness", f"TFLM_DIR={tflm_dir}")
    assert r.returncode != 0 and "set BOARD to one in boards/ (mps2-an386)" in r.stdout + r.stderr


def test_library_path_without_optimized_kernels():
    assert tflm_library_path(load_target("cortex-m0plus"), "release") == (
        "gen/cortex_m_generic_cortex-m0plus_release_gcc/lib/libtensorflow-microlite.a")


def test_cmake_project_configures_and_keeps_cxx_flags_off_c_sources(bundle, tmp_path):
    """The CMake project (with its toolchain file) finds the library at its exact path and
    compiles C sources without the C++-only flags."""
    tflm, _, _ = bundle
    tflm_dir = tmp_path / "tflite-micro"
    lib = tflm_dir / tflm_library_path(load_target("cortex-m4"))
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"!<arch>\n")
    build = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(tflm), "-B", str(build), f"-DTFLM_DIR={tflm_dir}",
                        f"-DCMAKE_TOOLCHAIN_FILE={tflm / 'arm-none-eabi.cmake'}",
                        "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    commands = json.loads((build / "compile_commands.json").read_text())
    c = [e["command"] for e in commands if e["file"].endswith(".c")]
    cxx = [e["command"] for e in commands if e["file"].endswith(".cc")]
    assert len(c) == 6 and len(cxx) == 4  # dut.c and the 5 board files; model, main, log, harness
    assert all("-fno-rtti" not in cmd and "-fno-threadsafe-statics" not in cmd for cmd in c)
    assert all("-fno-rtti" in cmd and "-DTF_LITE_STATIC_MEMORY" in cmd for cmd in cxx)
    assert all("TF_LITE_STRIP_ERROR_STRINGS" not in cmd for cmd in c + cxx)
    r = subprocess.run(["cmake", "--build", str(build), "--target", "tiny_cnn_v2_board"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    missing = subprocess.run(["cmake", "-S", str(tflm), "-B", str(tmp_path / "b2"), f"-DTFLM_DIR={tmp_path}",
                              f"-DCMAKE_TOOLCHAIN_FILE={tflm / 'arm-none-eabi.cmake'}"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "make tflm-lib" in missing.stderr


def test_readme_names_prerequisites_commands_and_the_verified_tflm_commit(bundle):
    tflm, _, _ = bundle
    readme = (tflm / "README.md").read_text()
    for needed in ("libstdc++-arm-none-eabi-newlib", "numpy", "Pillow", "make harness TFLM_DIR=",
                   "make run-harness BOARD=mps2-an386", "edgeslim bench", "RegisterDebugLogCallback", "-nostartfiles",
                   tflm_library_path(load_target("cortex-m4"))):
        assert needed in readme, needed
    assert re.search(r"verified against TFLite Micro commit [0-9a-f]{40}", readme)
