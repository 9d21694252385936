"""DAMSM losses: against a loop re-implementation of AttnGAN's algorithm, and on hand-checkable inputs."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from miscc.losses import (class_mask, cosine_similarity, func_attention, sent_loss, sent_similarity, words_loss,
                          words_similarity)
from miscc.modules import float_softmax


# ---- a straightforward re-implementation of the original per-caption loops (AttnGAN code/miscc/losses.py) ----
def ref_func_attention(query, context, gamma1):
    b, L = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    S = ih * iw
    context = context.view(b, -1, S)
    attn = torch.bmm(torch.transpose(context, 1, 2).contiguous(), query)
    attn = nn.Softmax(dim=1)(attn.view(b * S, L)).view(b, S, L)
    attn = torch.transpose(attn, 1, 2).contiguous().view(b * L, S)
    attn = nn.Softmax(dim=1)(attn * gamma1).view(b, L, S)
    weighted = torch.bmm(context, torch.transpose(attn, 1, 2).contiguous())
    return weighted, attn.view(b, -1, ih, iw)


def ref_cos(x1, x2):
    return (torch.sum(x1 * x2, 1) / (torch.norm(x1, 2, 1) * torch.norm(x2, 2, 1)).clamp(min=1e-8)).squeeze()


def ref_masks(class_ids, b):
    masks = []
    for i in range(b):
        mask = (class_ids == class_ids[i]).astype(np.uint8)
        mask[i] = 0
        masks.append(mask.reshape((1, -1)))
    return torch.from_numpy(np.concatenate(masks, 0)).to(torch.bool)


def ref_words_loss(img_features, words_emb, labels, cap_lens, class_ids, b, g1, g2, g3):
    att_maps, sims = [], []
    for i in range(b):
        n = int(cap_lens[i])
        word = words_emb[i, :, :n].unsqueeze(0).contiguous().repeat(b, 1, 1)
        wctx, attn = ref_func_attention(word, img_features, g1)
        att_maps.append(attn[i].unsqueeze(0).contiguous())
        word = word.transpose(1, 2).contiguous().view(b * n, -1)
        wctx = wctx.transpose(1, 2).contiguous().view(b * n, -1)
        row = ref_cos(word, wctx).view(b, n)
        row = torch.log(torch.exp(row * g2).sum(dim=1, keepdim=True))
        sims.append(row)
    sims = torch.cat(sims, 1) * g3
    if class_ids is not None:
        sims = sims.masked_fill(ref_masks(class_ids, b), -float("inf"))
    return nn.CrossEntropyLoss()(sims, labels), nn.CrossEntropyLoss()(sims.transpose(0, 1), labels), att_maps


def ref_sent_loss(cnn_code, rnn_code, labels, class_ids, b, g3, eps=1e-8):
    cnn_code, rnn_code = cnn_code.unsqueeze(0), rnn_code.unsqueeze(0)
    s = torch.bmm(cnn_code, rnn_code.transpose(1, 2))
    norm = torch.bmm(torch.norm(cnn_code, 2, dim=2, keepdim=True),
                     torch.norm(rnn_code, 2, dim=2, keepdim=True).transpose(1, 2))
    s = (s / norm.clamp(min=eps) * g3).squeeze()
    if class_ids is not None:
        s = s.masked_fill(ref_masks(class_ids, b), -float("inf"))
    return nn.CrossEntropyLoss()(s, labels), nn.CrossEntropyLoss()(s.transpose(0, 1), labels)


def _batch(b=6, d=16, t=9, hw=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, d, hw, hw, generator=g, dtype=torch.float64)
    words = torch.randn(b, d, t, generator=g, dtype=torch.float64)
    lens = torch.tensor([9, 7, 7, 4, 4, 1][:b])
    for i, n in enumerate(lens):
        words[i, :, n:] = 0
    return img, words, lens


@pytest.mark.parametrize("class_ids", [None, np.array([3, 5, 3, 7, 5, 1])])
def test_words_loss_matches_original_loop(class_ids):
    img, words, lens = _batch()
    img.requires_grad_(True)
    words.requires_grad_(True)
    labels = torch.arange(6)
    l0, l1, maps = words_loss(img, words, labels, lens, class_ids, 6, 4.0, 5.0, 10.0)
    r0, r1, rmaps = ref_words_loss(img, words, labels, lens, class_ids, 6, 4.0, 5.0, 10.0)
    assert torch.allclose(l0, r0, atol=1e-10) and torch.allclose(l1, r1, atol=1e-10)
    assert len(maps) == 6
    for m, rm, n in zip(maps, rmaps, lens):
        assert m.shape == (1, int(n), 5, 5)
        assert torch.allclose(m, rm, atol=1e-12)
    g_ours = torch.autograd.grad(l0 + 2 * l1, (img, words))
    g_ref = torch.autograd.grad(r0 + 2 * r1, (img, words))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("class_ids", [None, np.array([2, 2, 4, 2, 9, 4])])
def test_sent_loss_matches_original(class_ids):
    g = torch.Generator().manual_seed(1)
    cnn = torch.randn(6, 12, generator=g, requires_grad=True)
    rnn = torch.randn(6, 12, generator=g, requires_grad=True)
    labels = torch.arange(6)
    l0, l1 = sent_loss(cnn, rnn, labels, class_ids, 6, gamma3=10.0)
    r0, r1 = ref_sent_loss(cnn, rnn, labels, class_ids, 6, 10.0)
    assert torch.allclose(l0, r0, atol=1e-6) and torch.allclose(l1, r1, atol=1e-6)
    ga = torch.autograd.grad(l0 + l1, (cnn, rnn))
    gb = torch.autograd.grad(r0 + r1, (cnn, rnn))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ga, gb))


def test_sent_loss_hand_values():
    b, g3 = 4, 10.0
    codes = torch.eye(b, 8, dtype=torch.float64)  # orthonormal: cos = 1 on the diagonal, 0 elsewhere
    l0, l1 = sent_loss(codes * 3.0, codes, torch.arange(b), None, b, gamma3=g3)
    expected = math.log(1 + (b - 1) * math.exp(-g3))  # -log softmax of the diagonal
    assert l0.item() == pytest.approx(expected, rel=1e-5) and l1.item() == pytest.approx(expected, rel=1e-5)
    # identical sentence vectors for different images cannot be told apart: log(B)
    l0, _ = sent_loss(codes, torch.ones(b, 8, dtype=torch.float64), torch.arange(b), None, b, gamma3=g3)
    assert l0.item() == pytest.approx(math.log(b), rel=1e-6)
    # all images of one class: every negative is masked, so the loss is exactly 0 even for bad embeddings
    l0, l1 = sent_loss(codes, torch.ones(b, 8, dtype=torch.float64), torch.arange(b), np.ones(b, dtype=int), b, gamma3=g3)
    assert l0.item() == 0.0 and l1.item() == 0.0


def test_words_loss_hand_values():
    """Image j = every region e_j, caption i = every word e_i: attention is uniform, the region context of each word
    is e_j, so R(i, j) = log(L_i * exp(gamma2 * [i == j]))."""
    b, d, g2, g3 = 3, 4, 5.0, 10.0
    lens = torch.tensor([4, 2, 1])
    img = torch.eye(b, d)[:, :, None, None].expand(b, d, 3, 3).contiguous()
    words = torch.zeros(b, d, 4)
    for i, n in enumerate(lens):
        words[i, i, :n] = 1.0
    sims, maps = words_similarity(img, words, lens, gamma1=4.0, gamma2=g2)
    expected = torch.tensor([[math.log(int(lens[i])) + g2 * (i == j) for i in range(b)] for j in range(b)])
    assert torch.allclose(sims, expected, atol=1e-5)
    assert all(torch.allclose(m, torch.full_like(m, 1 / 9)) for m in maps)
    l0, l1, _ = words_loss(img, words, torch.arange(b), lens, None, b, 4.0, g2, g3)
    scores = expected * g3
    assert l0.item() == pytest.approx(nn.functional.cross_entropy(scores, torch.arange(b)).item(), rel=1e-5)
    assert l1.item() == pytest.approx(nn.functional.cross_entropy(scores.t(), torch.arange(b)).item(), rel=1e-5)
    assert l0.item() < 1e-4  # matching pairs dominate: minimal loss


def test_class_mask_changes_exactly_the_same_class_pairs():
    ids = np.array([1, 1, 2, 3, 2])
    mask = class_mask(ids)
    expected = torch.zeros(5, 5, dtype=torch.bool)
    for i, j in [(0, 1), (1, 0), (2, 4), (4, 2)]:
        expected[i, j] = True
    assert torch.equal(mask, expected)
    assert torch.equal(class_mask(torch.tensor(ids)), expected) and torch.equal(class_mask(list(ids)), expected)

    g = torch.Generator().manual_seed(3)
    cnn, rnn = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    scores = sent_similarity(cnn, rnn) * 10.0
    masked = scores.clone()
    masked[expected] = -float("inf")
    l0, l1 = sent_loss(cnn, rnn, torch.arange(5), ids, 5)
    u0, _ = sent_loss(cnn, rnn, torch.arange(5), None, 5)
    assert l0.item() == pytest.approx(nn.functional.cross_entropy(masked, torch.arange(5)).item(), rel=1e-6)
    assert l1.item() == pytest.approx(nn.functional.cross_entropy(masked.t(), torch.arange(5)).item(), rel=1e-6)
    assert l0.item() < u0.item()  # removing negatives can only lower the loss

    img, words, lens = _batch(b=5)
    sims, _ = words_similarity(img, words, lens)
    masked = (sims * 10.0).masked_fill(expected, -float("inf"))
    w0, w1, _ = words_loss(img, words, torch.arange(5), lens, torch.tensor(ids), 5)
    assert w0.item() == pytest.approx(nn.functional.cross_entropy(masked, torch.arange(5)).item(), rel=1e-9)
    assert w1.item() == pytest.approx(nn.functional.cross_entropy(masked.t(), torch.arange(5)).item(), rel=1e-9)


def test_func_attention_normalisation_and_uniform_regions():
    g = torch.Generator().manual_seed(4)
    q, ctx = torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, 4, 4, generator=g)
    wctx, attn = func_attention(q, ctx, 5.0)
    assert wctx.shape == (2, 6, 3) and attn.shape == (2, 3, 4, 4)
    assert torch.allclose(attn.sum((2, 3)), torch.ones(2, 3))  # Eq. 9: a distribution over regions per word
    assert torch.allclose(wctx, torch.einsum("bds,bls->bdl", ctx.view(2, 6, 16), attn.view(2, 3, 16)), atol=1e-6)
    same = torch.randn(2, 6, 1, 1, generator=g).expand(2, 6, 4, 4)
    wctx, attn = func_attention(q, same, 5.0)
    assert torch.allclose(attn, torch.full_like(attn, 1 / 16))
    assert torch.allclose(wctx, same[:, :, :1, 0].expand(2, 6, 3), atol=1e-6)


def test_cosine_similarity_and_batch_of_one():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[2.0, 0.0], [-1.0, -1.0]])
    assert torch.allclose(cosine_similarity(x, y), torch.tensor([1.0, -1.0]))
    assert cosine_similarity(torch.zeros(1, 3), torch.ones(1, 3)).tolist() == [0.0]  # eps clamp, no NaN
    img, words, lens = _batch(b=1)
    l0, l1, maps = words_loss(img, words, torch.arange(1), lens, np.array([5]), 1)
    s0, s1 = sent_loss(torch.randn(1, 4), torch.randn(1, 4), torch.arange(1), None, 1)
    assert l0.item() == 0.0 and l1.item() == 0.0 and s0.item() == 0.0 and maps[0].shape == (1, 9, 5, 5)


def test_labels_none_and_bad_input_errors():
    img, words, lens = _batch()
    l0, l1, maps = words_loss(img, words, None, lens, None, 6)
    assert l0 is None and l1 is None and len(maps) == 6
    assert sent_loss(torch.randn(6, 4), torch.randn(6, 4), None, None, 6) == (None, None)
    with pytest.raises(ValueError, match="batch_size=5"):
        words_loss(img, words, torch.arange(6), lens, None, 5)
    with pytest.raises(ValueError, match="batch_size=4"):
        sent_loss(torch.randn(6, 4), torch.randn(6, 4), torch.arange(4), None, 4)
    with pytest.raises(ValueError, match="caption lengths"):
        words_loss(img, words, torch.arange(6), torch.tensor([10, 7, 7, 4, 4, 1]), None, 6)


# ---- the perceptual term of the shapes configs (ControlGAN's, in the DAMSM image encoder's feature space) ----
class _Encoder(nn.Module):
    """A fixed stand-in for the DAMSM image encoder: (region features [B, 4, H/2, W/2], global code [B, 4])."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        f = self.conv(x)
        return f, f.mean((2, 3))


