"""Configuration: AttnGAN/SSA-GAN key names, strict YAML merge, command-line overrides.

`load_config(path, overrides)` returns a fresh EasyDict: the defaults below, merged with a YAML file (read with
`yaml.safe_load`) and then with a dict of dotted overrides. Merging is strict, as in the originals' `cfg_from_file`:
an unknown key or a value of the wrong type raises `ConfigError` naming the file, the dotted key and the closest valid
key. Two deliberate relaxations, both lossless: an int is accepted where a float is expected (`LAMBDA: 5`), and so is
a string that spells a float (`2e-4`, which YAML 1.1 reads as a string). DF-GAN 2022's own lower-case files
(`imsize`, `z_dim`, `nf`, ...) are recognised by their keys and mapped first (`miscc.dfgan_yaml`).

Nothing in `models/` or `datasets.py` reads this tree: entry points pass the values they need explicitly.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import os
import re

import yaml
from easydict import EasyDict

from miscc.dfgan_yaml import is_dfgan_original, map_dfgan_original
from miscc.errors import InputError, add_debug_argument

# The originals ran from `code/` with data one level up (`../data/birds`); see `resolve_path`.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_DEFAULTS = {
    # --- AttnGAN top level (A/code/miscc/config.py) ---
    "CONFIG_NAME": "",
    "DATASET_NAME": "birds",
    "DATA_DIR": "",
    "GPU_ID": 0,
    "CUDA": True,
    "WORKERS": 6,
    "RNN_TYPE": "LSTM",
    "B_VALIDATION": False,
    # --- SSA-GAN (wtliao) top level ---
    "RESTORE": False,
    "USE_SN": False,
    "loss": "hinge",
    # --- ours ---
    "MODEL": "attngan",  # attngan | ssagan | gan_int_cls | dfgan
    "OUTPUT_DIR": "output",
    "SEED": 100,
    "DATA": {
        # cub (bbox crop from CUB_200_2011/), coco (images/<key>.jpg), custom (images/<key>.<ext>, no bbox).
        # Empty: 'cub' when DATASET_NAME is 'birds', 'coco' when it is 'coco', else 'custom'.
        "LAYOUT": "",
        "SKIP_CORRUPT": False,  # skip unreadable images with a warning instead of failing
        "CACHE_IMAGES": -1,  # decoded-image cache: -1 auto (small datasets), 0 off, 1 on
        "STRICT_TEXT": False,  # invalid UTF-8 in a caption file: an error (True) or a warning and U+FFFD (False)
        # training augmentation (AttnGAN: both on). Off, or FLIP 'text', where captions describe positions:
        # 'text' flips and swaps the words of FLIP_WORD_PAIRS ("left:right") in the caption.
        "RANDOM_CROP": True,
        "FLIP": "random",  # random | none | text
        "FLIP_WORD_PAIRS": ["left:right"],
        # the shorter edge is resized to int(LOAD_SCALE * image size), then cropped (randomly with RANDOM_CROP, else
        # centred): AttnGAN's 76/64; 1.0 keeps the whole frame (captions naming positions near the border)
        "LOAD_SCALE": 1.1875,
    },
    "TREE": {"BRANCH_NUM": 3, "BASE_SIZE": 64},
    "TRAIN": {
        "FLAG": True,
        "BATCH_SIZE": 64,
        "MAX_EPOCH": 600,
        "SNAPSHOT_INTERVAL": 2000,
        "DISCRIMINATOR_LR": 2e-4,
        "GENERATOR_LR": 2e-4,
        "ENCODER_LR": 2e-4,
        "RNN_GRAD_CLIP": 0.25,
        "NET_E": "",
        "NET_G": "",
        "B_NET_D": True,
        # SWAP_LAMBDA (ours; 0 off): weight of G's DAMSM hard-negative term, its image against its caption with one
        # DAMSM.SWAP_NEGATIVES word swapped (miscc/losses.damsm_generator_loss)
        "SMOOTH": {"GAMMA1": 5.0, "GAMMA2": 5.0, "GAMMA3": 10.0, "LAMBDA": 1.0, "SWAP_LAMBDA": 0.0},
        # StackGAN's key: weight of the conditioning-augmentation KL term (AttnGAN hard-codes 1); ADV (ours, AttnGAN):
        # weight of G's adversarial term (1 as the original)
        "COEFF": {"KL": 1.0, "ADV": 1.0},
        # SSA-GAN (wtliao) keys
        "NF": 32,
        "WARMUP_EPOCHS": 200,
        "GSAVE_INTERVAL": 10,
        "DSAVE_INTERVAL": 10,
        # ours: optimisation and infrastructure
        "BETA1": 0.5,
        "BETA2": 0.999,
        "ENCODER_LR_DECAY": 0.98,  # DAMSM: lr *= decay every ENCODER_LR_DECAY_EPOCHS while lr > ENCODER_LR / 10
        "ENCODER_LR_DECAY_EPOCHS": 1,
        "LR_DECAY": 1.0,  # GAN optimisers: lr = initial × LR_DECAY^(epoch // LR_DECAY_EPOCHS); 1.0 is constant
        "LR_DECAY_EPOCHS": 10,
        # over the last LR_COOLDOWN of the run's steps (a fraction; MAX_EPOCH or MAX_STEPS sets the run) every
        # optimiser's rate (the DAMSM's too) falls linearly to 0, per step (warmup-stable-decay's decay); 0: none
        "LR_COOLDOWN": 0.0,
        "EMA": True,  # keep an EMA of G (AttnGAN stores it as netG_epoch_%d.pth)
        "EMA_DECAY": 0.999,
        # before each snapshot, the EMA's BatchNorm statistics recomputed for its weights from this many training
        # batches (AttnGAN saved the live G's, which do not fit the averaged weights); 0: AttnGAN's behaviour
        "EMA_BN_BATCHES": 100,
        "AMP": "none",  # none | bf16 | fp16 | auto (bf16 where the device has it natively, else none)
        # G's weights (and so its activations) in channels_last memory layout: the same numbers, another speed
        # (SSA-GAN's shapes G on a Zen 4 in bf16: 15 % less a step; AttnGAN's: 4 % more, so it is off there)
        "CHANNELS_LAST": False,
        # DiffAugment of D's inputs (miscc/diffaugment.py): '' off, or e.g. 'translation,cutout' / 'color'
        "DIFFAUGMENT": "",
        "DIFFAUGMENT_TRANSLATION": 0.0625,  # max shift, share of the image size
        "DIFFAUGMENT_CUTOUT": 0.25,  # cutout square side, share of the image size
        # ControlGAN's perceptual loss in the DAMSM image encoder's feature space (miscc/losses.perceptual_loss):
        # weight of the G term; 0 is off (AttnGAN, SSA-GAN)
        "PERCEPTUAL_WEIGHT": 0.0,
        # MiB of the perceptual term's real-image features kept between steps (trainers/common.RealFeatureCache):
        # each distinct real image goes through the frozen encoder once; 0 is off
        "REAL_FEATURE_CACHE_MB": 0,
        # mean squared pixel distance of each stage's image to its caption's real image (miscc/losses.pixel_loss):
        # weight of the G term; 0 is off (AttnGAN, SSA-GAN)
        "PIXEL_WEIGHT": 0.0,
        # epochs before this one train G on its paired terms only (PIXEL_WEIGHT, PERCEPTUAL_WEIGHT, the DAMSM loss)
        # and leave D untouched, as ESRGAN pre-trains its generator before the GAN; 0: adversarial from the start
        "ADV_START_EPOCH": 0,
        # > 1: D's step and G's adversarial term only every n-th step, that term then weighing n times COEFF.ADV
        # (StyleGAN2's lazy regularisation applied to the adversarial part: D is a third of a shapes step); AttnGAN and
        # SSA-GAN
        "ADV_INTERVAL": 1,
        # ours: this many consecutive batches' steps at once on as many CPU threads (trainers.parallel); 1: one
        "PARALLEL_STEPS": 1,
        # noise candidates per caption; > 1: the paired terms train the candidate whose stage-1 image is nearest
        # the real image (IMLE; AttnGAN)
        "PAIRED_CANDIDATES": 1,
        # with PAIRED_CANDIDATES > 1: each real image's chosen draw is kept and is a candidate at its next step
        # (trainers/common.DrawMemory; IMLE's kept pairing)
        "PAIRED_MEMORY": False,
        # > 1 with GAN.GRID_NOISE: then, the rest of the chosen draw held, the noise map (the first g*g entries)
        # from this many draws of it, chosen the same way (AttnGAN)
        "PAIRED_MAP_CANDIDATES": 0,
        # > 0: G also draws every caption from fresh noise, and those images pay this share of the pixel term
        # (PIXEL_WEIGHT), so what the caption fixes must not depend on the noise IMLE chooses (AttnGAN)
        "PAIRED_ANCHOR": 0.0,
        "PAIRED_ANCHOR_EPOCHS": 0,  # that term only in the first this many epochs; 0: in every epoch
        # the fresh draws go through G's first this many stages only and pay on those images (AttnGAN's G_NET: the
        # pooled anchor needs no fine stage); 0: every stage
        "ANCHOR_STAGES": 0,
        # the anchor compares the images average-pooled to this many cells a side (1: their mean colours, which the
        # background fixes and an object's place does not); 0: pixel by pixel
        "ANCHOR_POOL": 0,
        # > 0: the anchor term also compares the fresh draws' colours with the real image's wherever they are
        # (miscc/losses.colour_distribution_loss), at this share of its pixel weight; a caption that leaves an
        # object's place open fixes its colour and size, so an image from any draw must show them (AttnGAN, SSA-GAN)
        "ANCHOR_COLOURS": 0.0,
        # a second DAMSM image encoder (path of an image_encoder*.pth) in whose region features the perceptual term
        # also compares G's last image with the real one (PERCEPTUAL_WEIGHT); '' off (ours)
        "PERCEPTUAL_EXTRA": "",
        "PERCEPTUAL_EXTRA_EPOCHS": 0,  # that second term only in the first this many epochs; 0: in every epoch
        "SYNC_BN": False,
        "MAX_STEPS": 0,  # stop after this many optimiser steps (0: run MAX_EPOCH epochs)
        # rolling resume state (Model/training_state.pth) between snapshots, also mid-epoch; 0 turns each off
        "CHECKPOINT_MINUTES": 10.0,
        "CHECKPOINT_STEPS": 0,
        "LOG_INTERVAL": 100,
        "IMAGE_INTERVAL": 1000,
        "FINETUNE_TEXT_ENCODER": False,  # SSA-GAN main_finetune.py behaviour
    },
    "GAN": {
        "DF_DIM": 64,
        "GF_DIM": 128,
        "Z_DIM": 100,
        "CONDITION_DIM": 100,
        "R_NUM": 2,
        "B_ATTENTION": True,
        "B_DCGAN": False,
        # BERT-AttnGAN options
        "B_INIT_ATTENTION": False,  # spatial word attention at the end of stage 1
        "UPSAMPLE": "nearest",  # nearest (AttnGAN) | bilinear (BERT-AttnGAN, align_corners=True)
        # ours
        "ADV_LOSS": "bce",  # bce (AttnGAN) | hinge
        "D_SPECTRAL_NORM": False,  # spectral norm on every discriminator conv / linear weight
        "D_STAGES": 0,  # AttnGAN: discriminators on the last n stages only (0: one per stage, as the original)
        "GRID_ATTENTION": 0,  # AttnGAN: stage-1 word attention at this size with position-aware queries (0 = off)
        # AttnGAN with GRID_ATTENTION g (SSA-GAN with WORD_GRID g): the first g*g noise entries also join those
        # queries (the word map's) as a g x g map
        "GRID_NOISE": False,
        # AttnGAN with GRID_ATTENTION: that attention with this many heads and separate query / key / value
        # projections (scaled dot products, nn.MultiheadAttention); 0: AttnGAN's word attention
        "GRID_HEADS": 0,
        # AttnGAN with GRID_ATTENTION: its per-place embedding is added to stage 1's features (which then form the
        # queries) instead of to the queries only
        "GRID_PLACE_FEATURES": False,
        "POSITION_QUERIES": False,  # AttnGAN: a learned per-position embedding in the queries of stages 2+
        "WORD_CONTEXT_LAYERS": 0,  # AttnGAN: Transformer layers over the word features inside G (0 = off)
        # SSA-GAN: a g x g map of the words (WORD_CONTEXT_LAYERS >= 1 layers, then per-place queries) added to NetG's
        # features at g x g (0 = off, as the original)
        "WORD_GRID": 0,
        "WORD_AFFINE": False,  # SSA-GAN: every block's modulation reads that map per place (needs WORD_GRID)
        # AttnGAN, SSA-GAN: conditional D heads also read the words through such layers (0 = off)
        "D_WORD_CONTEXT_LAYERS": 0,
    },
    "TEXT": {
        "CAPTIONS_PER_IMAGE": 10,
        "EMBEDDING_DIM": 256,
        "WORDS_NUM": 18,
        "DAMSM_NAME": "",  # SSA-GAN's name for the text encoder path
        "ENCODER": "rnn",  # rnn | bert
        "BERT_PATH": "",  # local model directory (config.json + weights + tokenizer)
        "BERT_SENTENCE": "cls",  # cls | pooler | mean
        "BERT_PROJECTION": True,  # linear map to EMBEDDING_DIM (False: BERT-AttnGAN, EMBEDDING_DIM = hidden size)
        "BERT_FINETUNE": False,
    },
    "DAMSM": {
        "IMAGE_ENCODER": "inception",  # inception | small
        "IMAGE_SIZE": 64,  # the small encoder's input size (other sizes are resized to it)
        "INCEPTION_WEIGHTS": "",  # torchvision inception_v3_google-*.pth for ImageNet initialisation
        "VALID_BATCHES": 50,
        "VALID_INTERVAL": 1,  # validate (losses, R-precision) every N epochs and after the last; 0 = never (ours)
        "RPREC_SAMPLES": 1000,
        # ours: word groups ("circle square triangle") whose members are swapped in each caption to make one hard
        # negative per image for the image -> caption terms (models.damsm.losses); [] = AttnGAN
        "SWAP_NEGATIVES": [],
        # ours: std of Gaussian noise added to the images the image encoder trains on (the images in [-1, 1]; 0 =
        # AttnGAN); smoother features for G's perceptual and DAMSM terms (models.damsm.losses)
        "IMAGE_NOISE": 0.0,
    },
    "EVAL": {
        "PROTOCOLS": [],  # e.g. [fid30k, is30k, rprec30k]
        "INCEPTION_WEIGHTS": "",  # torch-fidelity / pytorch-fid Inception weights file
        "CLASSIFIER": "",  # dataset classifier checkpoint for IS / attribute accuracy
        "CLIP_PATH": "",
        "FID_STATS": "",  # .npz with mu, sigma of the real split
        "N_SAMPLES": 30000,  # images sampled for the metrics (random mode)
        "SAMPLE_MODE": "random",  # random (30k protocol) | every (every test caption once)
        "BATCH_SIZE": 50,
        "SEED": 0,
        "TRUNCATION": False,
        "TRUNC_RATE": 0.88,
    },
    "SSA": {
        "DAMSM_WEIGHT": 0.05,  # wt main.py 0.05, main_finetune.py 0.1
        "MAGP_P": 6.0,
        "MAGP_WEIGHT": 2.0,
        "MAGP_MODE": "separate",  # separate (SSA-GAN/old DF-GAN) | joint (DF-GAN 2022)
        "MAGP_INTERVAL": 1,  # ours: the penalty every n-th step at n times its weight (StyleGAN2's lazy R1)
        "GENERATOR_LR": 1e-4,
        "DISCRIMINATOR_LR": 4e-4,
        "BETA1": 0.0,
        "BETA2": 0.9,
        "MASK_HIDDEN": 100,  # ours: the mask predictors' hidden width (the original's 100)
    },
    "DFGAN": {  # DF-GAN (models/dfgan): widths TRAIN.NF, noise GAN.Z_DIM, sentence TEXT.EMBEDDING_DIM
        "VERSION": 2022,  # 2022 (CVPR code, NetG/NetD/NetC) | 2021 (code/model.py, NetD = SSA-GAN's)
        "GENERATOR_LR": 1e-4,
        "DISCRIMINATOR_LR": 4e-4,  # NetD and NetC share one Adam
        "BETA1": 0.0,
        "BETA2": 0.9,
        "MAGP_P": 6.0,
        "MAGP_WEIGHT": 2.0,
    },
    "INTCLS": {
        "TYPE": "gan",  # gan | wgan | wgan-gp | vanilla_gan | vanilla_wgan
        "CLS": True,
        "CLS_WEIGHT": 0.5,  # Reed: 0.5 on wrong and fake terms; 1.0 reproduces the port's plain sum
        "INT": True,
        "INT_WEIGHT": 1.0,
        "L1_COEF": 50.0,
        "L2_COEF": 100.0,
        "DITER": 5,
        "CLIP_VALUE": 0.01,
        "GP_LAMBDA": 10.0,
        "REAL_LABEL": 0.9,
        "NOISE_FIRST": False,
        "MINIBATCH_DISC": False,
        "TEXT_SOURCE": "encoder",  # encoder (our text encoder) | hd5 (precomputed embeddings)
        "HD5_PATH": "",
        "EMBED_DIM": 1024,
        "PROJECTED_DIM": 128,
        "NGF": 64,  # generator / discriminator widths (the port's 64; smaller for CPU configs)
        "NDF": 64,
        "SRCNN_WEIGHTS": "",
        "SRCNN_SCALE": 3,
    },
}

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(InputError):
    """A config file or override that does not fit the defaults tree."""


def default_config() -> EasyDict:
    return EasyDict(copy.deepcopy(_DEFAULTS))


def _all_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys += _all_keys(v, prefix + k + ".")
    return keys


def _unknown_key_error(source: str, dotted: str) -> ConfigError:
    close = difflib.get_close_matches(dotted, _all_keys(_DEFAULTS), n=1, cutoff=0.5)
    if not close:  # compare the last component only (e.g. a key put in the wrong section)
        leaf = dotted.split(".")[-1]
        close = [k for k in _all_keys(_DEFAULTS) if k.split(".")[-1].lower() == leaf.lower()][:1]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{source}: unknown config key '{dotted}'{hint}")


def _coerce(source: str, dotted: str, default, value):
    """Return `value` converted to the type of `default`, or raise ConfigError."""
    kind = type(default)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)
        ok = isinstance(value, float)
    elif kind is list:
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(
            f"{source}: config key '{dotted}' expects {kind.__name__} (default {default!r}), "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def _merge(source: str, src: dict, dst: dict, prefix: str = "") -> None:
    if not isinstance(src, dict):
        raise ConfigError(f"{source}: expected a mapping at '{prefix.rstrip('.') or '<top>'}', got {src!r}")
    for k, v in src.items():
        dotted = prefix + str(k)
        if k not in dst:
            raise _unknown_key_error(source, dotted)
        if isinstance(dst[k], dict):
            _merge(source, v, dst[k], dotted + ".")
        else:
            dst[k] = _coerce(source, dotted, dst[k], v)


def _set_dotted(source: str, cfg: dict, dotted: str, value) -> None:
    node = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise _unknown_key_error(source, dotted)
        if i == len(parts) - 1:
            if isinstance(node[part], dict):
                raise ConfigError(f"{source}: '{dotted}' is a section, not a value")
            node[part] = _coerce(source, dotted, node[part], value)
        else:
            node = node[part]


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> EasyDict:
    """Defaults, merged with the YAML file at `path`, then with `overrides` ({'TRAIN.BATCH_SIZE': 8, ...})."""
    cfg = copy.deepcopy(_DEFAULTS)
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if data is not None:
            if is_dfgan_original(data):  # DF-GAN 2022's own lower-case format (its code/cfg/bird.yml, coco.yml)
                data = map_dfgan_original(data, path)
            _merge(path, data, cfg)
        cfg["CONFIG_FILE"] = path
    for dotted, value in (overrides or {}).items():
        _set_dotted("override", cfg, dotted, value)
    return EasyDict(cfg)


RUN_CONFIG = "config.yml"  # the resolved config main.py writes into a run folder


def _plain(tree):
    return {k: _plain(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def save_config(cfg: dict, path: str) -> None:
    """Write the resolved config as YAML that `load_config` reads back to the same values (CONFIG_FILE, not a
    config key, becomes a comment)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tree = {k: v for k, v in _plain(cfg).items() if k != "CONFIG_FILE"}
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# resolved config of this run (from {cfg.get('CONFIG_FILE') or 'the defaults'} and overrides)\n")
        yaml.safe_dump(tree, f, sort_keys=False)


