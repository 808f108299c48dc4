"""Keep native (C++) log noise out of the user's terminal.

TensorFlow and its converter print to file descriptor 2 directly (CUDA probing
at import, pages of MLIR diagnostics on a failed conversion), below Python's
sys.stderr. What they print is captured and handed to the caller, which shows
it when something failed (or with EDGESLIM_DEBUG=1).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def native_stderr_to(buffer: list):
    """Redirect fd 2 into a temporary file for the block; append its text to ``buffer``."""
    with _native_fd_to(buffer, 2):
        yield


@contextlib.contextmanager
def native_output_to(buffer: list):
    """Redirect fd 1 and fd 2 for the block (the converter's quantizer prints its settings
    to stdout from C++); append their text to ``buffer``."""
    with _native_fd_to(buffer, 2), _native_fd_to(buffer, 1):
        yield


@contextlib.contextmanager
def _native_fd_to(buffer: list, fd: int):
    if os.environ.get("EDGESLIM_DEBUG"):
        yield
        return
    try:
        saved = os.dup(fd)
    except OSError:  # no such fd (some embedded interpreters): nothing to hide
        yield
        return
    stream = sys.stdout if fd == 1 else sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        _flush(stream)
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            _flush(stream)
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            buffer.append(tmp.read().decode("utf-8", "replace"))


def _flush(stream) -> None:
    try:
        stream.flush()
    except (AttributeError, ValueError, OSError):
        pass
