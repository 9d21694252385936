"""AttnGAN / BERT-AttnGAN generator and discriminators: checkpoint key layouts, shapes, attention masking, losses."""
import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.checkpoint import describe_mismatch, load_state_dict_strict
from miscc.config import load_config
from miscc.errors import InputError
from models.attngan import (
    CA_NET, D_GET_LOGITS, D_NET, D_NET64, D_NET128, D_NET256, G_DCGAN, G_NET, GlobalAttentionGeneral,
    GridWordAttention,
    INIT_STAGE_G, NEXT_STAGE_G, KL_loss, TextCondition, WordContext, build_discriminators, build_generator,
    discriminator_loss, generator_adversarial_loss, upBlock, weights_init,
)

BN = ("weight", "bias", "running_mean", "running_var")


# ---------------------------------------------------------------------------------------------------------------
# Expected key layouts, written from the reference notes (attngan.md §4, §7, §11), not from our modules
# ---------------------------------------------------------------------------------------------------------------
def _up(prefix):
    return [f"{prefix}.1.weight"] + [f"{prefix}.2.{b}" for b in BN]


def _res(prefix, r_num):
    keys = []
    for i in range(r_num):
        p = f"{prefix}.residual.{i}.block"
        keys += [f"{p}.0.weight"] + [f"{p}.1.{b}" for b in BN] + [f"{p}.3.weight"] + [f"{p}.4.{b}" for b in BN]
    return keys


def expected_g_keys(branches, r_num, init_attention=False, dcgan=False):
    keys = ["ca_net.fc.weight", "ca_net.fc.bias", "h_net1.fc.0.weight"] + [f"h_net1.fc.1.{b}" for b in BN]
    for i in range(1, 5):
        keys += _up(f"h_net1.upsample{i}")
    if init_attention:
        keys += ["h_net1.att.conv_context.weight"] + _res("h_net1", r_num) + _up("h_net1.upsample")
    if not dcgan:
        keys.append("img_net1.img.0.weight")
    for s in range(2, branches + 1):
        keys += [f"h_net{s}.att.conv_context.weight"] + _res(f"h_net{s}", r_num) + _up(f"h_net{s}.upsample")
        if not dcgan:
            keys.append(f"img_net{s}.img.0.weight")
    if dcgan:
        keys.append("img_net.img.0.weight")
    return keys


def expected_d_keys(size, b_jcu=True):
    keys = ["img_code_s16.0.weight"]
    for idx in (2, 5, 8):
        keys += [f"img_code_s16.{idx}.weight"] + [f"img_code_s16.{idx + 1}.{b}" for b in BN]
    extra = {64: [], 128: ["img_code_s32", "img_code_s32_1"],
             256: ["img_code_s32", "img_code_s64", "img_code_s64_1", "img_code_s64_2"]}[size]
    for name in extra:
        keys += [f"{name}.0.weight"] + [f"{name}.1.{b}" for b in BN]
    if b_jcu:
        keys += ["UNCOND_DNET.outlogits.0.weight", "UNCOND_DNET.outlogits.0.bias"]
    keys += ["COND_DNET.jointConv.0.weight"] + [f"COND_DNET.jointConv.1.{b}" for b in BN]
    keys += ["COND_DNET.outlogits.0.weight", "COND_DNET.outlogits.0.bias"]
    return keys


