"""Pieces every generator trainer shares: the frozen DAMSM encoders, text encoding, the paired G terms, fixed
visualisation batches."""
from __future__ import annotations

import hashlib
import os
import threading

import torch

from datasets import prepare_data
from miscc.config import image_encoder_path, resolve_path
from miscc.errors import InputError, MissingFileError
from miscc.losses import colour_distribution_loss, perceptual_loss, pixel_loss, pooled, swap_negatives, swap_word_groups
from miscc.modules import freeze
from miscc.text import swap_pad_id
from models.damsm import build_image_encoder, build_text_encoder, load_image_encoder, load_text_encoder


def text_encoder_path(cfg) -> str:
    """TRAIN.NET_E (AttnGAN) or TEXT.DAMSM_NAME (SSA-GAN), resolved like every config path."""
    path = cfg.TRAIN.NET_E or cfg.TEXT.DAMSM_NAME
    if not path:
        raise InputError("no text encoder configured: set TRAIN.NET_E (or TEXT.DAMSM_NAME) to a "
                         "text_encoder*.pth trained by pretrain_DAMSM.py or released with AttnGAN")
    return resolve_path(path)


def load_damsm(cfg, n_words: int, device, with_image_encoder: bool = True):
    """(text_encoder, image_encoder or None), loaded strictly from NET_E and its `image_encoder` sibling, frozen.

    The image-encoder path is NET_E with 'text_encoder' replaced by 'image_encoder', as AttnGAN derives it.
    """
    path = text_encoder_path(cfg)
    text_encoder = freeze(load_text_encoder(build_text_encoder(cfg, n_words), path).to(device))
    image_encoder = None
    if with_image_encoder:
        img_path = image_encoder_path(path)
        if img_path == path or not os.path.isfile(img_path):
            raise MissingFileError(f"image encoder not found: {img_path} (derived from the text encoder path "
                                    f"{path} by replacing 'text_encoder' with 'image_encoder')")
        image_encoder = _frozen_image_encoder(cfg, img_path, device)
    return text_encoder, image_encoder


def _frozen_image_encoder(cfg, path: str, device):
    """The image encoder of cfg.DAMSM's architecture, loaded strictly from `path`, frozen, on `device`."""
    return freeze(load_image_encoder(build_image_encoder(cfg), path).to(device))


def epoch_from_name(path: str) -> int:
    """The epoch in a name like `netG_epoch_600.pth` or `netG_590.pth` (the text after the last '_')."""
    stem = os.path.splitext(os.path.basename(path))[0]
    tail = stem.rsplit("_", 1)[-1]
    if not tail.isdigit():
        raise InputError(f"{path}: cannot read the epoch from the file name (expected e.g. netG_epoch_600.pth)")
    return int(tail)


def decode_ids(dataset, ids) -> str:
    """Caption ids back to text: the WordPiece tokenizer's decode for BERT datasets, else AttnGAN's ixtoword."""
    ids = [int(i) for i in ids if int(i) != 0]
    tokenizer = getattr(dataset, "bert_tokenizer", None)
    if tokenizer is not None:
        return tokenizer.decode(swap_pad_id(ids, dataset.pad_token_id))
    return " ".join(dataset.ixtoword.get(i, "?") for i in ids)


def encode_captions(text_encoder, batch):
    """Frozen text features of a prepared batch: (words_emb [B, D, T], sent_emb [B, D], mask [B, T])."""
    with torch.no_grad():
        words_emb, sent_emb = text_encoder(batch.captions, batch.cap_lens)
    words_emb, sent_emb = words_emb.float().detach(), sent_emb.float().detach()
    mask = batch.mask[:, :words_emb.size(2)]
    return words_emb, sent_emb, mask


def text_sampling_forward(text_encoder, net, batch, z_dim: int) -> None:
    """`BaseTrainer.sampling_forward` of a family whose G reads (noise, sent_emb, words_emb, mask), as sampling
    calls it: the batch's captions through the frozen text encoder, fresh standard-normal noise."""
    words_emb, sent_emb, mask = encode_captions(text_encoder, batch)
    net(torch.randn(words_emb.size(0), z_dim, device=words_emb.device), sent_emb, words_emb, mask)


