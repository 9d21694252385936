"""The random draws of the datasets: from a torch generator, a numpy generator, or torch's global generator."""
from __future__ import annotations

import numpy as np
import torch


def rand_int(high: int, rng=None) -> int:
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(high))
    return int(torch.randint(high, (1,), generator=rng).item())


def rand_float(rng=None) -> float:
    if isinstance(rng, np.random.Generator):
        return float(rng.random())
    return float(torch.rand(1, generator=rng).item())


def ordered_subset(n: int, k: int, rng=None) -> np.ndarray:
    """`k` of the positions 0..n-1, chosen at random and kept in increasing order (AttnGAN's `get_caption`: a long
    caption keeps a random ordered subset of its words, not its first WORDS_NUM)."""
    if isinstance(rng, np.random.Generator):
        picked = rng.permutation(n)[:k]
    else:
        picked = torch.randperm(n, generator=rng)[:k].numpy()
    return np.sort(picked)
