"""FID statistics files (`.npz` with `mu`, `sigma`: the pytorch-fid / DM-GAN / DF-GAN format) and a cache of the
real split's statistics and features.

Our files add one key, `meta` (a JSON string: extractor, weights sha256, split, N, resize...), which pytorch-fid and
DF-GAN ignore; files without it (theirs) load too. Loading never unpickles (`allow_pickle=False`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from eval.images import list_image_files
from eval.metrics import feature_statistics
from miscc.errors import InputError, MissingFileError, MissingKeyError
from miscc.files import atomic_path


@dataclass
class FIDStatistics:
    mu: np.ndarray
    sigma: np.ndarray
    meta: dict = field(default_factory=dict)
    path: str | None = None


def save_statistics(path: str, mu, sigma, meta: dict | None = None) -> None:
    """Write `np.savez_compressed(mu=, sigma=[, meta=JSON])` atomically (temporary file, then rename)."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(f"{path}: mu must be [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")
    arrays = {"mu": mu, "sigma": sigma}
    if meta:
        arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_statistics(path: str) -> FIDStatistics:
    """Read a statistics `.npz` (ours, pytorch-fid's `--save-stats`, DM-GAN's `bird_val.npz`, DF-GAN's npz)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"FID statistics file not found: {path} (expected an .npz with 'mu' and 'sigma')")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("mu", "sigma") if k not in f.files]
            if missing:
                raise MissingKeyError(f"{path}: FID statistics need keys 'mu' and 'sigma'; missing {missing} "
                               f"(keys present: {sorted(f.files)})")
            mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
            meta = json.loads(str(f["meta"])) if "meta" in f.files else {}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npz of FID statistics ({e})") from e
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(f"{path}: mu must be [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")
    return FIDStatistics(mu, sigma, meta, path)


def statistics_from_features(features, meta: dict | None = None) -> FIDStatistics:
    mu, sigma = feature_statistics(features)
    return FIDStatistics(mu, sigma, dict(meta or {}))


def cache_key(dataset: str, split: str, n: int, resize, extractor_name: str, weights_sha256: str,
              feature: str = "2048", files: list[str] | None = None) -> str:
    """File stem for cached real-set statistics: readable fields plus a hash of everything that changes them
    (including the image file names, so another selection of the same size is another entry)."""
    names = hashlib.sha256("\n".join(os.path.basename(f) for f in files or []).encode()).hexdigest()
    ident = json.dumps({"dataset": dataset, "split": split, "n": n, "resize": resize, "extractor": extractor_name,
                        "sha256": weights_sha256, "feature": feature, "files": names}, sort_keys=True)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{os.path.basename(dataset)}_{split}")
    return f"{safe}_n{n}_r{resize or 'native'}_{digest}"


def real_features(source, extractor, split: str = "custom", n: int | None = None, resize: int | None = None,
                  cache_dir: str | None = None, dataset: str | None = None,
                  feature: str = "2048") -> tuple[torch.Tensor, FIDStatistics]:
    """`feature` outputs (Inception pool3 by default) of real images and their statistics, cached in `cache_dir`
    per (dataset, split, N, file names, resize, extractor weights, feature, dtype).

    `source` is a folder (all its images, sorted, the first `n`) or a list of image files (e.g. a split's files).
    `dataset` names the data in the cache key (default: the folder's real path). The cache holds
    `<key>.npz` (mu, sigma, meta: pytorch-fid-readable) and `<key>_features.npy` (for KID).
    """
    files = list_image_files(source) if isinstance(source, (str, os.PathLike)) else list(map(os.fspath, source))
    if not files:
        raise InputError("real_features: the list of real image files is empty")
    if n is not None:
        if n > len(files):
            raise InputError(f"{source if isinstance(source, str) else 'real image list'}: asked for {n} real "
                             f"images, only {len(files)} available")
        files = files[:n]
    if dataset is None:
        dataset = os.path.realpath(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else \
            os.path.dirname(os.path.realpath(files[0]))
    meta = {"dataset": dataset, "split": split, "n": len(files), "resize": resize, "feature": feature,
            "feature_extractor": extractor.name, "feature_extractor_sha256": extractor.weights_sha256,
            "extractor_resize": extractor.resize_method, "dtype": extractor.dtype_name}
    if cache_dir:
        stem = os.path.join(cache_dir, cache_key(dataset, split, len(files), resize, extractor.name,
                                                 extractor.weights_sha256, feature, files) + f"_{extractor.dtype_name}")
        if os.path.isfile(stem + ".npz") and os.path.isfile(stem + "_features.npy"):
            feats = torch.from_numpy(np.load(stem + "_features.npy", allow_pickle=False))
            return feats, load_statistics(stem + ".npz")
    feats = extractor.extract(files, resize=resize)[feature]
    stats = statistics_from_features(feats, meta)
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        with atomic_path(stem + "_features.npy") as tmp:
            np.save(tmp, feats.numpy())
        save_statistics(stem + ".npz", stats.mu, stats.sigma, meta)
        stats.path = stem + ".npz"
    return feats, stats