def parse_overrides(items: list[str] | None) -> dict:
    """Parse command-line `KEY=VALUE` pairs; values are YAML scalars (`8`, `0.5`, `True`, `[fid30k]`, `bf16`)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form KEY=VALUE (e.g. TRAIN.BATCH_SIZE=8)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = "" if value is None else value
    return out


# ---- what a resumed run may change -----------------------------------------------------------------------------
# Every key of the defaults tree is in exactly one of these groups (a test checks it); an entry ending in '.' is a
# whole section. HONOURED: a resumed run uses the new value (optimisation, loss weights, length of the run).
# EPOCH_BOUNDARY: honoured from a state written at the end of an epoch; refused mid-epoch, where the loader's position
# counts batches of the old order. REFUSED: the snapshot's models or data were built with the old value. IGNORED: no
# effect on the training trajectory (logging, workers, output and evaluation settings, initialisation-only files).
RESUME_HONOURED = (
    "TRAIN.MAX_EPOCH", "TRAIN.SNAPSHOT_INTERVAL", "TRAIN.MAX_STEPS", "TRAIN.DISCRIMINATOR_LR", "TRAIN.GENERATOR_LR",
    "TRAIN.ENCODER_LR", "TRAIN.RNN_GRAD_CLIP", "TRAIN.SMOOTH.", "TRAIN.COEFF.", "TRAIN.BETA1", "TRAIN.BETA2",
    "TRAIN.ENCODER_LR_DECAY", "TRAIN.ENCODER_LR_DECAY_EPOCHS", "TRAIN.LR_DECAY", "TRAIN.LR_DECAY_EPOCHS",
    "TRAIN.LR_COOLDOWN", "TRAIN.EMA_DECAY", "TRAIN.AMP", "TRAIN.CHANNELS_LAST", "TRAIN.SYNC_BN", "TRAIN.DIFFAUGMENT",
    "TRAIN.DIFFAUGMENT_TRANSLATION", "TRAIN.DIFFAUGMENT_CUTOUT", "TRAIN.PERCEPTUAL_WEIGHT", "TRAIN.PERCEPTUAL_EXTRA",
    "TRAIN.PIXEL_WEIGHT", "TRAIN.PERCEPTUAL_EXTRA_EPOCHS",
    "TRAIN.ADV_START_EPOCH", "TRAIN.ADV_INTERVAL", "TRAIN.PARALLEL_STEPS",
    "TRAIN.PAIRED_CANDIDATES", "TRAIN.PAIRED_MEMORY", "TRAIN.PAIRED_MAP_CANDIDATES", "TRAIN.PAIRED_ANCHOR",
    "TRAIN.PAIRED_ANCHOR_EPOCHS",
    "TRAIN.ANCHOR_POOL", "TRAIN.ANCHOR_STAGES", "TRAIN.ANCHOR_COLOURS",
    "DAMSM.SWAP_NEGATIVES", "DAMSM.IMAGE_NOISE",
    "GAN.ADV_LOSS",
    "DATA.RANDOM_CROP", "DATA.FLIP", "DATA.FLIP_WORD_PAIRS", "DATA.LOAD_SCALE",
    "SSA.", "INTCLS.CLS", "INTCLS.CLS_WEIGHT", "INTCLS.INT", "INTCLS.INT_WEIGHT", "INTCLS.L1_COEF", "INTCLS.L2_COEF",
    "INTCLS.DITER", "INTCLS.CLIP_VALUE", "INTCLS.GP_LAMBDA", "INTCLS.REAL_LABEL",
    "DFGAN.",
)
RESUME_EPOCH_BOUNDARY = ("TRAIN.BATCH_SIZE", "SEED")
RESUME_REFUSED = (
    "DATASET_NAME", "MODEL", "RNN_TYPE", "USE_SN", "loss", "DATA.LAYOUT", "TREE.", "GAN.", "TEXT.", "TRAIN.NF",
    "TRAIN.NET_E", "TRAIN.EMA", "TRAIN.FINETUNE_TEXT_ENCODER", "DAMSM.IMAGE_ENCODER", "DAMSM.IMAGE_SIZE",
    "INTCLS.TYPE", "INTCLS.NOISE_FIRST", "INTCLS.MINIBATCH_DISC", "INTCLS.TEXT_SOURCE", "INTCLS.HD5_PATH",
    "INTCLS.EMBED_DIM", "INTCLS.PROJECTED_DIM", "INTCLS.NGF", "INTCLS.NDF",
    "DFGAN.VERSION", "SSA.MASK_HIDDEN",
)
RESUME_IGNORED = (
    "CONFIG_NAME", "CONFIG_FILE", "DATA_DIR", "GPU_ID", "CUDA", "WORKERS", "B_VALIDATION", "RESTORE", "OUTPUT_DIR",
    "DATA.SKIP_CORRUPT", "DATA.CACHE_IMAGES", "DATA.STRICT_TEXT", "TRAIN.FLAG", "TRAIN.NET_G", "TRAIN.B_NET_D", "TRAIN.WARMUP_EPOCHS",
    "TRAIN.GSAVE_INTERVAL", "TRAIN.DSAVE_INTERVAL", "TRAIN.LOG_INTERVAL", "TRAIN.IMAGE_INTERVAL",
    "TRAIN.CHECKPOINT_MINUTES", "TRAIN.CHECKPOINT_STEPS", "TRAIN.EMA_BN_BATCHES",
    "TRAIN.REAL_FEATURE_CACHE_MB", "DAMSM.INCEPTION_WEIGHTS",
    "DAMSM.VALID_BATCHES",
    "DAMSM.VALID_INTERVAL", "DAMSM.RPREC_SAMPLES", "EVAL.", "INTCLS.SRCNN_WEIGHTS", "INTCLS.SRCNN_SCALE",
)
_RESUME_GROUPS = {"honoured": RESUME_HONOURED, "epoch_boundary": RESUME_EPOCH_BOUNDARY, "refused": RESUME_REFUSED,
                  "ignored": RESUME_IGNORED}


def resume_rule(dotted: str) -> str:
    """'honoured', 'epoch_boundary', 'refused' or 'ignored' for a dotted config key (the longest entry wins)."""
    best, rule = -1, None
    for name, entries in _RESUME_GROUPS.items():
        for e in entries:
            if (dotted == e or (e.endswith(".") and dotted.startswith(e))) and len(e) > best:
                best, rule = len(e), name
    if rule is None:
        raise KeyError(f"config key '{dotted}' has no resume rule (add it to a RESUME_* group in miscc/config.py)")
    return rule


def plain_config(cfg) -> dict:
    """The config as plain nested dicts of str/int/float/bool/list (what `torch.load(weights_only=True)` reads)."""
    return {k: plain_config(v) if isinstance(v, dict) else (list(v) if isinstance(v, (list, tuple)) else v)
            for k, v in cfg.items()}


def flat_config(tree: dict, prefix: str = "") -> dict:
    """{dotted key: leaf value} of a nested config."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat_config(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def resume_changes(old: dict, new: dict) -> dict:
    """The leaf keys whose value differs between a recorded config and the current one, grouped by `resume_rule`:
    {rule: [(key, old, new), ...]}. Keys one side lacks (another version of the project) are not compared."""
    old_flat, new_flat = flat_config(old), flat_config(new)
    out: dict = {name: [] for name in _RESUME_GROUPS}
    for key in sorted(old_flat.keys() & new_flat.keys()):
        if old_flat[key] != new_flat[key]:
            out[resume_rule(key)].append((key, old_flat[key], new_flat[key]))
    return out


