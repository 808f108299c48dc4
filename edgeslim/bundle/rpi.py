"""The Raspberry Pi bundle: the device agent, install.sh, a systemd unit, labels.

Written next to the model.tflite the pipeline put at the bundle's top, so the
whole bundle is what gets copied to the Pi (``edgeslim flash --host``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgeslim import __version__
from edgeslim.harness import dut
from edgeslim.bundle.render import c_identifier, render_to
from edgeslim.targets import Target

MODEL_FILE = "model.tflite"

# How far the agent's raw int8 outputs may be from LiteRT's (ai-edge-litert) on a PC, per
# runtime, in steps of the output quantization: the bundle states it (README.md, `agent.py
# info`) and `agent.py run --check` holds a run to it. Measured 2026-11-30 in an arm64 Debian
# bookworm userland under qemu-user (tools/pi_userland.py; tests/bundle/test_pi_userland.py
# asserts it) with the digits example model (seed 1234), its 360 test samples:
# - ai-edge-litert 2.x on cortex-a72 and cortex-a76: 360/360 bit-exact (issue 16, another
#   training: 356/360, the rest 1 step), top-1 identical. 1 step: XNNPACK's arm64 and x86
#   kernels may round differently.
# - tflite-runtime 2.14: 336/360 bit-exact, up to 12 steps (issue 16: 11), top-1 identical;
#   bit for bit what tflite-runtime 2.14 gives on x86-64: its older int8 kernels, not the CPU.
#   Larger models may differ more.
EXPECTED_AGREEMENT = {
    "ai-edge-litert": {"max_abs_diff": 1,
                       "measured": "digits example, 360 samples: 360 bit-exact, top-1 identical"},
    "tflite-runtime": {"max_abs_diff": 12,
                       "measured": "digits example, 360 samples: 336 bit-exact, top-1 identical; "
                                   "the same outputs as tflite-runtime 2.14 on x86-64"},
}


def write_labels(path: Path, labels: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{str(l).replace(chr(10), ' ')}\n" for l in labels), encoding="utf-8")
    return path


def dut_engine_source() -> str:
    """The protocol engine's source (edgeslim/harness/dut.py below its marker), which
    the agent embeds: the agent is a standalone script and cannot import edgeslim."""
    text = Path(dut.__file__).read_text(encoding="utf-8")
    marker = "# --- edgeslim dut engine"
    return text[text.index(marker):].rstrip() + "\n"


def write_rpi(bundle_dir: Path, target: Target, *, model_bytes: bytes, model_name: str,
              labels: list[str] | None) -> list[Path]:
    ctx = {
        "version": __version__,
        "model_name": model_name,
        "ident": c_identifier(model_name),
        "model_file": MODEL_FILE,
        "model_bytes": len(model_bytes),
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "num_threads": int(target.runtime_options.get("num_threads", 4)),
        "target": target,
        "dut_engine": dut_engine_source(),
        "expected_agreement": json.dumps(EXPECTED_AGREEMENT, indent=4),
        "agreement": EXPECTED_AGREEMENT,
    }
    written = [
        render_to(bundle_dir / "agent.py", "rpi/agent.py.j2", mode=0o755, **ctx),
        render_to(bundle_dir / "install.sh", "rpi/install.sh.j2", mode=0o755, **ctx),
        render_to(bundle_dir / "edgeslim-agent.service", "rpi/edgeslim-agent.service.j2", **ctx),
        render_to(bundle_dir / "README.md", "rpi/README.md.j2", **ctx),
    ]
    if labels:
        written.append(write_labels(bundle_dir / "labels.txt", labels))
    model_path = bundle_dir / MODEL_FILE
    if not model_path.exists():  # the pipeline writes it first; a direct caller may not have
        model_path.write_bytes(model_bytes)
        written.append(model_path)
    return written
