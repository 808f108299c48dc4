"""bench.json's summary: which clock each figure is in (edgeslim.harness.bench._summary)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim.harness.bench import _summary


def _records(emulated: bool):
    recs = [{"latency_us": 2000.0, "link_us": 9000.0, "infer_wall_us": 4000.0},
            {"latency_us": 2000.0, "link_us": 11000.0, "infer_wall_us": 1000.0}]
    if emulated:
        for r, n in zip(recs, (31250, 31250)):
            r["instructions"] = n
    return recs


def test_device_clock_ratio_is_against_the_device_latency():
    out = [np.array([1, 2], np.int8)] * 2
    s = _summary(_records(False), out, np.stack(out), None)
    assert s["link"]["ratio_against"] == "latency_us"
    assert s["link"]["ratio_to_inference"] == pytest.approx(10000 / 2000)
    assert s["throughput_per_s"] == pytest.approx(500.0) and "instructions" not in s


def test_emulated_ratio_stays_on_the_host_clock():
    """The emulated latency is another clock: the link is compared with the infer command's
    host wall time, and the device figure is the emulator's instruction count."""
    out = [np.array([1, 2], np.int8)] * 2
    s = _summary(_records(True), out, np.stack(out), None, emulated=True)
    assert s["link"]["ratio_against"] == "inference_host_wall_us"
    assert s["link"]["inference_host_wall_us"] == pytest.approx(2500.0)
    assert s["link"]["ratio_to_inference"] == pytest.approx(10000 / 2500)
    assert s["throughput_per_s"] is None
    assert s["instructions"]["median"] == 31250
