"""DF-GAN networks, losses, checkpoint files and the original's YAML format (models/dfgan)."""
import json
import math
import os
from collections import OrderedDict

import pytest
import torch

from miscc.config import ConfigError, load_config
from miscc.errors import CheckpointError
from models.dfgan import (Affine, NetC, NetD, NetD2021, NetG, NetG2021, build_discriminator, build_generator,
                          d_loss_2022, get_D_in_out_chs, get_G_in_out_chs, hinge, ma_gp, roll_by_one)
from models.dfgan.checkpoint import generator_settings, load_generator, load_state_epoch, state_epoch_dict
from models.ssagan import NetD as SSANetD

HERE = os.path.dirname(os.path.abspath(__file__))
# state_dict keys and shapes of the original networks at nf 32 / 256 px, written from tobran/DF-GAN's code
# (code/models/GAN.py; 9015356 code/model.py): see its "_source"
with open(os.path.join(HERE, "dfgan_original_keys.json"), encoding="utf-8") as f:
    ORIGINAL = json.load(f)

pytestmark = pytest.mark.usefixtures("one_thread")


def _layout(module):
    return [[k, list(v.shape)] for k, v in module.state_dict().items()]


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,build", [
    ("netG", lambda: NetG(32, 100, 256, 256, 3)),
    ("netD", lambda: NetD(32, 256, 3)),
    ("netC", lambda: NetC(32, 256)),
    ("netG_2021", lambda: NetG2021(32, 100, 256, 256)),
    ("netD_2021", lambda: NetD2021(32, 256, 256)),
])
def test_key_layout_and_shapes_equal_the_original(name, build):
    assert _layout(build()) == ORIGINAL[name]  # names, order and shapes


def test_parameter_counts():
    counts = {name: sum(math.prod(shape) for _, shape in ORIGINAL[name]) for name in ("netG", "netD", "netC")}
    assert counts == {"netG": 9_744_131, "netD": 6_619_206, "netC": 295_936}
    assert sum(counts.values()) == 16_659_273  # the reference's "≈16.7M" (the README rounds to 18M)
    assert _count(NetG(32, 100, 256, 256, 3)) == counts["netG"]
    assert _count(NetD(32, 256, 3)) + _count(NetC(32, 256)) == counts["netD"] + counts["netC"]
    assert _count(NetG2021(32, 100, 256, 256)) == 12_240_010


@pytest.mark.parametrize("imsize,g_plan,d_plan", [
    (64, [(8, 8), (8, 4), (4, 2), (2, 1)], [(1, 2), (2, 4), (4, 8), (8, 8)]),
    (128, [(8, 8), (8, 8), (8, 4), (4, 2), (2, 1)], [(1, 2), (2, 4), (4, 8), (8, 8), (8, 8)]),
    (256, [(8, 8), (8, 8), (8, 8), (8, 4), (4, 2), (2, 1)], [(1, 2), (2, 4), (4, 8), (8, 8), (8, 8), (8, 8)]),
    (512, [(8, 8)] * 4 + [(8, 4), (4, 2), (2, 1)], [(1, 2), (2, 4), (4, 8)] + [(8, 8)] * 4),
])
def test_channel_plans(imsize, g_plan, d_plan):
    nf = 3
    assert get_G_in_out_chs(nf, imsize) == [(a * nf, b * nf) for a, b in g_plan]
    assert get_D_in_out_chs(nf, imsize) == [(a * nf, b * nf) for a, b in d_plan]
    assert len(g_plan) == len(d_plan) == int(math.log2(imsize)) - 2  # one block per x2 between 4 px and imsize


@pytest.mark.parametrize("bad", [16, 100, 0, "256"])
def test_bad_image_size_is_named(bad):
    with pytest.raises(ValueError, match=r"NetG: imsize must be a power of two >= 32"):
        NetG(4, 10, 8, bad)


