"""The in-memory data set every stage works on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CLASSIFICATION = "classification"
REGRESSION = "regression"
# Origins of a validation or test split.
GIVEN = "given"
CARVED = "carved"
TEST_FILE = "test-data"


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test splits and what kind of task they describe.

    ``task`` is "classification" (integer labels 0..num_classes-1, metric top-1
    accuracy) or "regression" (arrays as targets, metric MSE).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Where the validation and test splits came from: GIVEN (arrays in the data file),
    # CARVED (split off the training samples given) or TEST_FILE (--test-data).
    val_origin: str = "given"
    test_origin: str = "given"
    test_source: str = ""

    @property
    def test_carved(self) -> bool:
        """True when the test samples were split off the training data the user gave:
        if the model was trained on those very samples, test figures overstate."""
        return self.test_origin == CARVED

    @property
    def metric_name(self) -> str:
        return "accuracy" if self.task == CLASSIFICATION else "mse"

    @property
    def higher_is_better(self) -> bool:
        return self.task == CLASSIFICATION

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def score(task: str, y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """The task metric of predictions: top-1 accuracy (classification) or MSE."""
    if task == CLASSIFICATION:
        return float(np.mean(np.argmax(y_pred, axis=-1) == np.asarray(y_true).reshape(-1)))
    return float(np.mean((np.asarray(y_pred, np.float64) - y_true) ** 2))
