#!/usr/bin/env python3
"""Coverage-guided fuzzing of what edgeslim reads from untrusted hands.

  tools/fuzz.py TARGET [--minutes M | --seconds S] [--keep DIR]
  tools/fuzz.py TARGET FILE...        # replay inputs (a crasher) once each

Targets (tests/fuzz/fuzz_targets.py; the seed corpus is tests/fuzz/corpus/TARGET/):
  agent    the Raspberry Pi agent's request handling, in process (inbox files, stdin
           lines, the MLPerf Tiny protocol), on a real bundle of a real int8 model
  recipe   recipe files (edgeslim.recipe.resolve)
  board    board profiles (edgeslim.targets.load_target)
  tflite   .tflite models through what `edgeslim check` reads (edgeslim.modelgraph.read,
           check_model without TFLite Micro)
  dut      the firmware's serial command parser (firmware_templates/cortex_m/dut.c),
           compiled on this machine with clang -fsanitize=fuzzer,address,undefined
           (Debian: clang libclang-rt-dev; tests/fuzz/dut_fuzz.c is its host port)

Python targets run under atheris (libFuzzer for Python). CI runs each for 60 s
(tests/fuzz/test_fuzz.py); a longer run is e.g. `tools/fuzz.py board --minutes 10`.
New inputs go to a scratch copy of the corpus (--keep DIR to keep it); a crash is
saved as crash-<sha1> in the scratch folder, and printed: add it to
tests/fuzz/crashers/TARGET/ (replayed by the tests) and fix the code.
The last line is a summary: runs, runs per second, crashes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUZZ_DIR = ROOT / "tests" / "fuzz"
TARGETS = ("agent", "recipe", "board", "tflite", "dut")
PY_TARGETS = ("agent", "recipe", "board", "tflite")

for var, value in (("EDGESLIM_THREADS", "1"), ("TF_NUM_INTRAOP_THREADS", "1"), ("TF_NUM_INTEROP_THREADS", "1"),
                   ("OMP_NUM_THREADS", "1"), ("TF_CPP_MIN_LOG_LEVEL", "2"), ("TF_USE_LEGACY_KERAS", "1")):
    os.environ.setdefault(var, value)


def build_dut(out_dir: Path) -> Path:
    """The libFuzzer binary of dut.c, rebuilt when its sources change."""
    cc = shutil.which("clang")
    if cc is None:
        sys.exit("error: clang is not installed (Debian: apt-get install clang libclang-rt-dev; "
                 "tools/setup.sh installs them)")
    sources = [FUZZ_DIR / "dut_fuzz.c", ROOT / "firmware_templates" / "cortex_m" / "dut.c",
               ROOT / "firmware_templates" / "cortex_m" / "dut.h", ROOT / "firmware_templates" / "cortex_m" / "port.h"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    binary = out_dir / f"dut_fuzz-{digest}"
    if not binary.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(".tmp")
        cmd = [cc, "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
               "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "firmware_templates" / "cortex_m"),
               str(FUZZ_DIR / "dut_fuzz.c"), "-o", str(tmp)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"error: building the dut fuzzer failed:\n{r.stderr}")
        os.replace(tmp, binary)
    return binary


def libfuzzer_args(seconds: int, work: Path, target: str) -> list[str]:
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    return [f"-max_total_time={seconds}", "-print_final_stats=1", "-timeout=30", "-rss_limit_mb=4096",
            f"-artifact_prefix={work}/", "-max_len=4096", str(corpus), str(FUZZ_DIR / "corpus" / target)]


def summary(target: str, output: str, rc: int, work: Path) -> int:
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    rate = re.search(r"stat::average_exec_per_sec:\s*(\d+)", output)
    crashes = sorted(p.name for p in work.glob("crash-*")) + sorted(p.name for p in work.glob("timeout-*"))
    if rc != 0 and not crashes:
        crashes = [f"exit status {rc}"]
    print(f"fuzz {target}: {runs.group(1) if runs else '?'} runs, {rate.group(1) if rate else '?'} runs/s, "
          f"{len(crashes)} crashes{': ' + ', '.join(crashes) if crashes else ''} (work folder {work})",
          flush=True)
    return 0 if not crashes and rc == 0 else 1


def run_dut(seconds: int, work: Path, files: list[str]) -> int:
    binary = build_dut(Path(tempfile.gettempdir()) / "edgeslim-fuzz")
    if files:
        return subprocess.run([str(binary), *files]).returncode
    p = subprocess.run([str(binary), *libfuzzer_args(seconds, work, "dut")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace")
    sys.stdout.write(p.stdout[-4000:])
    return summary("dut", p.stdout, p.returncode, work)


def instrumented_target(name: str):
    """The target, set up with edgeslim's modules (and the rendered agent) instrumented
    for coverage."""
    import atheris

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(FUZZ_DIR))
    import fuzz_targets

    target = fuzz_targets.make(name)
    with atheris.instrument_imports(include=["edgeslim"]):
        if name == "agent":
            bundle = target.work / "bundle"
            bundle.mkdir()
            agent = fuzz_targets.render_agent(bundle, fuzz_targets.tiny_model_bytes())
            instrument_module(agent, atheris)
            target.setup(agent=agent)
        else:
            target.setup()
    return target


def instrument_module(module, atheris) -> None:
    """Coverage for a module loaded from a file path (the agent), function by function."""
    import types

    for key, value in list(vars(module).items()):
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            setattr(module, key, atheris.instrument_func(value))
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for attr, fn in list(vars(value).items()):
                if isinstance(fn, types.FunctionType):
                    setattr(value, attr, atheris.instrument_func(fn))


def run_python(name: str, seconds: int, work: Path, files: list[str]) -> int:
    if files:  # replay without atheris: the exception, if any, is the report
        sys.path.insert(0, str(ROOT))
        sys.path.insert(0, str(FUZZ_DIR))
        import fuzz_targets

        target = fuzz_targets.make(name)
        target.setup()
        for f in files:
            target(Path(f).read_bytes())
            print(f"{f}: ok")
        target.close()
        return 0
    # libFuzzer's stats go to stderr, which a child process lets us read: run the fuzzer
    # in a child, with this script as its program
    p = subprocess.run([sys.executable, __file__, name, "--child", str(seconds), "--work", str(work)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    sys.stdout.write(p.stdout[-4000:])
    return summary(name, p.stdout, p.returncode, work)


def child(name: str, seconds: int, work: Path) -> None:
    import atheris

    target = instrumented_target(name)
    atheris.Setup([sys.argv[0], *libfuzzer_args(seconds, work, name)], target)
    atheris.Fuzz()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=TARGETS)
    p.add_argument("files", nargs="*", help="inputs to replay once each instead of fuzzing")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float)
    length.add_argument("--seconds", type=int)
    p.add_argument("--keep", type=Path, help="work folder to keep (corpus grown, crashes)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        child(args.target, args.child, args.work)
        return 0
    seconds = int(args.minutes * 60) if args.minutes else (args.seconds or 60)
    if seconds < 1:
        p.error("the run must last at least one second")
    work = args.keep or Path(tempfile.mkdtemp(prefix=f"edgeslim-fuzz-{args.target}-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.target == "dut":
        return run_dut(seconds, work, args.files)
    return run_python(args.target, seconds, work, args.files)


if __name__ == "__main__":
    sys.exit(main())
