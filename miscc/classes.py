"""Picking "an index of another class": CLS's wrong image, R-precision's mismatched captions. Written once here for
the datasets (`datasets.TextDataset`, `miscc.reed_hd5`) and the trainers."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from miscc.errors import InputError


def other_class_indices(class_ids: np.ndarray, class_id, where: str) -> np.ndarray:
    """The indices whose class is not `class_id` (InputError naming `where` when there is none)."""
    others = np.flatnonzero(np.asarray(class_ids) != class_id)
    if len(others) == 0:
        raise InputError(f"{where} has no image outside class {class_id}")
    return others


def wrong_indices(class_ids: Sequence, rng: np.random.Generator | None = None,
                  anchors: Sequence[int] | None = None) -> np.ndarray:
    """For each anchor index i (default: all), a uniformly drawn index j with class_ids[j] != class_ids[i].

    This is the CLS "wrong image" pick. It compares class values; the port's `find_wrong_image` compared two h5py
    Dataset objects, which differ by identity, so it could return the same class or even the same photo.
    `class_ids` is any 1-D sequence of comparable labels (ints, decoded str). Raises ValueError when an anchor's
    class covers the whole set.
    """
    ids = np.asarray(class_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise InputError(f"wrong_indices: class_ids must be a non-empty 1-D sequence, got shape {ids.shape}")
    rng = np.random.default_rng() if rng is None else rng
    anchors = np.arange(ids.size) if anchors is None else np.asarray(anchors, dtype=np.int64)
    if anchors.size and (anchors.min() < 0 or anchors.max() >= ids.size):
        raise IndexError(f"wrong_indices: anchors must be in [0, {ids.size}), got {anchors.min()}..{anchors.max()}")
    own = ids[anchors]
    out = rng.integers(0, ids.size, size=anchors.size)
    bad = ids[out] == own
    for _ in range(32):  # rejection sampling: expected tries N / (N - n_class), ~1 for many classes
        if not bad.any():
            return out
        out[bad] = rng.integers(0, ids.size, size=int(bad.sum()))
        bad = ids[out] == own
    for k in np.flatnonzero(bad):  # a dominant class: draw exactly from the other classes
        others = np.flatnonzero(ids != own[k])
        if others.size == 0:
            raise InputError(f"wrong_indices: every example has class '{own[k]}'; CLS needs at least two classes")
        out[k] = others[rng.integers(0, others.size)]
    return out
