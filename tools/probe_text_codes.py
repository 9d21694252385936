"""What a text encoder's codes hold of a `shapes` caption: `python -m tools.probe_text_codes --cfg cfg/shapes_ssa.yml`.

A generator can only draw what its text condition holds. This trains small probes on the frozen codes of the
training captions (the config's TRAIN.NET_E, LSTM or BERT) and scores them on the test captions, per caption object
as the `attracc` measures are: *colour+shape*, the probe names the object's (colour, shape) pair among the caption's;
*colour at cell*, for objects whose caption names a place, the probe's colour for that 3×3 cell is the object's.
Split by one- and two-object captions, for
- `sentence`: an MLP on the sentence code (all that SSA-GAN's, DF-GAN's and GAN-INT-CLS's G read);
- `words`: learned per-cell queries attending over the word codes (masked), then an MLP.

On the shipped DAMSM the sentence code places one object of a one-object caption (100 %) but only one of the two
of a two-object caption (about 50 %): the README's "Why SSA-GAN, DF-GAN and GAN-INT-CLS as published fall
short".
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets import build_dataset
from miscc.config import add_config_arguments, config_from_args
from miscc.errors import InputError, run_cli
from miscc.shapes_spec import COLORS, N_CLASSES, POSITIONS, class_id, parse_caption
from trainers.common import load_damsm

N_CELLS, N_PAIRS = len(POSITIONS), N_CLASSES
COLOR_NAMES = list(COLORS)


def caption_targets(texts: list[str]) -> dict:
    """Per caption: `cells` [N, 9] (0 = empty, 1 + colour index; -1 = not known: a caption naming no place),
    `pairs` [N, 18] (1 where the caption names that (shape, colour)), and `objects` (parse_caption's lists)."""
    cells = torch.full((len(texts), N_CELLS), -1, dtype=torch.long)
    pairs = torch.zeros(len(texts), N_PAIRS)
    objects = []
    for i, text in enumerate(texts):
        objs = [o for o in parse_caption(text) if o.get("shape") and o.get("color")]
        if not objs:
            raise InputError(f"caption {i} ({text!r}) names no coloured shape: not a shapes caption")
        if any(o["position"] for o in objs):
            cells[i] = 0
        for o in objs:
            pairs[i, pair_index(o)] = 1
            if o["position"]:
                cells[i, POSITIONS.index(o["position"])] = 1 + COLOR_NAMES.index(o["color"])
        objects.append(objs)
    return {"cells": cells, "pairs": pairs, "objects": objects}


def pair_index(obj: dict) -> int:
    """0-based index of the object's (shape, colour) pair: its shapes class id - 1."""
    return class_id(obj["shape"], obj["color"]) - 1


@torch.no_grad()
def encode_split(text_encoder, dataset, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(sentence codes [N, D], word codes [N, D, T] with zeros past each caption, texts) of every caption."""
    sents, words, texts = [], [], []
    rng = torch.Generator().manual_seed(0)  # the word subset of a caption longer than TEXT.WORDS_NUM
    for start in range(0, len(dataset.captions), batch_size):
        idx = range(start, min(start + batch_size, len(dataset.captions)))
        ids, lens = zip(*(dataset.get_caption(i, rng=rng) for i in idx))
        words_emb, sent_emb = text_encoder(torch.stack(ids), torch.tensor(lens))
        mask = torch.arange(words_emb.size(2))[None] < torch.tensor(lens)[:, None]
        sents.append(sent_emb.float())
        words.append(words_emb.float() * mask[:, None])
        texts += [dataset.caption_text(i) for i in idx]
    return torch.cat(sents), torch.cat(words), texts


class Probe(nn.Module):
    """Cell-colour logits [B, 9, 7] and pair logits [B, 18] from a sentence code [B, D] or word codes [B, D, T]."""

    def __init__(self, dim: int, words: bool, hidden: int = 512, query_dim: int = 128):
        super().__init__()
        self.words = words
        if words:
            self.queries = nn.Parameter(torch.randn(N_CELLS, query_dim))
            self.attention = nn.MultiheadAttention(query_dim, 4, kdim=dim, vdim=dim, batch_first=True)
            dim = N_CELLS * query_dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.cells = nn.Linear(hidden, N_CELLS * (1 + len(COLOR_NAMES)))
        self.pairs = nn.Linear(hidden, N_PAIRS)

    def forward(self, x):
        if self.words:
            w = x.transpose(1, 2)
            pad = w.abs().sum(-1) == 0
            x = self.attention(self.queries.expand(w.size(0), -1, -1), w, w, key_padding_mask=pad)[0].flatten(1)
        h = self.mlp(x)
        return self.cells(h).view(-1, N_CELLS, 1 + len(COLOR_NAMES)), self.pairs(h)


def train_probe(x, targets, words: bool, epochs: int, seed: int = 0, batch_size: int = 256) -> Probe:
    """A `Probe` fitted to `caption_targets` from codes `x` (Adam, lr 1e-3): cross-entropy per known cell plus
    binary cross-entropy per (shape, colour) pair."""
    torch.manual_seed(seed)
    probe = Probe(x.size(1), words)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
    for _ in range(epochs):
        for b in torch.randperm(len(x)).split(batch_size):
            cells, pairs = probe(x[b])
            cell_loss = F.cross_entropy(cells.flatten(0, 1), targets["cells"][b].flatten(), ignore_index=-1)
            loss = cell_loss + F.binary_cross_entropy_with_logits(pairs, targets["pairs"][b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe


@torch.no_grad()
def score_probe(probe: Probe, x, targets) -> dict:
    """Per caption object, % for one- and two-object captions: `color_shape_{n}obj` (the probe names its pair),
    `color_at_cell_{n}obj` (objects with a named place: the probe's colour for that cell is its colour)."""
    cells, pairs = probe(x)
    cell_colour, named = cells.argmax(-1), pairs > 0
    hits = {}
    for i, objs in enumerate(targets["objects"]):
        n = len(objs)
        for o in objs:
            hits.setdefault(f"color_shape_{n}obj", []).append(bool(named[i, pair_index(o)]))
            if o["position"]:
                right = int(cell_colour[i, POSITIONS.index(o["position"])]) == 1 + COLOR_NAMES.index(o["color"])
                hits.setdefault(f"color_at_cell_{n}obj", []).append(right)
    return {k: 100.0 * sum(v) / len(v) for k, v in sorted(hits.items())}


def probe_text_codes(cfg, features=("sentence", "words"), epochs: int = 20, seed: int = 0) -> dict:
    """{feature: score_probe's dict} for the config's text encoder on its DATA_DIR's train / test captions."""
    train = build_dataset(cfg, "train", augment=False)
    test = build_dataset(cfg, "test", augment=False)
    text_encoder, _ = load_damsm(cfg, train.n_words, "cpu", with_image_encoder=False)
    text_encoder.eval()
    (s_tr, w_tr, t_tr), (s_te, w_te, t_te) = encode_split(text_encoder, train), encode_split(text_encoder, test)
    y_tr, y_te = caption_targets(t_tr), caption_targets(t_te)
    out = {}
    for name in features:
        words = name == "words"
        probe = train_probe(w_tr if words else s_tr, y_tr, words, epochs, seed)
        out[name] = score_probe(probe, w_te if words else s_te, y_te)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--features", default="sentence,words", help="comma-separated: sentence, words")
    parser.add_argument("--epochs", type=int, default=20, help="passes of each probe over the training captions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    unknown = sorted(set(features) - {"sentence", "words"})
    if unknown or not features:
        parser.error(f"--features: expected sentence and/or words, got {args.features!r}")
    cfg = config_from_args(args)
    results = probe_text_codes(cfg, features, args.epochs, args.seed)
    print(f"text encoder {cfg.TRAIN.NET_E} on {cfg.DATA_DIR} (test captions, per caption object, %)")
    print("| codes | colour+shape, 1 / 2 objects | colour at its cell, 1 / 2 objects |")
    print("|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r.get('color_shape_1obj', 0):.1f} / {r.get('color_shape_2obj', 0):.1f} | "
              f"{r.get('color_at_cell_1obj', 0):.1f} / {r.get('color_at_cell_2obj', 0):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
