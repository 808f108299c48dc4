"""report.html: written by every build, self-contained, every section drawn, rendered offline
in headless Chromium (Debian's chromium + chromedriver, tools/setup.sh) and checked on a
screenshot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgeslim.report.html import SECTIONS
from html_page import Page as _Page, assert_self_contained, non_white_fraction as _non_white_fraction

sys.path.insert(0, str(Path(__file__).parent / "bundle"))
from web_browser import Browser  # noqa: E402

SEED = 7
PLOTTED = ("stages", "layers", "quantization", "memory")


@pytest.fixture(scope="module")
def plain_build(tmp_path_factory, digits_keras3_path, digits_npz):
    """A real build of the example model for cortex-m4 with the C backend: plain int8 (no
    compression stage, to stay fast), so every figure of the report is measured."""
    from edgeslim import recipe as R
    from edgeslim.pipeline import build

    out = tmp_path_factory.mktemp("html_build")
    flags = R.flags_to_table(seed=SEED, no_guard=True)
    return build(digits_keras3_path, digits_npz, target="cortex-m4", flags=flags, out=out,
                 backend="c", recipe={"build": {"stages": []}})


def test_the_bundle_has_report_html_listed_in_its_manifest(plain_build):
    from edgeslim.bundle.manifest import sha256_file, verify_manifest

    b = plain_build.bundle_dir
    manifest = json.loads((b / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "report.html")
    assert entry["sha256"] == sha256_file(b / "report.html")
    assert verify_manifest(b) == []


def test_every_section_is_there_with_its_plot_and_nothing_to_fetch(plain_build):
    report = plain_build.report
    html = (plain_build.bundle_dir / "report.html").read_text(encoding="utf-8")
    page = assert_self_contained(html)  # no script, no URL, no id twice
    assert [s for s, _ in SECTIONS] == list(page.sections)
    for section in PLOTTED:
        assert page.sections[section] == 1, section  # one inline plot each
    # the figures of report.json are the ones shown
    q = report["quantization_error"]
    assert q["samples"] == min(256, report["data"]["val"])
    for e in q["layers"]:
        assert f"<td>{e['layer']}" in html
    assert f"{report['memory_timeline']['peak_live_bytes']:,} B" in html
    assert f"{report['check']['arena_measured_bytes']:,} B" in html
    assert f"{report['size']['int8_tflite_bytes']:,} B" in html
    # a healthy model: no layer flagged
    assert all(e["snr_db"] >= 30.0 and e["suggestion"] == "" for e in q["layers"])
    assert "no layer needs attention" in html


@pytest.mark.timeout(120)
def test_it_renders_offline_in_headless_chromium(plain_build, tmp_path):
    path = plain_build.bundle_dir / "report.html"
    browser = Browser(tmp_path / "profile", width=1200, height=1000)
    try:
        browser.driver.get(path.resolve().as_uri())
        # the page fetched nothing but itself
        assert browser.resource_urls() == [path.resolve().as_uri()]
        # every plot is laid out at a readable size
        sizes = browser.driver.execute_script(
            "return Array.from(document.querySelectorAll('section')).map((s) => {"
            " const g = s.querySelector('svg'); if (!g) return [s.id, 0, 0];"
            " const r = g.getBoundingClientRect(); return [s.id, r.width, r.height]; })")
        for section, width, height in sizes:
            if section in PLOTTED:
                assert width >= 500 and height >= 150, (section, width, height)
        shot = browser.driver.get_screenshot_as_png()
        dark, spread = _non_white_fraction(shot)
        assert dark >= 0.03 and spread >= 20.0, (dark, spread)  # text and tables, not a blank page
        # each plot, scrolled into view and shot on its own, shows lines and bars
        for section in PLOTTED:
            fig = browser.driver.find_element("css selector", f"#{section} figure")
            browser.driver.execute_script("arguments[0].scrollIntoView()", fig)
            dark, spread = _non_white_fraction(fig.screenshot_as_png)
            assert dark >= 0.03 and spread >= 20.0, (section, dark, spread)
    finally:
        browser.quit()


def test_a_prebuilt_tflite_bundle_has_a_report_html_too(tiny_cnn_bytes, tmp_path):
    """No float model: the page says so in the stage and quantization sections, and still
    draws the layers and the memory timeline."""
    from click.testing import CliRunner

    from edgeslim.cli import cli

    model = tmp_path / "tiny.tflite"
    model.write_bytes(tiny_cnn_bytes)
    res = CliRunner().invoke(cli, ["build", str(model), "--target", "rpi4", "-o", str(tmp_path / "out")],
                             obj={"debug": True}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    html = (tmp_path / "out" / "rpi4" / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    assert [s for s, _ in SECTIONS] == list(page.sections)
    assert page.sections["layers"] == page.sections["memory"] == 1
    assert page.sections["stages"] == page.sections["quantization"] == 0
    assert "the model was already converted" in html and "no float model to compare with" in html


def test_memory_timeline_of_a_tiny_model_by_hand(tiny_cnn_bytes):
    """tiny_cnn, int8 in and out: input 8x8x1 (64 B) -> conv1 6x6x4 (144 B) -> dw1 4x4x4 (64 B)
    -> flatten (64 B) -> dense_out (3 B) -> softmax (3 B). A tensor is live from the op that
    writes it (the input: from op 0) to the last op that reads it."""
    from edgeslim.report.memory import activation_timeline

    t = activation_timeline(tiny_cnn_bytes)
    assert [s["op"] for s in t["steps"]] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert [s["live_bytes"] for s in t["steps"]] == [64 + 144, 144 + 64, 64 + 64, 64 + 3, 3 + 3]
    assert t["peak_live_bytes"] == 208 and t["peak_op_index"] == 0
    assert [s["layer"] for s in t["steps"]][:2] == ["conv1", "dw1"]


def test_a_flagged_layer_is_shown_in_red_and_named_by_the_cli(plain_build, capsys, tmp_path):
    """The same report with one layer's figures replaced by a damaged layer's (the figures of
    tests/test_quant_debug.py's conv2): the page warns and draws its bar red, the build's
    summary names it. write_html writes the page atomically."""
    import copy
    import dataclasses

    from edgeslim.commands._options import print_summary
    from edgeslim.report.html import render_html, write_html

    report = copy.deepcopy(plain_build.report)
    bad = report["quantization_error"]["layers"][2]
    bad.update(snr_db=14.0, added_snr_db=23.7, rmse_steps=5.8, weight_median_steps=2.0,
               suggestion="its int8 weights are dominated by outliers")
    report["quantization_error"]["worst_first"].insert(0, bad["layer"])
    html = render_html(report)
    assert f"Most damage: <b>{bad['layer']}</b>" in html and "no layer needs attention" not in html
    assert "#c00000" in html  # the flagged bar
    assert "#c00000" not in (plain_build.bundle_dir / "report.html").read_text(encoding="utf-8")
    print_summary(dataclasses.replace(plain_build, report=report))
    out = capsys.readouterr().out
    assert f"int8 error: layer {bad['layer']} adds 23.7 dB" in " ".join(out.split())
    path = write_html(report, tmp_path / "page.html")
    assert path.read_text(encoding="utf-8") == html and [p.name for p in tmp_path.iterdir()] == ["page.html"]
