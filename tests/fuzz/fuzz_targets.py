"""The Python fuzz targets: one function per target, ``bytes -> None``, that raises only
on a bug. tools/fuzz.py runs them under atheris (coverage-guided libFuzzer);
tests/fuzz/test_fuzz.py runs them for ~60 s each and replays every crasher kept in
tests/fuzz/crashers/.

- ``agent``: the rendered Raspberry Pi agent (a real bundle of a real int8 model, run by
  ai-edge-litert), in process: the first byte picks the request kind -- an inbox file
  (``read_request`` then ``serve_request``), a ``stdin`` line (``parse_line``), or bytes
  on the MLPerf Tiny protocol (the embedded ``DutEngine``). Only ``BadRequest`` may come
  out of the request readers, and what they accept must run.
- ``recipe``: the bytes as a recipe file (``recipe.resolve``): only ``RecipeError``; a
  recipe that loads writes TOML that loads back to the same Recipe.
- ``board``: the bytes as a board profile (``targets.load_target``; it may inherit the
  shipped profiles): only ``TargetError``; a profile that loads describes itself as JSON.
- ``tflite``: the bytes as a .tflite model through what ``edgeslim check`` runs without
  TFLite Micro (``targets.check_model(..., measure=False)``, which reads it with
  ``modelgraph.read`` first, for a microcontroller and a Linux profile): only ``TargetError``
  (a check refused it) or ``ModelFormatError`` (not a readable .tflite).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("agent", "recipe", "board", "tflite")


class Target:
    """A fuzz target: ``setup()`` once (imports, models), then ``__call__(data)`` per input."""

    name = ""

    def __init__(self):
        self.work = Path(tempfile.mkdtemp(prefix=f"edgeslim-fuzz-{self.name}-"))

    def close(self):
        shutil.rmtree(self.work, ignore_errors=True)


class RecipeTarget(Target):
    name = "recipe"

    def setup(self):
        from edgeslim import recipe
        from edgeslim.errors import RecipeError

        self.recipe, self.error = recipe, RecipeError
        self.path = self.work / "recipe.toml"
        recipe.resolve()  # imports every stage's config module once, before fuzzing

    def __call__(self, data: bytes) -> None:
        self.path.write_bytes(data)
        try:
            r = self.recipe.resolve(recipe_file=self.path)
        except self.error:
            return
        again = self.recipe.from_dict(_toml_loads(r.to_toml()))
        if again != r:
            raise AssertionError(f"recipe does not round-trip through TOML: {r!r} != {again!r}")


class BoardTarget(Target):
    name = "board"

    def setup(self):
        from edgeslim import targets
        from edgeslim.errors import TargetError

        self.targets, self.error = targets, TargetError
        self.path = self.work / "board.toml"
        targets.load_target("cortex-m4")  # the op list's schema module, imported once

    def __call__(self, data: bytes) -> None:
        self.path.write_bytes(data)
        try:
            t = self.targets.load_target(str(self.path))
        except self.error:
            return
        json.dumps(t.to_dict())
        t.arena_budget_bytes, t.wants_fp16  # noqa: B018 (properties must not raise)


def tiny_model_bytes() -> bytes:
    """The tests' tiny int8 CNN (tests/tiny_tflite.py), converted with TFLiteConverter."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_tflite import convert_int8, tiny_cnn

    return convert_int8(tiny_cnn(), (8, 8, 1))


def render_agent(bundle: Path, model_bytes: bytes):
    """A real Raspberry Pi bundle in ``bundle``; its agent.py imported as a module."""
    from edgeslim.bundle import write_target_files
    from edgeslim.targets import load_target

    (bundle / "model.tflite").write_bytes(model_bytes)
    write_target_files(bundle, load_target("rpi"), model_bytes=model_bytes, fp16_bytes=None,
                       model_name="fuzz", labels=["a", "b", "c"], check=None)
    spec = importlib.util.spec_from_file_location("edgeslim_agent", bundle / "agent.py")
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    return agent


class AgentTarget(Target):
    name = "agent"

    def setup(self, agent=None):
        import numpy as np

        self.np = np
        bundle = self.work / "bundle"
        bundle.mkdir(exist_ok=True)
        self.agent = agent or render_agent(bundle, tiny_model_bytes())
        self.model = self.agent.Model(path=str(bundle / "model.tflite"), num_threads=1)
        self.inbox, self.outbox, self.rejected = (str(self.work / d) for d in ("inbox", "outbox", "rejected"))
        self.n_out = int(self.model.output["shape"][-1])

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        kind, body = data[0] % 3, data[1:]
        if kind == 0:
            self._file(body)
        elif kind == 1:
            self._line(body)
        else:
            self._protocol(body)

    def _file(self, body: bytes) -> None:
        for d in (self.inbox, self.outbox, self.rejected):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        path = os.path.join(self.inbox, "req.npy")
        with open(path, "wb") as f:
            f.write(body)
        try:
            x = self.agent.read_request(self.model, path)
        except self.agent.BadRequest:
            x = None
        if x is not None:
            y = self.model.run(x)  # what read_request accepts must run
            if y.shape != (x.shape[0], self.n_out):
                raise AssertionError(f"output shape {y.shape} for input {x.shape}")
        reason = self.agent.serve_request(self.model, "req.npy", self.inbox, self.outbox, self.rejected)
        if os.listdir(self.inbox):
            raise AssertionError("the request was left in the inbox")
        if (reason is None) != (x is not None):
            raise AssertionError(f"served and read_request disagree: {reason!r}")

    def _line(self, body: bytes) -> None:
        try:
            x = self.agent.parse_line(self.model, body)
        except self.agent.BadRequest:
            return
        reply = self.agent.answer(self.model, self.model.run(x)[0])
        json.dumps(reply).encode("ascii")

    def _protocol(self, body: bytes) -> None:
        engine = self.agent.make_engine(self.model)
        real_infer, calls = engine.infer, [0]

        def infer(data):  # a stated limit: `infer 1000000000%` is a long job, not a bug
            calls[0] += 1
            if calls[0] > INFER_BUDGET:
                raise _Budget
            return real_infer(data)

        engine.infer = infer
        try:
            lines = engine.boot() + engine.feed(body)
        except _Budget:
            return
        for line in lines:
            line.encode("ascii")
            if "\r" in line or "\n" in line:
                raise AssertionError(f"reply line with a line end: {line!r}")


#: Inferences one protocol input may ask for before the target stops it (the real model
#: runs every one of them).
INFER_BUDGET = 200


class _Budget(Exception):
    pass


def _toml_loads(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


class TfliteTarget(Target):
    name = "tflite"

    def setup(self):
        from edgeslim import targets
        from edgeslim.errors import ModelFormatError, TargetError

        self.targets, self.error = targets, (TargetError, ModelFormatError)
        self.profiles = [targets.load_target("cortex-m4"), targets.load_target("rpi4")]

    def __call__(self, data: bytes) -> None:
        try:  # check_model reads the model first (modelgraph.read), then checks it
            for t in self.profiles:
                self.targets.check_model(data, t, measure=False)
        except self.error:
            return


def make(name: str) -> Target:
    return {"agent": AgentTarget, "recipe": RecipeTarget, "board": BoardTarget, "tflite": TfliteTarget}[name]()
