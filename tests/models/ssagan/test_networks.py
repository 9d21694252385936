"""SSA-GAN models and losses: released key layout, forward semantics, SSCBN, MA-GP, hinge losses, noise."""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.config import load_config
from models.ssagan import (
    G_Block, NetD, NetG, affine, build_discriminators, build_generator, discriminator_channel_plan,
    generator_channel_plan, hinge_d_loss, hinge_g_loss, load_ssagan_generator, magp_loss, truncated_noise,
)


def released_netg_shapes() -> "OrderedDict[str, tuple]":
    """Key -> shape of the released 256-px netG (ngf=64, nz=100, 256-d sentence), written out from wt `model.py`."""
    shapes = OrderedDict()

    def bn(prefix, c, affine_params=True):
        if affine_params:
            shapes[prefix + ".weight"] = (c,)
            shapes[prefix + ".bias"] = (c,)
        shapes[prefix + ".running_mean"] = (c,)
        shapes[prefix + ".running_var"] = (c,)
        shapes[prefix + ".num_batches_tracked"] = ()

    def conv(prefix, cin, cout, k):
        shapes[prefix + ".weight"] = (cout, cin, k, k)
        shapes[prefix + ".bias"] = (cout,)

    def mask(prefix, c):
        conv(prefix + ".0", c, 100, 3)
        bn(prefix + ".1", 100)
        conv(prefix + ".3", 100, 1, 1)

    def sscbn(prefix, c):
        bn(prefix + ".batch_norm2d", c, affine_params=False)
        for mlp in ("fc_gamma", "fc_beta"):
            shapes[f"{prefix}.{mlp}.linear1.weight"] = (256, 256)
            shapes[f"{prefix}.{mlp}.linear1.bias"] = (256,)
            shapes[f"{prefix}.{mlp}.linear2.weight"] = (c, 256)
            shapes[f"{prefix}.{mlp}.linear2.bias"] = (c,)

    mask("conv_mask", 512)
    shapes["fc.weight"] = (8192, 100)
    shapes["fc.bias"] = (8192,)
    blocks = [(512, 512)] * 4 + [(512, 256), (256, 128), (128, 64)]
    for i, (cin, cout) in enumerate(blocks):
        p = f"block{i}"
        shapes[p + ".gamma"] = (1,)
        conv(p + ".c1", cin, cout, 3)
        conv(p + ".c2", cout, cout, 3)
        sscbn(p + ".affine0", cin)
        sscbn(p + ".affine2", cout)
        if i in (4, 5, 6):
            conv(p + ".c_sc", cin, cout, 1)
        if i != 6:
            mask(p + ".conv_mask", cout)
    bn("conv_img.0", 64)
    conv("conv_img.2", 64, 3, 3)
    return shapes


def released_netd_shapes() -> "OrderedDict[str, tuple]":
    shapes = OrderedDict([("conv_img.weight", (64, 3, 3, 3)), ("conv_img.bias", (64,))])
    chans = [64, 128, 256, 512, 1024, 1024, 1024]
    for i in range(6):
        cin, cout = chans[i], chans[i + 1]
        shapes[f"block{i}.gamma"] = (1,)
        shapes[f"block{i}.conv_r.0.weight"] = (cout, cin, 4, 4)
        shapes[f"block{i}.conv_r.2.weight"] = (cout, cout, 3, 3)
        shapes[f"block{i}.conv_s.weight"] = (cout, cin, 1, 1)
        shapes[f"block{i}.conv_s.bias"] = (cout,)
    shapes["COND_DNET.joint_conv.0.weight"] = (128, 1024 + 256, 3, 3)
    shapes["COND_DNET.joint_conv.2.weight"] = (1, 128, 4, 4)
    return shapes


def _random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(1234)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g)
    return state


@pytest.fixture(scope="module")
def full_netg():
    return NetG(ngf=64, nz=100, cond_dim=256, imsize=256)


# ----------------------------------------------------------------------------------------------- key layout / size
def test_netg_has_exactly_the_released_keys_and_shapes(full_netg):
    ours = {k: tuple(v.shape) for k, v in full_netg.state_dict().items()}
    assert ours == dict(released_netg_shapes())


