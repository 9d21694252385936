"""GAN-INT-CLS models and losses: the port's key layout and shapes, functional equivalence with the port's layer
stack, initialisation, loss values on hand-checkable inputs, INT batches, WGAN clipping and the wrong-class pick."""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.config import load_config
from models.gan_int_cls import (
    IntClsLossOptions, build_gan_int_cls, build_loss_options, clip_weights, critic_iterations, d_loss, discriminator,
    g_loss, generate_with_interpolation, generator, gradient_penalty, interpolate_embeddings, load_gan_int_cls,
    weights_init, wrong_indices)


def _bn(prefix, n):
    return [(f"{prefix}.weight", (n,)), (f"{prefix}.bias", (n,)), (f"{prefix}.running_mean", (n,)),
            (f"{prefix}.running_var", (n,))]


# Key layout and shapes of aelnouby's gan_cls.generator / discriminator (reference notes A1), written out by hand.
PORT_G = OrderedDict(
    [("projection.0.weight", (128, 1024)), ("projection.0.bias", (128,))] + _bn("projection.1", 128)
    + [("netG.0.weight", (228, 512, 4, 4))] + _bn("netG.1", 512)
    + [("netG.3.weight", (512, 256, 4, 4))] + _bn("netG.4", 256)
    + [("netG.6.weight", (256, 128, 4, 4))] + _bn("netG.7", 128)
    + [("netG.9.weight", (128, 64, 4, 4))] + _bn("netG.10", 64)
    + [("netG.12.weight", (64, 3, 4, 4))])
PORT_D = OrderedDict(
    [("netD_1.0.weight", (64, 3, 4, 4)), ("netD_1.2.weight", (128, 64, 4, 4))] + _bn("netD_1.3", 128)
    + [("netD_1.5.weight", (256, 128, 4, 4))] + _bn("netD_1.6", 256)
    + [("netD_1.8.weight", (512, 256, 4, 4))] + _bn("netD_1.9", 512)
    + [("projector.projection.0.weight", (128, 1024)), ("projector.projection.0.bias", (128,))]
    + _bn("projector.projection.1", 128) + [("netD_2.0.weight", (1, 640, 4, 4))])


def _random_state(layout, seed, prefix=""):
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for k, shape in layout.items():
        v = torch.randn(shape, generator=g) * 0.05
        if k.endswith("running_var") or (k.endswith(".weight") and len(shape) == 1):
            v = 1.0 + v.abs()
        out[prefix + k] = v
    return out


def _ref_generator(sd, embed, z):
    """The port's generator forward in plain functional ops (eval-mode BN), independent of our module code."""
    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"])
    t = F.leaky_relu(bn(F.linear(embed, sd["projection.0.weight"], sd["projection.0.bias"]), "projection.1"), 0.2)
    x = torch.cat([t[:, :, None, None], z], 1)
    x = F.relu(bn(F.conv_transpose2d(x, sd["netG.0.weight"]), "netG.1"))
    for conv, norm in ((3, 4), (6, 7), (9, 10)):
        x = F.relu(bn(F.conv_transpose2d(x, sd[f"netG.{conv}.weight"], stride=2, padding=1), f"netG.{norm}"))
    return torch.tanh(F.conv_transpose2d(x, sd["netG.12.weight"], stride=2, padding=1))


def _ref_discriminator(sd, images, embed):
    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"])
    x = F.leaky_relu(F.conv2d(images, sd["netD_1.0.weight"], stride=2, padding=1), 0.2)
    for conv, norm in ((2, 3), (5, 6), (8, 9)):
        x = F.leaky_relu(bn(F.conv2d(x, sd[f"netD_1.{conv}.weight"], stride=2, padding=1), f"netD_1.{norm}"), 0.2)
    t = F.leaky_relu(bn(F.linear(embed, sd["projector.projection.0.weight"], sd["projector.projection.0.bias"]),
                        "projector.projection.1"), 0.2)
    h = torch.cat([x, t[:, :, None, None].repeat(1, 1, 4, 4)], 1)
    return torch.sigmoid(F.conv2d(h, sd["netD_2.0.weight"]).view(-1)), x


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_port():
    assert _n_params(generator()) == 4_756_736
    assert _n_params(discriminator()) == 2_899_072
    assert _n_params(discriminator(wgan=True)) == 2_899_072


