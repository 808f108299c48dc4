"""The C fixed-point helpers against an independent exact model (Python fractions) of
TFLite's rounding rules, including every kind of tie: RoundingDivideByPOT rounds ties
away from zero, SaturatingRoundingDoublingHighMul rounds ties toward +infinity."""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction

import numpy as np

from edgeslim.resources import templates_dir

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def _half_away(q: Fraction) -> int:
    return int(math.floor(abs(q) + Fraction(1, 2))) * (1 if q >= 0 else -1)


def rdbp(x: int, e: int) -> int:
    return _half_away(Fraction(x, 2**e))


def srdhm(a: int, b: int) -> int:
    if a == b == I32_MIN:
        return I32_MAX
    return math.floor(Fraction(a * b, 2**31) + Fraction(1, 2))


def mbqm(x: int, m: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier with the left shift saturated to the int32 range
    (TFLite's int32 product overflows there: undefined behaviour, a wrap in practice)."""
    y = min(max(x * 2 ** max(shift, 0), I32_MIN), I32_MAX)
    return rdbp(srdhm(y, m), max(-shift, 0))


def test_helpers_match_the_exact_rounding_rules(tmp_path, chost):
    exe = tmp_path / "fp"
    kernels = templates_dir() / "c" / "kernels"
    subprocess.run(["gcc", *chost.cflags, f"-I{kernels}",
                    str(chost.goldens.parent / "fixedpoint_driver.c"), "-o", str(exe)],
                   check=True, capture_output=True)
    rng = np.random.default_rng(5)
    cases = []
    # Exact ties for every exponent, both signs, and their neighbours.
    for e in range(1, 31):
        for k in (1, 3, 5, 7, 2**(30 - e) - 1 if e < 30 else 1):
            for sign in (1, -1):
                for d in (-1, 0, 1):
                    x = sign * k * 2 ** (e - 1) + d
                    if I32_MIN <= x <= I32_MAX:
                        cases.append((0, x, e, 0))
    for _ in range(600):
        cases.append((0, int(rng.integers(I32_MIN, I32_MAX)), int(rng.integers(0, 32)), 0))
    # Products landing on exact halves: a * b = (2k + 1) * 2^30.
    for k in range(-40, 40):
        cases.append((1, (2 * k + 1) * 2**15, 2**15, 0))
    cases += [(1, I32_MIN, I32_MIN, 0), (1, I32_MIN, I32_MAX, 0), (1, I32_MAX, I32_MAX, 0)]
    for _ in range(600):
        cases.append((1, int(rng.integers(I32_MIN, I32_MAX)), int(rng.integers(I32_MIN, I32_MAX)), 0))
    # MultiplyByQuantizedMultiplier as the kernels use it: int32 accumulators, Q31
    # multipliers in [2^30, 2^31), shifts from -31 to +8.
    for _ in range(1500):
        cases.append((2, int(rng.integers(-(2**20), 2**20)), int(rng.integers(2**30, 2**31)),
                      int(rng.integers(-31, 9))))
    # ... and accumulators near the int32 limits with left shifts: the shift saturates.
    for x in (I32_MAX, I32_MIN, 2**30, -(2**30) - 1, 2**24 + 1, -(2**24) - 1):
        for shift in (1, 2, 7, 8, 30):
            cases.append((2, x, int(rng.integers(2**30, 2**31)), shift))
    saturating = sum(1 for o, a, b, c in cases if o == 2 and c > 0 and
                     not I32_MIN <= a * 2**c <= I32_MAX)
    text = "".join(f"{o} {a} {b} {c}\n" for o, a, b, c in cases)
    out = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True)
    got = [int(v) for v in out.stdout.split()]
    want = [rdbp(a, b) if o == 0 else srdhm(a, b) if o == 1 else mbqm(a, b, c)
            for o, a, b, c in cases]
    assert len(got) == len(cases) > 3000
    assert saturating >= 20
    bad = [(c, g, w) for c, g, w in zip(cases, got, want) if g != w]
    assert not bad, bad[:10]
    # The tie rules themselves, spelled out.
    assert rdbp(-3, 1) == -2 and rdbp(3, 1) == 2 and srdhm(-(2**30), 1) == 0
