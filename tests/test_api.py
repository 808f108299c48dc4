"""The Python API in a notebook-like process: TensorFlow already imported with Keras 3,
an in-memory Keras 3 model passed to edgeslim.build()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf          # a notebook: TensorFlow first, Keras 3 as tf.keras
    import keras
    assert tf.keras.__version__.startswith("3."), tf.keras.__version__

    import edgeslim
    from edgeslim import examples

    data = np.load(sys.argv[1])
    keras.utils.set_random_seed(0)
    model = examples.build_digits_model(keras)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data["x_train"], data["y_train"], epochs=8, batch_size=64, verbose=0)
    result = edgeslim.build(model, sys.argv[1], target="rpi4", out=sys.argv[2], seed=0,
                            channels_epochs=2, verbose=False)
    print("RESULT " + json.dumps({"bundle": str(result.bundle_dir),
                                  "metric": result.report["metric"],
                                  "stages": [s["name"] for s in result.report["stages"]],
                                  "shipped": result.report["guard"]["shipped"]}))
    """
)


def test_build_from_a_keras3_notebook(tmp_path, digits_npz):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(digits_npz), str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    # rpi4's default recipe (channel pruning), unless the accuracy guard shipped plain int8
    expected = ["baseline", "int8"] if res["shipped"] == "plain-int8" else ["baseline", "channels", "int8"]
    assert res["stages"] == expected, res
    assert (tmp_path / "out" / "rpi4" / "model.tflite").is_file()
    m = res["metric"]
    assert m["float"] >= 0.9 and m["float"] - m["int8"] <= 0.03, m