def swap_groups_for(cfg, train_set) -> list[list[int]] | None:
    """DAMSM.SWAP_NEGATIVES as vocabulary ids when G's hard-negative term is on (TRAIN.SMOOTH.SWAP_LAMBDA > 0), else
    None; that term needs the groups."""
    if not cfg.TRAIN.SMOOTH.SWAP_LAMBDA:
        return None
    if not cfg.DAMSM.SWAP_NEGATIVES:
        raise InputError("TRAIN.SMOOTH.SWAP_LAMBDA > 0 needs DAMSM.SWAP_NEGATIVES, the word groups to swap "
                         "(e.g. ['circle square triangle'])")
    return swap_word_groups(list(cfg.DAMSM.SWAP_NEGATIVES), caption_vocabulary(train_set))


def caption_vocabulary(dataset) -> dict[str, int]:
    """word -> id as the dataset's captions hold them: the BERT tokenizer's vocabulary (whole-word tokens) where the
    captions are BERT ids, else the LSTM vocabulary (`wordtoix`)."""
    tokenizer = getattr(dataset, "bert_tokenizer", None)
    if tokenizer is not None:
        return tokenizer.get_vocab()
    if getattr(dataset, "wordtoix", None) is None:
        raise InputError("DAMSM.SWAP_NEGATIVES needs a word vocabulary (the dataset's wordtoix or its BERT "
                         "tokenizer); this dataset has neither")
    return dataset.wordtoix


def encode_swap_negatives(text_encoder, batch, groups, generator=None):
    """The batch's captions with one word of a swap group swapped (miscc.losses.swap_negatives), through the frozen
    text encoder: (words_emb, sent_emb, has) for damsm_generator_loss's `negatives`; None without groups."""
    if not groups:
        return None
    neg, has = swap_negatives(batch.captions, batch.cap_lens, groups, generator=generator)
    with torch.no_grad():
        words_emb, sent_emb = text_encoder(neg, batch.cap_lens)
    return words_emb.float(), sent_emb.float(), has


def encode_with_swap_negatives(text_encoder, batch, groups, generator=None):
    """`encode_captions` and `encode_swap_negatives` in one pass of the frozen text encoder: the captions and their
    swapped copies as one batch of 2B (one LSTM call instead of two; rows are encoded independently, so the
    features are those of two calls up to float rounding). ((words_emb, sent_emb, mask), negatives or None); the
    swaps are drawn from `generator` (None: the global RNG)."""
    if not groups:
        return encode_captions(text_encoder, batch), None
    neg, has = swap_negatives(batch.captions, batch.cap_lens, groups, generator=generator)
    with torch.no_grad():
        words_emb, sent_emb = text_encoder(torch.cat((batch.captions, neg)), batch.cap_lens.repeat(2))
    b = batch.captions.size(0)
    words_emb, sent_emb = words_emb.float(), sent_emb.float()
    return (words_emb[:b], sent_emb[:b], batch.mask[:, :words_emb.size(2)]), (words_emb[b:], sent_emb[b:], has)


def load_perceptual_extra(cfg, device):
    """The second image encoder of G's perceptual term (TRAIN.PERCEPTUAL_EXTRA: the path of an `image_encoder*.pth`
    of the DAMSM's architecture, frozen), or None when the key is empty."""
    path = cfg.TRAIN.PERCEPTUAL_EXTRA
    if not path:
        return None
    if not cfg.TRAIN.PERCEPTUAL_WEIGHT:
        raise InputError("TRAIN.PERCEPTUAL_EXTRA adds an image encoder to the perceptual term: it needs "
                         "TRAIN.PERCEPTUAL_WEIGHT > 0")
    return _frozen_image_encoder(cfg, resolve_path(path), device)


def extra_encoder_now(trainer):
    """`trainer`'s second image encoder of the perceptual term (TRAIN.PERCEPTUAL_EXTRA, its `perceptual_extra`) in
    this epoch, or None: an early DAMSM snapshot speeds up where objects go and holds the shapes back later, so
    TRAIN.PERCEPTUAL_EXTRA_EPOCHS > 0 ends it after that many epochs (its cached real features are then dropped)."""
    extra = trainer.perceptual_extra
    if extra is None or trainer.in_first_epochs(trainer.cfg.TRAIN.PERCEPTUAL_EXTRA_EPOCHS):
        return extra
    if trainer.real_cache is not None:
        trainer.real_cache.drop(extra)  # its features are not read again
    return None