def test_state_dict_keys_and_shapes_match_the_port():
    for model, layout in ((generator(), PORT_G), (discriminator(), PORT_D)):
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        assert ours == dict(layout)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_port_checkpoints_load_strictly_with_or_without_module_prefix(tmp_path, prefix):
    sd_g, sd_d = _random_state(PORT_G, 0, prefix), _random_state(PORT_D, 1, prefix)
    torch.save(sd_g, tmp_path / "gen_190.pth")
    torch.save(sd_d, tmp_path / "disc_190.pth")
    netG = load_gan_int_cls(generator(), str(tmp_path / "gen_190.pth")).eval()
    netD = load_gan_int_cls(discriminator(), str(tmp_path / "disc_190.pth")).eval()
    plain_g = _random_state(PORT_G, 0)
    plain_d = _random_state(PORT_D, 1)
    for k, v in plain_g.items():
        assert torch.equal(netG.state_dict()[k], v), k
    # Functionally the port's stack: text first in the latent, text tiled after the image features.
    g = torch.Generator().manual_seed(2)
    embed, z = torch.randn(3, 1024, generator=g), torch.randn(3, 100, 1, 1, generator=g)
    with torch.no_grad():
        fake = netG(embed, z)
        torch.testing.assert_close(fake, _ref_generator(plain_g, embed, z), atol=1e-5, rtol=1e-4)
        score, feats = netD(fake, embed)
        ref_score, ref_feats = _ref_discriminator(plain_d, fake, embed)
    torch.testing.assert_close(score, ref_score, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats, ref_feats, atol=1e-5, rtol=1e-4)


