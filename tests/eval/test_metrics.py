"""Metric maths: FID/IS/KID against pytorch-fid, torch-fidelity and closed forms; R-precision; stats files."""
import numpy as np
import pytest
import torch

from eval.fid_stats import load_statistics, save_statistics, statistics_from_features
from eval.images import to_uint8
from eval.metrics import (feature_statistics, fid_from_features, fid_from_statistics, frechet_distance,
                          inception_score, kernel_inception_distance)
from eval.rprecision import draw_mismatched, fold_scores, r_precision, r_precision_from_pool, retrieval_hits


def _gauss(n, d, seed, scale=1.0, shift=0.0):
    rng = np.random.RandomState(seed)
    a = rng.randn(d, d) / np.sqrt(d)
    return (rng.randn(n, d) @ a * scale + shift).astype(np.float32)


def test_frechet_distance_equals_pytorch_fid_and_torch_fidelity():
    from pytorch_fid.fid_score import calculate_frechet_distance

    m1, s1 = feature_statistics(_gauss(400, 32, 0))
    m2, s2 = feature_statistics(_gauss(300, 32, 1, scale=1.3, shift=0.2))
    ours = frechet_distance(m1, s1, m2, s2)
    assert ours == pytest.approx(calculate_frechet_distance(m1, s1, m2, s2), rel=1e-6)
    assert fid_from_statistics(m1, s1, m2, s2) == pytest.approx(ours, rel=1e-6)
    assert ours > 1.0


def test_frechet_distance_singular_covariance_uses_eps_like_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    f1, f2 = _gauss(5, 16, 2), _gauss(6, 16, 3, shift=0.5)  # N < D: singular covariances
    m1, s1 = feature_statistics(f1)
    m2, s2 = feature_statistics(f2)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(calculate_frechet_distance(m1, s1, m2, s2), rel=1e-6)


def test_fid_closed_form_and_identity():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1.0 + 4.0 + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    assert fid_from_statistics(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    x = _gauss(200, 16, 4)
    assert abs(fid_from_features(x, x)) < 1e-6
    assert abs(frechet_distance(*feature_statistics(x), *feature_statistics(x))) < 1e-6


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_inception_score_one_hot_and_identical_rows():
    k = 7
    one_hot = torch.eye(k).repeat(10, 1)  # 70 samples, classes uniform
    assert inception_score(probs=one_hot, splits=1)[0] == pytest.approx(k, rel=1e-9)
    mean, std = inception_score(probs=one_hot, splits=10, shuffle=False)  # each split holds every class once
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    same = torch.tensor([[0.2, 0.5, 0.3]]).repeat(50, 1)
    assert inception_score(probs=same)[0] == pytest.approx(1.0, abs=1e-12)
    assert inception_score(logits=torch.randn(1, 9).repeat(40, 1))[0] == pytest.approx(1.0, abs=1e-9)


def test_inception_score_logits_and_probs_agree_and_follow_torch_fidelity():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.randn(103, 12, generator=torch.Generator().manual_seed(0)) * 3
    mean, std = inception_score(logits=logits)
    ref = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert (mean, std) == (ref["inception_score_mean"], ref["inception_score_std"])
    pm, ps = inception_score(probs=logits.double().softmax(1))
    assert pm == pytest.approx(mean, rel=1e-9) and ps == pytest.approx(std, rel=1e-6)
    assert inception_score(logits=logits, seed=1)[0] != mean  # the seed picks the splits


def test_inception_score_errors():
    with pytest.raises(ValueError, match="5 samples cannot be cut into 10 splits"):
        inception_score(logits=torch.randn(5, 3))
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(probs=torch.rand(20, 3) + 1)
    with pytest.raises(ValueError, match="exactly one"):
        inception_score()


def test_kid_same_distribution_near_zero_and_matches_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    x, y, z = _gauss(300, 16, 5), _gauss(300, 16, 6), _gauss(300, 16, 7, shift=0.7)
    # same underlying distribution (same mixing matrix seed, different draws)
    rng = np.random.RandomState(8)
    a = rng.randn(16, 16) / 4
    p, q = (rng.randn(300, 16) @ a).astype(np.float32), (rng.randn(300, 16) @ a).astype(np.float32)
    same, _ = kernel_inception_distance(p, q, subsets=50, subset_size=100)
    diff, _ = kernel_inception_distance(x, z, subsets=50, subset_size=100)
    assert abs(same) < 0.02 and diff > 10 * abs(same)
    ours = kernel_inception_distance(torch.from_numpy(x), torch.from_numpy(y), subsets=10, subset_size=50)
    ref = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=10, kid_subset_size=50,
                                 verbose=False)
    assert ours == (ref["kernel_inception_distance_mean"], ref["kernel_inception_distance_std"])
    assert kernel_inception_distance(x[:40], y)[0] == kernel_inception_distance(x[:40], y, subset_size=40)[0]
    with pytest.raises(ValueError, match="subset_size 500"):
        kernel_inception_distance(x, y, subset_size=500)