def image_digests(images: torch.Tensor) -> list[bytes]:
    """A 16-byte digest of each image's bytes ([B, ...]): how RealFeatureCache and DrawMemory know an image (a
    flipped or differently cropped one is another)."""
    rows = images.detach().cpu().contiguous().numpy()  # one copy off the device for the batch, not one per row
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


class RealFeatureCache:
    """The region features of real images under frozen image encoders, each distinct image through each encoder
    once (TRAIN.REAL_FEATURE_CACHE_MB > 0). The perceptual term reads the caption's real image through the encoder
    at every step; on `shapes` (4,000 images, each also flipped) that forward is about a tenth of a step. An image
    is known by a digest of its bytes, so a flipped or differently cropped one is its own entry. Once the features
    held reach the budget no entry is added (the rest are computed at each step, as without a cache). Only for
    encoders that do not train: a trainer that fine-tunes its image encoder must not use one.

    Images not held are read in forwards of exactly CHUNK images (the last one padded with copies), so an image's
    features have the same bits whichever batch it first came in: a run resumed with an empty cache goes on exactly
    as the uninterrupted one (a convolution may round differently for another batch size, e.g. for one image)."""

    CHUNK = 8

    def __init__(self, budget_mb: float):
        self.budget = int(budget_mb * 2 ** 20)
        self.held = 0  # bytes
        self._store: dict[int, dict[bytes, torch.Tensor]] = {}  # id(encoder) -> digest -> features
        self._lock = threading.Lock()  # TRAIN.PARALLEL_STEPS: steps in other threads share the cache

    def features(self, encoder, real: torch.Tensor) -> torch.Tensor:
        """encoder(real)[0] ([B, C, h, w]), from the cache where it holds them; new ones are kept while the
        budget lasts."""
        with self._lock, torch.no_grad():
            return self._features(encoder, real)

    def _features(self, encoder, real: torch.Tensor) -> torch.Tensor:
        store = self._store.setdefault(id(encoder), {})
        keys = image_digests(real)
        missing = [i for i, k in enumerate(keys) if k not in store]
        fresh = {}
        for start in range(0, len(missing), self.CHUNK):
            rows = missing[start:start + self.CHUNK]
            chunk = real[rows + rows[:1] * (self.CHUNK - len(rows))]
            for i, f in zip(rows, encoder(chunk)[0]):
                fresh[i] = f
                if keys[i] not in store and self.held + f.nbytes <= self.budget:
                    store[keys[i]] = f.clone()
                    self.held += f.nbytes
        return torch.stack([fresh[i] if i in fresh else store[k] for i, k in enumerate(keys)])

    def drop(self, encoder) -> None:
        """Forget `encoder`'s features (an encoder no longer used)."""
        with self._lock:
            for f in self._store.pop(id(encoder), {}).values():
                self.held -= f.nbytes

    def __len__(self) -> int:
        return sum(len(s) for s in self._store.values())


def real_feature_cache(cfg, trains_image_encoder: bool = False) -> RealFeatureCache | None:
    """The trainer's RealFeatureCache for TRAIN.REAL_FEATURE_CACHE_MB (None where it is 0)."""
    budget = cfg.TRAIN.REAL_FEATURE_CACHE_MB
    if not budget:
        return None
    if budget < 0:
        raise InputError(f"TRAIN.REAL_FEATURE_CACHE_MB is {budget}: expected MiB >= 0 (0 is off)")
    if trains_image_encoder:
        raise InputError("TRAIN.REAL_FEATURE_CACHE_MB keeps features of a frozen image encoder: it cannot be used "
                         "with TRAIN.FINETUNE_TEXT_ENCODER, which trains the image encoder too; set it to 0")
    return RealFeatureCache(budget)


