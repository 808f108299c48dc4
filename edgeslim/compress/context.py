"""What every compression stage gets: the data, the seed, and a shared way to fine-tune."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgeslim._tf import keras, tf
from edgeslim.io.dataset import CLASSIFICATION, Dataset, score


@dataclass
class StageOutcome:
    """A stage's result: the new plain tf_keras model and facts for the report."""

    model: Any
    info: dict = field(default_factory=dict)
    # Layers a stage could not treat, with the reason, e.g. {"dw1": "not quantize-annotatable"}.
    skipped: dict = field(default_factory=dict)


def _outputs_are_probabilities(model, x: np.ndarray) -> bool:
    """Does the model end in a softmax? Decided from its outputs, not its layer
    classes: pruning, clustering and QAT wrap the last layer and its activation."""
    y = np.asarray(model(x[:16], training=False))
    return bool(np.all(y >= 0) and np.allclose(y.sum(axis=-1), 1.0, atol=1e-3))


@dataclass(frozen=True, kw_only=True)
class StageContext:
    """Keyword-only context handed to every stage (no positional swaps possible).

    ``callbacks`` builds extra Keras callbacks (progress display) for a fit;
    ``log`` prints one line for the user.
    """

    data: Dataset
    seed: int | None = None
    batch_size: int = 32
    patience: int = 2
    learning_rate: float = 1e-3
    callbacks: Callable[[str, int], list] = lambda stage, epochs: []
    log: Callable[[str], None] = lambda msg: None

    # -- training -----------------------------------------------------------
    def loss(self, model):
        if self.data.task == CLASSIFICATION:
            return keras.losses.SparseCategoricalCrossentropy(
                from_logits=not _outputs_are_probabilities(model, self.data.x_train)
            )
        return keras.losses.MeanSquaredError()

    def metrics(self):
        if self.data.task == CLASSIFICATION:
            return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        return [keras.metrics.MeanSquaredError(name="mse")]

    def compile(self, model, learning_rate: float | None = None) -> None:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate or self.learning_rate),
            loss=self.loss(model),
            metrics=self.metrics(),
        )

    def fit(
        self,
        model,
        epochs: int,
        *,
        stage: str,
        learning_rate: float | None = None,
        extra_callbacks: list | tuple = (),
        compile: bool = True,
    ):
        """Fine-tune ``model`` with early stopping on the validation metric.

        Seeds TensorFlow first when a seed is set, so a seeded build is repeatable.
        Returns the Keras History (empty when epochs == 0).
        """
        if epochs <= 0:
            return None
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        if compile:
            self.compile(model, learning_rate)
        monitor = "val_" + self.data.metric_name
        stop = keras.callbacks.EarlyStopping(
            monitor=monitor,
            mode="max" if self.data.higher_is_better else "min",
            patience=self.patience,
            restore_best_weights=False,
        )
        return model.fit(
            self.data.x_train,
            self.data.y_train,
            validation_data=(self.data.x_val, self.data.y_val),
            epochs=epochs,
            batch_size=self.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[stop, *extra_callbacks, *self.callbacks(stage, epochs)],
        )

    # -- measuring ----------------------------------------------------------
    def predict(self, model, x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x, batch_size=256, verbose=0))

    def score(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        """The task metric for predictions: top-1 accuracy or MSE."""
        return score(self.data.task, y_pred, y_true)

    def evaluate(self, model, split: str = "val") -> float:
        x = getattr(self.data, f"x_{split}")
        y = getattr(self.data, f"y_{split}")
        return self.score(self.predict(model, x), y)


def count_params(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights if "optimizer" not in w.name))


__all__ = ["StageContext", "StageOutcome", "count_params", "tf"]
