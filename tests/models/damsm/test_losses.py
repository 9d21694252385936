"""DAMSM.SWAP_NEGATIVES (ours): word-swap hard negatives in the DAMSM loss (miscc/losses.py, models/damsm/losses.py)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.errors import InputError
from miscc.losses import paired_words_similarity, sent_similarity, swap_negatives, swap_word_groups, words_similarity
from models.damsm.losses import damsm_losses
from trainers.runtime import Runtime

CPU = Runtime(device=torch.device("cpu"))


def test_swap_negatives_replace_one_group_word_by_another_of_its_group():
    captions = torch.tensor([[5, 1, 7, 0], [9, 9, 0, 0], [1, 2, 3, 4]])
    lens = torch.tensor([3, 2, 4])
    groups = [[1, 2, 3], [7, 8]]
    seen = set()
    for seed in range(40):
        neg, has = swap_negatives(captions, lens, groups, torch.Generator().manual_seed(seed))
        assert has.tolist() == [True, False, True]
        assert torch.equal(neg[1], captions[1]) and neg.shape == captions.shape
        for i in (0, 2):
            changed = (neg[i] != captions[i]).nonzero().flatten().tolist()
            assert len(changed) == 1
            t = changed[0]
            old, new = int(captions[i, t]), int(neg[i, t])
            assert any(old in g and new in g for g in groups) and new != old
            seen.add((i, t, new))
    assert {(0, 1, 2), (0, 1, 3), (0, 2, 8), (2, 0, 2), (2, 1, 3), (2, 2, 1)} <= seen  # every choice occurs


def test_swap_word_groups_name_the_bad_group():
    vocab = {"circle": 1, "square": 2, "red": 3}
    assert swap_word_groups(["circle square", "circle:red"], vocab) == [[1, 2], [1, 3]]
    with pytest.raises(InputError, match="'circle hexagon'.*hexagon"):
        swap_word_groups(["circle hexagon"], vocab)
    with pytest.raises(InputError, match="two different words"):
        swap_word_groups(["circle circle"], vocab)


class _Text(nn.Module):
    """words = embedding, sentence = mean of the words up to the caption's length."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 8)

    def forward(self, captions, cap_lens, hidden=None, mask=None):
        words = self.emb(captions)  # B T D
        keep = (torch.arange(captions.size(1))[None] < cap_lens[:, None]).float().unsqueeze(2)
        return words.transpose(1, 2), (words * keep).sum(1) / cap_lens[:, None].float()


class _Image(nn.Module):
    def forward(self, x):
        return x[:, :8, :2, :2].contiguous(), x[:, :8].mean((2, 3))


def test_hard_negative_is_one_more_column_of_the_image_to_caption_terms():
    torch.manual_seed(0)
    text, image = _Text(), _Image()
    b = 5
    batch = SimpleNamespace(imgs=[torch.randn(b, 8, 4, 4)], captions=torch.randint(1, 12, (b, 6)),
                            cap_lens=torch.tensor([6, 6, 5, 4, 3]), class_ids=None)
    batch.captions[:, 0] = torch.tensor([1, 2, 3, 1, 9])
    batch.captions[4, 1:] = 9  # the last caption holds no group word
    groups = [[1, 2, 3]]
    gammas = (4.0, 5.0, 10.0)
    _, plain, _ = damsm_losses(image, text, batch, gammas, CPU)
    total, parts, attn = damsm_losses(image, text, batch, gammas, CPU, groups, torch.Generator().manual_seed(3))
    neg, has = swap_negatives(batch.captions, batch.cap_lens, groups, torch.Generator().manual_seed(3))
    assert has.tolist() == [True, True, True, True, False]
    _, code = image(batch.imgs[-1])
    _, sent = text(batch.captions, batch.cap_lens)
    _, neg_sent = text(neg, batch.cap_lens)
    logits = torch.cat((sent_similarity(code, sent), sent_similarity(code, neg_sent).diagonal()[:, None]), 1) * 10
    logits[4, -1] = float("-inf")
    assert torch.allclose(parts["s_loss0"], F.cross_entropy(logits, torch.arange(b)), atol=1e-5)
    assert torch.allclose(parts["s_loss1"], plain["s_loss1"]) and torch.allclose(parts["w_loss1"], plain["w_loss1"])
    assert parts["w_loss0"] > plain["w_loss0"] and parts["s_loss0"] > plain["s_loss0"]
    assert torch.allclose(total, sum(parts.values())) and len(attn) == b


