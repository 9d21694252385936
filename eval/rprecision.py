"""R-precision (AttnGAN paper; DM-GAN `code/trainer.py` sampling branch) over any pair of image/text encoders.

For each generated image, its caption's text code and 99 mismatched captions' codes are ranked by cosine similarity
to the image code; a hit is the true caption ranking first (`argmax == 0`: ties go to the true caption, as in
DM-GAN). Hits are shuffled (seeded) and cut into `folds`; the result is the mean and population std of the fold hit
rates, in percent, as the papers report them (67.82 +- 4.43). DM-GAN averaged `R[i*3000:(i+1)*3000-1]`, dropping the
last sample of every fold; here every sample counts (fold i is `[i*N//folds, (i+1)*N//folds)`).
With DAMSM encoders this is the AttnGAN/DM-GAN number; with CLIP encoders it is CLIP-R-precision (Park et al. 2021).
"""
from __future__ import annotations

import numpy as np
import torch


def retrieval_hits(image_codes, true_text_codes, mismatched_text_codes) -> torch.Tensor:
    """bool [N]: the true caption has the highest cosine among [true, mismatched...] (first index wins ties)."""
    img = torch.as_tensor(image_codes).float()
    true = torch.as_tensor(true_text_codes).float()
    mis = torch.as_tensor(mismatched_text_codes).float()
    if img.dim() != 2 or true.shape != img.shape:
        raise ValueError(f"r_precision: image codes [N, D] and true text codes [N, D] must match, got "
                         f"{tuple(img.shape)} and {tuple(true.shape)}")
    if mis.dim() != 3 or mis.shape[0] != img.shape[0] or mis.shape[2] != img.shape[1]:
        raise ValueError(f"r_precision: mismatched text codes must be [N, K, D] = [{img.shape[0]}, K, "
                         f"{img.shape[1]}], got {tuple(mis.shape)}")
    texts = torch.cat([true.unsqueeze(1), mis], 1)  # [N, 1 + K, D]
    # DM-GAN: scores / (|img| |txt|).clamp(min=1e-8)
    scores = torch.einsum("nd,nkd->nk", img, texts)
    norms = img.norm(dim=1, keepdim=True) * texts.norm(dim=2)
    cos = scores / norms.clamp(min=1e-8)
    return cos.argmax(dim=1) == 0


def fold_scores(hits, folds: int = 10, seed: int = 0) -> tuple[float, float]:
    """(mean, std) in percent of the hit rate over `folds` folds of the seeded-shuffled hits."""
    hits = np.asarray(hits, dtype=np.float64).reshape(-1)
    n = hits.shape[0]
    if folds < 1 or n < folds:
        raise ValueError(f"r_precision: {n} samples cannot be cut into {folds} folds")
    hits = hits[np.random.RandomState(seed).permutation(n)]
    rates = [hits[i * n // folds:(i + 1) * n // folds].mean() for i in range(folds)]
    return 100.0 * float(np.mean(rates)), 100.0 * float(np.std(rates))


def r_precision(image_codes, true_text_codes, mismatched_text_codes, folds: int = 10,
                seed: int = 0) -> tuple[float, float]:
    """Top-1 R-precision (mean, std) in percent; codes [N, D], [N, D], [N, K, D] (K = 99 in the protocol)."""
    return fold_scores(retrieval_hits(image_codes, true_text_codes, mismatched_text_codes).numpy(), folds, seed)


def draw_mismatched(captions: list[str], k: int = 99, class_ids=None, seed: int = 0) -> np.ndarray:
    """int [N, k]: for each sample, k other samples whose caption text differs (and, given `class_ids`, whose
    class differs, as DM-GAN's `get_mis_caption` draws from other classes). Drawn with replacement, seeded."""
    n = len(captions)
    _, caption_ids = np.unique(np.asarray(captions, dtype=object).astype(str), return_inverse=True)
    classes = None if class_ids is None else np.asarray(class_ids).reshape(-1)
    if classes is not None and classes.shape[0] != n:
        raise ValueError(f"draw_mismatched: {classes.shape[0]} class ids for {n} captions")
    rng = np.random.RandomState(seed)
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        ok = caption_ids != caption_ids[i]
        if classes is not None:
            ok &= classes != classes[i]
        candidates = np.flatnonzero(ok)
        if candidates.size == 0:
            raise ValueError(f"draw_mismatched: sample {i} ({captions[i]!r}) has no mismatched caption to draw "
                             "(all others share its caption text or class)")
        out[i] = rng.choice(candidates, size=k, replace=True)
    return out


def r_precision_from_pool(image_codes, text_codes, captions: list[str], k: int = 99, class_ids=None,
                          folds: int = 10, seed: int = 0) -> tuple[float, float]:
    """R-precision where the mismatched captions are other samples' captions (codes reused, none re-encoded)."""
    text = torch.as_tensor(text_codes).float()
    idx = torch.from_numpy(draw_mismatched(captions, k, class_ids, seed))
    return r_precision(image_codes, text, text[idx], folds, seed)