@pytest.mark.parametrize("imsize", [64, 128])
def test_forward_shapes_and_ranges(imsize):
    torch.manual_seed(0)
    g, d, c = NetG(4, 10, 8, imsize), NetD(4, imsize), NetC(4, 8)
    img = g(torch.randn(3, 10), torch.randn(3, 8))
    assert img.shape == (3, 3, imsize, imsize) and img.abs().max() <= 1
    features = d(img)
    assert features.shape == (3, 32, 4, 4)
    assert c(features, torch.randn(3, 8)).shape == (3,)
    # the noise joins the sentence in every affine layer: nz + cond_dim inputs
    assert {m.fc_gamma.linear1.in_features for m in g.modules() if isinstance(m, Affine)} == {18}
    with pytest.raises(ValueError, match=r"sentence must be \[3, 8\]"):
        g(torch.randn(3, 10), torch.randn(3, 7))
    with pytest.raises(ValueError, match=r"NetD: images must be \[B, 3, %d, %d\]" % (imsize, imsize)):
        d(torch.randn(1, 3, 32, 32))


def test_affine_starts_as_identity_and_depends_on_the_condition():
    layer = Affine(6, 5)
    x, cond = torch.randn(2, 5, 3, 3), torch.randn(2, 6)
    assert torch.equal(layer(x, cond), x)
    torch.nn.init.normal_(layer.fc_gamma.linear2.weight)
    assert not torch.allclose(layer(x, cond), layer(x, cond + 1))


def test_2021_variant():
    g = NetG2021(4, 10, 8, 64)
    keys = g.state_dict().keys()
    assert {f"block{i}.affine{j}.fc_gamma.linear2.weight" for i in range(5) for j in range(4)} <= keys
    assert {f"block{i}.gamma" for i in range(5)} <= keys and "block5.gamma" not in keys
    assert all(getattr(g, f"block{i}").gamma.item() == 0.0 for i in range(5))  # a fresh block is its shortcut
    assert g.block0.affine0.fc_gamma.linear1.out_features == 256  # the fixed hidden width
    img = g(torch.randn(2, 10), torch.randn(2, 8))
    assert img.shape == (2, 3, 64, 64)
    assert NetD2021 is SSANetD  # SSA-GAN's discriminator is DF-GAN 2021's


def test_family_builds_by_version():
    cfg = load_config("cfg/shapes_dfgan.yml", {"TRAIN.NF": 4})
    assert isinstance(build_generator(cfg), NetG)
    d, c = build_discriminator(cfg)
    assert isinstance(d, NetD) and isinstance(c, NetC)
    cfg.DFGAN.VERSION = 2021
    assert isinstance(build_generator(cfg), NetG2021)
    d, c = build_discriminator(cfg)
    assert isinstance(d, SSANetD) and c is None
    cfg.DFGAN.VERSION = 2020
    with pytest.raises(ValueError, match=r"DFGAN.VERSION must be one of \[2022, 2021\], got 2020"):
        build_generator(cfg)


# ---- losses -----------------------------------------------------------------------------------------------------
def test_hinge_on_known_logits():
    logits = torch.tensor([0.5, -2.0, 3.0])
    assert hinge(logits, real=True).item() == pytest.approx((0.5 + 3.0 + 0.0) / 3)
    assert hinge(logits, real=False).item() == pytest.approx((1.5 + 0.0 + 4.0) / 3)
    assert roll_by_one(torch.arange(4)).tolist() == [1, 2, 3, 0]  # the original's cat(x[1:], x[0:1])


