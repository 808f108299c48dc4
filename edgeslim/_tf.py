"""Import TensorFlow with Keras 2 (tf_keras), as TFMOT requires.

Every module that needs TensorFlow imports it from here, so the environment is
set before TensorFlow is first imported. Keras 3 (``import keras``) stays usable
side by side for loading users' Keras 3 models (see edgeslim.io.models).
"""

from __future__ import annotations

import os
import sys

# TensorFlow's C++ side logs harmless "errors" (CUDA probing, tf.data attribute
# mismatches) on every run; real failures still surface as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if os.environ.get("EDGESLIM_DEBUG") else "3")
if "tensorflow" not in sys.modules:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"


def legacy_keras_active() -> bool:
    """True when this process's ``tf.keras`` is tf_keras (Keras 2).

    False when TensorFlow was imported before edgeslim without
    TF_USE_LEGACY_KERAS=1 (e.g. in a notebook): then TFMOT cannot run in this
    process and edgeslim.api runs the pipeline in a child process.
    """
    import tensorflow as _tf

    return _tf.keras.__name__.startswith("tf_keras") or "tf_keras" in getattr(
        _tf.keras, "__file__", ""
    )


def cap_threads() -> None:
    """Cap TensorFlow's thread pools from EDGESLIM_THREADS (set in tests/CI)."""
    n = os.environ.get("EDGESLIM_THREADS")
    if n:
        import tensorflow as _tf

        try:
            _tf.config.threading.set_intra_op_parallelism_threads(int(n))
            _tf.config.threading.set_inter_op_parallelism_threads(int(n))
        except RuntimeError:
            pass  # already initialised; the first setting stays


from edgeslim._quiet import native_stderr_to  # noqa: E402

_import_log: list[str] = []
try:
    with native_stderr_to(_import_log):  # CUDA probing noise on machines without a GPU
        import tensorflow as tf
        import tf_keras as keras

        tf.config.list_physical_devices("GPU")
except BaseException:
    import sys as _sys

    _sys.stderr.write("".join(_import_log))
    raise

cap_threads()
if not os.environ.get("EDGESLIM_DEBUG"):
    tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras", "legacy_keras_active", "cap_threads"]

