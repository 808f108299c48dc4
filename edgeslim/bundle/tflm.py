"""The Cortex-M bundle: TensorFlow Lite Micro sources in <bundle>/tflm/.

model_data.cc/.h (the model as a 16-byte aligned const C array), op_resolver.h
(a MicroMutableOpResolver<N> with exactly the model's ops), model_settings.h
(arena size from the measurement plus the target's margin, input/output
quantization, labels), main.cc with board_log.cc (MicroPrintf on the board's
UART), harness_main.cc (the device-under-test harness: the model behind the
MLPerf Tiny protocol, calling ``interpreter.Invoke()``), Makefile, CMakeLists.txt
and a README, rendered from firmware_templates/tflm/.

The harness shares the C-backend harness's protocol module and port layer: they
are copied from firmware_templates/cortex_m/ into ``harness/`` (dut.c, dut.h,
port.h) and, for the profile's emulated board, ``boards/<machine>/`` (startup,
UART, SysTick port, board.h and link.ld rendered for its memory map).
"""

from __future__ import annotations

import hashlib
import shutil
import zlib
from pathlib import Path

from edgeslim import __version__
from edgeslim.bundle.render import c_identifier, render_to
from edgeslim.errors import TargetError
from edgeslim.resources import templates_dir
from edgeslim.targets import CheckResult, Target, arena_with_margin, check_model, read_model

BYTES_PER_ROW = 12

# The C-backend harness's board-independent files: the protocol module and the port
# layer's interface (firmware_templates/cortex_m/), copied into tflm/harness/.
HARNESS_FILES = ("dut.c", "dut.h", "port.h")
# The emulated MPS2/MPS3 boards' files (startup with empty _init/_fini for -nostartfiles,
# CMSDK UART, SysTick port), copied into tflm/boards/<machine>/; board.h and link.ld are
# rendered from the same folder's templates for the board's memory map.
BOARD_FILES = ("startup.c", "uart.c", "uart.h", "stack.c", "stack.h", "semihost.c", "semihost.h",
               "timer.h", "systick.h", "port_mps.c")
# Stack reserved by the emulated boards' linker script (TFLM with CMSIS-NN needs a few KiB).
BOARD_STACK_BYTES = 32 * 1024
# qemu -icount shift the harness assumes on an emulated board (as `edgeslim emulate`).
ICOUNT_SHIFT = 6

# The manual check of this folder against a real TFLite Micro tree (not possible in CI: TFLM's
# sources are on no package registry), written into every bundle's README.
VERIFIED = {
    "tflm_commit": "90b983c2b3f1480642e040bbd2ddb37b998f3424",
    "toolchain": "Debian 12's arm-none-eabi-gcc 12.2.rel1 with libstdc++-arm-none-eabi-newlib, "
                 "qemu-system-arm 7.2, cmake 3.25",
    "commands": [
        "TFLM=/path/to/tflite-micro   # third-party downloads in place (offline: see Prerequisites)",
        "edgeslim example --target cortex-m4 --out /tmp/x --seed 0   # the digits CNN, 19,352 B int8",
        "cd /tmp/x/cortex-m4/tflm",
        "make tflm-lib TFLM_DIR=$TFLM                       # TFLM's make, CMSIS-NN, release_with_logs",
        "make run BOARD=mps2-an386 TFLM_DIR=$TFLM           # main.cc: 'arena used 4436 of 6240 bytes', outputs",
        "make run-harness BOARD=mps2-an386 TFLM_DIR=$TFLM PORT=$P &",
        "edgeslim bench /tmp/x/cortex-m4 --port socket://127.0.0.1:$P --data /tmp/x/example/digits.npz -n 360",
        "cmake -S . -B build -DTFLM_DIR=$TFLM -DCMAKE_TOOLCHAIN_FILE=arm-none-eabi.cmake && cmake --build build",
        "make tflm-lib harness BOARD=mps2-an386 TFLM_DIR=$TFLM OPTIMIZED_KERNEL_DIR=   # reference kernels",
        "make run-harness BOARD=mps2-an386 TFLM_DIR=$TFLM OPTIMIZED_KERNEL_DIR= PORT=$P &   # and bench again",
    ],
    "result": (
        "Outputs equal to the tflite-micro Python interpreter's on 360 of 360 inputs (the digits test "
        "split; max int8 difference 0, accuracy 96.39% on both) with the Makefile's harness.elf, and "
        "on 100 of 100 with the CMake one; main.cc's outputs for the zero input equal the "
        "interpreter's too. On the emulated Cortex-M4 (qemu -icount shift=6): 282,556 emulator "
        "instructions per inference (median), arena used 4,436 of 6,240 bytes, weights CRC-32 "
        "computed by the device equal to the generated value. With TFLM's reference kernels "
        "(no OPTIMIZED_KERNEL_DIR): 360 of 360 equal, 1,139,989 instructions per inference, "
        "arena used 4,356 bytes."
    ),
}