def test_perceptual_loss_compares_region_features_and_trains_only_the_image():
    from miscc.losses import perceptual_loss

    torch.manual_seed(0)
    enc = _Encoder().requires_grad_(False)
    real = torch.rand(3, 3, 8, 8) * 2 - 1
    same = perceptual_loss(enc, enc(real)[0], real)
    assert same.item() == 0.0
    fake = (real + 0.5 * torch.randn_like(real)).requires_grad_(True)
    loss = perceptual_loss(enc, enc(fake)[0], real)
    expected = ((enc(fake)[0] - enc(real)[0]) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    # a step along the gradient brings the generated image's features closer to the real image's
    with torch.no_grad():
        moved = fake - 0.5 * fake.grad / fake.grad.norm()
    assert perceptual_loss(enc, enc(moved)[0], real).item() < loss.item()


def test_damsm_generator_loss_reuses_precomputed_features():
    from types import SimpleNamespace

    from miscc.losses import damsm_generator_loss

    torch.manual_seed(0)
    enc = _Encoder()
    fake = torch.rand(4, 3, 8, 8) * 2 - 1
    words = torch.randn(4, 4, 5)
    sent = torch.randn(4, 4)
    batch = SimpleNamespace(cap_lens=torch.tensor([5, 4, 3, 2]), class_ids=None)
    cfg = SimpleNamespace(TRAIN=SimpleNamespace(SMOOTH=SimpleNamespace(GAMMA1=4.0, GAMMA2=5.0, GAMMA3=10.0,
                                                                       LAMBDA=0.5)))
    direct = damsm_generator_loss(enc, fake, words, sent, batch, cfg)
    reused = damsm_generator_loss(enc, fake, words, sent, batch, cfg, features=enc(fake))
    assert all(torch.equal(a, b) for a, b in zip(direct, reused))


def test_damsm_generator_loss_swap_negatives_term_by_hand():
    """TRAIN.SMOOTH.SWAP_LAMBDA: plus lambda * mean over captions with a negative of softplus(GAMMA3 * (negative's
    score - caption's score)), word level to the first value, sentence level to the second; off (0 or no
    negatives) it is the plain term."""
    from types import SimpleNamespace

    from miscc.losses import damsm_generator_loss, paired_words_similarity

    torch.manual_seed(0)
    enc = _Encoder()
    fake = torch.rand(4, 3, 8, 8) * 2 - 1
    words, sent = torch.randn(4, 4, 5), torch.randn(4, 4)
    neg_words, neg_sent = torch.randn(4, 4, 5), torch.randn(4, 4)
    has = torch.tensor([True, False, True, True])
    batch = SimpleNamespace(cap_lens=torch.tensor([5, 4, 3, 2]), class_ids=None)
    smooth = SimpleNamespace(GAMMA1=4.0, GAMMA2=5.0, GAMMA3=10.0, LAMBDA=0.5, SWAP_LAMBDA=0.0)
    cfg = SimpleNamespace(TRAIN=SimpleNamespace(SMOOTH=smooth))
    plain = damsm_generator_loss(enc, fake, words, sent, batch, cfg, negatives=(neg_words, neg_sent, has))
    assert all(torch.equal(a, b) for a, b in zip(plain, damsm_generator_loss(enc, fake, words, sent, batch, cfg)))
    smooth.SWAP_LAMBDA = 2.0
    w, s = damsm_generator_loss(enc, fake, words, sent, batch, cfg, negatives=(neg_words, neg_sent, has))
    region, code = enc(fake)
    pos_w = paired_words_similarity(region, words, batch.cap_lens, 4.0, 5.0)
    neg_w = paired_words_similarity(region, neg_words, batch.cap_lens, 4.0, 5.0)
    cos = nn.functional.cosine_similarity
    rows = [0, 2, 3]  # caption 1 has no negative
    want_w = 2.0 * torch.log1p(torch.exp(10.0 * (neg_w - pos_w)))[rows].mean()
    want_s = 2.0 * torch.log1p(torch.exp(10.0 * (cos(code, neg_sent) - cos(code, sent))))[rows].mean()
    assert w.item() == pytest.approx((plain[0] + want_w).item(), rel=1e-5)
    assert s.item() == pytest.approx((plain[1] + want_s).item(), rel=1e-5)
    no_negative = damsm_generator_loss(enc, fake, words, sent, batch, cfg,
                                       negatives=(neg_words, neg_sent, torch.zeros(4, dtype=torch.bool)))
    assert all(torch.equal(a, b) for a, b in zip(plain, no_negative))


def test_pixel_loss_is_the_mean_squared_distance_and_its_optimum_is_the_mean():
    from miscc.losses import pixel_loss

    real = torch.rand(2, 3, 8, 8) * 2 - 1
    fake = (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_()
    loss = pixel_loss(fake, real)
    assert loss.item() == pytest.approx(((fake - real) ** 2).mean().item(), rel=1e-6)
    loss.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()
    # one caption, two real images it fits (two backgrounds): the best single image is their mean
    a, b = -torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    mean = (a + b) / 2
    assert pixel_loss(mean, a) + pixel_loss(mean, b) < pixel_loss(a, a) + pixel_loss(a, b)


def test_float_softmax_runs_low_precision_in_float32_and_keeps_float64():
    x = torch.randn(4, 30, dtype=torch.float64)
    assert float_softmax(x, 1).dtype == torch.float64 and torch.allclose(float_softmax(x, 1), torch.softmax(x, 1))
    low = x.bfloat16()
    out = float_softmax(low, 1)
    assert out.dtype == torch.float32 and torch.allclose(out, torch.softmax(low.float(), 1))


def test_words_similarity_under_bf16_autocast_stays_near_float32():
    """The G step scores DAMSM words under CPU bf16 autocast: the one-pass scores (masked padding, float32
    softmaxes, the cosine from the attention and the region Gram matrix) stay within bf16's rounding of the
    float32 scores, and the attention maps are each caption's, cut to its length."""
    img, words, lens = _batch()
    img, words = img.float(), words.float()
    ref, ref_maps = words_similarity(img, words, lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sims, maps = words_similarity(img, words, lens)
    assert sims.dtype == torch.float32 and (sims - ref).abs().max() < 0.05
    assert [tuple(m.shape) for m in maps] == [(1, int(n), 5, 5) for n in lens]
    assert all((m.float() - r).abs().max() < 0.02 for m, r in zip(maps, ref_maps))


def test_colour_distribution_loss_ignores_where_an_object_is_and_counts_a_missing_one():
    """TRAIN.ANCHOR_COLOURS' term: an object moved elsewhere costs nothing, one left out costs its pixels (more
    for a larger one); two pixel permutations of the same image compare equal; it is the mean over directions of
    the sorted projections' squared distance."""
    from miscc.losses import COLOUR_DIRECTIONS, colour_distribution_loss

    background = torch.full((1, 3, 16, 16), -1.0)
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    left, right, big = background.clone(), background.clone(), background.clone()
    left[..., 2:5, 2:5] = red
    right[..., 10:13, 9:12] = red
    big[..., 2:8, 2:8] = red
    assert colour_distribution_loss(left, right).item() == pytest.approx(0.0, abs=1e-7)
    missing = colour_distribution_loss(background, left).item()
    assert missing > 0 and colour_distribution_loss(background, big).item() > missing
    assert torch.nn.functional.mse_loss(left, right).item() > 0  # the pixel term would pay for the move
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    perm = torch.randperm(64)
    shuffled = x.flatten(2)[:, :, perm].view_as(x)
    assert colour_distribution_loss(x, shuffled).item() == pytest.approx(0.0, abs=1e-7)
    y = torch.rand(2, 3, 8, 8) * 2 - 1
    proj = [torch.einsum("bchw,dc->bdhw", t, COLOUR_DIRECTIONS).flatten(2).sort(2).values for t in (x, y)]
    assert colour_distribution_loss(x, y).item() == pytest.approx(((proj[0] - proj[1]) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        colour_distribution_loss(x, y[:, :, :4])