def paired_terms(cfg, image_encoder, fake_features, fakes, reals, extra_encoder=None, real_cache=None):
    """G's terms against the captions' real images (shapes configs): TRAIN.PERCEPTUAL_WEIGHT · perceptual loss of
    the last image (its DAMSM `fake_features`, computed with gradients; plus the same term in `extra_encoder`'s
    features, TRAIN.PERCEPTUAL_EXTRA) and TRAIN.PIXEL_WEIGHT · Σ over the `fakes` of the pixel loss against the
    `reals` of the same sizes. Returns (weighted sum, or 0 when both are off; the unweighted terms to log,
    `perceptual` (and `perceptual_extra`) and `pixel`, for those that are on). The real images' features come
    from `real_cache` (a RealFeatureCache) where given."""
    total, logged = 0.0, {}

    def real_features(encoder):
        return real_cache.features(encoder, reals[-1]) if real_cache is not None else None

    if cfg.TRAIN.PERCEPTUAL_WEIGHT:
        per = perceptual_loss(image_encoder, fake_features, reals[-1], real_features(image_encoder))
        total, logged["perceptual"] = total + cfg.TRAIN.PERCEPTUAL_WEIGHT * per, per.detach()
        if extra_encoder is not None:
            extra = perceptual_loss(extra_encoder, extra_encoder(fakes[-1])[0], reals[-1],
                                    real_features(extra_encoder))
            total, logged["perceptual_extra"] = total + cfg.TRAIN.PERCEPTUAL_WEIGHT * extra, extra.detach()
    if cfg.TRAIN.PIXEL_WEIGHT:
        pix = sum(pixel_loss(f, r) for f, r in zip(fakes, reals, strict=True))
        total, logged["pixel"] = total + cfg.TRAIN.PIXEL_WEIGHT * pix, pix.detach()
    return total, logged


def adversarial_now(trainer) -> bool:
    """Whether this step of `trainer` steps D and gives G its adversarial term: from TRAIN.ADV_START_EPOCH on (before
    it G learns from its paired terms alone while D waits), on every TRAIN.ADV_INTERVAL-th step (ours: the steps
    between skip the adversarial part, which is about a third of a `shapes` step; G's term then weighs
    TRAIN.ADV_INTERVAL times TRAIN.COEFF.ADV, StyleGAN2's lazy regularisation applied to it)."""
    train = trainer.cfg.TRAIN
    return trainer.epoch >= train.ADV_START_EPOCH and trainer.step % train.ADV_INTERVAL == 0


def check_step_interval(key: str, n) -> None:
    """Refuse a step interval (TRAIN.ADV_INTERVAL, SSA.MAGP_INTERVAL) that is not a whole number >= 1."""
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise InputError(f"{key} is {n!r}: expected a whole number of steps >= 1")


def anchored_now(trainer) -> bool:
    """Whether this step of `trainer` renders every caption a second time from a fresh noise draw for the anchor
    term (TRAIN.PAIRED_ANCHOR with TRAIN.PIXEL_WEIGHT, in the first TRAIN.PAIRED_ANCHOR_EPOCHS epochs where that is
    > 0)."""
    train = trainer.cfg.TRAIN
    return bool(train.PAIRED_ANCHOR and train.PIXEL_WEIGHT) and trainer.in_first_epochs(train.PAIRED_ANCHOR_EPOCHS)


def anchor_term(cfg, fakes, reals):
    """(TRAIN.PAIRED_ANCHOR · TRAIN.PIXEL_WEIGHT · Σ (pixel loss + TRAIN.ANCHOR_COLOURS · colour loss), the
    unweighted sum) of the fresh draws' images `fakes` against the real images of the same sizes, both
    average-pooled to TRAIN.ANCHOR_POOL cells a side where that is > 0: IMLE trains only the draw nearest the real
    image, so what the noise can supply G need not learn from the text; an image from any draw must show what the
    caption fixes (on the pooled grid: where its objects are and what colour; with TRAIN.ANCHOR_COLOURS, its colours
    wherever they are, `colour_distribution_loss` on the unpooled images)."""
    cells, colours = cfg.TRAIN.ANCHOR_POOL, cfg.TRAIN.ANCHOR_COLOURS
    raw = sum(pixel_loss(pooled(f, cells), pooled(r, cells))
              + (colours * colour_distribution_loss(f, r) if colours else 0.0)
              for f, r in zip(fakes, reals, strict=True))
    return cfg.TRAIN.PAIRED_ANCHOR * cfg.TRAIN.PIXEL_WEIGHT * raw, raw.detach()


