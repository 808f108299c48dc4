"""16x8 (int16 activations, int8 weights) TFLite Micro bundles for microcontrollers: a real
`build --target cortex-m4 --activations int16` of the digits model, what its bundle carries
(int16 I/O in main.cc, the harness and model_settings.h, the measured 16x8 arena, TFLM's
reference kernels), the protocol module's int16 results on the host, and (with a TFLite
Micro tree, EDGESLIM_TFLM_DIR) the bundle's firmware on the emulated Cortex-M4 benched
against the tflite-micro Python interpreter.

TFLM's C++ sources are on no package registry, so CI compiles the generated sources against
stub headers of the TFLM API (as tests/bundle/test_tflm.py does for int8 bundles); the full
firmware run needs EDGESLIM_TFLM_DIR=<a tflite-micro tree with the reference-kernel library
built> (see the bundle README's `make tflm-lib OPTIMIZED_KERNEL_DIR=`)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeslim import targets
from edgeslim.bundle.tflm import bundle_kernels, tflm_library_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_tflm import STUB, TFLM_ADD_METHODS  # noqa: E402  (the stub of the TFLM API, shared)

NO_STAGES = {"build": {"stages": [], "seed": 0}}
CORTEX_M = Path(__file__).resolve().parents[2] / "firmware_templates" / "cortex_m"


@pytest.fixture(scope="module")
def build16(tmp_path_factory, digits_tfk_model, digits_npz):
    """The digits model built for cortex-m4 as 16x8 through the pipeline (no compression
    stages: the conversion, the checks, the arena measurement and the bundle are the subject)."""
    from edgeslim.pipeline import build

    out = tmp_path_factory.mktemp("tflm16")
    return build(digits_tfk_model, digits_npz, target="cortex-m4", out=out,
                 recipe={**NO_STAGES, "convert": {"activations": "int16"}})


def test_16x8_build_for_cortex_m4_is_int16_io_with_the_measured_16x8_arena(build16, digits_int8_bytes):
    from edgeslim import micro

    model = build16.model_path.read_bytes()
    info = targets.read_model(model)
    assert [t.dtype for t in (*info.input_tensors, *info.output_tensors)] == ["INT16", "INT16"]
    assert build16.report["precision"]["mode"] == "16x8"
    tflm = build16.bundle_dir / "tflm"
    settings = (tflm / "model_settings.h").read_text()
    assert "using InputType = int16_t;" in settings and "using OutputType = int16_t;" in settings
    assert "constexpr int kInputElements = 64;" in settings and "constexpr size_t kInputBytes = 128;" in settings
    assert "constexpr int kOutputElements = 10;" in settings and "constexpr size_t kOutputBytes = 20;" in settings
    # the arena is the 16x8 model's, measured with tflite-micro: int16 activations take more
    # than the int8 model's (the same network)
    measured = int(re.search(r"kTensorArenaMeasured = (\d+);", settings).group(1))
    assert measured == build16.report["check"]["arena_measured_bytes"] == micro.measure_arena(model)
    assert measured > 1.5 * micro.measure_arena(digits_int8_bytes)
    main = (tflm / "main.cc").read_text()
    assert "input->data.i16" in main and "output->data.i16" in main and "data.int8" not in main
    harness = (tflm / "harness_main.cc").read_text()
    assert "dut.output_element_bytes = static_cast<uint32_t>(sizeof(OutputType));" in harness
    assert "std::memcpy(in->data.data, input, kInputBytes);" in harness


def test_16x8_bundle_builds_tflm_with_reference_kernels(build16):
    """CMSIS-NN (the profile's kernels) refuses per-channel 16x8 FULLY_CONNECTED at
    AllocateTensors at the verified TFLM commit: a 16x8 bundle links TFLM's reference kernels."""
    cm4 = targets.load_target("cortex-m4")
    assert cm4.build["optimized_kernels"] == "cmsis_nn"
    assert bundle_kernels(cm4) == "cmsis_nn" and bundle_kernels(cm4, is_16x8=True) == ""
    tflm = build16.bundle_dir / "tflm"
    mk = (tflm / "Makefile").read_text()
    assert re.search(r"^OPTIMIZED_KERNEL_DIR \?= *$", mk, re.M), mk[:2000]
    lib = tflm_library_path(cm4, kernels="")
    assert lib == "gen/cortex_m_generic_cortex-m4+fp_release_with_logs_gcc/lib/libtensorflow-microlite.a"
    readme = (tflm / "README.md").read_text()
    assert lib in readme and "16x8" in readme and "reference kernels" in readme
    assert 'set(TFLM_OPTIMIZED_KERNEL_DIR "" CACHE' in (tflm / "CMakeLists.txt").read_text()


@pytest.mark.parametrize("source", ["main.cc", "harness_main.cc"])
def test_16x8_sources_compile_for_the_core_against_a_stub_of_the_tflm_api(build16, tmp_path, source):
    """main.cc and harness_main.cc of the 16x8 bundle with arm-none-eabi-g++ -Werror against
    stub headers of the TFLM API whose TfLiteTensor has the int8, i16 and void* data members
    (TfLitePtrUnion's names)."""
    tflm = build16.bundle_dir / "tflm"
    methods = "\n".join(f"  TfLiteStatus {m}() {{ return kTfLiteOk; }}" for m in sorted(TFLM_ADD_METHODS))
    stub = STUB.format(methods=methods, open_micro="namespace micro {", close_micro="}  // namespace micro")
    old = "struct TfLiteTensor { union { int8_t* int8; } data; };"
    assert old in stub
    stub = stub.replace(old, "struct TfLiteTensor { union { int8_t* int8; int16_t* i16; void* data; } data; "
                             "size_t bytes; };")
    for rel in ("tensorflow/lite/micro/micro_mutable_op_resolver.h",
                "tensorflow/lite/micro/micro_interpreter.h", "tensorflow/lite/micro/micro_log.h",
                "tensorflow/lite/micro/system_setup.h", "tensorflow/lite/schema/schema_generated.h",
                "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text('#pragma once\n#include "stub.h"\n')
    (tmp_path / "stub.h").write_text(
        "#pragma once\n" + stub + 'extern "C" { typedef void (*DebugLogCallback)(const char* s);\n'
        "void RegisterDebugLogCallback(DebugLogCallback callback); }\n")
    cflags = shlex.split(targets.load_target("cortex-m4").build["cflags"])
    r = subprocess.run(["arm-none-eabi-g++", *cflags, "-std=c++17", "-Os", "-fno-rtti", "-fno-exceptions",
                        "-fno-threadsafe-statics", "-Wall", "-Wextra", "-Werror", "-DESLM_ICOUNT_SHIFT=6",
                        f"-I{tflm}", f"-I{tflm / 'harness'}", f"-I{tmp_path}", "-c", str(tflm / source),
                        "-o", str(tmp_path / "out.o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


HOST_DUT = r"""
#include <stdio.h>
#include <stdlib.h>
#include "dut.h"
#include "port.h"
void eslm_port_init(void) {}
uint8_t eslm_port_uart_getc(void) { int c = getchar(); if (c == EOF) exit(0); return (uint8_t)c; }
void eslm_port_uart_putc(uint8_t c) { putchar(c); }
uint64_t eslm_port_ticks(void) { static uint64_t t; return t += 100u; }
uint64_t eslm_port_timer_sync(void) { return 0; }
uint32_t eslm_port_tick_hz(void) { return 1000000u; }
const char *eslm_port_counter(void) { return "host"; }
static int8_t in[4], out[4];
static const uint8_t weights[1];
/* A 2-element int16 identity "model" (no network: the protocol module is the subject). */
static int copy(const int8_t *i, int8_t *o) { for (int k = 0; k < 4; ++k) o[k] = i[k]; return 0; }
int main(void) {
  static eslm_dut_model m;
  m.name = "id16"; m.sha256 = "0"; m.input_bytes = m.output_bytes = 4;
  m.output_scale = 0.5f; m.output_zero_point = -2; m.invoke = copy; m.input = in; m.output = out;
  m.weights = weights; m.weights_bytes = 0; m.weights_crc_expected = 0;
  m.output_element_bytes = ELEMENT_BYTES;
  eslm_dut_run(&m);
}
"""


@pytest.mark.parametrize("element_bytes", [2, 0])
def test_protocol_module_reports_int16_outputs_per_element(tmp_path, element_bytes):
    """dut.c (the shared protocol module) built for the host: with output_element_bytes 2 the
    dequantized `results` line has one value per little-endian int16 element, `results hex` the
    raw bytes; 0 (what the C-backend harness leaves it at) keeps the int8 reading."""
    src = tmp_path / "host.c"
    src.write_text(HOST_DUT)
    exe = tmp_path / "dut"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", f"-DELEMENT_BYTES={element_bytes}",
                    f"-I{CORTEX_M}", str(src), str(CORTEX_M / "dut.c"), "-o", str(exe)], check=True, timeout=60)
    # int16 values 1 and -300 (0xFED4), little-endian
    r = subprocess.run([str(exe)], input=b"db load 4%db 0100d4fe%infer 1 0%results%results hex%",
                       capture_output=True, timeout=30)
    lines = r.stdout.decode().split("\r\n")
    results = next(l for l in lines if l.startswith("m-results-[") and "hex" not in l)
    assert "m-results-hex-[0100d4fe]" in lines
    if element_bytes == 2:
        # 0.5 * (1 - -2) and 0.5 * (-300 - -2)
        assert results == "m-results-[1.500,-149.000]"
    else:
        # bytes 0x01 0x00 0xd4 0xfe as int8: 1, 0, -44, -2
        assert results == "m-results-[1.500,1.000,-21.000,0.000]"


def test_c_backend_still_refuses_16x8_and_tflm_backend_allows_it():
    from edgeslim.convert import ConvertConfig
    from edgeslim.errors import TargetError

    cfg = ConvertConfig(activations="int16")
    with pytest.raises(TargetError, match="--backend c generates int8 kernels only") as exc:
        targets.check_precision(targets.load_target("cortex-m4"), cfg, backend="c")
    assert "TFLite Micro bundle runs 16x8" in exc.value.hint
    targets.check_precision(targets.load_target("cortex-m4"), cfg)  # the TFLite Micro bundle


def test_cli_build_with_backend_c_refuses_16x8_cleanly(digits_keras3_path, digits_npz, tmp_path):
    from click.testing import CliRunner

    from edgeslim.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", str(digits_keras3_path), "--data", str(digits_npz), "--target",
                                      "cortex-m4", "--backend", "c", "--activations", "int16", "-o", str(out)],
                                obj={"debug": False})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "--backend c generates int8 kernels only" in result.output
    assert not out.exists() or not any(out.rglob("model.tflite"))


def test_bench_refuses_16x8_on_a_pi_bundle(build16, tmp_path):
    """bench carries int16 tensors through the TFLite Micro harness only; a Pi bundle of a
    16x8 model is refused before any link is opened."""
    import json
    import shutil

    from edgeslim.errors import DeviceError
    from edgeslim.harness.bench import run_bench

    pi = tmp_path / "rpi4"
    pi.mkdir()
    shutil.copyfile(build16.model_path, pi / "model.tflite")
    (pi / "manifest.json").write_text(json.dumps({"target": {"kind": "rpi"}}))
    with pytest.raises(DeviceError, match="16x8 models .* TFLite Micro harness only; this is a rpi bundle"):
        run_bench(pi, "socket://127.0.0.1:9", n=1)


# --- With a TFLite Micro tree: the firmware on the emulated Cortex-M4 ----------------------

TFLM_DIR = os.environ.get("EDGESLIM_TFLM_DIR", "")


@pytest.mark.skipif(not TFLM_DIR, reason="needs a tflite-micro tree: EDGESLIM_TFLM_DIR (not available in CI)")
@pytest.mark.timeout(900)
def test_16x8_harness_on_the_emulated_m4_is_bit_exact_with_tflite_micro(build16, digits_npz):
    """make harness against the TFLM tree (reference kernels), the firmware on qemu's
    mps2-an386 with -icount, `bench` over its UART socket: the 360 digits test inputs as int16,
    every output bit-exact with the tflite-micro Python interpreter's."""
    from edgeslim.harness.bench import run_bench
    from edgeslim.harness.emulator import free_port

    tflm = build16.bundle_dir / "tflm"
    r = subprocess.run(["make", "-C", str(tflm), "-j2", "harness.elf", "BOARD=mps2-an386", f"TFLM_DIR={TFLM_DIR}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    port = free_port()
    qemu = subprocess.Popen(
        ["qemu-system-arm", "-M", "mps2-an386", "-display", "none", "-monitor", "none",
         "-semihosting-config", "enable=on,target=native", "-icount", "shift=6",
         "-chardev", f"socket,id=u0,host=127.0.0.1,port={port},server=on,wait=off,nodelay=on",
         "-serial", "chardev:u0", "-kernel", str(tflm / "harness.elf")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        result = run_bench(build16.bundle_dir, f"socket://127.0.0.1:{port}", data=digits_npz, n=360,
                           timeout=20)
    finally:
        qemu.terminate()
        try:
            qemu.wait(15)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
    agree = result["agreement"]
    assert result["complete"] and result["reference"] == "tflite-micro"
    assert agree["compared"] == agree["bit_exact"] == 360 and agree["max_abs_diff"] == 0
    assert agree["output_type"] == "int16" and agree["top1_agreement"] == 1.0
    assert np.isclose(agree["accuracy_device"], agree["accuracy_reference"])