def old_torch_state_dict(model):
    """A released-checkpoint-like dict: plain tensors, no `num_batches_tracked` (torch 0.3), fresh values
    (shape-only meta tensors for a model built on the meta device)."""
    g = torch.Generator().manual_seed(0)
    return OrderedDict((k, v if v.is_meta else torch.rand(v.shape, generator=g).to(v.dtype))
                       for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def assert_loads_strictly(model_cls, sd, *args, **kwargs):
    fresh = model_cls(*args, **kwargs)
    load_state_dict_strict(fresh, sd, source="test checkpoint")
    loaded = fresh.state_dict()
    for k, v in sd.items():
        assert loaded[k].shape == v.shape and (v.is_meta or torch.equal(loaded[k], v)), k
    return fresh


# ---------------------------------------------------------------------------------------------------------------
# Released-checkpoint layouts (full sizes, no forward)
# ---------------------------------------------------------------------------------------------------------------
def test_bird_generator_layout_and_strict_load():
    g = G_NET(32, 256, 100, 100, branch_num=3, r_num=2)
    sd = old_torch_state_dict(g)
    assert list(sd) == expected_g_keys(3, 2)
    assert len(sd) == 82
    assert round(n_params(g) / 1e6, 2) == 7.08
    assert [name for name, _ in g.named_children()] == [
        "ca_net", "h_net1", "img_net1", "h_net2", "img_net2", "h_net3", "img_net3"]
    shapes = {
        "ca_net.fc.weight": (400, 256),
        "h_net1.fc.0.weight": (16384, 200),
        "h_net1.upsample1.1.weight": (512, 512, 3, 3),
        "h_net1.upsample4.1.weight": (64, 64, 3, 3),
        "h_net2.att.conv_context.weight": (32, 256, 1, 1),
        "h_net2.residual.1.block.0.weight": (128, 64, 3, 3),
        "h_net3.residual.0.block.3.weight": (64, 64, 3, 3),
        "h_net3.upsample.1.weight": (64, 64, 3, 3),
        "img_net3.img.0.weight": (3, 32, 3, 3),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    fresh = assert_loads_strictly(G_NET, sd, 32, 256, 100, 100, 3, 2)
    assert "h_net1.fc.1.num_batches_tracked" in fresh.state_dict()


def test_coco_generator_layout_and_mismatch_error():
    g = G_NET(48, 256, 100, 100, branch_num=3, r_num=3)
    sd = old_torch_state_dict(g)
    assert list(sd) == expected_g_keys(3, 3)
    assert len(sd) == 102
    assert tuple(sd["h_net1.fc.0.weight"].shape) == (48 * 16 * 32, 200)
    assert tuple(sd["h_net2.residual.2.block.0.weight"].shape) == (192, 96, 3, 3)
    assert_loads_strictly(G_NET, sd, 48, 256, 100, 100, 3, 3)
    with pytest.raises(RuntimeError, match=r"(?s)test checkpoint does not fit G_NET.*h_net2.residual.2"):
        load_state_dict_strict(G_NET(32, 256, 100, 100, 3, 2), sd, source="test checkpoint")


def test_bert_attngan_generator_layout():
    g = G_NET(32, 768, 150, 150, branch_num=3, r_num=2, init_attention=True, upsample_mode="bilinear")
    sd = old_torch_state_dict(g)
    assert list(sd) == expected_g_keys(3, 2, init_attention=True)
    assert len(sd) == 108
    assert tuple(sd["ca_net.fc.weight"].shape) == (600, 768)
    assert tuple(sd["h_net1.fc.0.weight"].shape) == (16384, 300)
    assert tuple(sd["h_net1.att.conv_context.weight"].shape) == (32, 768, 1, 1)
    assert tuple(sd["h_net1.residual.1.block.0.weight"].shape) == (128, 64, 3, 3)
    assert tuple(sd["h_net1.upsample.1.weight"].shape) == (64, 64, 3, 3)
    assert tuple(sd["h_net2.att.conv_context.weight"].shape) == (32, 768, 1, 1)
    assert_loads_strictly(G_NET, sd, 32, 768, 150, 150, 3, 2, True, "bilinear")
    ups = [m for m in g.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 7 and all(m.mode == "bilinear" and m.align_corners for m in ups)


@pytest.mark.parametrize("cls,size,n_keys,mparams", [
    (D_NET64, 64, 25, 6.3), (D_NET128, 128, 35, 19.4), (D_NET256, 256, 45, 71.9)])
def test_discriminator_layouts(cls, size, n_keys, mparams):
    with torch.device("meta" if size == 256 else "cpu"):  # 72 M parameters: shapes only, no init cost
        d = cls(64, 256)
    sd = old_torch_state_dict(d)
    assert list(sd) == expected_d_keys(size)
    assert len(sd) == n_keys
    assert round(n_params(d) / 1e6, 1) == mparams
    assert tuple(sd["img_code_s16.0.weight"].shape) == (64, 3, 4, 4)
    assert tuple(sd["UNCOND_DNET.outlogits.0.weight"].shape) == (1, 512, 4, 4)
    assert tuple(sd["COND_DNET.jointConv.0.weight"].shape) == (512, 768, 3, 3)
    if size == 256:
        assert tuple(sd["img_code_s64.0.weight"].shape) == (2048, 1024, 4, 4)
        assert tuple(sd["img_code_s64_1.0.weight"].shape) == (1024, 2048, 3, 3)
        assert tuple(sd["img_code_s64_2.0.weight"].shape) == (512, 1024, 3, 3)
    with torch.device(next(d.parameters()).device):
        assert_loads_strictly(cls, sd, 64, 256)
    with torch.device("meta"):
        no_uncond = cls(64, 256, b_jcu=False)
    assert no_uncond.UNCOND_DNET is None
    assert [k for k in no_uncond.state_dict() if "num_batches" not in k] == expected_d_keys(size, b_jcu=False)


# ---------------------------------------------------------------------------------------------------------------
# Generator forward (small sizes)
# ---------------------------------------------------------------------------------------------------------------
GF, EF, CF, Z = 4, 12, 6, 10


def small_g(branches=3, init_attention=False, upsample_mode="nearest", cls=G_NET, r_num=1, seed=0):
    torch.manual_seed(seed)
    g = cls(GF, EF, CF, Z, branches, r_num, init_attention, upsample_mode)
    g.apply(weights_init)
    return g.eval()


def text_batch(lengths, t_max=None, seed=1):
    t_max = t_max or max(lengths)
    g = torch.Generator().manual_seed(seed)
    words = torch.randn(len(lengths), EF, t_max, generator=g)
    mask = torch.arange(t_max)[None, :] >= torch.tensor(lengths)[:, None]
    return torch.randn(len(lengths), EF, generator=g), words, mask


@pytest.mark.parametrize("branches", [1, 2, 3])
@pytest.mark.parametrize("init_attention", [False, True])
def test_g_net_output_shapes_and_range(branches, init_attention):
    g = small_g(branches, init_attention, "bilinear" if init_attention else "nearest")
    sent, words, mask = text_batch([5, 3])
    with torch.no_grad():
        imgs, atts, mu, logvar = g(torch.randn(2, Z), sent, words, mask)
    assert [tuple(x.shape) for x in imgs] == [(2, 3, 64 * 2 ** i, 64 * 2 ** i) for i in range(branches)]
    for x in imgs:
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    sizes = ([64] if init_attention else []) + [64 * 2 ** i for i in range(branches - 1)]
    assert [tuple(a.shape) for a in atts] == [(2, 5, s, s) for s in sizes]
    for a in atts:  # a distribution over the real words at every pixel
        assert torch.allclose(a.sum(1), torch.ones(()), atol=1e-5)
        assert torch.all(a[1, 3:] == 0)
    assert mu.shape == logvar.shape == (2, CF)


@pytest.mark.parametrize("cls", [G_NET, G_DCGAN])
def test_preview_is_the_first_image_of_the_same_draw(cls):
    """`preview` (what TRAIN.PAIRED_CANDIDATES compares): G_NET's stage-1 image, G_DCGAN's only image, for the
    same z and conditioning-augmentation draw as a full forward, without building a graph."""
    g = small_g(2, cls=cls, r_num=0)
    sent, words, mask = text_batch([4, 2])
    z, eps = torch.randn(2, Z), torch.randn(2, CF)
    with torch.no_grad():
        first = g(z, sent, words, mask, eps)[0][0]
    preview = g.preview(z, sent, words, mask, eps)
    assert first.shape == (2, 3, 64 if cls is G_NET else 128, 64 if cls is G_NET else 128)
    assert torch.allclose(preview, first, atol=1e-6) and not preview.requires_grad
    assert not torch.allclose(preview, g.preview(z, sent, words, mask, torch.randn(2, CF)))


@pytest.mark.parametrize("cls", [G_NET, G_DCGAN])
def test_preview_of_candidates_reads_the_text_once(cls):
    """`preview(..., candidates=k)`: the text given once per caption, the draws k times (candidate-major), gives the
    previews of the text repeated k times; GAN.WORD_CONTEXT_LAYERS then runs on B captions, not k·B."""
    torch.manual_seed(0)
    g = cls(GF, EF, CF, Z, 2, 0, word_context_layers=1).apply(weights_init).eval()
    sent, words, mask = text_batch([4, 2])
    k = 3
    z, eps = torch.randn(k * 2, Z), torch.randn(k * 2, CF)
    rep = (lambda t: t.repeat(k, *([1] * (t.dim() - 1))))
    calls = []
    g.word_context.register_forward_hook(lambda mod, args, out: calls.append(args[0].size(0)))
    once = g.preview(z, sent, words, mask, eps, candidates=k)
    assert torch.allclose(once, g.preview(z, rep(sent), rep(words), rep(mask), eps), atol=1e-5)
    assert calls == ([2, k * 2] if cls is G_NET else [k * 2, k * 2])


def test_short_rows_stop_after_the_first_stages():
    """`G_NET(..., full_rows=n, short_stages=s)` (TRAIN.ANCHOR_STAGES): every row's images of the first s stages as
    a plain forward draws them, the later stages' images (and attention maps) for the first n rows only, equal to
    those rows of the plain forward (eval mode: BatchNorm reads its running statistics)."""
    torch.manual_seed(0)
    g = G_NET(GF, EF, CF, Z, 3, 0).apply(weights_init).eval()
    sent, words, mask = text_batch([4, 2, 3, 1])
    z, eps = torch.randn(4, Z), torch.randn(4, CF)
    with torch.no_grad():
        full, full_att, _, _ = g(z, sent, words, mask, eps)
        for stages in (1, 2):
            short, att, _, _ = g(z, sent, words, mask, eps, full_rows=2, short_stages=stages)
            assert [f.size(0) for f in short] == [4] * stages + [2] * (3 - stages)
            assert [a.size(0) for a in att] == [4] * (stages - 1) + [2] * (3 - stages)
            for s, f in zip(short, full):
                assert torch.allclose(s, f[:s.size(0)], atol=1e-6)


def test_g_dcgan_single_image():
    g = small_g(3, cls=G_DCGAN, r_num=0)
    assert [n for n, _ in g.named_children()] == ["ca_net", "h_net1", "h_net2", "h_net3", "img_net"]
    assert [k for k in g.state_dict() if "num_batches" not in k] == expected_g_keys(3, 0, dcgan=True)
    sent, words, mask = text_batch([4, 2])
    with torch.no_grad():
        imgs, atts, mu, _ = g(torch.randn(2, Z), sent, words, mask)
    assert len(imgs) == 1 and imgs[0].shape == (2, 3, 256, 256)
    assert imgs[0].abs().max() <= 1
    assert [tuple(a.shape) for a in atts] == [(2, 4, 64, 64), (2, 4, 128, 128)]


def test_ca_net_halves_and_reparametrisation():
    torch.manual_seed(0)
    ca = CA_NET(8, 3)
    text = torch.randn(5, 8)
    x = ca.fc(text)
    glu = x[:, :6] * torch.sigmoid(x[:, 6:])
    torch.manual_seed(7)
    c, mu, logvar = ca(text)
    torch.manual_seed(7)
    eps = torch.randn(5, 3)
    assert torch.allclose(mu, glu[:, :3]) and torch.allclose(logvar, glu[:, 3:])
    assert torch.allclose(c, mu + eps * torch.exp(0.5 * logvar))
    given = torch.randn(5, 3)  # a given draw (TRAIN.PAIRED_CANDIDATES re-renders a chosen candidate)
    assert torch.allclose(ca(text, given)[0], mu + given * torch.exp(0.5 * logvar))
    with pytest.raises(ValueError, match=r"\[B, 8\]"):
        ca(torch.randn(5, 9))
    with pytest.raises(ValueError, match=r"eps must be \(5, 3\)"):
        ca(text, torch.randn(5, 4))


def ca_noise_off(net) -> None:
    """The generator's conditioning augmentation returns c = mu (no noise), so outputs compare exactly."""
    net.ca_net.forward = lambda s, eps=None: (net.ca_net.encode(s)[0],) + net.ca_net.encode(s)


def test_upblock_modes():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5)
    near, bil = upBlock(6, 4, "nearest").eval(), upBlock(6, 4, "bilinear").eval()
    bil.load_state_dict(near.state_dict())
    ref = bil[3](bil[2](bil[1](F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))))
    assert torch.allclose(bil(x), ref, atol=1e-6)
    ref = near[3](near[2](near[1](x.repeat_interleave(2, 2).repeat_interleave(2, 3))))
    assert torch.allclose(near(x), ref, atol=1e-6)
    assert near(x).shape == (2, 4, 10, 10)
    with pytest.raises(ValueError, match="bicubic"):
        upBlock(6, 4, "bicubic")


# ---------------------------------------------------------------------------------------------------------------
# Word attention: each sample masked by its own padding (fix of taoxugit/AttnGAN#93)
# ---------------------------------------------------------------------------------------------------------------
def original_attention(att, query, context, mask):
    """The original GlobalAttentionGeneral's algorithm, including its `mask.repeat(queryL, 1)` row misalignment."""
    b, _, h, w = query.shape
    q, t = h * w, context.size(2)
    source = att.conv_context(context.unsqueeze(3)).squeeze(3)
    scores = torch.bmm(query.view(b, -1, q).transpose(1, 2), source).view(b * q, t)
    if mask is not None:
        scores = scores.masked_fill(mask.repeat(q, 1), float("-inf"))
    attn = torch.softmax(scores, 1).view(b, q, t).transpose(1, 2)
    return torch.bmm(source, attn).view(b, -1, h, w), attn.reshape(b, t, h, w)


def attention_inputs(lengths, t_max):
    torch.manual_seed(3)
    att = GlobalAttentionGeneral(6, EF)
    query = torch.randn(len(lengths), 6, 4, 4)
    _, words, mask = text_batch(lengths, t_max)
    return att, query, words, mask


def test_attention_matches_original_where_original_is_right():
    att, query, words, mask = attention_inputs([3], 5)  # batch of one: the original's mask is aligned
    for ours, ref in zip(att(query, words, mask), original_attention(att, query, words, mask)):
        assert torch.allclose(ours, ref, atol=1e-6)
    att, query, words, _ = attention_inputs([5, 5], 5)  # no padding
    for ours, ref in zip(att(query, words, None), original_attention(att, query, words, None)):
        assert torch.allclose(ours, ref, atol=1e-6)


def test_attention_masks_each_sample_by_its_own_padding():
    att, query, words, mask = attention_inputs([5, 2], 5)
    ctx, attn = att(query, words, mask)
    for i, n in enumerate([5, 2]):
        alone_ctx, alone_attn = att(query[i:i + 1], words[i:i + 1, :, :n], None)
        assert torch.allclose(ctx[i:i + 1], alone_ctx, atol=1e-6)
        assert torch.allclose(attn[i:i + 1, :n], alone_attn, atol=1e-6)
        assert torch.all(attn[i, n:] == 0)
    # the original gives other samples' padding to half of the pixels, so it differs here
    assert not torch.allclose(original_attention(att, query, words, mask)[0], ctx, atol=1e-3)
    # changing padded word features of sample 1 changes nothing
    words2 = words.clone()
    words2[1, :, 2:] = torch.randn(EF, 3) * 10
    assert torch.equal(att(query, words2, mask)[0], ctx)


def test_attention_fully_padded_row_is_zero_not_nan():
    att, query, words, mask = attention_inputs([4, 0], 4)
    ctx, attn = att(query, words, mask)
    assert torch.isfinite(ctx).all() and torch.isfinite(attn).all()
    assert torch.all(ctx[1] == 0) and torch.all(attn[1] == 0)
    assert torch.allclose(ctx[:1], att(query[:1], words[:1], None)[0], atol=1e-6)
    query.requires_grad_(True)
    att(query, words, mask)[0].sum().backward()
    assert torch.isfinite(query.grad).all()


def test_attention_rejects_bad_masks():
    att, query, words, mask = attention_inputs([4, 2], 4)
    with pytest.raises(TypeError, match="bool"):
        att(query, words, mask.to(torch.uint8))
    with pytest.raises(ValueError, match=r"\[2, 4\].*words_embs.size\(2\)"):
        att(query, words, torch.zeros(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=f"{EF}"):
        att(query, words[:, :5], mask)


@pytest.mark.parametrize("init_attention", [False, True])
def test_generator_padding_is_per_sample(init_attention):
    g = small_g(2, init_attention)
    ca_noise_off(g)
    z = torch.randn(2, Z)
    sent, words, mask = text_batch([5, 3])
    with torch.no_grad():
        imgs, atts, _, _ = g(z, sent, words, mask)
        for i, n in enumerate([5, 3]):
            alone, alone_atts, _, _ = g(z[i:i + 1], sent[i:i + 1], words[i:i + 1, :, :n],
                                        torch.zeros(1, n, dtype=torch.bool))
            for x, y in zip(imgs, alone):
                assert torch.allclose(x[i:i + 1], y, atol=1e-5)
            for a, b in zip(atts, alone_atts):
                assert torch.allclose(a[i:i + 1, :n], b, atol=1e-5)
        padded = words.clone()
        padded[1, :, 3:] += 5.0  # padding of sample 1: no effect
        assert torch.allclose(g(z, sent, padded, mask)[0][-1], imgs[-1], atol=1e-6)
        real = words.clone()
        real[1, :, 0] += 5.0  # a real word of sample 1: changes its image only
        out = g(z, sent, real, mask)[0][-1]
        assert not torch.allclose(out[1], imgs[-1][1], atol=1e-3)
        assert torch.allclose(out[0], imgs[-1][0], atol=1e-6)


def test_stage_modules_direct():
    torch.manual_seed(0)
    init = INIT_STAGE_G(GF * 16, CF, Z).eval()
    h, att = init(torch.randn(2, Z), torch.randn(2, CF))
    assert h.shape == (2, GF, 64, 64) and att is None
    nxt = NEXT_STAGE_G(GF, EF, r_num=2).eval()
    _, words, mask = text_batch([3, 2])
    h2, att2 = nxt(h, words, mask)
    assert h2.shape == (2, GF, 128, 128) and att2.shape == (2, 3, 64, 64)
    # the fc input is cat(c_code, z): with the first CF input columns zeroed, c_code has no effect
    with torch.no_grad():
        init.fc[0].weight[:, :CF] = 0
    z = torch.randn(2, Z)
    assert torch.equal(init(z, torch.randn(2, CF))[0], init(z, torch.randn(2, CF))[0])
    assert not torch.allclose(init(z, torch.zeros(2, CF))[0], init(torch.randn(2, Z), torch.zeros(2, CF))[0])
    with pytest.raises(ValueError, match="Z_DIM=10"):
        init(torch.randn(2, Z + 1), torch.randn(2, CF))
    with pytest.raises(ValueError, match="nef"):
        INIT_STAGE_G(GF * 16, CF, Z, init_attention=True)


# ---------------------------------------------------------------------------------------------------------------
# Discriminators and losses
# ---------------------------------------------------------------------------------------------------------------
NDF, NEF = 4, 12


def small_ds():
    torch.manual_seed(0)
    ds = [D_NET64(NDF, NEF), D_NET128(NDF, NEF, b_jcu=False), D_NET256(NDF, NEF)]
    for d in ds:
        d.apply(weights_init)
    return ds


def test_discriminator_forward_and_heads():
    d64, d128, d256 = small_ds()
    for d, size in ((d64, 64), (d128, 128), (d256, 256)):
        feats = d(torch.rand(3, 3, size, size) * 2 - 1)
        assert feats.shape == (3, NDF * 8, 4, 4)
    sent = torch.randn(3, NEF)
    logits = d256.COND_DNET(feats, sent, logits=True)
    assert logits.shape == (3,)
    assert torch.allclose(d256.COND_DNET(feats, sent), torch.sigmoid(logits), atol=1e-6)
    assert torch.allclose(d256.UNCOND_DNET(feats), torch.sigmoid(d256.UNCOND_DNET(feats, logits=True)))
    assert isinstance(d256.COND_DNET.outlogits[1], nn.Sigmoid)
    with pytest.raises(ValueError, match="D_NET128 expects images"):
        d128(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="c_code"):
        d64.COND_DNET(feats)
    with pytest.raises(ValueError, match="64·2"):
        D_NET(NDF, NEF, 96)
    uncond = D_GET_LOGITS(NDF, NEF)
    assert not hasattr(uncond, "jointConv")
    assert torch.equal(uncond(feats, sent), uncond(feats))  # an unconditional head ignores the sentence


def reference_d_loss(netD, real, fake, cond, real_labels, fake_labels):
    """AttnGAN's discriminator_loss as written: BCELoss on the heads' sigmoid outputs."""
    bce = nn.BCELoss()
    rf, ff = netD(real), netD(fake)
    b = real.size(0)
    cr = bce(netD.COND_DNET(rf, cond), real_labels)
    cf = bce(netD.COND_DNET(ff, cond), fake_labels)
    cw = bce(netD.COND_DNET(rf[:b - 1], cond[1:b]), fake_labels[1:b])
    if netD.UNCOND_DNET is None:
        return cr + (cf + cw) / 2
    r, f = bce(netD.UNCOND_DNET(rf), real_labels), bce(netD.UNCOND_DNET(ff), fake_labels)
    return (r + cr) / 2 + (f + cf + cw) / 3


def test_discriminator_loss_matches_sigmoid_bce():
    torch.manual_seed(1)
    real_labels, fake_labels = torch.full((3,), 0.9), torch.zeros(3)
    cond = torch.randn(3, NEF)
    for d, size in zip(small_ds(), (64, 128, 256)):
        d.eval()
        real, fake = torch.rand(3, 3, size, size) * 2 - 1, torch.rand(3, 3, size, size) * 2 - 1
        fake.requires_grad_(True)
        ours = discriminator_loss(d, real, fake, cond, real_labels, fake_labels)
        ref = reference_d_loss(d, real, fake, cond, real_labels, fake_labels)
        assert torch.allclose(ours, ref, atol=1e-5), (type(d).__name__, ours, ref)
        ours.backward()
        assert fake.grad is None  # fakes are detached
    with pytest.raises(ValueError, match="at least 2"):
        discriminator_loss(d, real[:1], fake[:1], cond[:1], real_labels[:1], fake_labels[:1])


def test_generator_adversarial_loss_matches_sigmoid_bce():
    ds = [d.eval() for d in small_ds()]
    torch.manual_seed(2)
    fakes = [torch.rand(3, 3, s, s) * 2 - 1 for s in (64, 128, 256)]
    sent = torch.randn(3, NEF)
    total, stages = generator_adversarial_loss(ds, fakes, sent)
    bce, ones = nn.BCELoss(), torch.ones(3)
    ref = []
    for d, x in zip(ds, fakes):
        f = d(x)
        loss = bce(d.COND_DNET(f, sent), ones)
        if d.UNCOND_DNET is not None:
            loss = loss + bce(d.UNCOND_DNET(f), ones)
        ref.append(loss)
    assert len(stages) == 3
    for a, b in zip(stages, ref):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(total, sum(ref), atol=1e-5)
    with pytest.raises(ValueError, match="2 discriminators for 3"):
        generator_adversarial_loss(ds[:2], fakes, sent)


def test_kl_loss_is_mean_gaussian_kl():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0)).mean()
    assert torch.allclose(KL_loss(mu, logvar), ref, atol=1e-6)
    assert KL_loss(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0


def test_losses_under_autocast_bf16():
    d = small_ds()[0]
    g = small_g(1)
    sent, words, mask = text_batch([4, 3, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        imgs, _, _, _ = g(torch.randn(3, Z), sent, words, mask)
        d_loss = discriminator_loss(d, torch.rand(3, 3, 64, 64), imgs[0], sent, torch.ones(3), torch.zeros(3))
        g_loss, _ = generator_adversarial_loss([d], imgs, sent)
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)


# ---------------------------------------------------------------------------------------------------------------
# Initialisation and factories
# ---------------------------------------------------------------------------------------------------------------
def test_weights_init():
    torch.manual_seed(0)
    g = G_NET(GF, EF, CF, Z, 2, 1)
    d = D_NET64(NDF, NEF)
    out_bias = d.COND_DNET.outlogits[0].bias.clone()
    g.apply(weights_init)
    d.apply(weights_init)
    for m in list(g.modules()) + list(d.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.reshape(m.weight.size(0), -1)
            gram = w @ w.t() if w.size(0) <= w.size(1) else w.t() @ w
            assert torch.allclose(gram, torch.eye(gram.size(0)), atol=1e-4)
        if isinstance(m, nn.Linear) and m.bias is not None:
            assert torch.all(m.bias == 0)
    bns = [m for m in g.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    weights = torch.cat([m.weight for m in bns])
    assert abs(weights.mean().item() - 1) < 0.01 and 0.01 < weights.std().item() < 0.03
    assert all(torch.all(m.bias == 0) for m in bns)
    assert torch.equal(d.COND_DNET.outlogits[0].bias, out_bias)  # conv biases keep their default init


def small_cfg(**overrides):
    base = {"GAN.GF_DIM": 2, "GAN.DF_DIM": 2}
    base.update(overrides)
    return load_config("cfg/bird_attn2.yml", base)


def test_factories_attngan():
    cfg = small_cfg()
    g = build_generator(cfg)
    assert isinstance(g, G_NET) and [k for k in g.state_dict() if "num_b" not in k] == expected_g_keys(3, 2)
    assert g.h_net1.fc[0].weight.shape == (2 * 16 * 32, 200)
    ds = build_discriminators(cfg)
    assert [type(d) for d in ds] == [D_NET64, D_NET128, D_NET256]
    assert all(d.UNCOND_DNET is not None for d in ds)


def test_factories_dcgan_and_bert():
    cfg = small_cfg(**{"GAN.B_DCGAN": True, "GAN.R_NUM": 0, "TREE.BRANCH_NUM": 2})
    g = build_generator(cfg)
    assert isinstance(g, G_DCGAN) and not hasattr(g, "h_net3")
    ds = build_discriminators(cfg)
    assert len(ds) == 1 and type(ds[0]) is D_NET128 and ds[0].UNCOND_DNET is None
    cfg = small_cfg(**{"TEXT.EMBEDDING_DIM": 768, "GAN.CONDITION_DIM": 150, "GAN.Z_DIM": 150,
                       "GAN.B_INIT_ATTENTION": True, "GAN.UPSAMPLE": "bilinear"})
    g = build_generator(cfg)
    assert [k for k in g.state_dict() if "num_b" not in k] == expected_g_keys(3, 2, init_attention=True)
    assert g.h_net1.att.conv_context.weight.shape == (2, 768, 1, 1)
    assert g.h_net2.upsample[0].mode == "bilinear"


def test_factories_reject_bad_config():
    with pytest.raises(ValueError, match="got TREE.BASE_SIZE=299"):
        build_generator(small_cfg(**{"TREE.BASE_SIZE": 299}))
    with pytest.raises(ValueError, match="upsample_mode.*'bicubic'"):
        build_generator(small_cfg(**{"GAN.UPSAMPLE": "bicubic"}))
    with pytest.raises(ValueError, match="BRANCH_NUM"):
        build_discriminators(small_cfg(**{"TREE.BRANCH_NUM": 0}))


def test_d_stages_keeps_the_last_stages_discriminators():
    """GAN.D_STAGES n (ours): discriminators for the last n stages only; 0 is AttnGAN's one per stage."""
    assert [type(d) for d in build_discriminators(small_cfg(**{"GAN.D_STAGES": 1}))] == [D_NET256]
    assert [type(d) for d in build_discriminators(small_cfg(**{"GAN.D_STAGES": 2}))] == [D_NET128, D_NET256]
    assert [type(d) for d in build_discriminators(small_cfg(**{"GAN.D_STAGES": 3}))] == [D_NET64, D_NET128, D_NET256]
    for bad in (4, -1):
        with pytest.raises(InputError, match=rf"GAN.D_STAGES must be .*BRANCH_NUM \(3\), got {bad}"):
            build_discriminators(small_cfg(**{"GAN.D_STAGES": bad}))


@pytest.mark.parametrize("base, stride1", [(32, 1), (16, 2)])
def test_small_base_sizes_two_stages_for_cpu_configs(base, stride1):
    """BASE_SIZE 32 or 16 (ours): stages of base and 2·base px with word attention; D reaches 4×4 on the small
    first-stage images by making its last one or two downsampling convs 3×3 stride-1 ones."""
    cfg = small_cfg(**{"TREE.BASE_SIZE": base, "TREE.BRANCH_NUM": 2})
    netG, netsD = build_generator(cfg), build_discriminators(cfg)
    b, t = 3, 5
    z = torch.randn(b, cfg.GAN.Z_DIM)
    sent, words = torch.randn(b, cfg.TEXT.EMBEDDING_DIM), torch.randn(b, cfg.TEXT.EMBEDDING_DIM, t)
    imgs, att, _, _ = netG(z, sent, words, torch.zeros(b, t, dtype=torch.bool))
    assert [tuple(i.shape[2:]) for i in imgs] == [(base, base), (2 * base, 2 * base)]
    assert tuple(att[0].shape) == (b, t, base, base)
    assert [type(d).__name__ for d in netsD] == ["D_NET", "D_NET64" if base == 32 else "D_NET"]
    strides = [m.stride[0] for m in netsD[0].img_code_s16 if isinstance(m, nn.Conv2d)]
    assert strides == [2] * (4 - stride1) + [1] * stride1
    for d, img in zip(netsD, imgs):
        assert tuple(d(img).shape) == (b, cfg.GAN.DF_DIM * 8, 4, 4)
    with pytest.raises(InputError, match="BASE_SIZE"):
        build_generator(small_cfg(**{"TREE.BASE_SIZE": 8}))


def test_hinge_losses_and_diffaugment_option():
    """GAN.ADV_LOSS hinge: D = (relu(1-u_r) + relu(1-c_r))/2 + (relu(1+u_f) + relu(1+c_f) + relu(1+c_w))/3 on the
    same features as the BCE loss; G = -(c_f + u_f); an `augment` callable is applied to D's inputs."""
    d = small_ds()[0].eval()
    torch.manual_seed(3)
    real, fake, cond = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1, torch.randn(4, NEF)
    ours = discriminator_loss(d, real, fake, cond, torch.ones(4), torch.zeros(4), adv_loss="hinge")
    fr, ff = d(real), d(fake)
    c = lambda f, s: d.COND_DNET(f, s, logits=True)  # noqa: E731
    u = lambda f: d.UNCOND_DNET(f, logits=True)  # noqa: E731
    ref = ((F.relu(1 - u(fr)).mean() + F.relu(1 - c(fr, cond)).mean()) / 2
           + (F.relu(1 + u(ff)).mean() + F.relu(1 + c(ff, cond)).mean() + F.relu(1 + c(fr[:3], cond[1:])).mean()) / 3)
    assert torch.allclose(ours, ref, atol=1e-5)
    total, _ = generator_adversarial_loss([d], [fake], cond, adv_loss="hinge")
    assert torch.allclose(total, -(c(ff, cond).mean() + u(ff).mean()), atol=1e-5)
    seen = []
    discriminator_loss(d, real, fake, cond, torch.ones(4), torch.zeros(4), augment=lambda x: seen.append(x) or -x)
    assert len(seen) == 2 and seen[0] is real  # reals and (detached) fakes both go through the augmentation
    with pytest.raises(ValueError, match="GAN.ADV_LOSS"):
        discriminator_loss(d, real, fake, cond, torch.ones(4), torch.zeros(4), adv_loss="wgan")


def test_discriminator_spectral_norm_option():
    cfg = small_cfg()
    cfg.GAN.D_SPECTRAL_NORM = True
    d = build_discriminators(cfg)[0]
    keys = d.state_dict().keys()
    assert "img_code_s16.0.weight_orig" in keys and "img_code_s16.0.weight_u" in keys
    w = d.img_code_s16[0].weight_orig.detach()
    d.train()
    for _ in range(30):  # power iterations converge; the used weight has spectral norm ~1
        d(torch.rand(2, 3, 64, 64))
    sigma = torch.linalg.matrix_norm(d.img_code_s16[0].weight.detach().flatten(1), ord=2)
    assert abs(float(sigma) - 1.0) < 0.05 and not torch.equal(w, d.img_code_s16[0].weight.detach())


def test_grid_attention_binds_words_to_places_in_stage_1():
    """GAN.GRID_ATTENTION (ours): stage 1 attends over the words at g x g with position-aware queries.

    With one branch and no grid attention the words reach G only through the sentence; with it, a changed word
    changes the image, padding does not, and each sample is masked by its own padding."""
    cfg = small_cfg(**{"TREE.BRANCH_NUM": 1, "TREE.BASE_SIZE": 32, "GAN.GRID_ATTENTION": 8, "GAN.R_NUM": 1})
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    ch = cfg.GAN.GF_DIM * 16 // 4  # 2x2 fc map, upBlocks to 4 and 8: ngf / 4 channels at 8 x 8
    sd = g.state_dict()
    assert tuple(sd["h_net1.grid_pos"].shape) == (1, ch, 8, 8)
    assert tuple(sd["h_net1.grid_att.conv_context.weight"].shape) == (ch, cfg.TEXT.EMBEDDING_DIM, 1, 1)
    plain = build_generator(small_cfg(**{"TREE.BRANCH_NUM": 1, "TREE.BASE_SIZE": 32})).eval()
    assert not any("grid" in k for k in plain.state_dict())

    b, t, e = 2, 6, cfg.TEXT.EMBEDDING_DIM
    z, sent, words = torch.randn(b, cfg.GAN.Z_DIM), torch.randn(b, e), torch.randn(b, e, t)
    mask = torch.arange(t)[None, :] >= torch.tensor([6, 4])[:, None]
    with torch.no_grad():
        for net in (g, plain):
            ca_noise_off(net)
        base = g(z, sent, words, mask)[0][-1]
        changed = words.clone()
        changed[1, :, 1] += 3.0  # a real word of sample 1
        out = g(z, sent, changed, mask)[0][-1]
        assert (out[1] - base[1]).abs().max() > 1e-3 and torch.allclose(out[0], base[0], atol=1e-6)
        padded = words.clone()
        padded[1, :, 4:] += 3.0  # sample 1's padding
        assert torch.allclose(g(z, sent, padded, mask)[0][-1], base, atol=1e-6)
        assert torch.equal(plain(z, sent, changed, mask)[0][-1], plain(z, sent, words, mask)[0][-1])
        # the queries know their place: moving the position embedding changes the image
        g.h_net1.grid_pos.add_(torch.randn_like(g.h_net1.grid_pos))
        assert (g(z, sent, words, mask)[0][-1] - base).abs().max() > 1e-3


def test_grid_attention_rejects_sizes_stage_1_does_not_have():
    with pytest.raises(ValueError, match=r"GAN.GRID_ATTENTION must be one of stage 1's sizes \[2, 4, 8, 16, 32\]"):
        build_generator(small_cfg(**{"TREE.BASE_SIZE": 32, "GAN.GRID_ATTENTION": 6}))
    with pytest.raises(ValueError, match=r"\[4, 8, 16, 32, 64\].*got 3"):
        build_generator(small_cfg(**{"GAN.GRID_ATTENTION": 3}))


def test_grid_noise_lays_the_first_noise_entries_out_on_the_attention_grid():
    """GAN.GRID_NOISE (ours): the first g*g entries of z, as a g x g map, reach stage 1 where the grid attention
    reads it (through `h_net1.grid_noise`, a 1x1 conv); without it G reads those entries through the fc only."""
    cfg = small_cfg(**{"TREE.BRANCH_NUM": 1, "TREE.BASE_SIZE": 32, "GAN.GRID_ATTENTION": 8, "GAN.R_NUM": 1,
                       "GAN.GRID_NOISE": True})
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    ch = cfg.GAN.GF_DIM * 16 // 4
    assert tuple(g.state_dict()["h_net1.grid_noise.weight"].shape) == (ch, 1, 1, 1)
    ca_noise_off(g)
    b, t, e = 2, 6, cfg.TEXT.EMBEDDING_DIM
    z, sent, words = torch.randn(b, cfg.GAN.Z_DIM), torch.randn(b, e), torch.randn(b, e, t)
    seen = []
    g.h_net1.grid_att.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        base = g(z, sent, words)[0][-1]
        g.h_net1.grid_noise.weight.zero_()
        g.h_net1.grid_noise.bias.zero_()
        g(z, sent, words)
        # the queries (features + place embedding) differ by exactly the projected map of z[:, :64]
        plain = seen[-1]
        g.h_net1.grid_noise.weight.fill_(1.0)
        g(z, sent, words)
        assert torch.allclose(seen[-1] - plain, z[:, :64].view(b, 1, 8, 8).expand(b, ch, 8, 8), atol=1e-5)
        assert (g(z, sent, words)[0][-1] - base).abs().max() > 1e-3
    with pytest.raises(ValueError, match="GAN.GRID_NOISE needs GAN.GRID_ATTENTION"):
        build_generator(small_cfg(**{"GAN.GRID_NOISE": True}))
    with pytest.raises(ValueError, match="GAN.Z_DIM must be at least 64, got 32"):
        build_generator(small_cfg(**{"TREE.BASE_SIZE": 32, "GAN.GRID_ATTENTION": 8, "GAN.GRID_NOISE": True,
                                     "GAN.Z_DIM": 32}))


def test_grid_heads_attend_with_several_heads_and_separate_projections():
    """GAN.GRID_HEADS (ours): stage 1's grid attention as multi-head attention with separate query / key / value
    projections; each place's attention is a distribution over its caption's real words, padding changes nothing,
    and a changed word changes only its own sample."""
    cfg = small_cfg(**{"TREE.BRANCH_NUM": 1, "TREE.BASE_SIZE": 32, "GAN.GRID_ATTENTION": 8, "GAN.R_NUM": 1,
                       "GAN.GF_DIM": 4, "GAN.GRID_HEADS": 2})
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    ch, e = cfg.GAN.GF_DIM * 16 // 4, cfg.TEXT.EMBEDDING_DIM
    sd = g.state_dict()
    assert tuple(sd["h_net1.grid_att.mha.q_proj_weight"].shape) == (ch, ch)
    assert tuple(sd["h_net1.grid_att.mha.k_proj_weight"].shape) == (ch, e)
    assert tuple(sd["h_net1.grid_att.mha.v_proj_weight"].shape) == (ch, e)
    assert not any("conv_context" in k for k in sd)

    b, t = 2, 6
    mask = torch.arange(t)[None, :] >= torch.tensor([6, 4])[:, None]
    words = torch.randn(b, e, t)
    att = GridWordAttention(ch, e, 2)
    context, maps = att(torch.randn(b, ch, 8, 8), words, mask)
    assert context.shape == (b, ch, 8, 8) and maps.shape == (b, t, 8, 8)
    assert torch.allclose(maps.sum(1), torch.ones(b, 8, 8), atol=1e-5)
    assert maps[1, 4:].abs().max() == 0 and maps[1, :4].min() > 0

    ca_noise_off(g)
    z, sent = torch.randn(b, cfg.GAN.Z_DIM), torch.randn(b, e)
    with torch.no_grad():
        base = g(z, sent, words, mask)[0][-1]
        padded = words.clone()
        padded[1, :, 4:] += 3.0
        assert torch.allclose(g(z, sent, padded, mask)[0][-1], base, atol=1e-6)
        changed = words.clone()
        changed[1, :, 1] += 3.0
        out = g(z, sent, changed, mask)[0][-1]
        assert (out[1] - base[1]).abs().max() > 1e-3 and torch.allclose(out[0], base[0], atol=1e-6)
    plain = build_generator(small_cfg(**{"TREE.BRANCH_NUM": 1, "TREE.BASE_SIZE": 32, "GAN.GRID_ATTENTION": 8,
                                         "GAN.R_NUM": 1, "GAN.GF_DIM": 4}))
    assert "GAN.GRID_HEADS 0, config says > 0" in describe_mismatch(g, plain.state_dict(), "netG.pth")
    with pytest.raises(ValueError, match=r"GAN.GRID_HEADS must divide stage 1's channels at the grid \(16\), got 3"):
        build_generator(small_cfg(**{"TREE.BASE_SIZE": 32, "GAN.GRID_ATTENTION": 8, "GAN.GF_DIM": 4,
                                     "GAN.GRID_HEADS": 3}))
    with pytest.raises(ValueError, match="GAN.GRID_HEADS needs GAN.GRID_ATTENTION"):
        build_generator(small_cfg(**{"GAN.GRID_HEADS": 2}))


def test_grid_word_attention_is_multihead_attentions_maths_with_a_float32_softmax():
    """GridWordAttention computes nn.MultiheadAttention's output and head-averaged weights from the module's own
    parameters (keys `mha.*` unchanged), with the softmax in float32: equal in float32, output and gradients, with
    and without separate key / value sizes; under CPU bf16 autocast its weights come back in float32, still rows
    summing to 1 and 0 at padding."""
    torch.manual_seed(0)
    b, t = 3, 7
    mask = torch.arange(t)[None, :] >= torch.tensor([7, 4, 1])[:, None]
    for ch, e in ((16, 12), (16, 16)):
        att = GridWordAttention(ch, e, 4)
        query = torch.randn(b, 25, ch, requires_grad=True)
        words = torch.randn(b, t, e, requires_grad=True)
        out, weights = att._attend(query, words, mask)
        ref, ref_weights = att.mha(query, words, words, key_padding_mask=mask, need_weights=True)
        assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(weights, ref_weights, atol=1e-6)
        grads = torch.autograd.grad((out * torch.arange(ch)).sum(), (query, words, att.mha.out_proj.weight))
        ref_grads = torch.autograd.grad((ref * torch.arange(ch)).sum(), (query, words, att.mha.out_proj.weight))
        assert all(torch.allclose(g, r, atol=1e-5) for g, r in zip(grads, ref_grads))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, maps = att(torch.randn(b, ch, 5, 5), torch.randn(b, e, t), mask)
    assert maps.dtype == torch.float32 and torch.allclose(maps.sum(1), torch.ones(b, 5, 5), atol=1e-5)
    assert maps[1, 4:].abs().max() == 0 and maps[2, 1:].abs().max() == 0


def test_word_context_runs_in_float32_under_autocast():
    """WordContext leaves autocast for its few tokens (CPU bf16 attention is slow): under bf16 autocast it returns
    float32 features equal to its plain float32 forward."""
    torch.manual_seed(0)
    ctx = WordContext(EF, 1).eval()
    _, words, mask = text_batch([5, 3])
    with torch.no_grad():
        plain = ctx(words, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = ctx(words.bfloat16(), mask)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, ctx(words.bfloat16().float(), mask), atol=1e-6)
    assert torch.allclose(mixed, plain, atol=0.1)


def test_grid_place_features_put_the_place_embedding_into_stage_1s_features():
    """GAN.GRID_PLACE_FEATURES (ours): the grid's per-place embedding (`h_net1.grid_place`) is added to stage 1's
    features, so what the attention adds and every later layer see the place; without it (`grid_pos`) only the
    attention's queries do. The same parameter count; a checkpoint names which it was trained with."""
    base = {"TREE.BRANCH_NUM": 1, "TREE.BASE_SIZE": 32, "GAN.GRID_ATTENTION": 8, "GAN.R_NUM": 1, "GAN.GF_DIM": 4,
            "GAN.GRID_HEADS": 2}
    torch.manual_seed(0)
    g = build_generator(small_cfg(**base, **{"GAN.GRID_PLACE_FEATURES": True})).eval()
    torch.manual_seed(0)
    plain = build_generator(small_cfg(**base)).eval()
    sd, plain_sd = g.state_dict(), plain.state_dict()
    assert "h_net1.grid_place" in sd and "h_net1.grid_pos" not in sd and "h_net1.grid_place" not in plain_sd
    assert sum(p.numel() for p in g.parameters()) == sum(p.numel() for p in plain.parameters())
    assert torch.equal(sd["h_net1.grid_place"], plain_sd["h_net1.grid_pos"])  # the same init, another place
    ca_noise_off(g)
    ca_noise_off(plain)
    b, e = 2, small_cfg().TEXT.EMBEDDING_DIM
    z, sent, words = torch.randn(b, 100), torch.randn(b, e), torch.randn(b, e, 5)
    seen = {}
    for name, net in (("g", g), ("plain", plain)):  # the input of the upBlock after the grid (8 -> 16)
        net.h_net1.upsample3.register_forward_pre_hook(lambda m, args, name=name: seen.update({name: args[0]}))
    with torch.no_grad():
        out = g(z, sent, words)[0][-1]
        assert (out - plain(z, sent, words)[0][-1]).abs().max() > 1e-3
    # the same weights otherwise: the features after the grid differ by the embedding plus what the attention reads
    # from queries that now hold it; with the attention's output projection zeroed, by the embedding alone
    with torch.no_grad():
        for net in (g, plain):
            net.h_net1.grid_att.mha.out_proj.weight.zero_()
            net.h_net1.grid_att.mha.out_proj.bias.zero_()
        seen.clear()
        g(z, sent, words)
        plain(z, sent, words)
    assert torch.allclose(seen["g"] - seen["plain"], sd["h_net1.grid_place"].expand(b, -1, -1, -1), atol=1e-5)
    assert "GAN.GRID_PLACE_FEATURES False, config says True" in describe_mismatch(g, plain_sd, "netG.pth")
    with pytest.raises(ValueError, match="GAN.GRID_PLACE_FEATURES needs GAN.GRID_ATTENTION"):
        build_generator(small_cfg(**{"GAN.GRID_PLACE_FEATURES": True}))


def test_position_queries_let_a_uniform_map_attend_by_place():
    """GAN.POSITION_QUERIES (ours): stages 2+ add a learned per-position embedding to their attention queries.
    On features that are the same everywhere, plain attention is the same at every pixel; with the embedding it
    differs from place to place."""
    torch.manual_seed(0)
    plain, placed = NEXT_STAGE_G(GF, EF, r_num=1).eval(), NEXT_STAGE_G(GF, EF, r_num=1, pos_size=8).eval()
    assert tuple(placed.pos.shape) == (1, GF, 8, 8) and "pos" in placed.state_dict()
    assert "pos" not in plain.state_dict()
    h = torch.ones(2, GF, 8, 8)
    _, words, mask = text_batch([4, 3])
    with torch.no_grad():
        _, att_plain = plain(h, words, mask)
        _, att_placed = placed(h, words, mask)
    flat = att_plain.flatten(2)
    assert torch.allclose(flat, flat[:, :, :1].expand_as(flat), atol=1e-6)
    spread = att_placed.flatten(2).std(dim=2)  # over positions
    assert (spread[0, :4] > 1e-3).all() and (att_placed[1, 3] == 0).all()  # sample 1's padding stays masked
    with pytest.raises(ValueError, match=r"position queries are \(8, 8\), features \(16, 16\)"):
        placed(torch.ones(1, GF, 16, 16), words[:1], mask[:1])
    cfg = small_cfg(**{"TREE.BASE_SIZE": 32, "TREE.BRANCH_NUM": 3, "GAN.POSITION_QUERIES": True})
    g = build_generator(cfg)
    assert tuple(g.h_net2.pos.shape[2:]) == (32, 32) and tuple(g.h_net3.pos.shape[2:]) == (64, 64)


def test_word_context_mixes_words_within_each_caption_only():
    """GAN.WORD_CONTEXT_LAYERS (ours): Transformer layers over G's word features. A changed word changes the other
    words of its own caption, not another caption's; padding changes nothing; an all-padding caption stays finite."""
    torch.manual_seed(0)
    ctx = WordContext(EF, 1).eval()
    _, words, mask = text_batch([5, 3])
    with torch.no_grad():
        base = ctx(words, mask)
        assert base.shape == words.shape
        changed = words.clone()
        changed[1, :, 0] += 3.0
        out = ctx(changed, mask)
        assert (out[1, :, 1:3] - base[1, :, 1:3]).abs().max() > 1e-3  # the caption's other words see it
        assert torch.allclose(out[0], base[0], atol=1e-6)
        padded = words.clone()
        padded[1, :, 3:] += 3.0
        assert torch.allclose(ctx(padded, mask)[:, :, :3], base[:, :, :3], atol=1e-5)
        assert torch.isfinite(ctx(words, torch.ones_like(mask))).all()
    with pytest.raises(ValueError, match="at least one layer"):
        WordContext(EF, 0)


def test_generator_word_context_option_keys_and_effect():
    cfg = small_cfg(**{"TREE.BASE_SIZE": 32, "TREE.BRANCH_NUM": 2, "GAN.GRID_ATTENTION": 8,
                       "GAN.WORD_CONTEXT_LAYERS": 2})
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    sd = g.state_dict()
    assert {k.split(".")[3] for k in sd if k.startswith("word_context.encoder.layers.")} == {"0", "1"}
    assert not any(k.startswith("word_context") for k in build_generator(small_cfg()).state_dict())
    b, e = 2, cfg.TEXT.EMBEDDING_DIM
    z, sent, words = torch.randn(b, cfg.GAN.Z_DIM), torch.randn(b, e), torch.randn(b, e, 6)
    mask = torch.arange(6)[None, :] >= torch.tensor([6, 4])[:, None]
    with torch.no_grad():
        ca_noise_off(g)
        base = g(z, sent, words, mask)[0][-1]
        assert torch.allclose(g(z, sent, words, mask)[0][-1], base)
        g.word_context = None  # the same weights reading the DAMSM words directly
        assert (g(z, sent, words, mask)[0][-1] - base).abs().max() > 1e-4


def test_mismatch_message_names_word_context_layers():
    plain = G_NET(4, 32, 100, 100, 2, 1, base_size=32)
    ctx = G_NET(4, 32, 100, 100, 2, 1, base_size=32, word_context_layers=1)
    head = describe_mismatch(plain, ctx.state_dict(), "ctx.pth").splitlines()[0]
    assert "GAN.WORD_CONTEXT_LAYERS 1, config says 0" in head
    d_plain, d_words = D_NET64(2, 32), D_NET64(2, 32, word_layers=1)
    head = describe_mismatch(d_plain, d_words.state_dict(), "netD1.pth").splitlines()[0]
    assert "GAN.D_WORD_CONTEXT_LAYERS 1, config says 0" in head


def test_discriminator_word_condition_reads_each_captions_words():
    """GAN.D_WORD_CONTEXT_LAYERS (ours): the conditional head adds a per-place map of the (contextualised) words to
    the sentence code. Its logits change with a caption's words but not with its padding; the mismatched pair's
    slice cuts sentence, words and mask together; the plain head ignores the words; spectral norm leaves the word
    layers trainable."""
    cfg = small_cfg(**{"GAN.D_WORD_CONTEXT_LAYERS": 1, "GAN.D_SPECTRAL_NORM": True})
    torch.manual_seed(0)
    d = build_discriminators(cfg)[0]
    keys = d.state_dict().keys()
    assert "COND_DNET.word_grid.queries" in keys and "UNCOND_DNET.word_grid.queries" not in keys
    assert not any("word_grid" in k and k.endswith("_orig") for k in keys)  # no spectral norm inside
    assert "COND_DNET.jointConv.0.weight_orig" in keys  # the AttnGAN layers keep it
    e = cfg.TEXT.EMBEDDING_DIM
    sent, words = torch.randn(3, e), torch.randn(3, e, 5)
    mask = torch.arange(5)[None, :] >= torch.tensor([5, 3, 4])[:, None]
    cond = TextCondition(sent, words, mask)
    assert torch.equal(cond[1:].words, words[1:]) and torch.equal(cond[1:].mask, mask[1:])
    d.eval()
    feats = d(torch.rand(3, 3, 64, 64))
    with torch.no_grad():
        base = d.COND_DNET(feats, cond, logits=True)
        changed = words.clone()
        changed[1, :, 0] += 3.0
        out = d.COND_DNET(feats, TextCondition(sent, changed, mask), logits=True)
        assert abs(float(out[1] - base[1])) > 1e-4 and torch.allclose(out[[0, 2]], base[[0, 2]], atol=1e-6)
        padded = words.clone()
        padded[1, :, 3:] += 3.0
        assert torch.allclose(d.COND_DNET(feats, TextCondition(sent, padded, mask), logits=True), base, atol=1e-5)
    with pytest.raises(ValueError, match="GAN.D_WORD_CONTEXT_LAYERS > 0"):
        d.COND_DNET(feats, sent)
    plain = build_discriminators(small_cfg())[0].eval()
    pf = plain(torch.rand(3, 3, 64, 64))
    assert torch.equal(plain.COND_DNET(pf, cond, logits=True), plain.COND_DNET(pf, sent, logits=True))
    d.train()
    loss = discriminator_loss(d, torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64), cond, torch.ones(3),
                              torch.zeros(3))
    loss.backward()
    layer = d.COND_DNET.word_grid.context.encoder.layers[0]
    assert layer.self_attn.out_proj.weight.grad is not None and layer.self_attn.out_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [1, 2, 5])
def test_up_block_as_one_transposed_convolution_is_upsample_then_conv(size):
    """AttnGAN's upBlock (nearest ×2, conv3x3, BN, GLU) computed as a stride-2 transposed convolution with a kernel
    derived from the 3×3 weights: the same output and the same weight gradient as the modules one after another
    (float64), with AttnGAN's keys; 1-px inputs take the plain path."""
    from models.attngan.networks import UpBlock

    torch.manual_seed(0)
    block = UpBlock(6, 4).double()
    x = torch.randn(3, 6, size, size + 1, dtype=torch.float64)
    reference = copy.deepcopy(block)
    out = block(x)
    expected = reference[3](reference[2](reference[1](reference[0](x))))
    assert out.shape == (3, 4, 2 * size, 2 * size + 2)
    assert torch.allclose(out, expected, atol=1e-12)
    (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
    (expected * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
    assert torch.allclose(block[1].weight.grad, reference[1].weight.grad, atol=1e-10)
    assert list(block.state_dict()) == ["1.weight", "2.weight", "2.bias", "2.running_mean", "2.running_var",
                                        "2.num_batches_tracked"]