def test_netd_has_exactly_the_released_keys_and_shapes():
    ours = {k: tuple(v.shape) for k, v in NetD(ndf=64, cond_dim=256, imsize=256).state_dict().items()}
    assert ours == dict(released_netd_shapes())


def test_parameter_counts_match_the_reference_arithmetic(full_netg):
    n_g = sum(p.numel() for p in full_netg.parameters())
    n_d = sum(p.numel() for p in NetD(64, 256, 256).parameters())
    expected_g = sum(torch.Size(s).numel() for k, s in released_netg_shapes().items()
                     if not any(b in k for b in ("running_", "num_batches")))
    expected_d = sum(torch.Size(s).numel() for s in released_netd_shapes().values())
    assert (n_g, n_d) == (expected_g, expected_d) == (29_494_273, 80_379_526)  # ≈ 29.5M and ≈ 80.4M


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_released_layout_loads_strictly(tmp_path, full_netg, prefix):
    state = _random_state(released_netg_shapes())
    path = tmp_path / "netG_590.pth"
    torch.save(OrderedDict((prefix + k, v) for k, v in state.items()), path)
    model = load_ssagan_generator(full_netg, str(path))
    loaded = model.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    assert int(loaded["conv_img.0.num_batches_tracked"]) == 1234


def test_load_errors_name_the_file(tmp_path, full_netg):
    state = _random_state(released_netg_shapes())
    del state["block6.c_sc.bias"]
    bad = tmp_path / "netG_bad.pth"
    torch.save(state, bad)
    with pytest.raises(RuntimeError, match=r"(?s)netG_bad\.pth.*block6\.c_sc\.bias"):
        load_ssagan_generator(full_netg, str(bad))
    with pytest.raises(FileNotFoundError, match="netG_missing.pth"):
        load_ssagan_generator(full_netg, str(tmp_path / "netG_missing.pth"))
    wrapped = tmp_path / "netG_wrapped.pth"
    torch.save({"netG": _random_state(released_netg_shapes()), "epoch": 3}, wrapped)
    with pytest.raises(ValueError, match="netG_wrapped.pth.*state dict"):
        load_ssagan_generator(full_netg, str(wrapped))


def test_smaller_ngf_model_rejects_the_released_shapes(tmp_path):
    path = tmp_path / "netG_590.pth"
    torch.save(_random_state(released_netg_shapes()), path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_ssagan_generator(NetG(ngf=32, imsize=256), str(path))


# -------------------------------------------------------------------------------------------------- channel plans
@pytest.mark.parametrize("imsize,n_blocks", [(64, 5), (128, 6), (256, 7)])
def test_generator_sizes_share_block_names(imsize, n_blocks):
    g = NetG(ngf=8, nz=16, cond_dim=12, imsize=imsize)
    tops = {k.split(".")[0] for k in g.state_dict()}
    assert tops == {"fc", "conv_mask", "conv_img"} | {f"block{i}" for i in range(n_blocks)}
    plan = generator_channel_plan(8, imsize)
    assert plan[0][0] == 64 and plan[-1][1] == 8 and [o for _, o in plan[-3:]] == [32, 16, 8]
    for i, (cin, cout) in enumerate(plan):
        block = getattr(g, f"block{i}")
        assert hasattr(block, "c_sc") == (cin != cout)
        assert hasattr(block, "conv_mask") == (i < n_blocks - 1)
        assert block.c1.in_channels == cin and block.c2.out_channels == cout


@pytest.mark.parametrize("imsize,n_blocks", [(64, 4), (128, 5), (256, 6)])
def test_discriminator_sizes(imsize, n_blocks):
    d = NetD(ndf=4, cond_dim=6, imsize=imsize)
    assert discriminator_channel_plan(4, imsize)[:4] == [(4, 8), (8, 16), (16, 32), (32, 64)]
    assert {k.split(".")[0] for k in d.state_dict()} == {"conv_img", "COND_DNET"} | {
        f"block{i}" for i in range(n_blocks)}
    feats = d(torch.randn(2, 3, imsize, imsize))
    assert feats.shape == (2, 64, 4, 4)
    assert d.COND_DNET(feats, torch.randn(2, 6)).shape == (2,)


def test_bad_sizes_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="power of two.*100"):
        NetG(imsize=100)
    with pytest.raises(ValueError, match="power of two.*4"):
        NetD(imsize=4)
    g = NetG(ngf=4, nz=10, cond_dim=6, imsize=64)
    with pytest.raises(ValueError, match=r"sentence must be \[2, 6\]"):
        g(torch.randn(2, 10), torch.randn(2, 256))
    with pytest.raises(ValueError, match=r"noise must be \[B, 10\]"):
        g(torch.randn(2, 100), torch.randn(2, 6))
    d = NetD(ndf=4, cond_dim=6, imsize=64)
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 64, 64\]"):
        d(torch.randn(2, 3, 128, 128))
    with pytest.raises(ValueError, match=r"sentence must be \[2, 6\]"):
        d.COND_DNET(d(torch.randn(2, 3, 64, 64)), torch.randn(2, 7))


