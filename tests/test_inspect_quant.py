"""`edgeslim inspect --keras --data` (per-layer quantization error) and `--html`, end to end on
the damaged model of tests/damaged_model.py: the damaged layer is named first in the text and
the JSON, the page has every section and renders offline in headless Chromium; the usage errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslim.cli import cli
from edgeslim.report.html import INSPECT_SECTIONS
from html_page import assert_self_contained, non_white_fraction

sys.path.insert(0, str(Path(__file__).parent / "bundle"))
from web_browser import Browser  # noqa: E402

N_VAL = 200  # validation samples in the .npz: all of them are used (fewer than 256)


@pytest.fixture(scope="module")
def files(damaged, tmp_path_factory):
    """The damaged model as the user has it: model.tflite, the float model.keras and an .npz
    whose validation split is real inputs (the targets: the float model's outputs)."""
    model, tflite, x = damaged
    d = tmp_path_factory.mktemp("inspect_quant")
    (d / "model.tflite").write_bytes(tflite)
    model.save(d / "model.keras")
    y = model.predict(x, verbose=0)
    np.savez(d / "d.npz", x_train=x[N_VAL:], y_train=y[N_VAL:], x_val=x[:N_VAL], y_val=y[:N_VAL])
    return d


def _inspect(*args):
    return CliRunner().invoke(cli, ["inspect", *map(str, args)], obj={"debug": False})


@pytest.fixture(scope="module")
def inspected(files):
    """One run with every output: text, JSON and HTML, against cortex-m4, arena measured."""
    d = files
    res = _inspect(d / "model.tflite", "--keras", d / "model.keras", "--data", d / "d.npz",
                   "--target", "cortex-m4", "--json", d / "o.json", "--html", d / "o.html",
                   "--md", d / "o.md")
    assert res.exit_code == 0, res.output
    return res.output, json.loads((d / "o.json").read_text()), (d / "o.html").read_text(encoding="utf-8")


def test_the_damaged_layer_is_named_first_in_text_and_json(inspected, files):
    text, data, _ = inspected
    q = data["quantization_error"]
    assert q["worst_first"][0] == "conv2"
    assert q["samples"] == N_VAL
    assert q["inputs"] == f"{N_VAL} samples of the validation split of d.npz (x_val)"
    by = {e["layer"]: e for e in q["layers"]}
    assert by["conv2"]["added_snr_db"] >= 15.0 and "outliers" in by["conv2"]["suggestion"]
    assert by["conv1"]["suggestion"] == ""
    # the text: the headline names conv2 first, then the layers worst first
    section = text[text.index("quantization error (int8 vs float"):]
    lines = section.splitlines()
    assert f"{N_VAL} samples of the validation split of d.npz" in lines[0]
    assert lines[1].split()[:3] == ["worst", "layer:", "conv2"]
    assert f"adds {by['conv2']['added_snr_db']:.1f} dB" in lines[1]
    table = lines[2:]
    assert table[0].split()[:3] == ["layer", "op", "SNR"]
    assert [row.split()[0] for row in table[1:6]] == q["worst_first"]
    row = table[1].split()
    assert row[:3] == ["conv2", "1", "CONV_2D"]
    assert float(row[3]) == pytest.approx(by["conv2"]["snr_db"], abs=0.051)
    assert float(row[5]) == pytest.approx(by["conv2"]["rmse_steps"], abs=0.0051)
    md = (files / "o.md").read_text()
    assert "## Per-layer quantization error (worst first)" in md and "| conv2 | 1 CONV_2D |" in md


def test_the_html_has_every_section_and_nothing_to_fetch(inspected):
    _, data, html = inspected
    page = assert_self_contained(html)
    assert list(page.sections) == [s for s, _ in INSPECT_SECTIONS]
    assert page.sections["memory"] == page.sections["quantization"] == 1  # one plot each
    # the figures of the JSON are the ones shown
    mem, size = data["memory"], data["size"]
    assert f"{mem['activations_peak_bytes']:,} B" in html and f"{mem['tflm_arena_bytes']:,} B" in html
    assert f"{mem['c_plan']['arena_size']:,} B" in html
    assert f"{size['model_bytes']:,} B" in html and f"{size['gzip_bytes']:,} B" in html
    assert f"{size['weights_total']['huffman_bytes']:,} B" in html
    for w in size["weights"]:  # per weight tensor: values, unique, stored, entropy, Huffman
        assert (f"<td>{w['layer']}</td><td>{w['dtype']}</td><td class=\"n\">{w['values']}</td>"
                f"<td class=\"n\">{w['unique_values']}</td><td class=\"n\">{w['stored_bytes']:,} B</td>"
                f"<td class=\"n\">{w['entropy_bytes']:.1f} B</td><td class=\"n\">{w['huffman_bytes']:,} B</td>") in html
    for op in data["ops"]:
        assert f"<td>{op['op']}</td><td>{op['layer']}</td>" in html
    assert data["target"]["fits"] and f"{data['target']['ram_headroom_bytes']:,} B" in html
    assert "Most damage: <b>conv2</b>" in html and "#c00000" in html  # the flagged bar


def test_sections_without_data_say_why(tiny_cnn_bytes, tmp_path):
    model = tmp_path / "tiny.tflite"
    model.write_bytes(tiny_cnn_bytes)
    res = _inspect(model, "--no-arena", "--html", tmp_path / "t.html")
    assert res.exit_code == 0, res.output
    html = (tmp_path / "t.html").read_text(encoding="utf-8")
    page = assert_self_contained(html)
    assert list(page.sections) == [s for s, _ in INSPECT_SECTIONS]
    assert page.sections["memory"] == 1 and page.sections["quantization"] == 0
    assert "No target given: pass --target" in html
    assert "Not measured: pass the float Keras model" in html
    assert "TFLite Micro's arena was not measured (--no-arena)" in html


@pytest.mark.timeout(120)
def test_the_html_renders_offline_in_headless_chromium(inspected, files, tmp_path):
    path = (files / "o.html").resolve()
    browser = Browser(tmp_path / "profile", width=1200, height=1000)
    try:
        browser.driver.get(path.as_uri())
        assert browser.resource_urls() == [path.as_uri()]  # nothing fetched but the page
        dark, spread = non_white_fraction(browser.driver.get_screenshot_as_png())
        assert dark >= 0.03 and spread >= 20.0, (dark, spread)  # text and tables, not blank
        for section in ("memory", "quantization"):
            fig = browser.driver.find_element("css selector", f"#{section} figure")
            browser.driver.execute_script("arguments[0].scrollIntoView()", fig)
            rect = fig.rect
            assert rect["width"] >= 500 and rect["height"] >= 150, (section, rect)
            dark, spread = non_white_fraction(fig.screenshot_as_png)
            assert dark >= 0.03 and spread >= 20.0, (section, dark, spread)
    finally:
        browser.quit()


def test_keras_and_data_go_together(files):
    d = files
    res = _inspect(d / "model.tflite", "--keras", d / "model.keras")
    assert res.exit_code == 2 and "--keras needs --data" in res.output
    res = _inspect(d / "model.tflite", "--data", d / "d.npz")
    assert res.exit_code == 2 and "--data needs --keras" in res.output
    assert "Traceback" not in res.output


def test_a_keras_model_of_another_input_shape_is_refused(files, tiny_cnn_bytes, tmp_path):
    model = tmp_path / "tiny.tflite"
    model.write_bytes(tiny_cnn_bytes)  # 8x8x1 in; the damaged Keras model takes 12x12x2
    res = _inspect(model, "--no-arena", "--keras", files / "model.keras", "--data", files / "d.npz",
                   "--json", tmp_path / "o.json")
    assert res.exit_code == 2, res.output
    assert "takes inputs of shape (12, 12, 2), the .tflite (8, 8, 1)" in res.output
    assert "not the float model this .tflite was converted from" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o.json").exists()


def test_data_that_does_not_fit_the_keras_model(files, tmp_path):
    d = files
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((40, 8, 8, 1), np.float32), y_train=np.zeros(40, np.float32),
             x_val=np.zeros((10, 8, 8, 1), np.float32), y_val=np.zeros(10, np.float32))
    res = _inspect(d / "model.tflite", "--no-arena", "--keras", d / "model.keras", "--data", bad)
    assert res.exit_code == 2, res.output
    assert f"--data {bad}: inputs of shape (8, 8, 1) do not fit the model's input (12, 12, 2)" in res.output
    assert "Traceback" not in res.output


