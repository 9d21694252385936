"""trainers.common: the real-image feature cache of the perceptual term; the text features of a G step."""
import pytest
import torch

from miscc.config import load_config
from miscc.errors import InputError
from types import SimpleNamespace

from models.damsm.networks import RNN_ENCODER, SMALL_CNN_ENCODER
from trainers.common import (DrawMemory, RealFeatureCache, anchor_term, encode_captions, encode_swap_negatives,
                             encode_with_swap_negatives, paired_memory, real_feature_cache)


class _Counting(torch.nn.Module):
    """A small image encoder that counts the images it reads."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = SMALL_CNN_ENCODER(nef=16, image_size=32, ndf=8).eval()
        self.images = 0

    def forward(self, x):
        self.images += x.size(0)
        return self.net(x)


def test_cache_returns_the_encoders_features_and_reads_each_image_once():
    enc = _Counting()
    real = torch.rand(5, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want = enc.net(real)[0]
    cache = RealFeatureCache(budget_mb=16)
    assert torch.allclose(cache.features(enc, real), want, atol=1e-6)
    assert enc.images == 8 and len(cache) == 5 and cache.held == want.nbytes  # one forward of CHUNK images
    again = torch.cat((real[3:], real[:2]))  # the same images, another order: nothing read
    assert torch.allclose(cache.features(enc, again), torch.cat((want[3:], want[:2])), atol=1e-6)
    assert enc.images == 8
    flipped = real.flip(-1)[:2]  # another image: read and kept
    with torch.no_grad():
        assert torch.allclose(cache.features(enc, flipped), enc.net(flipped)[0], atol=1e-6)
    assert enc.images == 16 and len(cache) == 7
    other = _Counting()  # each encoder has its own entries
    cache.features(other, real[:1])
    assert other.images == 8 and len(cache) == 8
    cache.drop(enc)
    assert len(cache) == 1 and cache.held == want[0].nbytes


def test_cache_stops_adding_at_its_budget_and_stays_exact():
    enc = _Counting()
    real = torch.rand(6, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want = enc.net(real)[0]
    cache = RealFeatureCache(budget_mb=2.5 * want[0].nbytes / 2 ** 20)  # room for two
    assert torch.allclose(cache.features(enc, real), want, atol=1e-6)
    assert len(cache) == 2 and cache.held <= cache.budget
    assert torch.allclose(cache.features(enc, real), want, atol=1e-6)
    assert enc.images == 8 + 8  # the two kept are not read again, the other four are (in one CHUNK)


def test_cached_features_have_the_same_bits_whichever_batch_brought_the_image():
    """What makes a resumed run (empty cache) exact: an image's features do not depend on its batch."""
    enc = _Counting()
    real = torch.rand(11, 3, 32, 32) * 2 - 1
    alone, together = RealFeatureCache(16), RealFeatureCache(16)
    first = torch.cat([alone.features(enc, real[i:i + 1]) for i in range(11)])
    assert torch.equal(first, together.features(enc, real))


def test_cache_setting_is_checked():
    assert real_feature_cache(load_config(None, {})) is None  # off by default (the originals' configs)
    with pytest.raises(InputError, match="TRAIN.REAL_FEATURE_CACHE_MB is -1: expected MiB >= 0"):
        real_feature_cache(load_config(None, {"TRAIN.REAL_FEATURE_CACHE_MB": -1}))
    assert isinstance(real_feature_cache(load_config(None, {"TRAIN.REAL_FEATURE_CACHE_MB": 8})), RealFeatureCache)


def test_draw_memory_puts_each_images_last_choice_first_and_survives_a_state_file(tmp_path):
    """TRAIN.PAIRED_MEMORY: an image seen before gets its remembered draw as candidate 0 (every draw tensor, in its
    own dtype); a new image (a flipped one is new) keeps its fresh draws; the memory goes through a state file read
    with weights_only."""
    real = torch.rand(3, 3, 8, 8)
    memory = DrawMemory()
    z, eps = torch.randn(2 * 3, 5), torch.randn(2 * 3, 2)  # 2 candidates, candidate-major
    keys, (z1, eps1) = memory.recall(real, [z, eps])
    assert torch.equal(z1, z) and torch.equal(eps1, eps) and len(keys) == 3  # nothing remembered yet
    memory.remember(keys[:2], (z[3:5], eps[3:5]))  # images 0 and 1 chose their candidate 1
    batch = torch.stack((real[1], real[2].flip(-1), real[0]))
    z, eps = torch.randn(6, 5), torch.randn(6, 2).to(torch.bfloat16)
    _, (z2, eps2) = memory.recall(batch, [z, eps])
    assert torch.equal(z2[:3], torch.stack((z1[4], z[1], z1[3]))) and torch.equal(z2[3:], z[3:])
    assert eps2.dtype == torch.bfloat16 and torch.equal(eps2[0], eps1[4].to(torch.bfloat16))
    assert torch.equal(eps2[1], eps[1]) and torch.equal(eps2[2], eps1[3].to(torch.bfloat16))
    torch.save(memory.state_dict(), tmp_path / "state.pth")
    restored = DrawMemory()
    restored.load_state_dict(torch.load(tmp_path / "state.pth", weights_only=True))
    assert len(restored) == 2
    _, (z3, _) = restored.recall(batch, [z, eps])
    assert torch.equal(z3, z2)