# The same manual check for a 16x8 bundle (int16 activations, int8 weights), written into
# 16x8 bundles' README.
VERIFIED_16X8 = {
    "tflm_commit": VERIFIED["tflm_commit"],
    "commands": [
        "edgeslim example --target cortex-m4 --out /tmp/x --seed 0",
        "edgeslim build /tmp/x/example/digits_cnn.keras --data /tmp/x/example/digits.npz --target cortex-m4 "
        "--activations int16 --no-prune --no-cluster --no-qat --seed 0 -o /tmp/b16   # 21,136 B",
        "cd /tmp/b16/cortex-m4/tflm",
        "make tflm-lib TFLM_DIR=$TFLM                       # reference kernels (OPTIMIZED_KERNEL_DIR empty)",
        "make run BOARD=mps2-an386 TFLM_DIR=$TFLM           # main.cc: 'arena used 8228 of 10496 bytes', outputs",
        "make run-harness BOARD=mps2-an386 TFLM_DIR=$TFLM PORT=$P &",
        "edgeslim bench /tmp/b16/cortex-m4 --port socket://127.0.0.1:$P --data /tmp/x/example/digits.npz -n 360",
        "make run BOARD=mps2-an386 TFLM_DIR=$TFLM OPTIMIZED_KERNEL_DIR=cmsis_nn   # CMSIS-NN: refused, see above",
    ],
    "result": (
        "int16 outputs equal to the tflite-micro Python interpreter's on 360 of 360 inputs (max "
        "int16 difference 0; accuracy 96.67% on both); main.cc's outputs for the zero input equal "
        "the interpreter's. On the emulated Cortex-M4 (qemu -icount shift=6): 1,412,365 emulator "
        "instructions per inference (median), arena used 8,228 of 10,496 bytes. With CMSIS-NN "
        "AllocateTensors fails: 'Node FULLY_CONNECTED (number 7) failed to prepare'."
    ),
}

# TFLite builtin op -> MicroMutableOpResolver method, where the method name is
# not the op name in CamelCase (CONV_2D -> AddConv2D follows the rule).
_METHOD_EXCEPTIONS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    "PADV2": "AddPadV2",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}


def resolver_method(op: str) -> str:
    """The MicroMutableOpResolver method that registers a builtin op."""
    if op in _METHOD_EXCEPTIONS:
        return _METHOD_EXCEPTIONS[op]
    if op.startswith("CUSTOM:"):
        raise TargetError(f"custom op {op[7:]!r} has no TFLite Micro builtin registration",
                          hint="Replace the layer that produced the custom op.")
    name = "Add" + "".join(part[:1].upper() + part[1:].lower() for part in op.split("_"))
    return name.replace("2d", "2D")  # CONV_2D -> AddConv2D, MAX_POOL_2D -> AddMaxPool2D


def c_array_rows(data: bytes, per_row: int = BYTES_PER_ROW) -> list[str]:
    return [
        ", ".join(f"0x{b:02x}" for b in data[i:i + per_row]) + ","
        for i in range(0, len(data), per_row)
    ]


# Input/output tensor types the bundle handles: int8 (int8 models) and int16 (16x8 models:
# int16 activations, int8 weights) -> the C element type and TfLiteTensor's data member.
IO_TYPES = {"INT8": ("int8_t", "int8"), "INT16": ("int16_t", "i16")}


def _tensor_ctx(t) -> dict:
    elements = 1
    for d in t.shape:
        elements *= max(int(d), 1)
    ctype, member = IO_TYPES[t.dtype]
    return {
        "name": t.name,
        "shape": [int(d) for d in t.shape],
        "type": t.dtype.lower(),
        "ctype": ctype,
        "member": member,
        "elements": elements,
        "bytes": elements * (2 if t.dtype == "INT16" else 1),
        "scale": repr(float(t.scales[0])) if t.scales.size else "1.0",
        "zero_point": int(t.zero_points[0]) if t.zero_points.size else 0,
    }


def bundle_kernels(target: Target, *, is_16x8: bool = False) -> str:
    """The OPTIMIZED_KERNEL_DIR a bundle builds TFLM with: the profile's ``[build]
    optimized_kernels``, except for a 16x8 model: TFLM's reference kernels (""), which run
    every op of the profile's ops.int16 at 16x8. CMSIS-NN at the verified TFLM commit refuses
    per-channel 16x8 FULLY_CONNECTED at AllocateTensors (the converter's 16x8 output), so a
    CMSIS-NN firmware would not run the model at all."""
    if is_16x8:
        return ""
    return target.build.get("optimized_kernels", "").strip()


def tflm_library_path(target: Target, build_type: str = "release_with_logs", *,
                      kernels: str | None = None) -> str:
    """Where TFLM's Makefile puts libtensorflow-microlite.a for this profile, relative to the
    TFLM tree: gen/<target>_<arch>_<build type>[_<optimized kernels>]_<toolchain>/lib/ (its
    GENDIR rule), the exact path the bundle's Makefile links. ``kernels``: the bundle's
    OPTIMIZED_KERNEL_DIR (bundle_kernels), the profile's when None."""
    arch = target.build.get("tflm_target_arch", "cortex-m4+fp")
    kernels = bundle_kernels(target) if kernels is None else kernels.strip()
    gendir = f"cortex_m_generic_{arch}_{build_type}" + (f"_{kernels}" if kernels else "") + "_gcc"
    return f"gen/{gendir}/lib/libtensorflow-microlite.a"