# ------------------------------------------------------------------------------------------ GAN.WORD_GRID (ours)
def test_word_grid_adds_a_map_of_the_words_where_asked():
    """word_grid 4: the stem (before the first mask) gets word_proj(WordGrid(words)); 8: block1's input does. Padded
    words change nothing; other words change the image; the default NetG has none of these keys."""
    torch.manual_seed(0)
    assert not [k for k in NetG(ngf=4, nz=8, cond_dim=6, imsize=32).state_dict() if k.startswith("word_")]
    noise, sent = torch.randn(2, 8), torch.randn(2, 6)
    words, pad = torch.randn(2, 6, 5), torch.tensor([[False] * 3 + [True] * 2, [False] * 5])
    for size, hooked in ((4, "conv_mask"), (8, "block1")):
        g = NetG(ngf=4, nz=8, cond_dim=6, imsize=32, word_grid=size, word_layers=1).eval()
        assert {k.split(".")[0] for k in g.state_dict() if k.startswith("word_")} == {"word_grid", "word_proj"}
        seen = {}
        hook = getattr(g, hooked).register_forward_pre_hook(lambda mod, args: seen.update(x=args[0]))
        with torch.no_grad():
            img, _ = g(noise, sent, words, pad)
            hook.remove()
            text_map = g.word_proj(g.word_grid(words, pad))
            stem = g.fc(noise).view(2, 32, 4, 4)
            before = stem if size == 4 else F.interpolate(g.block0(stem, sent, torch.sigmoid(g.conv_mask(stem)))[0],
                                                          scale_factor=2, mode="nearest")
            assert torch.allclose(seen["x"], before + text_map, atol=1e-6)
            other_pad = words.clone()
            other_pad[0, :, 3:] = torch.randn(6, 2)  # padding of caption 0
            assert torch.allclose(g(noise, sent, other_pad, pad)[0], img, atol=1e-6)
            other = words.clone()
            other[1, :, 0] += 1.0
            changed = (g(noise, sent, other, pad)[0] - img).abs().flatten(1).amax(1)
            assert changed[0] < 1e-6 < changed[1]


def test_word_grid_errors_name_the_key():
    with pytest.raises(ValueError, match=r"GAN.WORD_GRID must be one of NetG's block sizes \[4, 8, 16, 32\].*5"):
        NetG(ngf=4, nz=8, cond_dim=6, imsize=32, word_grid=5)
    g = NetG(ngf=4, nz=8, cond_dim=6, imsize=32, word_grid=4)
    with pytest.raises(ValueError, match=r"needs words \[2, 6, T\], got None"):
        g(torch.randn(2, 8), torch.randn(2, 6))
    cfg = load_config(overrides={"TRAIN.NF": 4, "TREE.BASE_SIZE": 32, "GAN.WORD_GRID": 4})
    with pytest.raises(ValueError, match="GAN.WORD_GRID 4 .*GAN.WORD_CONTEXT_LAYERS.*got 0"):
        build_generator(cfg)
    cfg = load_config(overrides={"TRAIN.NF": 4, "TREE.BASE_SIZE": 32, "GAN.WORD_GRID": 8,
                                 "GAN.WORD_CONTEXT_LAYERS": 2})
    g = build_generator(cfg)
    assert g.word_level == 1 and len(g.word_grid.context.encoder.layers) == 2 and g.word_grid.size == 8