class DrawMemory:
    """The noise draw IMLE chose for each real image last time (TRAIN.PAIRED_MEMORY): at the image's next step that
    draw is one of the TRAIN.PAIRED_CANDIDATES candidates (the first) in place of a fresh one, so a step compares
    k - 1 fresh draws with the best one found so far, re-rendered by the current G. Li & Malik's IMLE (2018) pairs
    each image with its nearest sample and keeps the pairing for many steps; this keeps it while it stays the
    nearest. An image is known by a digest of its bytes (as RealFeatureCache), so a flipped one is its own entry.
    The memory travels with the training state (`state_dict`), so a resumed run draws what the uninterrupted one
    would."""

    def __init__(self):
        self._store: dict[bytes, torch.Tensor] = {}  # digest -> the chosen draws, concatenated [D]

    def __len__(self):
        return len(self._store)

    def recall(self, real: torch.Tensor, draws: list[torch.Tensor]) -> tuple[list[bytes], list[torch.Tensor]]:
        """(the digests of `real` [B, ...], `draws` [k·B, ...] candidate-major with candidate 0 of each image that
        has a remembered draw replaced by it)."""
        keys = image_digests(real)
        rows = [i for i, key in enumerate(keys) if key in self._store]
        if rows:
            held = torch.stack([self._store[keys[i]] for i in rows]).to(draws[0].device)
            out, start = [], 0
            for d in draws:
                d = d.clone()
                d[rows] = held[:, start:start + d.size(1)].to(d.dtype)
                out.append(d)
                start += d.size(1)
            draws = out
        return keys, draws

    def remember(self, keys: list[bytes], chosen: tuple[torch.Tensor, ...]) -> None:
        flat = torch.cat([c.detach().float().cpu() for c in chosen], 1)
        for key, row in zip(keys, flat):
            self._store[key] = row.clone()

    def state_dict(self) -> dict:
        keys = list(self._store)
        digests = torch.tensor([list(k) for k in keys], dtype=torch.uint8).reshape(len(keys), -1)
        draws = torch.stack([self._store[k] for k in keys]) if keys else torch.zeros(0)
        return {"digests": digests, "draws": draws}

    def load_state_dict(self, state: dict) -> None:
        self._store = {bytes(d.tolist()): row.clone() for d, row in zip(state["digests"], state["draws"])}


def paired_memory(cfg) -> DrawMemory | None:
    """The trainer's DrawMemory for TRAIN.PAIRED_MEMORY (None where it is off); it needs a second candidate, and
    steps one at a time (BaseTrainer refuses it beside parallel steps, once TRAIN.PARALLEL_STEPS is resolved)."""
    if not cfg.TRAIN.PAIRED_MEMORY:
        return None
    if cfg.TRAIN.PAIRED_CANDIDATES < 2:
        raise InputError(f"TRAIN.PAIRED_MEMORY keeps IMLE's chosen draw as one of TRAIN.PAIRED_CANDIDATES: it needs "
                         f"at least 2 candidates, got {cfg.TRAIN.PAIRED_CANDIDATES}")
    return DrawMemory()


def nearest_draws(k: int, imgs: torch.Tensor, real: torch.Tensor, *draws: torch.Tensor) -> tuple:
    """Per caption, the draws whose candidate image (`imgs` [k·B, C, H, W], candidate-major) lies nearest (mean
    squared pixel distance) its real image `real` [B, C, H, W] (IMLE's choice, TRAIN.PAIRED_CANDIDATES): each of
    `draws` [k·B, ...] (candidate-major, as `imgs`) cut to the chosen [B, ...]."""
    b = real.size(0)  # (reshape: G's images may be channels_last, TRAIN.CHANNELS_LAST)
    dist = (imgs.float().reshape(k, b, -1) - real.float().reshape(1, b, -1)).pow(2).mean(2)
    best = (dist.argmin(0), torch.arange(b, device=real.device))
    return tuple(d.view(k, b, *d.shape[1:])[best] for d in draws)


def fixed_batch(dataset, n: int, z_dim: int, seed: int, device):
    """The first `n` items of `dataset` (a prepared Batch) and noise [n, z_dim] for the image grids, drawn from a
    forked RNG seeded with `seed`, so they are the same in every run and drawing them leaves the training randomness
    untouched."""
    n = min(n, len(dataset))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        raw = torch.utils.data.default_collate([dataset[i] for i in range(n)])
        noise = torch.randn(n, z_dim)
    return prepare_data(raw, device), noise.to(device)
