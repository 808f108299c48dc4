"""Seeded runs turn on TensorFlow's deterministic kernels, a process-wide switch; the entry
points that do so put it back when they return (imports TensorFlow only when called)."""

from __future__ import annotations

import functools


def restores_op_determinism(fn):
    """Decorator for edgeslim's entry points that call
    ``tf.config.experimental.enable_op_determinism`` for a seeded run: when ``fn`` returns or
    raises, the switch is back where the caller had it, so a library call does not change how
    the caller's own TensorFlow code runs afterwards (nor one test's training another's)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from edgeslim._tf import tf  # noqa: F401 - TensorFlow as edgeslim imports it
        from tensorflow.python.framework import config as tf_config

        before = tf_config.is_op_determinism_enabled()
        try:
            return fn(*args, **kwargs)
        finally:
            if not before and tf_config.is_op_determinism_enabled():
                tf_config.disable_op_determinism()

    return wrapper
