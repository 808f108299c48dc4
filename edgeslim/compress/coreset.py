"""Coresets: a small subset of the training data that represents all of it.

Full-integer conversion calibrates every activation's range on a
representative data set; with a small budget (k samples), which k matters. A
random draw leaves whole regions of the input space out (and their activation
extremes with them); k-center greedy (Sener & Savarese, 2018) covers them:
in the model's penultimate-layer embedding, it repeatedly adds the sample
farthest from everything chosen so far, which minimises the largest distance
from any sample to its nearest chosen one (a 2-approximation of the optimum).

For classification, the budget is split over the classes in proportion to
their frequency (every class gets at least one sample while k allows), and
k-center greedy runs within each class, so the subset keeps the class balance.
"""

from __future__ import annotations

import numpy as np

from edgeslim.errors import DataError, RecipeError

KCENTER = "kcenter"
RANDOM = "random"
METHODS = (KCENTER, RANDOM)


def embedding_model(model):
    """A model mapping inputs to the input of ``model``'s last parameterised layer
    (the penultimate-layer embedding), flattened per sample."""
    from edgeslim._tf import keras

    last = None
    for layer in reversed(model.layers):
        if layer.weights:
            last = layer
            break
    if last is None:
        raise DataError(f"model {model.name!r} has no layer with weights to embed samples with",
                        hint='Use calibration = "random".')
    return keras.Model(model.inputs, last.input)


def embed(model, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    emb = embedding_model(model)
    out = np.concatenate([
        np.asarray(emb(x[i : i + batch_size], training=False), dtype=np.float32)
        for i in range(0, len(x), batch_size)
    ])
    return out.reshape(len(x), -1)


def kcenter_greedy(features: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` rows of ``features`` chosen by k-center greedy (Euclidean).

    Starts from the row nearest the mean (the best single center when k = 1, as
    happens per class with small budgets); each next pick is the row farthest from
    its nearest pick (ties: lowest index). Deterministic.
    """
    n = len(features)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    f = np.asarray(features, dtype=np.float64)
    chosen = [int(np.argmin(np.linalg.norm(f - f.mean(axis=0), axis=1)))]
    dist = np.linalg.norm(f - f[chosen[0]], axis=1)
    for _ in range(k - 1):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(f - f[i], axis=1))
    return np.asarray(chosen, dtype=np.int64)


def covering_radius(features: np.ndarray, picked: np.ndarray) -> float:
    """The k-center objective: the largest distance from any row to its nearest pick."""
    f = np.asarray(features, dtype=np.float64)
    d = np.full(len(f), np.inf)
    for i in picked:
        d = np.minimum(d, np.linalg.norm(f - f[i], axis=1))
    return float(d.max())


def _per_class_budget(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``k`` over classes in proportion to ``counts`` (largest remainder; at
    least one per present class when k allows; ties broken by the seeded rng)."""
    present = counts > 0
    budget = np.zeros_like(counts)
    if k >= present.sum():
        budget[present] = 1
    remaining = k - budget.sum()
    share = counts / counts.sum() * remaining
    budget += np.floor(share).astype(counts.dtype)
    left = k - budget.sum()
    if left > 0:
        frac = share - np.floor(share)
        order = np.lexsort((rng.random(len(counts)), -frac))
        order = [c for c in order if counts[c] > budget[c]]
        for c in order[:left]:
            budget[c] += 1
    return np.minimum(budget, counts)


def select(model, x: np.ndarray, y: np.ndarray | None, k: int, *, seed: int | None = 0,
           method: str = KCENTER) -> np.ndarray:
    """Indices (sorted) of ``k`` representative rows of ``x``.

    ``method``: "kcenter" (k-center greedy on ``model``'s penultimate-layer
    embeddings, stratified by class when ``y`` holds class labels; ``seed`` only
    breaks ties in the per-class budget) or "random" (a seeded uniform draw,
    stratified the same way). ``y`` None (or real-valued
    regression targets): no stratification.
    """
    if method not in METHODS:
        raise RecipeError(f"unknown coreset method {method!r}",
                          hint=f"Use one of: {', '.join(METHODS)}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise RecipeError(f"coreset size k = {k!r} must be a whole number >= 1")
    n = len(x)
    if n == 0:
        raise DataError("cannot select a coreset from an empty data set")
    k = min(int(k), n)
    rng = np.random.default_rng(0 if seed is None else seed)
    groups = [np.arange(n)]
    budgets = np.asarray([k])
    if y is not None:
        y_arr = np.asarray(y).reshape(len(x), -1)
        if y_arr.shape[1] == 1 and np.all(np.mod(y_arr, 1) == 0):
            labels = y_arr[:, 0].astype(np.int64)
            classes = np.unique(labels)
            groups = [np.flatnonzero(labels == c) for c in classes]
            budgets = _per_class_budget(np.asarray([len(g) for g in groups]), k, rng)
    feats = embed(model, x) if method == KCENTER else None
    picked = []
    for group, b in zip(groups, budgets):
        if b <= 0:
            continue
        if method == RANDOM:
            picked.append(rng.choice(group, size=int(b), replace=False))
        else:
            picked.append(group[kcenter_greedy(feats[group], int(b))])
    return np.sort(np.concatenate(picked)).astype(np.int64)


__all__ = ["select", "kcenter_greedy", "covering_radius", "embed", "embedding_model", "KCENTER", "RANDOM", "METHODS"]
