"""The in-memory data set every stage works on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CLASSIFICATION = "classification"
REGRESSION = "regression"


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

    @property
    def metric_name(self) -> str:
        return "accuracy" if self.task == CLASSIFICATION else "mse"

    @property
    def higher_is_better(self) -> bool:
        return self.task == CLASSIFICATION

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])