def add_config_arguments(parser) -> None:
    """The flags every entry point shares: --cfg, --set, --gpu, --data_dir, --manualSeed (AttnGAN names)."""
    parser.add_argument("--cfg", dest="cfg_file", default=None, help="YAML config file")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set TRAIN.BATCH_SIZE=8 GAN.GF_DIM=16")
    parser.add_argument("--gpu", dest="gpu_id", type=int, default=None, help="GPU index; -1 runs on the CPU")
    parser.add_argument("--data_dir", default=None, help="overrides DATA_DIR")
    parser.add_argument("--manualSeed", type=int, default=None, help="overrides SEED")
    add_debug_argument(parser)


def parse_training_args(description: str, argv=None):
    """(args, cfg) of a training entry point (main.py, pretrain_DAMSM.py): the shared flags plus --output_dir and
    --resume."""
    parser = argparse.ArgumentParser(description=description)
    add_config_arguments(parser)
    parser.add_argument("--output_dir", default=None, help="run folder (default OUTPUT_DIR/<DATASET>_<CONFIG>)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="STATE",
                        help="continue from a training state (default: the run folder's Model/training_state.pth)")
    args = parser.parse_args(argv)
    return args, config_from_args(args)


def config_from_args(args) -> EasyDict:
    overrides = parse_overrides(args.overrides)
    if args.gpu_id is not None:
        overrides["GPU_ID"] = args.gpu_id
    if args.data_dir is not None:
        overrides["DATA_DIR"] = args.data_dir
    if args.manualSeed is not None:
        overrides["SEED"] = args.manualSeed
    return load_config(args.cfg_file, overrides)