def test_dataparallel_state_dict_round_trip_and_mismatch_error(tmp_path):
    netG = generator()
    torch.save(nn.DataParallel(netG).state_dict(), tmp_path / "gen_10.pth")
    assert all(k.startswith("module.") for k in torch.load(tmp_path / "gen_10.pth", weights_only=True))
    load_gan_int_cls(generator(), str(tmp_path / "gen_10.pth"))
    with pytest.raises(RuntimeError, match="gen_10.pth"):
        load_gan_int_cls(discriminator(), str(tmp_path / "gen_10.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_gan_int_cls(generator(), str(tmp_path / "missing.pth"))


def test_output_shapes_and_ranges():
    netG, netD = generator(), discriminator()
    embed = torch.randn(4, 1024)
    fake = netG(embed, torch.randn(4, 100))  # [B, 100] noise is accepted as well as [B, 100, 1, 1]
    assert fake.shape == (4, 3, 64, 64) and fake.abs().max() <= 1
    score, feats = netD(fake, embed)
    assert score.shape == (4,) and feats.shape == (4, 512, 4, 4)
    assert ((score > 0) & (score < 1)).all()
    with pytest.raises(ValueError, match=r"\[4, 1024\]"):
        netG(torch.randn(4, 256), torch.randn(4, 100))
    with pytest.raises(ValueError, match="noise"):
        netG(embed, torch.randn(4, 99))


def test_wgan_critic_returns_per_sample_logits():
    torch.manual_seed(0)
    d_gan, d_wgan = discriminator().eval(), discriminator(wgan=True).eval()
    d_wgan.load_state_dict(d_gan.state_dict())
    x, e = torch.randn(5, 3, 64, 64), torch.randn(5, 1024)
    critic, _ = d_wgan(x, e)
    assert critic.shape == (5,)
    torch.testing.assert_close(torch.sigmoid(critic), d_gan(x, e)[0])
    torch.testing.assert_close(critic, d_gan(x, e, logits=True)[0])


def test_noise_first_is_a_permutation_of_the_first_layer_inputs():
    torch.manual_seed(0)
    text_first, noise_first = generator().eval(), generator(noise_first=True).eval()
    sd = text_first.state_dict()
    w = sd["netG.0.weight"]
    sd["netG.0.weight"] = torch.cat([w[128:], w[:128]], 0)  # rows: [noise 100, text 128]
    noise_first.load_state_dict(sd)
    e, z = torch.randn(2, 1024), torch.randn(2, 100, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(noise_first(e, z), text_first(e, z))


def test_text_is_tiled_after_the_image_features():
    netD = discriminator().eval()
    with torch.no_grad():
        netD.netD_2[0].weight[:, :512] = 0  # keep only the 128 text channels
    e = torch.randn(2, 1024)
    s1, _ = netD(torch.randn(2, 3, 64, 64), e)
    s2, _ = netD(torch.randn(2, 3, 64, 64), e)
    torch.testing.assert_close(s1, s2)


def test_configurable_dims_vanilla_and_improved_layouts():
    netG = generator(embed_dim=256, projected_embed_dim=64)
    assert netG.state_dict()["netG.0.weight"].shape == (164, 512, 4, 4)
    assert netG(torch.randn(2, 256), torch.randn(2, 100)).shape == (2, 3, 64, 64)
    # Unconditional (the port's vanilla_gan): no projection keys; the ConvT takes the 100-d noise only.
    vg, vd = generator(embed_dim=0), discriminator(embed_dim=0)
    assert not any(k.startswith("projection") for k in vg.state_dict())
    assert not any(k.startswith("projector") for k in vd.state_dict())
    assert vd.state_dict()["netD_2.0.weight"].shape == (1, 512, 4, 4)
    assert vd(vg(None, torch.randn(2, 100)))[0].shape == (2,)
    # The port's WGAN `improved=True` critic: no BN in netD_1.
    keys = [k for k in discriminator(wgan=True, batch_norm=False).state_dict() if k.startswith("netD_1")]
    assert keys == ["netD_1.0.weight", "netD_1.2.weight", "netD_1.4.weight", "netD_1.6.weight"]
    with pytest.raises(ValueError, match="power of two"):
        generator(image_size=48)


def test_minibatch_discrimination_option():
    netD = discriminator(minibatch=True, minibatch_B_dim=8, minibatch_C_dim=4)
    assert netD.state_dict()["minibatch.T_tensor"].shape == (512 * 16, 32)
    assert netD.state_dict()["netD_2.0.weight"].shape == (1, 640 + 8, 4, 4)
    score, feats = netD(torch.randn(3, 3, 64, 64), torch.randn(3, 1024))
    assert score.shape == (3,) and feats.shape == (3, 512, 4, 4)
    # o_b(x_i) = sum_j exp(-L1) counts j = i as exp(0) = 1: identical samples give B for every feature.
    mb = netD.minibatch(torch.ones(3, 512, 4, 4))
    torch.testing.assert_close(mb, torch.full((3, 8), 3.0))
    assert "minibatch.T_tensor" not in discriminator().state_dict()


def test_weights_init_follows_the_port():
    torch.manual_seed(0)
    netG, netD = generator(), discriminator()
    linear_before = netG.projection[0].weight.clone()
    netG.apply(weights_init)
    netD.apply(weights_init)
    assert torch.equal(netG.projection[0].weight, linear_before)  # Linear keeps PyTorch's default
    w = netG.netG[0].weight
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    for bn in (netG.netG[1], netD.netD_1[9], netD.projector.projection[1], netG.projection[1]):
        assert abs(bn.weight.mean().item() - 1) < 0.01 and 0.01 < bn.weight.std().item() < 0.03
        assert torch.count_nonzero(bn.bias) == 0
    assert abs(netD.netD_2[0].weight.std().item() - 0.02) < 2e-3


# ----- losses ---------------------------------------------------------------------------------------------------


class StubD(nn.Module):
    """Logit = per-sample mean of the image; features = the image's first two channels at 4x4."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, embed=None, logits=False):
        s = x.flatten(1).mean(1) * self.scale
        return (s if logits else torch.sigmoid(s)), x[:, :2, :4, :4]


def _const(v, b=4):
    return torch.full((b, 3, 8, 8), float(v))


def _bce(logit, target):
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


@pytest.mark.parametrize("cls,cls_weight,expected_weights", [
    (True, 0.5, (0.5, 0.5)),   # Reed: w * wrong + (1 - w) * fake at w = 0.5
    (True, 1.0, (1.0, 1.0)),   # the port's plain sum
    (False, 0.5, (1.0, 0.0)),  # no CLS: real + fake
])
def test_d_loss_gan_values(cls, cls_weight, expected_weights):
    opts = IntClsLossOptions(loss_type="gan", cls=cls, cls_weight=cls_weight)
    out = d_loss(StubD(), _const(2.0), None, _const(-1.0), opts, wrong_images=_const(0.5))
    real, fake, wrong = _bce(2.0, 0.9), _bce(-1.0, 0.0), _bce(0.5, 0.0)
    w_fake, w_wrong = expected_weights
    assert out.real.item() == pytest.approx(real, rel=1e-5)
    assert out.loss.item() == pytest.approx(real + w_fake * fake + w_wrong * wrong, rel=1e-5)
    assert out.real_score.item() == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-5)


def test_d_loss_wgan_values_and_gradient_penalty():
    opts = IntClsLossOptions(loss_type="wgan", cls=True, cls_weight=1.0)
    out = d_loss(StubD(), _const(2.0), None, _const(-1.0), opts, wrong_images=_const(0.5))
    assert out.loss.item() == pytest.approx(-2.0 + (-1.0) + 0.5)  # -D(real) + D(fake) + D(wrong)
    assert out.gp.item() == 0

    class Linear(nn.Module):  # D(x) = k * sum(x): gradient k everywhere, norm k * sqrt(3*8*8) = 2
        def forward(self, x, embed=None, logits=False):
            return x.flatten(1).sum(1) * (2 / math.sqrt(192)), None

    gp = gradient_penalty(Linear(), torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), None, gp_lambda=10.0)
    assert gp.item() == pytest.approx(10.0, rel=1e-5)  # 10 * (2 - 1)^2; a per-channel norm would give another value
    out = d_loss(Linear(), torch.randn(4, 3, 8, 8), None, torch.randn(4, 3, 8, 8),
                 IntClsLossOptions(loss_type="wgan-gp", cls=False))
    assert out.gp.item() == pytest.approx(10.0, rel=1e-5)


def test_d_loss_detaches_fake_and_requires_wrong_images_with_cls():
    netG, netD = generator(embed_dim=16), discriminator(embed_dim=16)
    e = torch.randn(4, 16)
    fake = netG(e, torch.randn(4, 100))
    out = d_loss(netD, torch.randn(4, 3, 64, 64), e, fake, IntClsLossOptions(cls=False))
    out.loss.backward()
    assert all(p.grad is None for p in netG.parameters())
    assert netD.netD_2[0].weight.grad is not None
    with pytest.raises(ValueError, match="wrong_images"):
        d_loss(netD, torch.randn(4, 3, 64, 64), e, fake, IntClsLossOptions(cls=True))


def test_g_loss_values_with_int_feature_matching_and_l1():
    opts = IntClsLossOptions(loss_type="gan", interp=True, int_weight=0.5, l1_coef=50.0, l2_coef=100.0)
    out = g_loss(StubD(), _const(-1.0), None, opts, real_images=_const(0.5), int_fake_images=_const(1.0, b=2),
                 int_embed=torch.zeros(2, 1))
    adv, interp = _bce(-1.0, 1.0), _bce(1.0, 1.0)
    assert out.adv.item() == pytest.approx(adv, rel=1e-5)
    assert out.interp.item() == pytest.approx(interp, rel=1e-5)
    assert out.feature_matching.item() == pytest.approx(100 * 1.5 ** 2, rel=1e-5)
    assert out.l1.item() == pytest.approx(50 * 1.5, rel=1e-5)
    assert out.loss.item() == pytest.approx(adv + 0.5 * interp + 225.0 + 75.0, rel=1e-5)
    wgan = g_loss(StubD(), _const(-1.0), None, IntClsLossOptions(loss_type="wgan", interp=False, l1_coef=0,
                                                                  l2_coef=0))
    assert wgan.loss.item() == pytest.approx(1.0)  # -mean D(fake)
    with pytest.raises(ValueError, match="int_fake_images"):
        g_loss(StubD(), _const(-1.0), None, IntClsLossOptions(), real_images=_const(0.5))
    with pytest.raises(ValueError, match="real_images"):
        g_loss(StubD(), _const(-1.0), None, IntClsLossOptions(interp=False))


def test_int_batch_construction():
    e = torch.arange(8.0).view(4, 2)  # rows e0..e3; INT rows are (e0 + e2)/2 and (e1 + e3)/2
    torch.testing.assert_close(interpolate_embeddings(e), torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    assert interpolate_embeddings(torch.arange(10.0).view(5, 2)).shape == (2, 2)  # odd B: the last row is unused
    netG = generator(embed_dim=8).eval()
    embed, noise = torch.randn(4, 8), torch.randn(6, 100, 1, 1)
    with torch.no_grad():
        fake, int_fake, int_embed = generate_with_interpolation(netG, embed, noise)
        torch.testing.assert_close(int_embed, (embed[:2] + embed[2:]) / 2)
        torch.testing.assert_close(fake, netG(embed, noise[:4]))
        torch.testing.assert_close(int_fake, netG(int_embed, noise[4:]))
    assert generate_with_interpolation(netG, embed)[1].shape == (2, 3, 64, 64)


def test_clip_weights_keeps_parameters_in_range():
    netD = discriminator(wgan=True)
    with torch.no_grad():
        for p in netD.parameters():
            p.normal_(0, 1)
        netD.netD_2[0].weight[0, 0, 0, 0] = 0.004
    clip_weights(netD, 0.01)
    for p in netD.parameters():
        assert p.abs().max() <= 0.01
    assert netD.netD_2[0].weight[0, 0, 0, 0].item() == pytest.approx(0.004)
    assert (netD.netD_1[0].weight.abs() == 0.01).any()
    with pytest.raises(ValueError):
        clip_weights(netD, 0)


def test_critic_iteration_schedule():
    assert [critic_iterations(i, 5) for i in (0, 24, 25, 499, 500, 501)] == [100, 100, 5, 5, 100, 5]


def test_wrong_indices_pick_other_classes():
    classes = ["a", "a", "b", "b", "b", "c"]
    rng = np.random.default_rng(0)
    seen = {i: set() for i in range(6)}
    for _ in range(200):
        idx = wrong_indices(classes, rng)
        for i, j in enumerate(idx):
            assert classes[j] != classes[i]
            seen[i].add(int(j))
    assert seen[0] == {2, 3, 4, 5} and seen[5] == {0, 1, 2, 3, 4}  # uniform over the other classes: all reached
    a = wrong_indices(classes, np.random.default_rng(7), anchors=[0, 5])
    b = wrong_indices(classes, np.random.default_rng(7), anchors=[0, 5])
    assert a.tolist() == b.tolist() and len(a) == 2


def test_wrong_indices_dominant_class_and_errors():
    classes = np.array([3] * 999 + [7])
    idx = wrong_indices(classes, np.random.default_rng(0))
    assert (idx[:999] == 999).all() and classes[idx[999]] == 3
    with pytest.raises(ValueError, match="two classes"):
        wrong_indices(["x", "x", "x"], np.random.default_rng(0))


def test_factories_read_the_config():
    cfg = load_config(overrides={"INTCLS.TEXT_SOURCE": "hd5", "INTCLS.TYPE": "gan"})
    netG, netD = build_gan_int_cls(cfg)
    assert _n_params(netG) == 4_756_736 and _n_params(netD) == 2_899_072
    cfg = load_config(overrides={"INTCLS.TYPE": "wgan-gp", "TEXT.EMBEDDING_DIM": 256})
    netG, netD = build_gan_int_cls(cfg)
    assert netG.projection[0].in_features == 256 and netD.wgan
    assert not any(isinstance(m, nn.BatchNorm2d) for m in netD.netD_1)
    opts = build_loss_options(cfg)
    assert opts.loss_type == "wgan-gp" and opts.cls == cfg.INTCLS.CLS
    cfg = load_config(overrides={"INTCLS.TYPE": "vanilla_wgan"})
    netG, netD = build_gan_int_cls(cfg)
    assert netG.projection is None and netD.projector is None
    opts = build_loss_options(cfg)
    assert opts.loss_type == "wgan" and not opts.cls and not opts.interp
    with pytest.raises(ValueError, match="loss_type"):
        IntClsLossOptions(loss_type="hinge")
