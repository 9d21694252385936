"""FID, IS and KID maths on features, with torch-fidelity's own functions wherever it has one.

- `fid_from_features` / `fid_from_statistics`: torch-fidelity's `fid_statistics_to_metric` (TTUR formula with the
  trace of the matrix square root from eigenvalues), so numbers equal `torch_fidelity.calculate_metrics(fid=True)`.
- `frechet_distance`: pytorch-fid's `calculate_frechet_distance` formula (scipy `sqrtm`, `eps * I` retry when the
  product is singular, error on a large imaginary part), for pytorch-fid/DM-GAN/DF-GAN `.npz` statistics. The two
  agree to ~1e-6 relative on well-conditioned covariances.
- `inception_score`: torch-fidelity's `isc_features_to_metric` on logits (10 splits of `i*N//splits`, RandomState
  shuffle, population std); probabilities take an equivalent path with `xlogy` so exact zeros are allowed.
- `kernel_inception_distance`: torch-fidelity's `kid_features_to_metric` (unbiased MMD^2, cubic polynomial kernel,
  `subsets` seeded subsets without replacement of `min(1000, N)` samples).
The default seed 2020 is torch-fidelity's `rng_seed` default.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

FIDELITY_SEED = 2020


def _as_tensor(features, name: str) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features).detach().cpu()
    if f.dim() != 2 or f.shape[0] == 0:
        raise ValueError(f"{name}: expected a 2-D [N, D] array of features, got shape {tuple(f.shape)}")
    return f


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mu [D], sigma [D, D]) as float64 arrays, by torch-fidelity's `fid_features_to_statistics`.

    As there, the mean is taken in the features' own dtype (float32 for our extractors) and `np.cov(rowvar=False)`
    works in float64, so the numbers equal torch-fidelity's bit for bit.
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics

    f = _as_tensor(features, "features")
    if f.shape[0] < 2:
        raise ValueError(f"FID statistics need at least 2 samples, got {f.shape[0]}")
    stats = fid_features_to_statistics(f)
    return stats["mu"].astype(np.float64), stats["sigma"].astype(np.float64)


def _check_stats(mu1, sigma1, mu2, sigma2):
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mean vectors have different or wrong shapes: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"covariances {sigma1.shape} / {sigma2.shape} do not match the mean dimension {mu1.shape}")
    return mu1, sigma1, mu2, sigma2


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)), as pytorch-fid computes it.

    When `sqrtm` gives non-finite values (singular product), `eps * I` is added to both covariances and it is
    retried; an imaginary part above 1e-3 on the diagonal raises ValueError, a smaller one is dropped.
    """
    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
    """FID by torch-fidelity's `fid_statistics_to_metric` (trace of sqrt from eigenvalues), in float64."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    out = fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2}, verbose=False)
    return out[KEY_METRIC_FID]


def fid_from_features(features1, features2) -> float:
    """FID between two feature sets [N1, D], [N2, D] (torch-fidelity numbers)."""
    return fid_from_statistics(*feature_statistics(features1), *feature_statistics(features2))


def _check_splits(n: int, splits: int, what: str):
    if splits < 1 or n < splits:
        raise ValueError(f"{what}: {n} samples cannot be cut into {splits} splits (need N >= splits >= 1)")


def inception_score(logits=None, probs=None, splits: int = 10, shuffle: bool = True,
                    seed: int = FIDELITY_SEED) -> tuple[float, float]:
    """(mean, std) of exp(E_x KL(p(y|x) || p(y))) over `splits` chunks; pass classifier `logits` or `probs` [N, C].

    Logits go through torch-fidelity's `isc_features_to_metric` (float64 softmax). Probabilities (rows summing to
    1, zeros allowed) are shuffled and split identically and use 0 log 0 = 0; for `probs = softmax(logits)` both
    give the same number. std is the population std over the splits (np.std), as in torch-fidelity.
    """
    if (logits is None) == (probs is None):
        raise ValueError("inception_score: pass exactly one of logits= or probs=")
    if logits is not None:
        from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

        f = _as_tensor(logits, "logits")
        _check_splits(f.shape[0], splits, "inception_score")
        out = isc_features_to_metric(f, splits=splits, shuffle=shuffle, rng_seed=seed)
        return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]
    p = _as_tensor(probs, "probs").double()
    n = p.shape[0]
    _check_splits(n, splits, "inception_score")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(n, dtype=p.dtype), atol=1e-4):
        raise ValueError("inception_score: probs must be non-negative rows that sum to 1")
    if shuffle:
        p = p[np.random.RandomState(seed).permutation(n)]
    scores = []
    for i in range(splits):
        chunk = p[i * n // splits:(i + 1) * n // splits]
        q = chunk.mean(0, keepdim=True)
        kl = (torch.special.xlogy(chunk, chunk) - torch.special.xlogy(chunk, q.expand_as(chunk))).sum(1)
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def kernel_inception_distance(features1, features2, subsets: int = 100, subset_size: int | None = None,
                              degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
                              seed: int = FIDELITY_SEED) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 with kernel (gamma <x,y> + coef0)^degree over seeded random subsets.

    `subset_size` defaults to min(1000, N1, N2) (torch-fidelity asserts N >= subset_size instead); gamma defaults to
    1/D. Numbers equal torch-fidelity's KID with the same subsets, subset size and seed.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    f1, f2 = _as_tensor(features1, "features1").float(), _as_tensor(features2, "features2").float()
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"KID: feature dimensions differ ({f1.shape[1]} vs {f2.shape[1]})")
    if subset_size is None:
        subset_size = min(1000, f1.shape[0], f2.shape[0])
    if subset_size < 2 or subset_size > min(f1.shape[0], f2.shape[0]):
        raise ValueError(f"KID: subset_size {subset_size} must be in [2, min(N1={f1.shape[0]}, N2={f2.shape[0]})]")
    out = kid_features_to_metric(
        f1, f2, kid_subsets=subsets, kid_subset_size=subset_size, kid_kernel="poly", kid_kernel_poly_degree=degree,
        kid_kernel_poly_gamma=gamma, kid_kernel_poly_coef0=coef0, rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]
