"""Seeded entry points turn on TensorFlow's deterministic kernels (process-wide) and put the
switch back when they return or raise: a build must not change how the caller's own training
runs afterwards (in the test suite, one test's training changed another's accuracy)."""

from __future__ import annotations

import pytest

from edgeslim._determinism import restores_op_determinism


def _enabled() -> bool:
    from edgeslim._tf import tf  # noqa: F401
    from tensorflow.python.framework import config

    return config.is_op_determinism_enabled()


def test_the_switch_is_restored_after_return_and_after_raise():
    from edgeslim._tf import tf
    from tensorflow.python.framework import config

    if _enabled():  # an earlier test left it on: start from off, as a fresh process does
        config.disable_op_determinism()

    @restores_op_determinism
    def seeded_run(fail: bool):
        tf.config.experimental.enable_op_determinism()
        assert _enabled()
        if fail:
            raise ValueError("boom")
        return 7

    assert seeded_run(False) == 7 and not _enabled()
    with pytest.raises(ValueError):
        seeded_run(True)
    assert not _enabled()
    # a caller that turned it on itself keeps it on
    tf.config.experimental.enable_op_determinism()
    try:
        seeded_run(False)
        assert _enabled()
    finally:
        config.disable_op_determinism()


def test_every_entry_point_that_enables_it_restores_it():
    from edgeslim.compress.distill import distill_model
    from edgeslim.pipeline import build
    from edgeslim.search import search
    from edgeslim.search.trials import train_candidate

    for fn in (build, distill_model, search, train_candidate):
        assert getattr(fn, "__wrapped__", None) is not None, fn.__qualname__
