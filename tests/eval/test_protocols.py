"""Protocol names, run_protocols over an abstract sample source, JSONL provenance, real-set cache and reports.

A tiny random conv net stands in for the Inception (same FeatureExtractor plumbing), so this runs in seconds.
"""
import datetime
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from eval.classifier import (CELL_PREFIX, DatasetClassifier, classifier_extractor, predict_logits, save_classifier,
                             score_attributes)
from eval.images import to_uint8
from eval.inception import FeatureExtractor
from eval.metrics import fid_from_features, inception_score, kernel_inception_distance
from eval import protocols
from eval.protocols import (PROTOCOLS, EvalContext, SampleBatch, build_eval_context, parse_protocol, parse_protocols,
                            run_protocols)
from eval.report import read_jsonl, save_caption_grid, write_report
from eval.rprecision import r_precision, r_precision_from_pool
from miscc.errors import InputError

N = 24
COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]
POSITIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]


class Tiny(nn.Module):
    """uint8 images -> ("2048": [B, 8], "logits_unbiased": [B, 5])."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = self.conv((x.float() - 128) / 128).relu().mean((2, 3))
        return h, self.fc(h) * 5


def tiny_extractor():
    return FeatureExtractor(Tiny(), ("2048", "logits_unbiased"), "tiny", weights_sha256="ab" * 32,
                            resize_method="none", device="cpu")


def fake_images(n, seed):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def caption(i):
    return f"a {COLORS[i % 6]} {SHAPES[i % 3]} {'at the top' if i % 2 else 'in the middle'}"


def make_source(n_available=N, with_codes=True):
    images = fake_images(n_available, 1)
    gen = torch.Generator().manual_seed(2)
    codes = torch.randn(n_available, 6, generator=gen)
    image_codes = codes + 0.8 * torch.randn(n_available, 6, generator=gen)

    def sample(n, batch_size):
        for s in range(0, min(n, n_available), batch_size):
            e = min(s + batch_size, n_available)
            extra = {"class_ids": torch.arange(s, e) % 4}
            if with_codes:
                extra.update(image_codes=image_codes[s:e], text_codes=codes[s:e])
            yield SampleBatch(images[s:e], [caption(i) for i in range(s, e)], [f"k{i}" for i in range(s, e)], extra)

    sample.images, sample.codes, sample.image_codes = images, codes, image_codes
    return sample


@pytest.fixture
def real_folder(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    rng = np.random.RandomState(3)
    for i in range(30):
        Image.fromarray(rng.randint(0, 200, (16, 16, 3)).astype(np.uint8)).save(folder / f"r{i:02d}.png")
    return str(folder)


@pytest.fixture
def classifier_path(tmp_path):
    contents = ["empty"] + [f"{c} {s}" for s in SHAPES for c in COLORS]
    heads = {"class": [str(i) for i in range(1, 19)], **{CELL_PREFIX + p: contents for p in POSITIONS}}
    torch.manual_seed(0)
    path = str(tmp_path / "cls.pth")
    save_classifier(DatasetClassifier(heads, image_size=16, width=4, depth=2), path)
    return path


def test_protocol_names():
    assert parse_protocol("fid30k").n == 30000 and parse_protocol("fid30k").metric == "fid"
    assert parse_protocol("fid500").n == 500
    isc = parse_protocol("isc_cls30k")
    assert (isc.metric, isc.n, isc.extractor) == ("is", 30000, "classifier")
    assert parse_protocol("fid1k").extractor == "inception" and parse_protocol("rprec1k").extractor is None
    assert (parse_protocol("kid500_cls").metric, parse_protocol("kid500_cls").extractor) == ("kid", "classifier")
    assert parse_protocol(" KID1K ").name == "kid1k"
    assert parse_protocol("cliprprec2k").n == 2000
    for name in ("fid30k", "kid30k", "is30k", "isc_cls30k", "rprec30k", "clip30k", "attracc1k", "fid1k", "is1k"):
        assert name in PROTOCOLS
    assert [p.name for p in parse_protocols("fid1k, is1k,fid1k,is1k_cls,isc_cls1k")] == ["fid1k", "is1k", "is1k_cls"]
    for bad in ("fid", "fidk", "foo1k", "fid-1k", "fid1m", "1kfid", "rprec1k_cls", "isc_cls1k_cls", "fid_cls1k"):
        with pytest.raises(ValueError, match="unknown protocol"):
            parse_protocol(bad)
    with pytest.raises(ValueError, match="is needs at least 10 samples"):
        parse_protocol("is5")
    with pytest.raises(ValueError, match="no protocols"):
        parse_protocols("")


def test_run_protocols_values_and_provenance(tmp_path, real_folder, classifier_path):
    ex = tiny_extractor()
    source = make_source()
    jsonl = tmp_path / "results.jsonl"
    grid = tmp_path / "grid.png"
    ctx = EvalContext(extractor=ex, real=real_folder, real_split="test", cache_dir=str(tmp_path / "cache"),
                      classifier=classifier_path, batch_size=10, checkpoint="netG_epoch_5.pth",
                      config="cfg/shapes.yml", jsonl=str(jsonl), grid_png=str(grid), grid_n=6, device="cpu")
    names = [f"fid{N}", f"kid{N}", f"is{N}", f"rprec{N}", f"isc_cls{N}", f"attracc{N}", "fid12", f"fid{N}_cls"]
    results = run_protocols(names, source, ctx)
    by = {r["protocol"]: r for r in results}

    gen = ex.extract(source.images)
    real = ex.extract(real_folder)
    assert by[f"fid{N}"]["value"] == pytest.approx(fid_from_features(gen["2048"], real["2048"]), rel=1e-9)
    assert by["fid12"]["value"] == pytest.approx(fid_from_features(gen["2048"][:12], real["2048"]), rel=1e-9)
    assert (by[f"kid{N}"]["value"], by[f"kid{N}"]["std"]) == kernel_inception_distance(
        gen["2048"], real["2048"], subsets=100, subset_size=N)
    assert (by[f"is{N}"]["value"], by[f"is{N}"]["std"]) == inception_score(logits=gen["logits_unbiased"])
    captions = [caption(i) for i in range(N)]
    expected_rprec = r_precision_from_pool(source.image_codes, source.codes, captions, 99,
                                           [i % 4 for i in range(N)], 10, 0)
    assert (by[f"rprec{N}"]["value"], by[f"rprec{N}"]["std"]) == expected_rprec
    assert 0 < expected_rprec[0] < 100  # noisy image codes: neither all hits nor none
    assert by[f"rprec{N}"]["mismatched"] == "other samples' captions of other classes"
    from eval.classifier import load_classifier

    model = load_classifier(classifier_path)
    images_u8 = to_uint8(source.images)  # every metric sees the images as saved PNGs would hold them
    logits = predict_logits(model, images_u8, batch_size=10)  # the batches run_protocols used
    assert (by[f"isc_cls{N}"]["value"], by[f"isc_cls{N}"]["std"]) == inception_score(logits=logits["class"])
    cls_ex = classifier_extractor(model, "cpu", batch_size=10)
    assert by[f"fid{N}_cls"]["value"] == pytest.approx(fid_from_features(
        cls_ex.extract(images_u8)["pooled"], cls_ex.extract(real_folder)["pooled"]), rel=1e-9)
    assert by[f"fid{N}_cls"]["feature_extractor"] == "dataset-classifier"
    assert by[f"fid{N}_cls"]["real_statistics"] != by[f"fid{N}"]["real_statistics"]
    expected = score_attributes(model, logits, captions)
    assert by[f"attracc{N}"]["value"] == expected["value"]
    assert by[f"attracc{N}"]["details"]["n"] == N

    lines = read_jsonl(str(jsonl))
    assert [r["protocol"] for r in lines] == [p.lower() for p in names]
    for r in lines:
        for key in ("metric", "value", "n", "seed", "feature_extractor", "feature_extractor_sha256", "checkpoint",
                    "config", "time", "device", "torch", "torch_fidelity", "samples_grid"):
            assert key in r, key
        assert datetime.datetime.fromisoformat(r["time"]).tzinfo is not None
    fid = by[f"fid{N}"]
    assert fid["real"] == os.path.abspath(real_folder) and fid["real_split"] == "test" and fid["real_n"] == 30
    assert fid["feature_extractor_sha256"] == "ab" * 32 and fid["resize"] == "none"
    assert os.path.isfile(fid["real_statistics"]) and fid["real_statistics"].endswith(".npz")
    assert by[f"is{N}"]["seed"] == 2020 and by[f"is{N}"]["splits"] == 10
    assert by[f"rprec{N}"]["folds"] == 10 and by[f"rprec{N}"]["seed"] == 0
    assert by[f"isc_cls{N}"]["feature_extractor_weights"] == classifier_path
    assert Image.open(grid).size[0] > 4 * 16

    report = tmp_path / "report.md"
    write_report(str(jsonl), str(report))
    text = report.read_text()
    assert f"| fid{N} |" in text and f"| attracc{N} |" in text and "netG_epoch_5.pth" in text
    assert "(grid.png)" in text


def test_real_statistics_cache_is_reused(tmp_path, real_folder):
    ctx = EvalContext(extractor=tiny_extractor(), real=real_folder, real_n=20, cache_dir=str(tmp_path / "c"),
                      device="cpu", batch_size=8)
    first = run_protocols(["fid20"], make_source(), ctx)[0]
    stamp = os.stat(first["real_statistics"]).st_mtime_ns
    second = run_protocols(["fid20"], make_source(), ctx)[0]
    assert second["real_statistics"] == first["real_statistics"]
    assert os.stat(first["real_statistics"]).st_mtime_ns == stamp
    assert second["value"] == first["value"] and first["real_n"] == 20
    ctx.real_n = 25  # another N is another cache entry
    assert run_protocols(["fid20"], make_source(), ctx)[0]["real_statistics"] != first["real_statistics"]


def test_rprec_with_caller_mismatched_captions_and_codes():
    source = make_source()
    batches = list(source(N, 8))
    image_codes = torch.cat([b.extra["image_codes"] for b in batches])
    text_codes = torch.cat([b.extra["text_codes"] for b in batches])
    vocab = {caption(i): source.codes[i] for i in range(N)}

    def mismatched(captions, keys, extra):
        return [[caption((int(k[1:]) + 1 + j) % N) for j in range(99)] for k in keys]

    def replay(n, batch_size):
        yield from batches

    ctx = EvalContext(text_encoder=lambda caps: torch.stack([vocab[c] for c in caps]), mismatched_captions=mismatched,
                      device="cpu", batch_size=8)
    result = run_protocols([f"rprec{N}"], replay, ctx)[0]
    mis = torch.stack([torch.stack([vocab[c] for c in m]) for m in mismatched(None, [f"k{i}" for i in range(N)],
                                                                              None)])
    assert (result["value"], result["std"]) == r_precision(image_codes, text_codes, mis, folds=10, seed=0)
    assert result["mismatched"] == "caller-supplied captions/codes"


def test_protocol_errors(tmp_path, real_folder):
    ex = tiny_extractor()
    with pytest.raises(ValueError, match="fid100 need up to 100 samples; the source gave only 24"):
        run_protocols(["fid100"], make_source(), EvalContext(extractor=ex, real=real_folder, device="cpu"))
    npz = tmp_path / "s.npz"
    np.savez(npz, mu=np.zeros(8), sigma=np.eye(8))
    with pytest.raises(ValueError, match="kid needs real features"):
        run_protocols(["kid10"], make_source(), EvalContext(extractor=ex, real=str(npz), device="cpu"))
    with pytest.raises(ValueError, match="need real images"):
        run_protocols(["fid10"], make_source(), EvalContext(extractor=ex, device="cpu"))
    with pytest.raises(ValueError, match="dataset classifier"):
        run_protocols(["attracc10"], make_source(), EvalContext(device="cpu"))
    with pytest.raises(ValueError, match="rprec needs image codes"):
        run_protocols(["rprec10"], make_source(with_codes=False), EvalContext(device="cpu"))

    def no_captions(n, batch_size):
        yield fake_images(n, 0)

    with pytest.raises(ValueError, match="need one caption per sample"):
        run_protocols(["rprec10"], no_captions, EvalContext(device="cpu"))


def test_fid_against_foreign_stats_file(tmp_path, real_folder):
    ex = tiny_extractor()
    real = ex.extract(real_folder)["2048"].double().numpy()
    npz = tmp_path / "bird_val.npz"  # DM-GAN style: mu and sigma only
    np.savez_compressed(npz, mu=real.mean(0), sigma=np.cov(real, rowvar=False))
    result = run_protocols(["fid20"], make_source(), EvalContext(extractor=ex, real=str(npz), device="cpu"))[0]
    gen = ex.extract(make_source().images[:20])["2048"]
    assert result["value"] == pytest.approx(fid_from_features(gen, ex.extract(real_folder)["2048"]), rel=1e-5)
    assert result["real_statistics"] == os.path.abspath(npz)
    from eval.fid_stats import save_statistics

    other = tmp_path / "other.npz"  # ours, written with another extractor
    save_statistics(str(other), real.mean(0), np.cov(real, rowvar=False), {"feature_extractor_sha256": "cd" * 32})
    with pytest.raises(ValueError, match="FID across different extractors is meaningless"):
        run_protocols(["fid20"], make_source(), EvalContext(extractor=ex, real=str(other), device="cpu"))


def test_caption_grid(tmp_path):
    path = tmp_path / "g.png"
    save_caption_grid(fake_images(5, 0), [caption(i) * 3 for i in range(5)], str(path), columns=3, cell=64)
    img = Image.open(path)
    assert img.size[0] == 3 * (64 + 4) + 4 and img.size[1] > 2 * 64
    with pytest.raises(ValueError, match="2 captions for 5 images"):
        save_caption_grid(fake_images(5, 0), ["a", "b"], str(path))


def test_build_eval_context_reads_eval_keys():
    from miscc.config import load_config

    cfg = load_config(None, {"EVAL.INCEPTION_WEIGHTS": "/w/inception.pth", "EVAL.BATCH_SIZE": 8, "EVAL.SEED": 3,
                             "EVAL.FID_STATS": "/s/bird_val.npz", "DATASET_NAME": "shapes"})
    ctx = build_eval_context(cfg, jsonl="r.jsonl")
    assert (ctx.inception_weights, ctx.batch_size, ctx.seed, ctx.real, ctx.dataset, ctx.jsonl) == (
        "/w/inception.pth", 8, 3, "/s/bird_val.npz", "shapes", "r.jsonl")
    assert ctx.classifier is None and ctx.clip_path is None
    with pytest.raises(TypeError, match="no field 'nope'"):
        build_eval_context(cfg, nope=1)


def test_folder_source_with_captions(tmp_path, real_folder):
    from eval.protocols import folder_source

    caps = {f"r{i:02d}": f"caption {i}" for i in range(30)}
    (tmp_path / "caps.json").write_text(json.dumps(caps))
    batches = list(folder_source(real_folder, str(tmp_path / "caps.json"))(12, 5))
    assert [b.images.shape[0] for b in batches] == [5, 5, 2] and batches[0].images.dtype == torch.uint8
    assert batches[2].captions == ["caption 10", "caption 11"] and batches[2].keys == ["r10", "r11"]
    del caps["r07"]
    with pytest.raises(KeyError, match="r07.png"):
        folder_source(real_folder, caps)
    with pytest.raises(ValueError, match="3 captions for 30 images"):
        folder_source(real_folder, ["a", "b", "c"])
    with pytest.raises(ValueError, match="40 samples requested, the folder has 30"):
        list(folder_source(real_folder)(40, 8))


def test_a_registered_metric_is_one_function_and_one_registration(monkeypatch):
    """A new metric plugs in with `register_metric` (here: the mean brightness of the images, in [0, 255])."""
    monkeypatch.setattr(protocols, "METRICS", dict(protocols.METRICS))

    def collect(col, batch):
        col.store("brightness", to_uint8(batch.images).float().mean(dim=(1, 2, 3)))

    @protocols.register_metric("bright", "mean brightness", 2, collect=collect)
    def _bright(p, col, ctx, real_cache):
        return {"value": float(col.get("brightness", p.n).mean()), "std": None}

    images = torch.full((6, 3, 8, 8), 51, dtype=torch.uint8)
    result = run_protocols(["bright4"], lambda n, bs: [SampleBatch(images[:n])], EvalContext(device="cpu"))[0]
    assert (result["protocol"], result["n"], result["value"]) == ("bright4", 4, 51.0)
    with pytest.raises(InputError, match="bright"):
        parse_protocol("bright1")  # below its minimum of 2 samples


def test_sample_grid_spreads_over_the_first_batches():
    """The report's grid takes n of the first 4n samples, evenly spaced, each with its own caption: the trainers
    sort every batch by caption length, so the first n alone would show only the longest captions."""
    from eval.protocols import _Collector

    col = _Collector.__new__(_Collector)
    col.grid_images = [torch.full((3, 2, 2), i, dtype=torch.uint8) for i in range(16)]
    col.grid_captions = [f"caption {i}" for i in range(16)]
    images, captions = col.grid(4)
    assert [int(im[0, 0, 0]) for im in images] == [0, 5, 10, 15]
    assert captions == ["caption 0", "caption 5", "caption 10", "caption 15"]
    col.grid_images, col.grid_captions = col.grid_images[:3], []
    images, captions = col.grid(4)
    assert len(images) == 3 and captions is None