def test_ma_gp_equals_a_hand_computation():
    img = torch.tensor([[1.0, 2.0], [0.5, -1.0]], requires_grad=True)
    sent = torch.tensor([[3.0], [0.0]], requires_grad=True)
    out = (img ** 2).sum(1) + 0.5 * sent[:, 0] ** 2  # d/d img = 2 img, d/d sent = sent
    # sample 0: |(2, 4, 3)|^2 = 29; sample 1: |(1, -2, 0)|^2 = 5
    expected = 2.0 * (29 ** 3 + 5 ** 3) / 2
    assert ma_gp(out, img, sent).item() == pytest.approx(expected)
    assert ma_gp(out, img, sent, p=2.0, weight=1.0).item() == pytest.approx((29 + 5) / 2)
    # the penalty keeps its graph: it trains what computed `out`
    w = torch.tensor(2.0, requires_grad=True)
    x = torch.ones(2, 1, requires_grad=True)
    s = torch.zeros(2, 1, requires_grad=True)
    penalty = ma_gp((w * x).sum(1) + s[:, 0], x, s, p=2.0, weight=1.0)  # mean(w^2 + 1) = 5
    assert penalty.item() == pytest.approx(5.0)
    (grad_w,) = torch.autograd.grad(penalty, w)
    assert grad_w.item() == pytest.approx(4.0)


class _Features(torch.nn.Module):
    def forward(self, x):
        return x


class _Head(torch.nn.Module):
    """logit = a·mean(features) + b·sum(sentence)"""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(2.0))
        self.b = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, features, sent):
        return self.a * features.mean((1, 2, 3)) + self.b * sent.sum(1)


