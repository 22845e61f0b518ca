"""Deterministic stratified 70/15/15 split."""

from __future__ import annotations

import random
from collections.abc import Sequence

TRAIN_FRACTION = 0.70
VAL_FRACTION = 0.15


def stratified_split(labels: Sequence[int], seed: int) -> tuple[list[int], list[int], list[int]]:
    """Indices of (train, val, test): each class is cut 70/15/15 separately, so every split keeps
    the class balance of the whole set; each split is then shuffled so classes interleave."""
    rng = random.Random(f"split-{seed}")
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for label in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(idx)
        n_train = round(TRAIN_FRACTION * len(idx))
        n_val = round(VAL_FRACTION * len(idx))
        train += idx[:n_train]
        val += idx[n_train : n_train + n_val]
        test += idx[n_train + n_val :]
    for part in (train, val, test):
        rng.shuffle(part)
    return train, val, test
