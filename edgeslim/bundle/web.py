"""The web bundle: a static, offline web app (PWA) that runs the int8 model in a browser.

Written into the bundle's top folder, next to model.tflite, so that any static
server (``edgeslim serve BUNDLE``) or a copy of the folder serves it:

- ``index.html``, ``app.js``, ``npy.js``, ``sha256.js``, ``style.css``: the page
  (firmware_templates/web/);
- ``sw.js`` and ``app.webmanifest`` (+ ``icon.svg``): the service worker that
  precaches every file of the app, and the install manifest (PWA);
- ``web.json``: what the page needs about the model (input/output shapes and
  quantization, labels, the input front end, the model's SHA-256, the LiteRT.js
  version, the files to precache);
- ``reference.npz``: a few reference inputs with the outputs host LiteRT
  (XNNPACK) gives for them; the page's benchmark panel compares its own outputs
  with these, in int8 steps of the output quantization;
- ``litert/``: LiteRT.js (npm ``@litertjs/core`` and ``@litertjs/wasm-utils``,
  :data:`LITERTJS_VERSION`, Apache-2.0, licence text included), copied from the
  cache that tools/setup.sh fills from npm. Nothing is fetched at build or run time.

LiteRT.js's Tensor takes float32/int32/uint8 arrays, not int8: the model must
have float32 input and output (``int8_io = false``, the web profile's default
recipe); an int8-I/O model is refused with that hint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

from edgeslim import __version__
from edgeslim.bundle.render import render_to
from edgeslim.errors import TargetError
from edgeslim.targets import CheckResult, Target

LITERTJS_VERSION = "2.5.3"
# What a bundle ships of the npm packages: the ES module, its one dependency, and the
# two wasm builds LiteRT.js picks between without JSPI or threads (relaxed-SIMD and
# the "compat" build for browsers without it). JSPI/threaded builds are left out:
# threads need cross-origin isolation headers a plain static server or file copy
# does not give, JSPI is only needed for WebGPU/WebNN partitioning.
_RUNTIME_FILES = {
    "core/dist/index.js": "litert/index.js",
    "wasm-utils/dist/index.js": "litert/wasm-utils.js",
    "core/wasm/litert_wasm_internal.js": "litert/wasm/litert_wasm_internal.js",
    "core/wasm/litert_wasm_internal.wasm": "litert/wasm/litert_wasm_internal.wasm",
    "core/wasm/litert_wasm_compat_internal.js": "litert/wasm/litert_wasm_compat_internal.js",
    "core/wasm/litert_wasm_compat_internal.wasm": "litert/wasm/litert_wasm_compat_internal.wasm",
    "core/package.json": "litert/package.json",
    "wasm-utils/package.json": "litert/wasm-utils.package.json",
    "LICENSE": "litert/LICENSE",
}
_PAGE_FILES = ("index.html", "app.js", "npy.js", "sha256.js", "audio.js", "style.css", "sw.js",
               "app.webmanifest", "icon.svg")
# Audio front ends the page computes (firmware_templates/web/audio.js), by name. The
# MLPerf Tiny keyword-spotting front end, as ../shared/data/spoken_digits_kws.npz was
# made: 1 s at 16 kHz, 30 ms Hann windows every 20 ms, |STFT| (512-point FFT), 40 mel
# bins 20-4000 Hz, log(mel + 1e-6), 10 MFCCs (tf.signal's definitions) -> (49, 10, 1).
AUDIO_FRONT_ENDS = {
    "mlperf-tiny-kws": {
        "name": "MLPerf Tiny keyword spotting MFCC", "kind": "mfcc", "sample_rate": 16000,
        "clip_samples": 16000, "frame_length": 480, "frame_step": 320, "fft_length": 512,
        "mel_bins": 40, "lower_hz": 20.0, "upper_hz": 4000.0, "log_offset": 1e-6, "coefficients": 10,
    },
}
N_REFERENCE = 8
_IO_TYPES = {np.dtype(np.float32): "float32", np.dtype(np.int32): "int32",
             np.dtype(np.uint8): "uint8"}


def litertjs_dir() -> Path:
    """Where tools/setup.sh put LiteRT.js: $EDGESLIM_LITERTJS_DIR, else
    ``${XDG_CACHE_HOME:-~/.cache}/edgeslim/litertjs-<version>``."""
    env = os.environ.get("EDGESLIM_LITERTJS_DIR")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgeslim" / f"litertjs-{LITERTJS_VERSION}"


def check_runtime() -> Path:
    """The LiteRT.js cache folder, or a TargetError naming the set-up step that fills it."""
    src = litertjs_dir()
    missing = [rel for rel in _RUNTIME_FILES if not (src / rel).is_file()]
    if missing:
        raise TargetError(
            f"LiteRT.js {LITERTJS_VERSION} (npm @litertjs/core) is not in edgeslim's cache: "
            f"{src / missing[0]} is missing",
            hint="Run tools/setup.sh once (it installs Node.js/npm and fetches the pinned "
                 "package from npm into that cache), or point EDGESLIM_LITERTJS_DIR at a copy "
                 "made by it. Web bundles never fetch the runtime at build or run time.")
    version = json.loads((src / "core/package.json").read_text())["version"]
    if version != LITERTJS_VERSION:
        raise TargetError(
            f"the LiteRT.js cache at {src} holds version {version}, edgeslim ships {LITERTJS_VERSION}",
            hint="Run tools/setup.sh again (it replaces the cache with the pinned version).")
    return src


def _quant(detail: dict) -> dict | None:
    q = detail.get("quantization_parameters") or {}
    scales = q.get("scales")
    if scales is None or len(scales) == 0:
        return None
    return {"scale": float(scales[0]), "zero_point": int(q["zero_points"][0]),
            "dtype": np.dtype(detail["dtype"]).name}


def model_io(model_bytes: bytes) -> dict:
    """The model's input and output as the page needs them: shape, dtype, and the
    int8 quantization next to the float edge (the QUANTIZE op's output, the
    DEQUANTIZE op's input), which defines one "int8 step"."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        ip = Interpreter(model_content=bytes(model_bytes))
    except (ValueError, RuntimeError) as exc:
        raise TargetError(f"LiteRT cannot read the model: {exc}",
                          hint="Give a .tflite written by edgeslim build or the TFLite converter.") from exc
    ins, outs = ip.get_input_details(), ip.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise TargetError(
            f"the web page runs models with one input and one output; this one has "
            f"{len(ins)} inputs and {len(outs)} outputs",
            hint="Export a single-input, single-output model (a classifier or regressor head).")
    details = {t["index"]: t for t in ip.get_tensor_details()}
    ops = ip._get_ops_details()  # noqa: SLF001 (public enough: used by TF's own tools)

    def edge(tensor_index: int, op_name: str, is_input: bool) -> dict | None:
        for op in ops:
            if op["op_name"] != op_name:
                continue
            ends = op["inputs"] if is_input else op["outputs"]
            if tensor_index in list(ends):
                other = op["outputs"][0] if is_input else op["inputs"][0]
                return _quant(details[int(other)])
        return None

    res = {}
    for key, d, op_name, is_input in (("input", ins[0], "QUANTIZE", True),
                                      ("output", outs[0], "DEQUANTIZE", False)):
        dtype = np.dtype(d["dtype"])
        if dtype not in _IO_TYPES:
            raise TargetError(
                f"the model's {key} is {dtype.name}; LiteRT.js {LITERTJS_VERSION} passes float32, "
                f"int32 or uint8 tensors only",
                hint="Build for the web target with its default recipe (int8_io = false: float32 "
                     "input and output, int8 inside), or set int8_io = false in your recipe.")
        res[key] = {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": _IO_TYPES[dtype],
                    "quantization": _quant(d) or edge(int(d["index"]), op_name, is_input)}
    if res["output"]["quantization"] is None:
        raise TargetError("the model's output has no int8 quantization to compare outputs in",
                          hint="Give a fully-integer model (int8 inside) converted by edgeslim.")
    return res


def _front_end(io_spec: dict, front_end: dict | None) -> dict:
    """How the page turns a user's input into the model's input tensor.

    ``tensor`` (always): an .npy/.npz of prepared inputs. ``image`` (an input of
    shape (1, H, W, 1|3)): a picture from the camera or a file, resized to H x W,
    grey or RGB, pixel 0..255 mapped linearly onto ``range``. Without a stated
    front end the range is the one the input quantization was calibrated on."""
    shape = io_spec["input"]["shape"]
    fe = {"tensor": {"shape": shape[1:], "dtype": io_spec["input"]["dtype"]}}
    if front_end is not None:
        front_end = dict(front_end)
        audio = front_end.get("audio")
        if isinstance(audio, str):
            if audio not in AUDIO_FRONT_ENDS:
                raise TargetError(f"unknown audio front end {audio!r}",
                                  hint=f"Known: {', '.join(AUDIO_FRONT_ENDS)}.")
            front_end["audio"] = dict(AUDIO_FRONT_ENDS[audio])
        if front_end.get("audio"):
            a = front_end["audio"]
            frames = 1 + (a["clip_samples"] - a["frame_length"]) // a["frame_step"]
            n_in = int(np.prod(shape[1:]))
            if frames * a["coefficients"] != n_in:
                raise TargetError(
                    f"the audio front end gives {frames} x {a['coefficients']} features, the model "
                    f"takes {shape[1:]}", hint="State the front end the model was trained with.")
        fe.update(front_end)
        fe.setdefault("source", "stated at build time (edgeslim.bundle.web.write_web's front_end)")
        return fe
    q = io_spec["input"]["quantization"]
    if len(shape) == 4 and shape[3] in (1, 3) and q is not None:
        lo = (-128 - q["zero_point"]) * q["scale"]
        hi = (127 - q["zero_point"]) * q["scale"]
        fe["image"] = {"height": shape[1], "width": shape[2], "channels": shape[3],
                       "range": [round(lo, 6), round(hi, 6)],
                       "ink": "light"}
        fe["source"] = ("image range derived from the input quantization (the calibration data's "
                        "range); edit web.json's front_end if your model was trained otherwise")
    else:
        fe["source"] = "prepared inputs only (.npy/.npz): no front end is known for this input"
    return fe


def _reference(model_bytes: bytes, io_spec: dict, reference) -> tuple[dict, bytes]:
    """Up to :data:`N_REFERENCE` reference inputs and host LiteRT's outputs for them
    (float, and in int8 steps), as an .npz the page reads."""
    from ai_edge_litert.interpreter import Interpreter

    shape = io_spec["input"]["shape"]
    if reference is None:
        rng = np.random.default_rng(0)
        q = io_spec["input"]["quantization"] or {"scale": 1 / 128, "zero_point": 0}
        steps = rng.integers(-128, 128, size=(N_REFERENCE, *shape[1:]))
        x, y, kind = ((steps - q["zero_point"]) * q["scale"]).astype(np.float32), None, "random"
    else:
        x, y = reference if isinstance(reference, tuple) else (reference, None)
        x = np.asarray(x)[:N_REFERENCE].astype(np.float32)
        y = None if y is None else np.asarray(y)[:N_REFERENCE]
        kind = "samples"
        if tuple(x.shape[1:]) != tuple(shape[1:]):
            raise TargetError(f"reference inputs have shape {x.shape[1:]}, the model takes {tuple(shape[1:])}")
    ip = Interpreter(model_content=bytes(model_bytes))
    ip.allocate_tensors()
    i, o = ip.get_input_details()[0]["index"], ip.get_output_details()[0]["index"]
    outs = []
    for n in range(len(x)):
        ip.set_tensor(i, x[n:n + 1])
        ip.invoke()
        outs.append(ip.get_tensor(o)[0].astype(np.float32).copy())
    expected = np.stack(outs)
    oq = io_spec["output"]["quantization"]
    steps = np.round(expected / oq["scale"]).astype(np.int32) + oq["zero_point"]
    arrays = {"x": x, "expected": expected, "expected_q": steps.astype(np.int32)}
    if y is not None and y.dtype.kind in "iu":
        arrays["y"] = y.astype(np.int32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # stored, not deflated: the page's reader takes both
    info = {"file": "reference.npz", "count": int(len(x)), "kind": kind,
            "reference_runtime": "host LiteRT (ai-edge-litert, XNNPACK)",
            "arrays": sorted(arrays)}
    return info, buf.getvalue()


def static_batch(model_bytes: bytes) -> bytes:
    """The model with every tensor's batch dimension pinned to 1.

    The TFLite converter marks the batch dimension dynamic (``shape_signature``
    -1); LiteRT.js 2.5.3's compiled model then refuses any input ("TensorBuffer
    ranked tensor type Float32[1, 8, 8, 1] does not match expected ... [-1, 8, 8, 1]").
    The -1 entries are overwritten in place (same size, ops and weights untouched),
    so the file differs from the build's model.tflite only in those integers."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    buf = bytearray(model_bytes)
    model = schema.Model.GetRootAsModel(buf, 0)
    int32 = flatbuffers.number_types.Int32Flags
    for g in range(model.SubgraphsLength()):
        sub = model.Subgraphs(g)
        for t in range(sub.TensorsLength()):
            tensor = sub.Tensors(t)
            if tensor.ShapeSignatureLength() > 0 and tensor.ShapeSignature(0) == -1:
                o = tensor._tab.Offset(18)  # noqa: SLF001 (the schema's field offset of shape_signature)
                first = tensor._tab.Vector(o)  # noqa: SLF001
                flatbuffers.encode.Write(int32.packer_type, buf, first, 1)
    return bytes(buf)


def write_web(bundle_dir: Path, target: Target, *, model_bytes: bytes, model_name: str,
              labels: list[str] | None, check: CheckResult | None = None, reference=None,
              front_end: dict | None = None) -> list[Path]:
    """Write the web app into ``bundle_dir`` (next to model.tflite); returns the paths.

    ``reference``: ``x`` or ``(x, y)``, a few real inputs (the build passes test
    samples); without it, seeded random inputs across the input's range are used.
    ``front_end``: how the page turns a picture or a sound into the input, e.g.
    ``{"audio": "mlperf-tiny-kws"}`` (see :func:`_front_end`, :data:`AUDIO_FRONT_ENDS`)."""
    bundle_dir = Path(bundle_dir)
    src = check_runtime()
    model_io(model_bytes)  # refuses an int8-I/O model before anything is written
    model_bytes = static_batch(model_bytes)
    io_spec = model_io(model_bytes)
    n_out = int(np.prod(io_spec["output"]["shape"][1:]))
    if labels and len(labels) != n_out:
        raise TargetError(f"{len(labels)} labels for a model with {n_out} outputs",
                          hint="Give one label per output class, in the order of the model's outputs.")
    # everything that can refuse the inputs runs before the first file is written
    front = _front_end(io_spec, front_end)
    ref_info, ref_bytes = _reference(model_bytes, io_spec, reference)
    written = []
    model_path = bundle_dir / "model.tflite"
    if not model_path.is_file() or model_path.read_bytes() != bytes(model_bytes):
        model_path.write_bytes(model_bytes)
        written.append(model_path)
    for rel_src, rel_dst in _RUNTIME_FILES.items():
        dst = bundle_dir / rel_dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel_src, dst)
        written.append(dst)
    (bundle_dir / "reference.npz").write_bytes(ref_bytes)
    written.append(bundle_dir / "reference.npz")
    sha = hashlib.sha256(bytes(model_bytes)).hexdigest()
    precache = ["./", "model.tflite", "web.json", "reference.npz",
                *[p for p in _PAGE_FILES if p != "sw.js"], *_RUNTIME_FILES.values()]
    config = {
        "format": "edgeslim-web/1",
        "model_name": model_name,
        "model": {"file": "model.tflite", "bytes": len(model_bytes), "sha256": sha},
        "io": io_spec,
        "labels": list(labels) if labels else [f"class {i}" for i in range(n_out)],
        "labels_given": bool(labels),
        "front_end": front,
        "reference": ref_info,
        "runtime": {"name": "LiteRT.js", "package": "@litertjs/core", "version": LITERTJS_VERSION,
                    "license": "Apache-2.0", "accelerator": "wasm"},
        "target": target.profile,
        "edgeslim": __version__,
        "precache": precache,
        "cache_name": f"edgeslim-{sha[:16]}-{LITERTJS_VERSION}",
    }
    cfg_path = bundle_dir / "web.json"
    cfg_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    written.append(cfg_path)
    ctx = {"config": config, "model_name": model_name, "version": __version__,
           "litertjs_version": LITERTJS_VERSION, "cache_name": config["cache_name"],
           "precache_json": json.dumps(precache)}
    for name in _PAGE_FILES:
        written.append(render_to(bundle_dir / name, f"web/{name}.j2", **ctx))
    if labels:
        from edgeslim.bundle.rpi import write_labels

        written.append(write_labels(bundle_dir / "labels.txt", labels))
    return written


# --------------------------------------------------------------------------- serving

# Types a browser insists on: WebAssembly.instantiateStreaming needs application/wasm,
# module scripts a JavaScript type, the install manifest its own type.
MIME_TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".tflite": "application/octet-stream",
    ".npz": "application/octet-stream",
    ".npy": "application/octet-stream",
    ".svg": "image/svg+xml",
    ".css": "text/css",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    "": "application/octet-stream",
}


def check_web_bundle(bundle_dir: Path) -> Path:
    """``bundle_dir`` if it holds a web bundle (index.html and web.json), else a clear error."""
    bundle_dir = Path(bundle_dir).expanduser()
    if not bundle_dir.is_dir():
        raise TargetError(f"{bundle_dir} is not a folder",
                          hint="Give the folder `edgeslim build --target web -o OUT` wrote (OUT/web).")
    for name in ("index.html", "web.json"):
        if not (bundle_dir / name).is_file():
            raise TargetError(f"{bundle_dir} is not a web bundle: {name} is missing",
                              hint="Build one with `edgeslim build MODEL --data DATA --target web`.")
    return bundle_dir


def make_server(bundle_dir: Path, *, host: str = "127.0.0.1", port: int = 8000,
                certfile: Path | None = None, keyfile: Path | None = None, quiet: bool = False):
    """A threading static file server for ``bundle_dir`` (the standard library's
    http.server with the MIME types above); HTTPS when ``certfile`` is given.
    Serves files only (no directory listings). Call ``serve_forever()`` on it."""
    import functools
    import http.server
    import ssl

    bundle_dir = check_web_bundle(bundle_dir).resolve()

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = MIME_TYPES

        def list_directory(self, path):  # noqa: D401 (no listings of the bundle)
            self.send_error(404, "No listing")
            return None

        def end_headers(self):
            # Let a new bundle's service worker and page replace the old ones at once.
            if self.path.split("?")[0].endswith(("sw.js", "/", ".html", "web.json")):
                self.send_header("Cache-Control", "no-cache")
            super().end_headers()

        def log_message(self, fmt, *args):
            if not quiet:
                super().log_message(fmt, *args)

    handler = functools.partial(Handler, directory=str(bundle_dir))
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise TargetError(f"cannot listen on {host}:{port}: {exc.strerror}",
                          hint="Choose another --port (0 picks a free one) or a --host address this "
                               "machine has.") from None
    server.daemon_threads = True
    if certfile is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        except (OSError, ssl.SSLError) as exc:
            server.server_close()
            raise TargetError(f"cannot use the TLS certificate {certfile}: {exc}",
                              hint="Give a PEM certificate with --cert and its private key with --key.") from None
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return server
