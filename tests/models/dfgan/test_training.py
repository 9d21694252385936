"""DF-GAN training (models/dfgan/trainer.py) on a tiny `shapes` set with untrained encoders: one step per version,
the D step against the original's update, DF-GAN's snapshot files, continuing from them, exact resumption, and
main.py training, sampling (truncated noise) and evaluating."""
import copy
import json
import os

import pytest
import torch

from datasets import build_dataset
from main import main as main_entry
from miscc.checkpoint import load_checkpoint
from miscc.errors import CheckpointError
from models.dfgan.checkpoint import load_generator
from models.dfgan.trainer import DFGANTrainer
from models.registry import get_family
from trainers.base import STATE_FILE, ResumeRefusedError
from trainers.runtime import Runtime
from tests.helpers import small_config, tiny_encoders, tiny_shapes

CPU = Runtime(device=torch.device("cpu"))
TINY = {"TRAIN.NF": 4, "TEXT.EMBEDDING_DIM": 32, "TRAIN.BATCH_SIZE": 4, "TRAIN.MAX_EPOCH": 1, "DAMSM.IMAGE_SIZE": 32,
        "TRAIN.SNAPSHOT_INTERVAL": 1, "SEED": 3, "TRAIN.LOG_INTERVAL": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return tiny_shapes(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def df_cfg(shapes, tmp_path_factory):
    cfg = small_config("cfg/shapes_dfgan.yml", shapes, **TINY)
    cfg.TRAIN.NET_E = tiny_encoders(cfg, tmp_path_factory.mktemp("damsm"))
    return cfg


@pytest.fixture(scope="module")
def train_set(df_cfg):
    return build_dataset(df_cfg, "train")


def _cfg(df_cfg, **extra):
    cfg = copy.deepcopy(df_cfg)
    for k, v in extra.items():
        section, _, key = k.partition("__")
        if key:
            cfg[section][key] = v
        else:
            cfg[section] = v
    return cfg


def _flat(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def _first_batch(trainer):
    return trainer.make_batch(next(iter(trainer.epoch_loader(0))))


@pytest.mark.parametrize("version", [2022, 2021])
def test_one_step_changes_g_d_c_and_stays_finite(df_cfg, train_set, tmp_path, version):
    t = DFGANTrainer(_cfg(df_cfg, DFGAN__VERSION=version), CPU, str(tmp_path), train_set)
    nets = {"G": t.netG, "D": t.netD, "text": t.text_encoder}
    if version == 2022:
        nets["C"] = t.netC
    else:
        assert t.netC is None and "COND_DNET.joint_conv.0.weight" in t.netD.state_dict()
    before = {k: _flat(m).clone() for k, m in nets.items()}
    losses = t.train_step(_first_batch(t))
    assert set(losses) == {"errD", "errD_real", "errD_mismatch", "errD_fake", "MAGP", "errG"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    for k in nets:
        assert torch.equal(_flat(nets[k]), before[k]) == (k == "text"), k  # the text encoder stays frozen
    # 2022: hinge and MA-GP in one D step; 2021: two D steps; G: one step
    assert {int(s["step"]) for s in t.optD.state.values()} == ({1} if version == 2022 else {2})
    assert {int(s["step"]) for s in t.optG.state.values()} == {1}
    assert {p.requires_grad for p in t.discriminators.parameters()} == {True}  # unfrozen after G's step
    g = t.optG.param_groups[0]
    d = t.optD.param_groups[0]
    assert (g["lr"], g["betas"], d["lr"], d["betas"]) == (1e-4, (0.0, 0.9), 4e-4, (0.0, 0.9))
    assert len(t.optD.param_groups[0]["params"]) == len(list(t.discriminators.parameters()))  # D and C together


def test_d_step_is_the_originals_update(df_cfg, train_set, tmp_path):
    """One Adam step on errD_real + (errD_fake + errD_mis)/2 + MA-GP, written as tobran/DF-GAN lib/modules.py does."""
    t = DFGANTrainer(_cfg(df_cfg), CPU, str(tmp_path), train_set)
    real = _first_batch(t).imgs[-1]
    sent = torch.randn(real.size(0), 32, generator=torch.Generator().manual_seed(0))
    fake = torch.rand(real.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    netD, netC = copy.deepcopy(t.netD), copy.deepcopy(t.netC)
    opt = torch.optim.Adam(list(netD.parameters()) + list(netC.parameters()), lr=4e-4, betas=(0.0, 0.9))
    t.discriminator_step(real, fake, sent)

    imgs, sent_emb = real.clone().requires_grad_(), sent.clone().requires_grad_()
    real_features = netD(imgs)
    pred_real = netC(real_features, sent_emb)
    err_real = torch.nn.ReLU()(1.0 - pred_real).mean()
    mis_features = torch.cat((real_features[1:], real_features[0:1]), dim=0)
    err_mis = torch.nn.ReLU()(1.0 + netC(mis_features, sent_emb)).mean()
    err_fake = torch.nn.ReLU()(1.0 + netC(netD(fake.detach()), sent_emb)).mean()
    grads = torch.autograd.grad(outputs=pred_real, inputs=(imgs, sent_emb), grad_outputs=torch.ones(pred_real.size()),
                                retain_graph=True, create_graph=True, only_inputs=True)
    grad = torch.cat((grads[0].view(grads[0].size(0), -1), grads[1].view(grads[1].size(0), -1)), dim=1)
    magp = 2.0 * torch.mean(torch.sqrt(torch.sum(grad ** 2, dim=1)) ** 6)
    opt.zero_grad()
    (err_real + (err_fake + err_mis) / 2.0 + magp).backward()
    opt.step()
    assert torch.allclose(_flat(t.netD), _flat(netD), atol=1e-6)
    assert torch.allclose(_flat(t.netC), _flat(netC), atol=1e-6)


def test_snapshot_files_and_continuing_from_them(df_cfg, train_set, tmp_path):
    t = DFGANTrainer(_cfg(df_cfg), CPU, str(tmp_path / "a"), train_set)
    t.fit()
    model = tmp_path / "a" / "Model"
    assert sorted(os.listdir(model)) == ["netG_epoch_1.pth", "state_epoch_001.pth", STATE_FILE]
    assert sorted(os.listdir(tmp_path / "a" / "Image")) == ["G_epoch_1.png"]
    state = load_checkpoint(str(model / "state_epoch_001.pth"))
    assert set(state) == {"model", "optimizers", "epoch"} and state["epoch"] == 1
    assert set(state["model"]) == {"netG", "netD", "netC"}
    assert set(state["optimizers"]) == {"optimizer_G", "optimizer_D"}
    # TRAIN.NET_G = state_epoch: networks, optimisers and epoch; = netG_epoch_1: G and the epoch
    cont = DFGANTrainer(_cfg(df_cfg, TRAIN__NET_G=str(model / "state_epoch_001.pth")), CPU, str(tmp_path / "b"),
                        train_set)
    assert cont.epoch == 1
    for a, b in ((cont.netG, t.netG), (cont.netD, t.netD), (cont.netC, t.netC)):
        assert torch.equal(_flat(a), _flat(b))
    assert torch.equal(cont.optD.state_dict()["state"][0]["exp_avg"], t.optD.state_dict()["state"][0]["exp_avg"])
    lower = _cfg(df_cfg, TRAIN__NET_G=str(model / "state_epoch_001.pth"))
    lower.DFGAN.DISCRIMINATOR_LR = 1e-5
    cont_low = DFGANTrainer(lower, CPU, str(tmp_path / "b2"), train_set)
    assert cont_low.optD.param_groups[0]["lr"] == 1e-5 and cont_low.optG.param_groups[0]["lr"] == 1e-4
    assert len(cont_low.optD.state) > 0
    bare = DFGANTrainer(_cfg(df_cfg, TRAIN__NET_G=str(model / "netG_epoch_1.pth")), CPU, str(tmp_path / "c"),
                        train_set)
    assert bare.epoch == 1 and torch.equal(_flat(bare.netG), _flat(t.netG))
    assert not torch.equal(_flat(bare.netD), _flat(t.netD))
    # the family's loader reads both; latest_generator finds the generator snapshot
    family = get_family("dfgan")
    for name in ("state_epoch_001.pth", "netG_epoch_1.pth"):
        net, _ = family.open_generator(df_cfg, str(model / name), torch.device("cpu"))
        assert torch.equal(_flat(net), _flat(t.netG))
    assert family.latest_generator(str(model)) == str(model / "netG_epoch_1.pth")


def test_2021_snapshot_files(df_cfg, train_set, tmp_path):
    cfg = _cfg(df_cfg, DFGAN__VERSION=2021, TRAIN__MAX_STEPS=1)
    t = DFGANTrainer(cfg, CPU, str(tmp_path / "a"), train_set)
    t.fit()
    model = tmp_path / "a" / "Model"
    assert sorted(os.listdir(model)) == ["netD_001.pth", "netG_epoch_1.pth", STATE_FILE]
    cont = DFGANTrainer(_cfg(cfg, TRAIN__NET_G=str(model / "netG_epoch_1.pth")), CPU, str(tmp_path / "b"), train_set)
    assert torch.equal(_flat(cont.netG), _flat(t.netG)) and cont.epoch == 1
    with pytest.raises(CheckpointError,
                       match=r"netG_epoch_1.pth \(netG\) is a DF-GAN 2021 generator.*DFGAN.VERSION=2021"):
        DFGANTrainer(_cfg(df_cfg, TRAIN__NET_G=str(model / "netG_epoch_1.pth")), CPU, str(tmp_path / "c"), train_set)


def test_resume_equals_uninterrupted_run(df_cfg, train_set, tmp_path):
    kw = dict(TRAIN__EMA=True, TRAIN__MAX_STEPS=0)
    full = DFGANTrainer(_cfg(df_cfg, TRAIN__MAX_EPOCH=2, **kw), CPU, str(tmp_path / "full"), train_set)
    torch.manual_seed(123)
    full.fit()
    part = DFGANTrainer(_cfg(df_cfg, TRAIN__MAX_EPOCH=1, **kw), CPU, str(tmp_path / "part"), train_set)
    torch.manual_seed(123)
    part.fit()
    torch.manual_seed(999)
    resumed = DFGANTrainer(_cfg(df_cfg, TRAIN__MAX_EPOCH=2, **kw), CPU, str(tmp_path / "part"), train_set)
    resumed.resume()
    resumed.fit()
    assert resumed.step == full.step == 2 * (len(train_set) // 4)
    for name in ("netG", "netD", "netC"):
        assert torch.equal(_flat(getattr(resumed, name)), _flat(getattr(full, name))), name
    assert torch.equal(_flat(resumed.ema.shadow), _flat(full.ema.shadow))
    # the model size is refused on resume, a new learning rate honoured
    bigger = DFGANTrainer(_cfg(df_cfg, TRAIN__MAX_EPOCH=3, TRAIN__NF=8, **kw), CPU, str(tmp_path / "part"), train_set)
    with pytest.raises(ResumeRefusedError, match=r"TRAIN\.NF 4 -> 8"):
        bigger.resume()
    other = DFGANTrainer(_cfg(df_cfg, TRAIN__MAX_EPOCH=3, DFGAN__VERSION=2021, **kw), CPU, str(tmp_path / "part"),
                         train_set)
    with pytest.raises(ResumeRefusedError, match=r"DFGAN\.VERSION 2022 -> 2021"):
        other.resume()
    cfg_lr = _cfg(df_cfg, TRAIN__MAX_EPOCH=3, **kw)
    cfg_lr.DFGAN.GENERATOR_LR = 1e-5
    lower = DFGANTrainer(cfg_lr, CPU, str(tmp_path / "part"), train_set)
    lower.resume()
    assert lower.optG.param_groups[0]["lr"] == 1e-5 and len(lower.optG.state) > 0


def test_bad_settings_are_named(df_cfg, train_set, tmp_path):
    with pytest.raises(ValueError, match="TRAIN.BATCH_SIZE must be >= 2 for DF-GAN"):
        DFGANTrainer(_cfg(df_cfg, TRAIN__BATCH_SIZE=1), CPU, str(tmp_path), train_set)
    with pytest.raises(ValueError, match=r"DFGAN.VERSION must be one of"):
        DFGANTrainer(_cfg(df_cfg, DFGAN__VERSION=2), CPU, str(tmp_path), train_set)


def test_main_trains_samples_with_truncation_and_evaluates(df_cfg, tmp_path):
    out = tmp_path / "run"
    args = ["--cfg", "cfg/shapes_dfgan.yml", "--gpu", "-1", "--output_dir", str(out), "--set",
            f"DATA_DIR={df_cfg.DATA_DIR}", f"TRAIN.NET_E={df_cfg.TRAIN.NET_E}", "TRAIN.MAX_STEPS=3",
            "WORKERS=0"] + [f"{k}={v}" for k, v in TINY.items()]
    assert main_entry(args) == 0
    model = out / "Model"
    assert {"netG_epoch_1.pth", "state_epoch_001.pth"} <= set(os.listdir(model))
    assert (model / "netG_epoch_1" / "example_captions" / "0_s_0_g0.png").exists()
    log = (out / "Log" / "train.log").read_text()
    assert "step 3 train/errD=" in log and "train/MAGP=" in log
    # B_VALIDATION from DF-GAN's own state_epoch file, with DF-GAN's truncated noise
    net_g = str(model / "state_epoch_001.pth")
    sample = args + ["B_VALIDATION=True", f"TRAIN.NET_G={net_g}", "EVAL.N_SAMPLES=8", "EVAL.TRUNCATION=True",
                     "EVAL.TRUNC_RATE=0.5", "EVAL.PROTOCOLS=[rprec20]"]
    assert main_entry(sample) == 0
    valid = model / "state_epoch_001" / "valid"
    assert len(os.listdir(valid / "single")) == 20
    result = json.loads((valid / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["protocol"] == "rprec20" and result["n"] == 20 and 0.0 <= result["value"] <= 100.0
    assert (valid / "report.md").exists() and (valid / "samples.png").exists()
    # the same generator from netG_epoch_1.pth: equal weights, and truncation changes the images
    family = get_family("dfgan")
    net = load_generator(family.build_generator(small_config("cfg/shapes_dfgan.yml", df_cfg.DATA_DIR, **TINY)),
                         str(model / "netG_epoch_1.pth")).eval()
    ref = load_generator(family.build_generator(small_config("cfg/shapes_dfgan.yml", df_cfg.DATA_DIR, **TINY)),
                         net_g).eval()
    assert torch.equal(_flat(net), _flat(ref))


def test_demo_configs_and_shipped_configs():
    family = get_family("dfgan")
    assert family.demo_configs == {"rnn": "cfg/shapes_dfgan.yml", "bert": "cfg/shapes_dfgan_bert.yml"}
    assert family.title == "DF-GAN" and family.config_section == "DFGAN"
    for name in ("cfg/shapes_dfgan.yml", "cfg/shapes_dfgan_bert.yml", "cfg/bird_dfgan.yml", "cfg/coco_dfgan.yml"):
        cfg = small_config(name, "data/shapes")
        assert cfg.MODEL == "dfgan" and cfg.TRAIN.EMA is False and cfg.DFGAN.VERSION == 2022, name
    shapes = small_config("cfg/shapes_dfgan.yml", "data/shapes")
    assert shapes.DATA.RANDOM_CROP is False and shapes.DATA.LOAD_SCALE == 1.0 and shapes.DATA.FLIP == "text"
    assert shapes.TRAIN.NET_E == "DAMSMencoders/shapes/text_encoder12.pth"
    assert (shapes.TREE.BASE_SIZE, shapes.TRAIN.NF, shapes.TRAIN.BATCH_SIZE) == (64, 16, 32)


def test_web_page_serves_a_dfgan_run(shapes, tmp_path):
    """tools.app on a DF-GAN run folder: one stage, no maps or masks, scores, and DF-GAN's truncated noise."""
    from tests.helpers import TINY_RUN, tiny_run
    from tools import app as app_module

    net_e = tiny_encoders(small_config("cfg/shapes_dfgan.yml", shapes, **TINY_RUN), tmp_path / "damsm")
    run = tiny_run(tmp_path, "dfgan", shapes, net_e, config="cfg/shapes_dfgan.yml")
    args = app_module.argparse.Namespace(run=[run], cfg_file=None, overrides=[], gpu_id=None, data_dir=None,
                                         manualSeed=None)
    app = app_module.App(app_module.load_models(args), max_variants=4)
    status, plain = app.handle({"model": 0, "sentence": "a red circle", "variants": 2, "seed": 1})
    assert status == 200, plain
    assert len(plain["variants"]) == 2
    for v in plain["variants"]:
        assert len(v["stages"]) == 1 and v["attention"] == [] and v["masks"] == [] and -1.0 <= v["score"] <= 1.0
    assert [m["family"] for m in app.info()["models"]] == ["DF-GAN"]
    status, trunc = app.handle({"model": 0, "sentence": "a red circle", "variants": 2, "seed": 1, "truncation": 0.5})
    assert status == 200, trunc
    assert [v["stages"][0]["png"] for v in trunc["variants"]] != [v["stages"][0]["png"] for v in plain["variants"]]


@pytest.mark.parametrize("version", [2022, 2021])
def test_batch_order_of_the_d_step(df_cfg, train_set, tmp_path, version, monkeypatch):
    """2022 pairs images and sentences in loader order (DF-GAN's rm_sort), 2021 in the length-sorted order."""
    t = DFGANTrainer(_cfg(df_cfg, DFGAN__VERSION=version), CPU, str(tmp_path), train_set)
    raw = next(iter(t.epoch_loader(0)))
    batch = t.make_batch(raw)
    assert not torch.equal(batch.order, torch.arange(len(batch.order)))  # this batch is reordered by the sort
    seen = {}
    monkeypatch.setattr(t, "discriminator_step", lambda real, fake, sent: seen.update(real=real, sent=sent) or {})
    monkeypatch.setattr(t, "generator_step", lambda fake, sent: {})
    t.train_step(batch)
    expected = raw["imgs"][-1] if version == 2022 else batch.imgs[-1]
    assert torch.equal(seen["real"], expected)
    with torch.no_grad():
        _, sent_sorted = t.text_encoder(batch.captions, batch.cap_lens)
    restore = torch.argsort(batch.order) if version == 2022 else torch.arange(len(batch.order))
    assert torch.allclose(seen["sent"], sent_sorted[restore])