def test_affine_reads_a_condition_map_per_place():
    """A condition map [B, cond, g, g] (NetG's word_affine): γ and β are the same MLPs applied per place, resized
    bilinearly to the features' size; a map constant over the places equals its sentence code."""
    torch.manual_seed(4)
    layer = affine(3, cond_dim=5)
    for mlp in (layer.fc_gamma, layer.fc_beta):
        nn.init.normal_(mlp.linear2.weight)
    x, m, cond = torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8), torch.randn(2, 5, 4, 4)
    per_place = [mlp(cond.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) for mlp in (layer.fc_gamma, layer.fc_beta)]
    gamma, beta = (F.interpolate(t, size=(8, 8), mode="bilinear", align_corners=False) for t in per_place)
    bn = F.batch_norm(x, None, None, training=True)
    assert torch.allclose(layer(x, cond, m), (gamma * m + 1) * bn + beta * m, atol=1e-5)
    sent = torch.randn(2, 5)
    assert torch.allclose(layer(x, sent[:, :, None, None].expand(2, 5, 4, 4), m), layer(x, sent, m), atol=1e-5)


def test_word_affine_starts_as_the_sentence_model_and_learns_per_place_modulation():
    """word_affine: `word_cond` (zero-initialised 1x1 conv) adds the word map to the sentence code that every
    block's γ/β read; fresh, G equals the same weights without it. Once `word_cond` is non-zero, other words change
    the image where the stem's map alone would not (word_proj zeroed), and padding words still change nothing."""
    torch.manual_seed(5)
    g = NetG(ngf=4, nz=8, cond_dim=6, imsize=32, word_grid=4, word_layers=1, word_affine=True).eval()
    plain = NetG(ngf=4, nz=8, cond_dim=6, imsize=32, word_grid=4, word_layers=1).eval()
    extra = set(g.state_dict()) - set(plain.state_dict())
    assert extra == {"word_cond.weight", "word_cond.bias"}
    for block in g.blocks():  # let the blocks' residuals and the text modulation act
        nn.init.constant_(block.gamma, 1.0)
        for aff in (block.affine0, block.affine2):
            nn.init.normal_(aff.fc_gamma.linear2.weight, std=0.5)
    plain.load_state_dict({k: v for k, v in g.state_dict().items() if k not in extra})
    noise, sent = torch.randn(2, 8), torch.randn(2, 6)
    words, pad = torch.randn(2, 6, 5), torch.tensor([[False] * 3 + [True] * 2, [False] * 5])
    with torch.no_grad():
        assert torch.allclose(g(noise, sent, words, pad)[0], plain(noise, sent, words, pad)[0], atol=1e-6)
        nn.init.normal_(g.word_cond.weight)
        nn.init.zeros_(g.word_proj.weight)
        nn.init.zeros_(g.word_proj.bias)
        img = g(noise, sent, words, pad)[0]
        other_pad = words.clone()
        other_pad[0, :, 3:] = torch.randn(6, 2)
        assert torch.allclose(g(noise, sent, other_pad, pad)[0], img, atol=1e-6)
        other = words.clone()
        other[1, :, 0] += 1.0
        changed = (g(noise, sent, other, pad)[0] - img).abs().flatten(1).amax(1)
        assert changed[0] < 1e-6 < 1e-3 < changed[1]
    with pytest.raises(ValueError, match="GAN.WORD_AFFINE.*GAN.WORD_GRID"):
        NetG(ngf=4, nz=8, cond_dim=6, imsize=32, word_affine=True)
    cfg = load_config(overrides={"TRAIN.NF": 4, "TREE.BASE_SIZE": 32, "GAN.WORD_GRID": 4,
                                 "GAN.WORD_CONTEXT_LAYERS": 1, "GAN.WORD_AFFINE": True})
    assert build_generator(cfg).word_affine


