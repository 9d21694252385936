"""The Inception path against torch-fidelity itself, with random weights (no pretrained file is needed).

Inception-v3 at 299px and FID's 2048x2048 eigendecomposition are slow on a shared CPU, so the folders are tiny (6
images of 32px), each network pass is done once per module (torch-fidelity's calculate_metrics, ours, the CLI's)
and our FID is computed once, through the CLI, against torch-fidelity's.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from eval.inception import (ENV_WEIGHTS, PYTORCH_FID_FILE, TORCH_FIDELITY_FILE, InceptionExtractor,
                            InceptionWeightsError, random_inception_state_dict, resolve_inception_weights)
from eval.metrics import inception_score, kernel_inception_distance

N = 6
SPLITS = 2  # 10 splits of 6 images would leave splits empty


def _write_folder(folder, seed, shift):
    folder.mkdir()
    rng = np.random.RandomState(seed)
    for i in range(N):
        base = rng.randint(0, 256, size=(1, 1, 3))
        img = np.clip(base + rng.randint(-60, 60, size=(32, 32, 3)) + shift, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img_{i:03d}.png")
    return str(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inception")
    weights = tmp / "random_inception.pth"
    torch.save(random_inception_state_dict(seed=0), weights)
    return {"weights": str(weights), "a": _write_folder(tmp / "a", 1, 0), "b": _write_folder(tmp / "b", 2, 40),
            "tmp": tmp}


@pytest.fixture(scope="module")
def fidelity(setup):
    import torch_fidelity

    return torch_fidelity.calculate_metrics(
        input1=setup["b"], input2=setup["a"], isc=True, fid=True, kid=True, cuda=False, batch_size=64,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=setup["weights"],
        isc_splits=SPLITS, kid_subsets=20, kid_subset_size=N, cache=False, datasets_download=False,
        save_cpu_ram=True, verbose=False)


@pytest.fixture(scope="module")
def ours(setup):
    ex = InceptionExtractor(setup["weights"], ("2048", "logits_unbiased"), device="cpu")
    return ex, ex.extract(setup["b"]), ex.extract(setup["a"])


def test_is_and_kid_equal_torch_fidelity(fidelity, ours):
    _, fb, fa = ours  # FID: see the CLI test below (one 2048x2048 eigendecomposition costs ~10 s here)
    mean, std = inception_score(logits=fb["logits_unbiased"], splits=SPLITS)
    assert mean == pytest.approx(fidelity["inception_score_mean"], rel=1e-6)
    assert std == pytest.approx(fidelity["inception_score_std"], rel=1e-5, abs=1e-9)
    assert mean > 1.05  # the random weights give non-degenerate class probabilities
    kid_mean, kid_std = kernel_inception_distance(fb["2048"], fa["2048"], subsets=20, subset_size=N)
    assert kid_mean == pytest.approx(fidelity["kernel_inception_distance_mean"], rel=1e-5)
    assert kid_std == pytest.approx(fidelity["kernel_inception_distance_std"], rel=1e-4)


def test_float_input_is_converted_like_uint8(ours, setup):
    ex, fb, _ = ours
    from eval.images import list_image_files, load_image_uint8

    u8 = torch.stack([load_image_uint8(p) for p in list_image_files(setup["b"])[:2]])
    as_float = u8.float() / 127.5 - 1.0  # round trips exactly through clamp(round((x + 1) * 127.5))
    out = ex(as_float)
    assert torch.allclose(out["2048"], fb["2048"][:2], rtol=1e-5, atol=1e-6)
    assert ex.weights_sha256 and len(ex.weights_sha256) == 64


def test_cli_fid_against_stats_file_equals_torch_fidelity(setup, fidelity, ours, tmp_path):
    """Folder reading, extraction, .npz statistics and the FID formula together give torch-fidelity's FID."""
    from eval.evaluate import main
    from eval.fid_stats import save_statistics, statistics_from_features

    a_stats = statistics_from_features(ours[2]["2048"])
    stats = tmp_path / "a_stats.npz"
    save_statistics(str(stats), a_stats.mu, a_stats.sigma)
    out = tmp_path / "results.jsonl"
    results = main(["--images", setup["b"], "--protocols", f"fid{N}", "--real", str(stats), "--inception",
                    setup["weights"], "--device", "cpu", "--out", str(out), "--checkpoint", "netG_epoch_1.pth"])
    assert results[0]["value"] == pytest.approx(fidelity["frechet_inception_distance"], rel=1e-6)
    assert results[0]["value"] > 1.0  # the two folders really differ
    record = json.loads(out.read_text().splitlines()[-1])
    assert record["feature_extractor"] == "inception-v3-compat"
    assert record["real_statistics"] == os.path.abspath(stats)
    assert record["checkpoint"] == "netG_epoch_1.pth" and record["n"] == N


def test_cli_save_stats_writes_pytorch_fid_npz(setup, tmp_path):
    from eval.evaluate import main
    from eval.images import list_image_files

    two = tmp_path / "two"
    two.mkdir()
    for p in list_image_files(setup["a"])[:2]:
        (two / os.path.basename(p)).write_bytes(open(p, "rb").read())
    stats = tmp_path / "two.npz"
    main(["--images", str(two), "--save_stats", str(stats), "--inception", setup["weights"], "--device", "cpu"])
    with np.load(stats, allow_pickle=False) as f:  # pytorch-fid's reader needs just these two keys
        assert f["mu"].shape == (2048,) and f["sigma"].shape == (2048, 2048)
        meta = json.loads(str(f["meta"]))
    assert meta["n"] == 2 and meta["feature_extractor"] == "inception-v3-compat" and len(meta[
        "feature_extractor_sha256"]) == 64


def test_missing_weights_error_names_both_files(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    with pytest.raises(InceptionWeightsError) as e:
        resolve_inception_weights(None)
    msg = str(e.value)
    assert TORCH_FIDELITY_FILE in msg and PYTORCH_FID_FILE in msg and ENV_WEIGHTS in msg
    assert "loads as is" in msg
    missing = tmp_path / "nowhere.pth"
    monkeypatch.setenv(ENV_WEIGHTS, str(missing))
    with pytest.raises(InceptionWeightsError, match="nowhere.pth"):
        InceptionExtractor()


def test_env_var_is_used(monkeypatch, setup):
    monkeypatch.setenv(ENV_WEIGHTS, setup["weights"])
    assert resolve_inception_weights(None) == setup["weights"]


def test_pytorch_fid_layout_loads_and_wrong_file_is_refused(tmp_path):
    from pytorch_fid import inception as pf

    # pytorch-fid's fid_inception_v3() module tree, without its download
    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    for name, block in [("Mixed_5b", pf.FIDInceptionA(192, 32)), ("Mixed_6b", pf.FIDInceptionC(768, 128)),
                        ("Mixed_7b", pf.FIDInceptionE_1(1280)), ("Mixed_7c", pf.FIDInceptionE_2(2048))]:
        setattr(net, name, block)
    path = tmp_path / PYTORCH_FID_FILE
    torch.save(net.state_dict(), path)
    ex = InceptionExtractor(str(path), ("2048",), device="cpu")
    assert ex.weights_path == str(path)

    bad = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(InceptionWeightsError, match="resnet.pth.*does not fit"):
        InceptionExtractor(str(bad), ("2048",), device="cpu")
