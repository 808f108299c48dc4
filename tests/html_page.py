"""Checks of a self-contained HTML page shared by tests/test_report_html.py (report.html) and
tests/test_inspect_quant.py (`edgeslim inspect --html`)."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import numpy as np


class Page(HTMLParser):
    """Section ids, the svg elements inside each section, and every URL the page refers to."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, int] = {}
        self.current = None
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.current = a.get("id")
            self.sections[self.current] = 0
        elif tag == "svg" and self.current is not None:
            self.sections[self.current] += 1
        for key in ("src", "href", "xlink:href", "data"):
            v = a.get(key)
            if v and not v.startswith("#"):
                self.urls.append(v)

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None


def non_white_fraction(png: bytes) -> tuple[float, float]:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(np.mean(img < 235)), float(img.std())


def assert_self_contained(html: str) -> Page:
    """No script, no image file, no stylesheet link, no URL at all, and no id twice (the
    inline plots share none); returns the parsed page."""
    page = Page()
    page.feed(html)
    assert page.urls == [] and not page.tags & {"script", "img", "link", "iframe"}
    assert not re.search(r"url\((?!#)|@import", html)  # url(#clip) is a reference inside the page
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    return page