def test_grid_noise_moves_the_word_maps_queries_by_the_first_noise_entries():
    """grid_noise (GAN.GRID_NOISE with GAN.WORD_GRID): the first g·g noise entries, one per place, move that place's
    query of the word map along `word_grid.noise_query` (the map then equals attention with those queries, by hand);
    the other noise entries leave the map alone. Refused without the word map or with Z_DIM < g·g."""
    torch.manual_seed(3)
    g = NetG(ngf=4, nz=20, cond_dim=8, imsize=32, word_grid=4, word_layers=1, grid_noise=True).eval()
    plain = NetG(ngf=4, nz=20, cond_dim=8, imsize=32, word_grid=4, word_layers=1).eval()
    assert set(g.state_dict()) - set(plain.state_dict()) == {"word_grid.noise_query"}
    grid, maps = g.word_grid, []
    grid.register_forward_hook(lambda mod, args, out: maps.append(out))
    noise, sent = torch.randn(2, 20), torch.randn(2, 8)
    words, pad = torch.randn(2, 8, 5), torch.tensor([[False] * 3 + [True] * 2, [False] * 5])
    with torch.no_grad():
        g(noise, sent, words, pad)
        ctx = grid.context(words, pad)
        queries = grid.queries + noise[:, :16, None] * grid.noise_query  # B x 16 x E
        att = torch.einsum("bqe,bet->bqt", queries, ctx).masked_fill(pad[:, None], float("-inf")).softmax(-1)
        expected = torch.einsum("bqt,bet->beq", att, ctx).reshape(2, 8, 4, 4)
        assert torch.allclose(maps[-1], expected, atol=1e-5)
        rest = noise.clone()
        rest[:, 16:] = torch.randn(2, 4)
        g(rest, sent, words, pad)
        assert torch.allclose(maps[-1], expected, atol=1e-5)
        moved = noise.clone()
        moved[0, 5] += 3.0  # place 5 of the first caption
        g(moved, sent, words, pad)
        change = (maps[-1] - expected).abs().amax(1).flatten(1)
        assert change[0, 5] > 1e-3 and change[0].sum() == change[0, 5] and change[1].max() == 0
    with pytest.raises(ValueError, match="GAN.GRID_NOISE.*GAN.WORD_GRID"):
        NetG(ngf=4, nz=20, cond_dim=8, imsize=32, grid_noise=True)
    with pytest.raises(ValueError, match="GAN.Z_DIM must be at least 16"):
        NetG(ngf=4, nz=8, cond_dim=8, imsize=32, word_grid=4, grid_noise=True)
    cfg = load_config(overrides={"TRAIN.NF": 4, "TREE.BASE_SIZE": 32, "GAN.WORD_GRID": 4,
                                 "GAN.WORD_CONTEXT_LAYERS": 1, "GAN.GRID_NOISE": True})
    assert build_generator(cfg).grid_noise


def test_d_word_layers_read_a_map_of_the_words():
    """GAN.D_WORD_CONTEXT_LAYERS (ours): COND_DNET reads D's own 4x4 word map where the original tiles the sentence;
    the joint conv keeps its shape, so only `word_grid.*` keys are added; other words move the logit."""
    torch.manual_seed(0)
    plain, d = NetD(ndf=4, cond_dim=8, imsize=32), NetD(ndf=4, cond_dim=8, imsize=32, word_layers=1)
    extra = set(d.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("word_grid.") for k in extra) and plain.word_grid is None
    sent, words, pad = torch.randn(2, 8), torch.randn(2, 8, 6), torch.zeros(2, 6, dtype=torch.bool)
    assert plain.text_condition(sent, words, pad) is sent
    text = d.text_condition(sent, words, pad)
    assert text.shape == (2, 8, 4, 4) and torch.allclose(text, d.word_grid(words, pad))
    features = d(torch.randn(2, 3, 32, 32))
    expected = d.COND_DNET.joint_conv(torch.cat((features, text), 1)).view(-1)
    assert torch.allclose(d.COND_DNET(features, text), expected)
    swapped = d.COND_DNET(features, d.text_condition(sent, words.roll(1, dims=0), pad))
    assert not torch.allclose(swapped, expected)
    with pytest.raises(ValueError, match=r"sentence must be \[2, 8\] .* or a text map \[2, 8, 4, 4\], got \[2, 8, 2, 2\]"):
        d.COND_DNET(features, text[:, :, :2, :2])
    with pytest.raises(ValueError, match="text_condition needs words"):
        d.text_condition(sent)