def test_image_noise_reaches_the_image_encoder_only():
    """DAMSM.IMAGE_NOISE: the image encoder sees the images plus Gaussian noise of that std (drawn from the given
    generator), the batch's images stay as they were, and 0 leaves the loss as AttnGAN's."""
    seen = []

    class Recording(_Image):
        def forward(self, x):
            seen.append(x.clone())
            return super().forward(x)

    torch.manual_seed(0)
    text, image = _Text(), Recording()
    b = 4
    clean = torch.randn(b, 8, 4, 4)
    batch = SimpleNamespace(imgs=[clean.clone()], captions=torch.randint(1, 12, (b, 5)),
                            cap_lens=torch.tensor([5, 5, 4, 3]), class_ids=None)
    gammas = (4.0, 5.0, 10.0)
    plain, _, _ = damsm_losses(image, text, batch, gammas, CPU)
    assert torch.equal(seen[-1], clean)
    noisy, _, _ = damsm_losses(image, text, batch, gammas, CPU, generator=torch.Generator().manual_seed(1),
                               image_noise=0.5)
    expected = clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(seen[-1], expected) and torch.equal(batch.imgs[-1], clean)
    assert not torch.allclose(noisy, plain)


def test_paired_word_scores_are_the_diagonal_of_the_batch_matrix():
    torch.manual_seed(1)
    feats, words = torch.randn(6, 8, 3, 3), torch.randn(6, 8, 7)
    lens = torch.tensor([7, 7, 5, 4, 4, 2])
    full, _ = words_similarity(feats, words, lens)
    assert torch.allclose(paired_words_similarity(feats, words, lens), full.diagonal(), atol=1e-5)


def test_swap_groups_use_the_ids_the_captions_hold(minilm_dir):
    """With BERT captions the swap groups are BERT token ids (the LSTM vocabulary's ids would swap other tokens);
    with LSTM captions, `wordtoix`; a word the vocabulary lacks is named."""
    from datasets import load_bert_tokenizer
    from miscc.config import load_config
    from trainers.common import swap_groups_for

    cfg = load_config(None, {"TRAIN.SMOOTH.SWAP_LAMBDA": 0.2, "DAMSM.SWAP_NEGATIVES": ["circle square triangle"]})
    tokenizer = load_bert_tokenizer(str(minilm_dir))
    bert_set = SimpleNamespace(bert_tokenizer=tokenizer, wordtoix={"circle": 1, "square": 2, "triangle": 3})
    (ids,) = swap_groups_for(cfg, bert_set)
    assert tokenizer.convert_ids_to_tokens(ids) == ["circle", "square", "triangle"]
    lstm_set = SimpleNamespace(wordtoix={"circle": 1, "square": 2, "triangle": 3})
    assert swap_groups_for(cfg, lstm_set) == [[1, 2, 3]]
    cfg.DAMSM.SWAP_NEGATIVES = ["circle hexagon"]
    with pytest.raises(InputError, match="hexagon"):
        swap_groups_for(cfg, bert_set)
    with pytest.raises(InputError, match="needs a word vocabulary"):  # neither wordtoix nor a tokenizer
        swap_groups_for(cfg, SimpleNamespace(wordtoix=None))
    cfg.TRAIN.SMOOTH.SWAP_LAMBDA = 0.0
    assert swap_groups_for(cfg, lstm_set) is None