def test_r_precision_identical_random_and_ties():
    g = torch.Generator().manual_seed(0)
    n, d = 2000, 32
    codes = torch.randn(n, d, generator=g)
    assert r_precision(codes, codes, torch.randn(n, 99, d, generator=g)) == (100.0, 0.0)
    mean, std = r_precision(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g),
                            torch.randn(n, 99, d, generator=g))
    assert 0.3 < mean < 2.0 and std > 0  # chance is 1 in 100
    tie = codes[:, None, :].repeat(1, 99, 1)  # every mismatched caption encodes like the true one
    assert retrieval_hits(codes, codes, tie).all()  # DM-GAN's argmax == 0: ties go to the true caption


def test_fold_scores_use_every_sample():
    hits = np.zeros(100)
    hits[::7] = 1  # 15 hits
    # equal folds that cover every sample average to the overall hit rate; DM-GAN's [i*10:(i+1)*10-1] slices
    # average 9 of every 10 samples instead
    for seed in range(5):
        assert fold_scores(hits, folds=10, seed=seed)[0] == pytest.approx(15.0)
    assert fold_scores(np.ones(103), folds=10) == (100.0, 0.0)  # N not divisible by the folds
    with pytest.raises(ValueError, match="folds"):
        fold_scores(np.ones(5), folds=10)


def test_draw_mismatched_excludes_same_caption_and_class():
    caps = ["a", "b", "a", "c", "d", "b"]
    classes = [1, 1, 2, 2, 3, 3]
    idx = draw_mismatched(caps, k=50, class_ids=classes, seed=0)
    for i in range(len(caps)):
        assert all(caps[j] != caps[i] and classes[j] != classes[i] for j in idx[i])
    with pytest.raises(ValueError, match="no mismatched caption"):
        draw_mismatched(["same", "same"], k=3)
    codes = torch.randn(6, 8)
    assert r_precision_from_pool(codes, codes, caps, k=20, folds=2) == (100.0, 0.0)


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    got = to_uint8(x)[0, 0, 0].tolist()
    assert got == [0, 0, 0, 128, 191, 255, 255]  # 127.5 -> 128 (half to even), 0.5 -> 191.25 -> 191
    u = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(to_uint8(u.float() / 127.5 - 1), u)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        to_uint8(torch.zeros(2, 1, 4, 4))


def test_statistics_file_round_trip_and_foreign_files(tmp_path):
    feats = _gauss(50, 8, 9)
    stats = statistics_from_features(feats, {"split": "test", "n": 50})
    path = tmp_path / "ours.npz"
    save_statistics(str(path), stats.mu, stats.sigma, stats.meta)
    back = load_statistics(str(path))
    assert np.array_equal(back.mu, stats.mu) and np.array_equal(back.sigma, stats.sigma)
    assert back.meta == {"split": "test", "n": 50}
    # pytorch-fid --save-stats / DM-GAN bird_val.npz: just mu and sigma (float32 here)
    theirs = tmp_path / "theirs.npz"
    np.savez_compressed(theirs, mu=stats.mu.astype(np.float32), sigma=stats.sigma.astype(np.float32))
    assert load_statistics(str(theirs)).meta == {}
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=stats.mu)
    with pytest.raises(KeyError, match="missing \\['mu', 'sigma'\\]"):
        load_statistics(str(bad))
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load_statistics(str(tmp_path / "nothing.npz"))