# ------------------------------------------------------------------------------------------------ forward semantics
def test_forward_image_and_masks_at_64px():
    torch.manual_seed(0)
    g = NetG(ngf=8, nz=16, cond_dim=12, imsize=64)
    img, masks = g(torch.randn(3, 16), torch.randn(3, 12))
    assert img.shape == (3, 3, 64, 64) and img.abs().max() <= 1
    assert [tuple(m.shape) for m in masks] == [(3, 1, s, s) for s in (4, 8, 16, 32, 64)]
    for m in masks:
        assert m.min() > 0 and m.max() < 1


def test_mask_and_feature_upsampling_follow_the_original():
    """Masks: sigmoid of bilinear(align_corners=True) upsampled logits; features: nearest ×2 between blocks."""
    torch.manual_seed(1)
    g = NetG(ngf=4, nz=8, cond_dim=6, imsize=32).eval()
    for p in g.parameters():  # make every residual and SSCBN active so the check is not trivially an identity
        if p.dim() == 1 and p.numel() == 1:
            nn.init.constant_(p, 0.7)
    block_io = {}
    hooks = [getattr(g, f"block{i}").register_forward_hook(
        lambda mod, args, out, i=i: block_io.__setitem__(i, (args[0], out))) for i in range(g.num_blocks)]
    stem_logits = {}
    hooks.append(g.conv_mask.register_forward_hook(lambda mod, args, out: stem_logits.setdefault("x", out)))
    noise = torch.randn(2, 8)
    with torch.no_grad():
        _, masks = g(noise, torch.randn(2, 6))
    for h in hooks:
        h.remove()
    assert torch.allclose(masks[0], torch.sigmoid(stem_logits["x"]))
    assert torch.allclose(block_io[0][0], g.fc(noise).view(2, 32, 4, 4))
    for i in range(g.num_blocks - 1):
        out, logits = block_io[i][1]
        size = 2 * out.size(-1)
        expected = torch.sigmoid(F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=True))
        assert torch.allclose(masks[i + 1], expected, atol=1e-6)
        assert torch.equal(block_io[i + 1][0], F.interpolate(out, scale_factor=2, mode="nearest"))
    assert block_io[g.num_blocks - 1][1][1] is None


def test_fresh_g_block_is_its_shortcut():
    x, s, m = torch.randn(2, 6, 5, 5), torch.randn(2, 4), torch.rand(2, 1, 5, 5)
    assert torch.equal(G_Block(6, 6, cond_dim=4)(x, s, m)[0], x)
    blk = G_Block(6, 3, cond_dim=4, predict_mask=False)
    out, logits = blk(x, s, m)
    assert torch.allclose(out, blk.c_sc(x)) and logits is None


def test_affine_with_zero_init_linear2_is_plain_batchnorm():
    torch.manual_seed(2)
    layer, plain = affine(5, cond_dim=7), nn.BatchNorm2d(5, affine=False)
    x, s, m = torch.randn(4, 5, 3, 3), torch.randn(4, 7), torch.rand(4, 1, 3, 3)
    assert torch.allclose(layer(x, s, m), plain(x), atol=1e-6)


def test_affine_formula_and_mask_gating():
    torch.manual_seed(3)
    layer = affine(2, cond_dim=3)
    nn.init.constant_(layer.fc_gamma.linear2.bias, 0.5)
    nn.init.constant_(layer.fc_beta.linear2.bias, -2.0)
    x, s = torch.randn(4, 2, 3, 3), torch.randn(4, 3)
    m = torch.rand(4, 1, 3, 3)
    bn = F.batch_norm(x, None, None, training=True)
    assert torch.allclose(layer(x, s, m), (0.5 * m + 1) * bn - 2.0 * m, atol=1e-6)
    assert torch.allclose(layer(x, s, torch.zeros_like(m)), bn, atol=1e-6)  # mask 0: text has no effect


