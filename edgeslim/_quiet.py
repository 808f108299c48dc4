"""Keep native (C++) log noise out of the user's terminal.

TensorFlow and its converter print to file descriptor 2 directly (CUDA probing
at import, pages of MLIR diagnostics on a failed conversion), below Python's
sys.stderr. What they print is captured and handed to the caller, which shows
it when something failed (or with EDGESLIM_DEBUG=1).
"""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def native_stderr_to(buffer: list):
    """Redirect fd 2 into a temporary file for the block; append its text to ``buffer``."""
    if os.environ.get("EDGESLIM_DEBUG"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (some embedded interpreters): nothing to hide
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buffer.append(tmp.read().decode("utf-8", "replace"))