def _emulated_board(target: Target):
    """The QEMU board of the profile's ``[build] qemu_machine`` (memory map, UART), or None."""
    from edgeslim.harness.emulator import BOARDS

    return BOARDS.get(target.build.get("qemu_machine", ""))


def write_tflm(bundle_dir: Path, target: Target, *, model_bytes: bytes, model_name: str,
               labels: list[str] | None, check: CheckResult | None) -> list[Path]:
    if check is None or check.arena_measured_bytes is None:
        check = check_model(model_bytes, target)
    info = read_model(model_bytes)
    if len(info.inputs) < 1 or len(info.outputs) < 1:
        raise TargetError("the model has no input or output tensor", hint="Convert the model again.")
    for t in (info.input_tensors[0], info.output_tensors[0]):
        if t.dtype not in IO_TYPES:
            raise TargetError(
                f"the TFLite Micro bundle expects int8 (or, for a 16x8 model, int16) input and output; "
                f"tensor {t.name!r} is {t.dtype.lower()}",
                hint="Convert with integer input and output (edgeslim does by default).")
    is_16x8 = "INT16" in (info.input_tensors[0].dtype, info.output_tensors[0].dtype)
    kernels = bundle_kernels(target, is_16x8=is_16x8)
    ident = c_identifier(model_name)
    arena = arena_with_margin(check.arena_measured_bytes, target.arena_margin)
    ctx = {
        "version": __version__,
        "model_name": model_name,
        "ident": ident,
        "guard": "EDGESLIM_" + ident.upper(),
        "array": f"g_{ident}_model",
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "length": len(model_bytes),
        "model_bytes": len(model_bytes),
        "rows": c_array_rows(model_bytes),
        "ops": [{"name": op, "method": resolver_method(op)} for op in info.op_names],
        "arena_size": arena,
        "arena_measured": check.arena_measured_bytes,
        "margin_pct": round(target.arena_margin * 100),
        "input": _tensor_ctx(info.input_tensors[0]),
        "output": _tensor_ctx(info.output_tensors[0]),
        "labels": list(labels) if labels else [],
        "target": target,
        "cflags": target.build.get("cflags", ""),
        "tflm_target_arch": target.build.get("tflm_target_arch", "cortex-m4+fp"),
        "optimized_kernels": kernels,
        "profile_kernels": target.build.get("optimized_kernels", ""),
        "is_16x8": is_16x8,
        "flash_needed": len(model_bytes) + target.runtime_flash_bytes,
        "runtime_flash": target.runtime_flash_bytes,
        "flash_budget": target.flash_bytes,
        "ram_budget": target.arena_budget_bytes,
        "ram_bytes": target.ram_bytes,
        "ram_reserved": target.ram_reserved_bytes,
    }
    ctx["ops_names"] = [o["name"] for o in ctx["ops"]]
    board = _emulated_board(target)
    ctx.update(
        model_crc32=zlib.crc32(model_bytes),
        board=board,
        icount_shift=ICOUNT_SHIFT,
        tflm_lib=tflm_library_path(target, kernels=kernels),
        verified=VERIFIED,
        verified16=VERIFIED_16X8,
    )
    out = bundle_dir / "tflm"
    files = [
        ("model_data.h", "tflm/model_data.h.j2"),
        ("model_data.cc", "tflm/model_data.cc.j2"),
        ("model_settings.h", "tflm/model_settings.h.j2"),
        ("op_resolver.h", "tflm/op_resolver.h.j2"),
        ("main.cc", "tflm/main.cc.j2"),
        ("board_log.h", "tflm/board_log.h.j2"),
        ("board_log.cc", "tflm/board_log.cc.j2"),
        ("harness_main.cc", "tflm/harness_main.cc.j2"),
        ("Makefile", "tflm/Makefile.j2"),
        ("CMakeLists.txt", "tflm/CMakeLists.txt.j2"),
        ("arm-none-eabi.cmake", "tflm/arm-none-eabi.cmake.j2"),
    ]
    written = [render_to(out / name, tpl, **ctx) for name, tpl in files]
    cortex_m = templates_dir() / "cortex_m"
    for name in HARNESS_FILES:
        written.append(Path(shutil.copyfile(cortex_m / name, _parent(out / "harness" / name))))
    if board is not None:
        board_dir = out / "boards" / board.machine
        for name in BOARD_FILES:
            written.append(Path(shutil.copyfile(cortex_m / name, _parent(board_dir / name))))
        written.append(render_to(board_dir / "board.h", "cortex_m/board.h.j2", board=board))
        written.append(render_to(board_dir / "link.ld", "cortex_m/link.ld.j2", board=board,
                                 stack_size=BOARD_STACK_BYTES))
    readme_ctx = dict(ctx, ops=ctx["ops_names"])
    written.append(render_to(out / "README.md", "tflm/README.md.j2", **readme_ctx))
    return written


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