def test_draw_memory_setting_is_checked():
    assert paired_memory(load_config(None, {})) is None
    with pytest.raises(InputError, match="TRAIN.PAIRED_MEMORY .* at least 2 candidates, got 1"):
        paired_memory(load_config(None, {"TRAIN.PAIRED_MEMORY": True}))
    assert isinstance(paired_memory(load_config(None, {"TRAIN.PAIRED_MEMORY": True, "TRAIN.PAIRED_CANDIDATES": 4})),
                      DrawMemory)


def test_one_text_encoder_pass_gives_the_captions_and_their_swap_negatives():
    """AttnGAN's step encodes the captions and their swapped copies (TRAIN.SMOOTH.SWAP_LAMBDA) as one batch: the
    same features, hard negatives and RNG draws as two passes; without swap groups, the captions and None."""
    torch.manual_seed(0)
    enc = RNN_ENCODER(12, ninput=8, nhidden=16).eval()
    captions = torch.tensor([[1, 3, 2, 6, 0], [4, 7, 8, 0, 0], [2, 2, 5, 9, 1], [7, 8, 9, 10, 0]])
    lens = torch.tensor([4, 3, 5, 4])
    batch = SimpleNamespace(captions=captions, cap_lens=lens, mask=captions == 0)
    groups = [[3, 4, 5]]
    torch.manual_seed(1)
    (words, sent, mask), (neg_words, neg_sent, has) = encode_with_swap_negatives(enc, batch, groups)
    torch.manual_seed(1)
    ref_words, ref_sent, ref_mask = encode_captions(enc, batch)
    ref_neg_words, ref_neg_sent, ref_has = encode_swap_negatives(enc, batch, groups)
    assert has.tolist() == ref_has.tolist() == [True, True, True, False]
    for ours, ref in ((words, ref_words), (sent, ref_sent), (neg_words, ref_neg_words), (neg_sent, ref_neg_sent)):
        assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-6)
    assert torch.equal(mask, ref_mask) and not torch.allclose(neg_sent[:3], sent[:3])
    (words, _, _), none = encode_with_swap_negatives(enc, batch, None)
    assert none is None and torch.allclose(words, ref_words, atol=1e-6)


def test_anchor_term_adds_the_colour_distribution_at_its_share():
    """TRAIN.ANCHOR_COLOURS c: the anchor is PAIRED_ANCHOR · PIXEL_WEIGHT · Σ_stages (pooled pixel loss + c · colour
    loss of the unpooled images); 0 leaves the pooled pixel loss alone."""
    from miscc.losses import colour_distribution_loss, pixel_loss, pooled

    fakes = [torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1]
    reals = [torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1]
    base = {"TRAIN.PAIRED_ANCHOR": 0.5, "TRAIN.PIXEL_WEIGHT": 4.0, "TRAIN.ANCHOR_POOL": 3}
    plain = sum(pixel_loss(pooled(f, 3), pooled(r, 3)) for f, r in zip(fakes, reals))
    colour = sum(colour_distribution_loss(f, r) for f, r in zip(fakes, reals))
    total, raw = anchor_term(load_config(None, base), fakes, reals)
    assert raw.item() == pytest.approx(plain.item(), rel=1e-6) and total.item() == pytest.approx(2.0 * plain.item())
    total, raw = anchor_term(load_config(None, {**base, "TRAIN.ANCHOR_COLOURS": 0.25}), fakes, reals)
    assert raw.item() == pytest.approx((plain + 0.25 * colour).item(), rel=1e-6)
    assert total.item() == pytest.approx(2.0 * raw.item(), rel=1e-6)