def test_a_keras3_model_and_a_carved_validation_split(digits_keras3_path, digits_npz, digits_int8_bytes,
                                                      tmp_path):
    """The example model saved by Keras 3 (bridged by load_model) and digits.npz, which has no
    x_val: the split is carved as a build carves it, and the output says so. A healthy model:
    no layer is flagged."""
    from edgeslim.io.data import load_data

    model = tmp_path / "digits.tflite"
    model.write_bytes(digits_int8_bytes)
    res = _inspect(model, "--no-arena", "--keras", digits_keras3_path, "--data", digits_npz,
                   "--samples", 64, "--json", tmp_path / "o.json")
    assert res.exit_code == 0, res.output
    q = json.loads((tmp_path / "o.json").read_text())["quantization_error"]
    assert len(load_data(digits_npz).x_val) >= 64 and q["samples"] == 64
    assert q["inputs"] == ("64 samples of the validation split of digits.npz "
                           "(carved from its training samples, seed 0)")
    assert {"conv1", "fc1", "output"} <= {e["layer"] for e in q["layers"]}
    assert all(e["suggestion"] == "" and e["snr_db"] >= 30.0 for e in q["layers"])
    assert "no layer needs attention" in res.output
    assert f"worst layer: {q['worst_first'][0]} " in res.output
