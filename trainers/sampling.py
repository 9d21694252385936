"""Sampling from a trained generator: the evaluation set (B_VALIDATION), example sentences, sentences given by hand.

Model-agnostic: a `generate(noise, sent_emb, words_emb, mask) -> (images [B,3,H,W] in [-1, 1], extras)` callable
wraps the generator (AttnGAN: last branch + attention maps; SSA-GAN: image + masks).

- `sample_test_set`: the 30,000-image protocol (DM-GAN): passes over the test set with one random caption per image
  until N images, or `every` caption once; images go to `<out>/single/<key>_s<i>.png` (i = the pass, or the caption
  index in `every` mode) and `captions.json` records each file's caption, key and class for the metrics. The
  originals made one pass (2,928 or 2,933 images) and truncated instead of rounding when converting to uint8.
- `sample_sentences`: the generator's tensors for free sentences (the web page `tools.app` shows them);
  `generate_sentences` writes them as AttnGAN's `gen_example` does
  (`0_s_<j>_g<k>.png`, `0_s_<j>_a<k>.png`); out-of-vocabulary words are dropped with a warning, a sentence with no
  known word is an error.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass

import numpy as np

import torch

from datasets import build_dataloader, prepare_data
from miscc.errors import InputError, MissingFileError
from miscc.text import read_text_lines, swap_pad_id, tokenize_caption
from miscc.vis import build_super_images, save_png


def noise_for(batch_size: int, z_dim: int, device, generator: torch.Generator, truncation: float | None = None):
    """Standard normal noise, or DF-GAN's truncated noise (`miscc.noise.truncated_noise`: [-2, 2]·rate) when
    `truncation` is set; drawn on the CPU from `generator`, then moved to `device`."""
    if truncation is not None:
        from miscc.noise import truncated_noise

        return truncated_noise(batch_size, z_dim, truncation, generator=generator).to(device)
    return torch.randn(batch_size, z_dim, generator=generator).to(device)


def _safe_key(key: str) -> str:
    return key.replace("\\", "/")


@torch.no_grad()
def sample_test_set(generate, text_encoder, dataset, out_dir: str, *, z_dim: int, device, n_samples: int = 30000,
                    mode: str = "random", batch_size: int = 100, seed: int = 0, truncation: float | None = None,
                    save_extras=None, workers: int = 0) -> dict:
    """Write generated images for test captions; returns {'n': count, 'captions': path of captions.json}."""
    if mode not in ("random", "every"):
        raise InputError(f"sampling mode must be 'random' or 'every', got {mode!r}")
    if mode == "every" and not dataset.every_caption:
        raise ValueError("mode 'every' needs a dataset built with every_caption=True")
    single = os.path.join(out_dir, "single")
    os.makedirs(single, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the dataset's random caption choice and crops
    records = []
    target = len(dataset) if mode == "every" else n_samples
    passes = 0
    while len(records) < target:
        loader = build_dataloader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, workers=workers)
        for raw in loader:
            batch = prepare_data(raw, device)
            words_emb, sent_emb = text_encoder(batch.captions, batch.cap_lens)
            mask = batch.mask[:, :words_emb.size(2)]
            b = words_emb.size(0)
            images, extras = generate(noise_for(b, z_dim, device, g, truncation), sent_emb.float(),
                                      words_emb.float(), mask)
            for i in range(b):
                if len(records) >= target:
                    break
                key = _safe_key(batch.keys[i])
                suffix = int(batch.caption_indices[i]) if mode == "every" else passes
                rel = f"{key}_s{suffix}.png"
                save_png(images[i], os.path.join(single, rel))
                cap = dataset.caption_text(int(batch.caption_indices[i]))
                records.append({"file": rel, "key": batch.keys[i], "caption": cap,
                                "class_id": int(batch.class_ids[i]), "caption_index": int(batch.caption_indices[i])})
                if save_extras is not None:
                    save_extras(extras, i, os.path.join(single, f"{key}_s{suffix}"))
            if len(records) >= target:
                break
        passes += 1
    path = os.path.join(out_dir, "captions.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=0)
    return {"n": len(records), "captions": path, "folder": single}


def encode_sentences(sentences: list[str], dataset, source: str = "<command line>"):
    """(ids LongTensor [N, T] zero-padded, lens LongTensor [N], kept words per sentence), unsorted.

    RNN vocabularies drop unknown words with a warning (AttnGAN `gen_example`); BERT's WordPiece has no unknown
    words. No WORDS_NUM cap, as in the original."""
    seqs, words = [], []
    for j, sent in enumerate(sentences):
        if dataset.bert_tokenizer is not None:
            raw = dataset.bert_tokenizer(sent, add_special_tokens=False)["input_ids"]
            kept = dataset.bert_tokenizer.convert_ids_to_tokens(raw)
            ids = swap_pad_id(raw, dataset.pad_token_id)  # the dataset's convention: 0 is padding
        else:
            tokens = tokenize_caption(sent)
            kept = [t for t in tokens if t in dataset.wordtoix]
            unknown = [t for t in tokens if t not in dataset.wordtoix]
            if unknown:
                warnings.warn(f"{source}, sentence {j}: dropping words not in the vocabulary: {unknown}")
            ids = [dataset.wordtoix[t] for t in kept]
        if not ids:
            raise InputError(f"{source}, sentence {j} ({sent!r}): none of its words is in the vocabulary, so there is "
                             "nothing to generate from")
        seqs.append(ids)
        words.append(kept)
    t = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    return ids, torch.tensor([len(s) for s in seqs]), words


@dataclass
class EncodedSentences:
    """Text features of free sentences, in the order given: words_emb [N, D, T], sent_emb [N, D], mask [N, T] (True
    at padding), and the words kept per sentence."""
    words_emb: torch.Tensor
    sent_emb: torch.Tensor
    mask: torch.Tensor
    words: list[list[str]]


@torch.no_grad()
def sample_sentences(generate, text_encoder, dataset, sentences: list[str], *, z_dim: int, device, seed: int = 100,
                     truncation: float | None = None, source: str = "<command line>"):
    """(`generate(noise, sent_emb, words_emb, mask)`'s output, EncodedSentences) for free sentences; sentence j gets
    row j of the noise drawn from `seed` (`noise_for`), so one sentence repeated N times gives N variants. The
    generator's own randomness (AttnGAN's conditioning augmentation) is seeded too, in a forked RNG state, so a
    seed always gives the same images."""
    ids, lens, words = encode_sentences(sentences, dataset, source)
    ids = ids.to(device)
    words_emb, sent_emb = text_encoder(ids, lens.to(device))  # the encoders take unsorted lengths
    text = EncodedSentences(words_emb.float(), sent_emb.float(), ids == 0, words)
    noise = noise_for(len(sentences), z_dim, device, torch.Generator().manual_seed(seed), truncation)
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return generate(noise, text.sent_emb, text.words_emb, text.mask), text


def generate_sentences(generate_stages, text_encoder, dataset, sentences: list[str], out_dir: str, *, z_dim: int,
                       device, seed: int = 100, source: str = "<command line>", prefix: str = "0") -> list[str]:
    """AttnGAN `gen_example` for a list of sentences: `<prefix>_s_<j>_g<k>.png` per stage k and `_a<k>.png`.

    `generate_stages(noise, sent_emb, words_emb, mask) -> (list of stage images, list of attention maps)`.
    """
    (stages, att_maps), text = sample_sentences(generate_stages, text_encoder, dataset, sentences, z_dim=z_dim,
                                                device=device, seed=seed, source=source)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for j, words in enumerate(text.words):
        for k, img in enumerate(stages):
            path = os.path.join(out_dir, f"{prefix}_s_{j}_g{k}.png")
            save_png(img[j], path)
            written.append(path)
        for k, att in enumerate(att_maps):
            path = os.path.join(out_dir, f"{prefix}_s_{j}_a{k}.png")
            build_super_images(stages[-1][j:j + 1], [words], [att[j].float()], top_k=min(5, len(words))).save(path)
            written.append(path)
    return written


def read_example_file(data_dir: str, entry: str) -> list[str]:
    """The sentences of one `example_filenames.txt` entry (`<DATA_DIR>/<entry>.txt`, blank lines skipped)."""
    path = os.path.join(data_dir, entry + ".txt")
    if not os.path.isfile(path):
        raise MissingFileError(f"example sentence file not found: {path} (listed in example_filenames.txt)")
    return [line.strip() for line in read_text_lines(path) if line.strip()]


def example_entries(data_dir: str) -> list[tuple[str, list[str], str]]:
    """(entry, sentences, file) for every line of `<data_dir>/example_filenames.txt` (AttnGAN's list of example
    sentence files, relative to DATA_DIR, without .txt); entries without sentences are skipped with a warning."""
    listing = os.path.join(data_dir, "example_filenames.txt")
    if not os.path.isfile(listing):
        raise MissingFileError(f"{listing} not found: it lists the example sentence files (one per line, relative "
                                "to DATA_DIR, without .txt)")
    with open(listing, encoding="utf-8") as f:
        entries = [line.strip() for line in f if line.strip()]
    out = []
    for entry in entries:
        sentences = read_example_file(data_dir, entry)
        if sentences:
            out.append((entry, sentences, os.path.join(data_dir, entry + ".txt")))
        else:
            warnings.warn(f"{entry}.txt has no sentences; skipped")
    return out


def gen_example(generate_stages, text_encoder, dataset, out_root: str, *, z_dim: int, device,
                seed: int = 100) -> list[str]:
    """Every entry of `<DATA_DIR>/example_filenames.txt` → `<out_root>/<basename>/0_s_<j>_g<k>.png` (+ maps)."""
    written = []
    for entry, sentences, source in example_entries(dataset.data_dir):
        out_dir = os.path.join(out_root, os.path.basename(entry))
        written += generate_sentences(generate_stages, text_encoder, dataset, sentences, out_dir, z_dim=z_dim,
                                      device=device, seed=seed, source=source)
    return written


def records_source(captions_json: str):
    """The evaluation-protocol sample source (`eval.protocols`) over images written by `sample_test_set`, in the
    order of its `captions.json`, with each image's caption, key and class id (R-precision draws its mismatched
    captions from other classes, as DM-GAN)."""
    from eval.images import load_image_uint8
    from eval.protocols import SampleBatch

    with open(captions_json, encoding="utf-8") as f:
        records = json.load(f)
    folder = os.path.join(os.path.dirname(captions_json), "single")

    def sample(n: int, batch_size: int):
        if n > len(records):
            raise ValueError(f"{captions_json}: {n} samples requested, {len(records)} were generated "
                             "(raise EVAL.N_SAMPLES)")
        for start in range(0, n, batch_size):
            chunk = records[start:min(n, start + batch_size)]
            images = torch.stack([load_image_uint8(os.path.join(folder, r["file"])) for r in chunk])
            yield SampleBatch(images, [r["caption"] for r in chunk], [r["key"] for r in chunk],
                              {"class_ids": np.array([r["class_id"] for r in chunk])})

    sample.source = os.path.abspath(folder)
    return sample