# ---------------------------------------------------------------------------------------------------------- losses
class LinearD(nn.Module):
    """D(x, s) = <a, x> + <b, s>: gradient w.r.t. (x, s) is (a, b) for every sample."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)
        self.COND_DNET = lambda f, s: f.flatten(1) @ self.a + s @ self.b

    def forward(self, x):
        return x


def test_magp_value_and_gradient_on_a_linear_d():
    a = torch.ones(3 * 2 * 2)  # |a|² = 12
    b = torch.tensor([2.0, 0.0, 0.0, 0.0])  # |b|² = 4  → ‖∇‖ = 4
    d = LinearD(a.clone(), b.clone())
    real, sent = torch.randn(5, 3, 2, 2), torch.randn(5, 4)
    loss = magp_loss(d, real, sent, p=6, weight=2)
    assert loss.item() == pytest.approx(2 * 4 ** 6)  # 8192
    assert magp_loss(d, real, sent, p=2, weight=1).item() == pytest.approx(16)
    loss.backward()  # d/da [w·(|a|²+|b|²)^(p/2)] = w·p·‖∇‖^(p-2)·a = 2·6·256·a
    assert torch.allclose(d.a.grad, 3072 * a) and torch.allclose(d.b.grad, 3072 * b)
    assert not real.requires_grad and not sent.requires_grad


def test_magp_per_sample_norms():
    """D = ½‖x‖² + <b, s>: per-sample gradient (x_i, b), so the penalty is mean_i (‖x_i‖² + ‖b‖²)^(p/2)."""
    d = LinearD(torch.zeros(2), torch.tensor([0.0, 1.0]))
    d.COND_DNET = lambda f, s: 0.5 * (f.flatten(1) ** 2).sum(1) + s @ d.b
    real = torch.tensor([[3.0, 0.0], [0.0, 0.0]])  # norms² = 9 + 1, 0 + 1
    loss = magp_loss(d, real, torch.randn(2, 2), p=4, weight=1)
    assert loss.item() == pytest.approx((10 ** 2 + 1 ** 2) / 2)


def test_hinge_d_loss_terms_and_mismatch_pairing():
    """D(x, s) = x·s (scalars) so each term can be computed by hand; mismatch pairs x[i] with s[i+1]."""
    d = LinearD(torch.zeros(1), torch.zeros(1))
    d.COND_DNET = lambda f, s: f.flatten(1)[:, 0] * s[:, 0]
    real = torch.tensor([[2.0], [0.5], [-1.0]])
    sent = torch.tensor([[1.0], [1.0], [2.0]])
    fake = torch.tensor([[0.2], [-3.0], [1.0]], requires_grad=True)
    out = hinge_d_loss(d, real, fake, sent)
    real_t = (0 + 0.5 + 3) / 3  # relu(1 - [2, .5, -2])
    mis_t = (3 + 2) / 2  # relu(1 + [2·1, .5·2])
    fake_t = (1.2 + 0 + 3) / 3  # relu(1 + [.2, -3, 2])
    assert out.real.item() == pytest.approx(real_t)
    assert out.mismatch.item() == pytest.approx(mis_t)
    assert out.fake.item() == pytest.approx(fake_t)
    assert out.total.item() == pytest.approx(real_t + (fake_t + mis_t) / 2)
    assert not out.total.requires_grad  # fake is detached and this toy D has no parameters in the path
    assert hinge_g_loss(d, fake, sent).item() == pytest.approx(-(0.2 - 3 + 2) / 3)
    with pytest.raises(ValueError, match="at least 2"):
        hinge_d_loss(d, real[:1], fake[:1], sent[:1])


def test_d_and_g_steps_lower_their_losses():
    torch.manual_seed(4)
    g = NetG(ngf=4, nz=8, cond_dim=6, imsize=16)
    d = NetD(ndf=4, cond_dim=6, imsize=16)
    real, sent, noise = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 6), torch.randn(4, 8)
    fake = g(noise, sent)[0]
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.9))
    d_losses = []
    for _ in range(4):
        loss = hinge_d_loss(d, real, fake, sent).total
        d_losses.append(loss.item())
        opt_d.zero_grad()
        (loss + magp_loss(d, real, sent)).backward()
        opt_d.step()
    assert d_losses[-1] < d_losses[0]
    assert all(p.grad is None for p in g.parameters())  # the D loss does not reach G

    d.requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.0, 0.9))
    g_losses = []
    for _ in range(4):
        loss = hinge_g_loss(d, g(noise, sent)[0], sent)
        g_losses.append(loss.item())
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
    assert g_losses[-1] < g_losses[0]


# -------------------------------------------------------------------------------------------- factories and noise
def test_factories_read_the_config_tree():
    cfg = load_config(overrides={"TRAIN.NF": 8, "GAN.Z_DIM": 20, "TEXT.EMBEDDING_DIM": 384,
                                 "TREE.BASE_SIZE": 32, "TREE.BRANCH_NUM": 2})
    g = build_generator(cfg)
    ds = build_discriminators(cfg)
    assert (g.ngf, g.nz, g.cond_dim, g.imsize, g.num_blocks) == (8, 20, 384, 64, 5)
    assert g.block0.affine0.fc_gamma.linear1.in_features == 384
    assert isinstance(ds, list) and len(ds) == 1 and ds[0].imsize == 64
    assert ds[0].COND_DNET.joint_conv[0].in_channels == 16 * 8 + 384


def test_mask_hidden_sets_every_mask_predictors_width_and_a_snapshot_refuses_another():
    cfg = load_config(overrides={"TRAIN.NF": 4, "TREE.BASE_SIZE": 32, "TREE.BRANCH_NUM": 1, "SSA.MASK_HIDDEN": 7})
    g = build_generator(cfg)
    predictors = [g.conv_mask] + [b.conv_mask for b in g.blocks() if b.predict_mask]
    assert len(predictors) == 4
    for m in predictors:
        assert (m[0].out_channels, m[1].num_features, m[3].in_channels, m[3].out_channels) == (7, 7, 7, 1)
    img, masks = g(torch.randn(2, 100), torch.randn(2, 256))
    assert img.shape == (2, 3, 32, 32) and [tuple(m.shape[2:]) for m in masks] == [(4, 4), (8, 8), (16, 16), (32, 32)]
    # the default is the original's 100; a snapshot of another width does not load (SSA.MASK_HIDDEN is refused on
    # resume: the model was built with it)
    default = build_generator(load_config(overrides={"TRAIN.NF": 4, "TREE.BASE_SIZE": 32, "TREE.BRANCH_NUM": 1}))
    assert default.conv_mask[0].out_channels == 100
    with pytest.raises(RuntimeError, match="conv_mask.0.weight"):
        default.load_state_dict(g.state_dict())
    from miscc.config import resume_rule
    assert resume_rule("SSA.MASK_HIDDEN") == "refused"
    with pytest.raises(ValueError, match=r"SSA.MASK_HIDDEN.*got 0"):
        NetG(ngf=4, nz=8, cond_dim=6, imsize=32, mask_hidden=0)


def test_truncated_noise():
    n = truncated_noise(2000, 100, 0.88, generator=torch.Generator().manual_seed(0))
    assert n.shape == (2000, 100) and n.dtype == torch.float32
    assert n.abs().max() <= 2 * 0.88 and n.abs().max() > 1.7
    assert n.std().item() == pytest.approx(0.88 * 0.8796, rel=0.01)  # std of N(0,1) truncated to [-2, 2]
    again = truncated_noise(2000, 100, 0.88, generator=torch.Generator().manual_seed(0))
    assert torch.equal(n, again)
    with pytest.raises(ValueError, match="trunc_rate"):
        truncated_noise(2, 3, 0.0)
