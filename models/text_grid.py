"""Word features laid out on a grid, for generators and discriminators that must bind words to places (ours; used
by AttnGAN's GAN.WORD_CONTEXT_LAYERS / GAN.D_WORD_CONTEXT_LAYERS and SSA-GAN's GAN.WORD_GRID).

The DAMSM's sentence code does not say which colour goes where in "a red circle on the left and a blue square on
the right": on `shapes` a probe reads the colour in each named cell from it for 51 % of two-object captions; from
the word features after one `WordContext` layer, read by learned per-cell queries (`WordGrid`), for 100 %
(`python -m tools.probe_text_codes`; README, "Why SSA-GAN, DF-GAN and GAN-INT-CLS as published fall
short").
"""
from __future__ import annotations

import torch
import torch.nn as nn

from miscc.errors import InputError
from miscc.modules import float_softmax


def attendable(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The padding mask with all-padding captions unmasked: attention over nothing but padding would give NaN."""
    if mask is None or not mask.all(dim=1).any():
        return mask
    return mask & ~mask.all(dim=1, keepdim=True)


def repeat_batch(t: torch.Tensor | None, k: int) -> torch.Tensor | None:
    """`t` [B, ...] (a caption's text features or padding) repeated k times along the batch, candidate-major
    ([k·B, ...]), for k renderings of each caption; None stays None."""
    return t if t is None or k == 1 else t.repeat(k, *([1] * (t.dim() - 1)))


class WordContext(nn.Module):
    """`layers` Transformer encoder layers over the word features inside G (ours, GAN.WORD_CONTEXT_LAYERS; 0 = off
    as in the originals): each word feature gathers what the other words of its caption say, so "circle" in "a red
    circle at the top and a blue square at the bottom" also carries "red" and "top" before G's attention reads it.

    Why: the frozen DAMSM text encoder is trained to match captions to images, not to spell out layouts. On `shapes`
    a probe trained on its sentence code recovers the colour in each named cell for 99 % of one-object but 41 %
    (linear) / 51 % (MLP) of two-object captions; learned per-cell queries over its word features 32 %; one such
    layer before those queries 100 % (README, "Why SSA-GAN, DF-GAN and GAN-INT-CLS as published fall
    short"; `python -m tools.probe_text_codes`). Post-norm, no dropout, 4 heads (1 when
    the feature size is not divisible by 4), feed-forward 2x; in float32 under autocast (CPU bf16 attention is slow).
    `forward(words [B, E, T], mask bool [B, T] True at padding or None) -> words [B, E, T]`.
    """

    def __init__(self, ef_dim: int, layers: int):
        super().__init__()
        if layers < 1:
            raise InputError(f"WordContext needs at least one layer (GAN.WORD_CONTEXT_LAYERS, "
                             f"GAN.D_WORD_CONTEXT_LAYERS; 0 = off), got {layers}")
        layer = nn.TransformerEncoderLayer(ef_dim, 4 if ef_dim % 4 == 0 else 1, 2 * ef_dim, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, words: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # float32 under autocast: a few hundred tokens, where CPU bf16 attention runs 4x slower than float32
        with torch.autocast(words.device.type, enabled=False):
            words = self.encoder(words.float().transpose(1, 2), src_key_padding_mask=attendable(mask))
        return words.transpose(1, 2)


class WordGrid(nn.Module):
    """A text map [B, E, size, size] for AttnGAN's conditional D head (ours, GAN.D_WORD_CONTEXT_LAYERS) and SSA-GAN's
    generator (GAN.WORD_GRID): the words pass through `WordContext`, then learned per-place queries attend over
    them. AttnGAN's head sees the sentence code only, which on `shapes` spells out the layout of 41 % of two-object
    captions (probe in `WordContext`), so D could not tell "red circle left, blue square right" from its swap.
    With `noise` (SSA-GAN's GAN.GRID_NOISE, as AttnGAN's stage 1) a map of noise draws, one per place, moves each
    query along a learned direction (`noise_query`): learned queries alone give every place the same reading of "a
    red circle" that names no place (a faint copy in every cell); a draw per place lets the noise say where it goes.
    `forward(words [B, E, T], mask, noise_map [B, s·s] or None) -> [B, E, s, s]`."""

    def __init__(self, ef_dim: int, layers: int, size: int = 4, noise: bool = False):
        super().__init__()
        self.size = size
        self.context = WordContext(ef_dim, layers)
        self.queries = nn.Parameter(torch.randn(size * size, ef_dim) * ef_dim ** -0.5)
        self.noise_query = nn.Parameter(torch.randn(ef_dim) * ef_dim ** -0.5) if noise else None

    def forward(self, words: torch.Tensor, mask: torch.Tensor | None = None,
                noise_map: torch.Tensor | None = None) -> torch.Tensor:
        words = self.context(words, mask)  # B x E x T
        if (noise_map is None) != (self.noise_query is None):
            raise ValueError("WordGrid: a noise map is needed exactly when it was built with noise=True")
        if noise_map is None:
            att = torch.einsum("qe,bet->bqt", self.queries.to(words.dtype), words)
        else:
            queries = self.queries + noise_map.to(self.queries.dtype)[:, :, None] * self.noise_query
            att = torch.einsum("bqe,bet->bqt", queries.to(words.dtype), words)
        mask = attendable(mask)
        if mask is not None:
            att = att.masked_fill(mask.unsqueeze(1), float("-inf"))
        grid = torch.einsum("bqt,bet->beq", float_softmax(att, -1).to(words.dtype), words)
        return grid.reshape(words.size(0), words.size(1), self.size, self.size)