def resolve_path(path: str) -> str:
    """Resolve a path from a config file.

    Absolute paths and paths that exist relative to the working directory are returned as they are. The original
    configs name paths relative to AttnGAN's `code/` folder (`../data/birds`, `../DAMSMencoders/...`); such a path
    that does not exist here is looked up under the project root with the leading `../` removed, so the shipped
    original files work unchanged from the project root.
    """
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    stripped = path
    while stripped.startswith("../"):
        stripped = stripped[3:]
    candidate = os.path.join(PROJECT_ROOT, stripped)
    return candidate if os.path.exists(candidate) else path


def data_layout(cfg) -> str:
    """The dataset layout: DATA.LAYOUT, or the layout DATASET_NAME implies (birds → cub, coco → coco)."""
    if cfg.DATA.LAYOUT:
        if cfg.DATA.LAYOUT not in ("cub", "coco", "custom"):
            raise ConfigError(f"DATA.LAYOUT must be cub, coco or custom, got '{cfg.DATA.LAYOUT}'")
        return cfg.DATA.LAYOUT
    return {"birds": "cub", "coco": "coco"}.get(cfg.DATASET_NAME, "custom")


def image_encoder_path(text_encoder_path: str) -> str:
    """AttnGAN derives the image encoder from NET_E by replacing 'text_encoder' with 'image_encoder'."""
    return text_encoder_path.replace("text_encoder", "image_encoder")
