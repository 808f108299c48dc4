"""Headless Chromium driven by Selenium for the web bundle's tests and tools/bench_web.py.

Debian's `chromium` and `chromium-driver` (tools/setup.sh installs them). The
browser resolves no host name but 127.0.0.1 (--host-resolver-rules), so a page
that tried to reach a CDN would fail: the bundle must be self-contained. Each
Browser has its own throw-away profile (service worker caches included) and is
ended with quit() (the chromedriver process and its Chromium children).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

CHROMIUM = "chromium"
CHROMEDRIVER = "chromedriver"


def _find(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/lib/chromium")
    if path is None:
        raise RuntimeError(f"{name} is not installed: run tools/setup.sh (Debian packages "
                           "chromium and chromium-driver)")
    return path


class Browser:
    def __init__(self, profile_dir: Path, *, width: int = 900, height: int = 1600,
                 extra_args: list[str] | None = None):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = _find(CHROMIUM)
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                    f"--user-data-dir={profile_dir}", f"--window-size={width},{height}",
                    *(extra_args or [])):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=opts, service=Service(_find(CHROMEDRIVER)))
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(120)

    def quit(self) -> None:
        self.driver.quit()

    def state(self) -> dict | None:
        return self.driver.execute_script(
            "const s = window.edgeslim; if (!s) return null;"
            "return {ready: s.ready, error: s.error, offline: s.offline, agreement: s.agreement,"
            " result: s.result, modelSha: s.modelSha, bench: s.bench, features: s.features,"
            " controlled: !!(navigator.serviceWorker && navigator.serviceWorker.controller)};")

    def wait(self, predicate, timeout: float = 30.0, what: str = "the page"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.state()
            if last is not None and predicate(last):
                return last
            time.sleep(0.1)
        raise TimeoutError(f"{what} did not get there in {timeout:.0f} s; last state {last}, "
                           f"page text: {self.text('error')!r} / {self.text('status')!r}")

    def open(self, url: str, *, timeout: float = 30.0) -> dict:
        """Load ``url`` and wait until the app is ready or shows an error."""
        self.driver.get(url)
        return self.wait(lambda s: s["ready"] or s["error"], timeout, f"{url}")

    def text(self, element_id: str) -> str:
        from selenium.common.exceptions import NoSuchElementException

        try:
            return self.driver.find_element("id", element_id).text
        except NoSuchElementException:
            return ""

    def visible(self, element_id: str) -> bool:
        return self.driver.find_element("id", element_id).is_displayed()

    def upload(self, path: Path, element_id: str = "array-file", timeout: float = 60.0) -> dict:
        """Give ``path`` to a file input; wait for the page's result or error."""
        self.driver.execute_script("edgeslim.result = null; edgeslim.error = null;")
        self.driver.find_element("id", element_id).send_keys(str(Path(path).resolve()))
        return self.wait(lambda s: s["result"] is not None or s["error"], timeout, f"the page with {path}")

    def run(self, script: str):
        """Await a JavaScript expression (a promise) and return its value."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"Promise.resolve({script}).then(done, (e) => done({{error: String(e)}}));")

    def resource_urls(self) -> list[str]:
        return self.driver.execute_script(
            "return performance.getEntriesByType('resource').map((e) => e.name)"
            ".concat([location.href]);")


def host_steps(model_bytes: bytes, x):
    """Host LiteRT's outputs for float inputs ``x``, in int8 steps of the model's output
    quantization, one sample at a time: what the page's outputs are compared with."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from edgeslim.bundle.web import model_io

    q = model_io(model_bytes)["output"]["quantization"]
    ip = Interpreter(model_content=model_bytes)
    ip.allocate_tensors()
    i, o = ip.get_input_details()[0]["index"], ip.get_output_details()[0]["index"]
    out = []
    for n in range(len(x)):
        ip.set_tensor(i, x[n:n + 1].astype(np.float32))
        ip.invoke()
        out.append(np.round(ip.get_tensor(o)[0] / q["scale"]).astype(np.int32) + q["zero_point"])
    return np.stack(out)
