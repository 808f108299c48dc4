"""edgeslim: compress a Keras model, convert it to a fully-integer TFLite model,
fit it to a device and measure it there.

The public API lives in :mod:`edgeslim.api` and is re-exported here lazily so that
``import edgeslim`` stays cheap and does not import TensorFlow.
"""

__version__ = "0.1.0"

_API = ("build", "distill", "load_model", "load_data")


def __getattr__(name):
    if name in _API:
        from edgeslim import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgeslim' has no attribute {name!r}")