def test_d_loss_2022_by_hand():
    real = torch.tensor([0.1, 0.4, -0.2]).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    fake = torch.tensor([0.3, -0.5, 0.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    sent = torch.tensor([[0.2, 0.2], [-1.0, 0.0], [0.6, 0.0]])
    d = d_loss_2022(_Features(), _Head(), real, fake, sent)
    s = sent.sum(1)
    r, f = torch.tensor([0.1, 0.4, -0.2]), torch.tensor([0.3, -0.5, 0.0])
    exp_real = torch.relu(1 - (2 * r + 0.5 * s)).mean()
    exp_mis = torch.relu(1 + (2 * torch.roll(r, -1) + 0.5 * s)).mean()  # image i+1 with sentence i
    exp_fake = torch.relu(1 + (2 * f + 0.5 * s)).mean()
    # d logit / d img: a / 4 on each of the 4 pixels; d / d sent: b on each of 2 entries
    norm2 = 4 * (2 / 4) ** 2 + 2 * 0.5 ** 2
    exp_magp = 2.0 * norm2 ** 3
    assert d.real.item() == pytest.approx(exp_real.item())
    assert d.mismatch.item() == pytest.approx(exp_mis.item())
    assert d.fake.item() == pytest.approx(exp_fake.item())
    assert d.magp.item() == pytest.approx(exp_magp)
    assert d.total.item() == pytest.approx((exp_real + (exp_fake + exp_mis) / 2).item() + exp_magp)
    assert not real.requires_grad and not sent.requires_grad  # inputs untouched
    with pytest.raises(ValueError, match="at least 2 samples"):
        d_loss_2022(_Features(), _Head(), real[:1], fake[:1], sent[:1])


# ---- checkpoint files -------------------------------------------------------------------------------------------
def _prefixed(sd):
    return OrderedDict(("module." + k, v) for k, v in sd.items())


def _tiny_nets(nf=4):
    torch.manual_seed(1)
    return NetG(nf, 10, 8, 64), NetD(nf, 64), NetC(nf, 8)


def test_released_state_epoch_with_module_prefixes_loads_strictly(tmp_path):
    g, d, c = _tiny_nets()
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(list(d.parameters()) + list(c.parameters()), lr=4e-4, betas=(0.0, 0.9))
    for opt, net in ((opt_g, g), (opt_d, d)):  # optimiser moments, as a trained file has
        net(torch.randn(2, 10), torch.randn(2, 8)).mean().backward() if net is g else \
            c(d(torch.randn(2, 3, 64, 64)), torch.randn(2, 8)).mean().backward()
        opt.step()
    state = state_epoch_dict(g, d, c, opt_g, opt_d, 1220)
    for k in ("netG", "netD", "netC"):  # saved from DistributedDataParallel
        state["model"][k] = _prefixed(state["model"][k])
    path = tmp_path / "state_epoch_1220.pth"
    torch.save(state, path)
    g2, d2, c2 = NetG(4, 10, 8, 64), NetD(4, 64), NetC(4, 8)
    opt_g2 = torch.optim.Adam(g2.parameters())
    opt_d2 = torch.optim.Adam(list(d2.parameters()) + list(c2.parameters()))
    assert load_state_epoch(str(path), g2, d2, c2, opt_g2, opt_d2) == 1220
    for a, b in ((g, g2), (d, d2), (c, c2)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(opt_d2.state_dict()["state"][0]["exp_avg"], opt_d.state_dict()["state"][0]["exp_avg"])
    # the generator alone, from the same file and from a bare (prefixed) netG state dict
    g3 = load_generator(NetG(4, 10, 8, 64), str(path))
    assert torch.equal(g3.fc.weight, g.fc.weight)
    torch.save(_prefixed(g.state_dict()), tmp_path / "netG.pth")
    assert torch.equal(load_generator(NetG(4, 10, 8, 64), str(tmp_path / "netG.pth")).fc.weight, g.fc.weight)


def test_a_file_that_does_not_fit_is_named(tmp_path):
    g, d, c = _tiny_nets(nf=8)
    path = tmp_path / "state_epoch_010.pth"
    torch.save({"model": {"netG": g.state_dict(), "netD": d.state_dict(), "netC": c.state_dict()},
                "optimizers": {}, "epoch": 10}, path)
    with pytest.raises(CheckpointError) as e:
        load_generator(NetG(4, 10, 8, 64), str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path} (netG) does not fit NetG") and "looks like TRAIN.NF 8, config says 4" in msg
    assert "size mismatch for fc.weight: file [1024, 10], model [512, 10]" in msg
    # a DF-GAN 2021 generator given to the 2022 network, and the reverse
    torch.save(NetG2021(4, 10, 8, 64).state_dict(), tmp_path / "netG_600.pth")
    with pytest.raises(CheckpointError, match=r"netG_600.pth \(netG\) is a DF-GAN 2021 generator, but the config "
                                              r"builds a DF-GAN 2022 one .*DFGAN.VERSION=2021"):
        load_generator(NetG(4, 10, 8, 64), str(tmp_path / "netG_600.pth"))
    with pytest.raises(CheckpointError, match=r"is a DF-GAN 2022 generator"):
        load_generator(NetG2021(4, 10, 8, 64), str(path))
    # not a generator file at all; a state_epoch without netC
    torch.save({"epoch": 3, "stuff": [1]}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other.pth: not a DF-GAN generator file.*found \['epoch', 'stuff'\]"):
        load_generator(NetG(4, 10, 8, 64), str(tmp_path / "other.pth"))
    torch.save({"model": {"netG": g.state_dict(), "netD": d.state_dict()}, "epoch": 1}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial.pth: 'model' has no netC"):
        load_state_epoch(str(tmp_path / "partial.pth"), *_tiny_nets(nf=8))


def test_generator_settings_read_from_a_file():
    assert generator_settings(NetG(32, 100, 256, 256).state_dict()) == {
        "TRAIN.NF": 32, "GAN.Z_DIM": 100, "TEXT.EMBEDDING_DIM": 256, "image size": 256}
    assert generator_settings(_prefixed(NetG2021(8, 100, 16, 128).state_dict())) == {
        "TRAIN.NF": 8, "GAN.Z_DIM": 100, "TEXT.EMBEDDING_DIM": 16, "image size": 128}


# ---- DF-GAN's own YAML files --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,dataset,epochs,interval,captions,encoder", [
    ("bird", "birds", 1300, 10, 10, "../data/birds/DAMSMencoder/text_encoder200.pth"),
    ("coco", "coco", 300, 5, 5, "../data/coco/DAMSMencoder/text_encoder100.pth"),
])
def test_original_yml_files_load_unchanged(name, dataset, epochs, interval, captions, encoder):
    cfg = load_config(f"cfg/dfgan_original/{name}.yml")
    assert cfg.MODEL == "dfgan" and cfg.DFGAN.VERSION == 2022 and cfg.CONFIG_NAME == name
    assert cfg.DATASET_NAME == dataset and cfg.DATA_DIR == f"../data/{dataset}"
    assert (cfg.TREE.BASE_SIZE, cfg.TREE.BRANCH_NUM) == (256, 1)
    assert (cfg.GAN.Z_DIM, cfg.TEXT.EMBEDDING_DIM, cfg.TRAIN.NF, cfg.TRAIN.BATCH_SIZE) == (100, 256, 32, 32)
    assert cfg.TRAIN.MAX_EPOCH == epochs and cfg.TRAIN.SNAPSHOT_INTERVAL == interval
    assert cfg.EVAL.TRUNCATION is True and cfg.EVAL.TRUNC_RATE == 0.88
    assert cfg.SEED == 100 and cfg.GPU_ID == 0 and cfg.CUDA is True and cfg.TRAIN.EMA is False
    assert (cfg.TEXT.WORDS_NUM, cfg.TEXT.CAPTIONS_PER_IMAGE, cfg.TEXT.DAMSM_NAME) == (18, captions, encoder)
    # the project's own DF-GAN config says the same
    ours = load_config(f"cfg/{name}_dfgan.yml")
    for key in ("MODEL", "DATASET_NAME", "SEED"):
        assert ours[key] == cfg[key]
    for section in ("TREE", "GAN", "DFGAN", "EVAL"):
        assert ours[section] == cfg[section], section
    for key in ("NF", "BATCH_SIZE", "MAX_EPOCH", "SNAPSHOT_INTERVAL", "EMA"):
        assert ours.TRAIN[key] == cfg.TRAIN[key], key
    # overrides apply after the mapping
    assert load_config(f"cfg/dfgan_original/{name}.yml", {"TRAIN.NF": 8}).TRAIN.NF == 8


@pytest.mark.parametrize("text,match", [
    ("imsize: 256\nnf: 32\nz_dimm: 100\n", r"bad.yml: unknown config key 'z_dimm'"),
    ("imsize: 256\ncond_dim: 128\nTEXT:\n  EMBEDDING_DIM: 256\n", r"bad.yml: DF-GAN key 'cond_dim' \(128\) must equal"),
    ("imsize: 256\nmodel: large\n", r"bad.yml: DF-GAN key 'model' must be 'base'"),
    ("imsize: 256\nch_size: 1\n", r"bad.yml: DF-GAN key 'ch_size' must be 3"),
    ("max_epoch: 1\n", r"bad.yml: DF-GAN key 'max_epoch' must be an int >= 2"),
    ("nf: '32'\n", r"bad.yml: config key 'TRAIN.NF' expects int"),
])
def test_original_format_errors_name_file_and_key(tmp_path, text, match):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(str(path))


def test_original_format_ignores_what_has_no_meaning_here(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text("imsize: 64\nnf: 8\nstamp: x\nnpz_path: a.npz\ncheckpoint: b.pth\nsample_times: 3\n"
                    "cond_dim: 32\nEVAL:\n  PROTOCOLS: [fid1k]\n")
    cfg = load_config(str(path))
    assert cfg.TREE.BASE_SIZE == 64 and cfg.TRAIN.NF == 8 and cfg.TEXT.EMBEDDING_DIM == 32
    assert cfg.EVAL.PROTOCOLS == ["fid1k"] and cfg.EVAL.FID_STATS == "" and cfg.TRAIN.NET_G == ""
