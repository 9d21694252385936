"""What a generator family declares (`ModelFamily`): the one object `main.py`, `tools.*` and `eval` ask about a model.

A family package `models/<name>/` holds its networks, losses, trainer and a `family.py` with `FAMILY =
ModelFamily(...)`; `models.registry` maps the `MODEL` config value to it. Nothing outside `models/` names a family.

The calls a family provides for sampling: `generate(net, noise, sent_emb, words_emb, mask) -> (final images,
extras)` for evaluation sets and `generate_stages(net, ...) -> (list of stage images, list of attention maps)` for
example sentences, and for a family whose generator predicts masks (SSA-GAN) `generate_masks(net, ...) -> (list of
stage images, list of masks)`.
"""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from miscc.config import resolve_path
from miscc.errors import InputError, MissingFileError
from trainers.common import epoch_from_name

# Where a family's text conditioning comes from (`ModelFamily.text_source(cfg)`).
TEXT_SOURCES = (
    "damsm",  # the frozen DAMSM text encoder of TRAIN.NET_E (or TEXT.DAMSM_NAME)
    "finetuned",  # the family's own fine-tuned copy, `text_encoder%d.pth` beside each generator snapshot
    "hd5",  # precomputed embeddings of Reed's hd5 file: no text encoder, typed sentences cannot be drawn
)


@dataclass(frozen=True)
class ModelFamily:
    name: str  # the MODEL config value
    title: str  # for people: "SSA-GAN"
    trainer: str  # "module:Class" of its BaseTrainer subclass, imported when training starts
    config_section: str  # its own section of the defaults in miscc.config ("GAN", "SSA", "INTCLS", ...)
    build_generator: Callable  # cfg -> nn.Module (the generator main.py samples with)
    load_generator: Callable  # (net, path) -> net, strict
    generate: Callable
    generate_stages: Callable
    snapshot: str = "netG_epoch_%d.pth"  # the generator snapshot in Model/, % epoch
    save_extras: Callable | None = None  # (extras, row, path_stem) -> None, e.g. SSA-GAN masks
    # (net, text_encoder, dataset, out_root, *, z_dim, device, seed) -> None: more pictures for example sentences
    example_extras: Callable | None = None
    generate_masks: Callable | None = None  # (net, noise, sent_emb, words_emb, mask) -> (stages, per-stage masks)
    text_source: Callable = lambda cfg: "damsm"  # cfg -> one of TEXT_SOURCES
    # "hd5" families: (cfg, net, out_dir, device) -> dict, samples the test split from its own data file
    sample_own_data: Callable | None = None
    # tools.demo: TEXT.ENCODER ("rnn", "bert") -> the `shapes` config it trains
    demo_configs: Mapping[str, str] = field(default_factory=dict)

    def trainer_class(self):
        module, name = self.trainer.split(":")
        return getattr(importlib.import_module(module), name)

    def uses_text_dataset(self, cfg) -> bool:
        """False: the family reads its own data (Reed's hd5) and has no text encoder."""
        source = self.text_source(cfg)
        if source not in TEXT_SOURCES:
            raise InputError(f"{self.name}: text source must be one of {TEXT_SOURCES}, got {source!r}")
        return source != "hd5"

    def snapshot_path(self, model_dir: str, epoch: int) -> str:
        return os.path.join(model_dir, self.snapshot % epoch)

    def latest_generator(self, model_dir: str) -> str:
        """The newest generator snapshot in `model_dir` (by epoch)."""
        pattern = re.sub(r"%0?\d*d", r"(\\d+)", re.escape(self.snapshot).replace(r"\%", "%"))
        found = {}
        for name in os.listdir(model_dir):
            m = re.fullmatch(pattern, name)
            if m:
                found[int(m.group(1))] = name
        if not found:
            raise MissingFileError(f"no {self.snapshot.replace('%03d', '<NNN>').replace('%d', '<N>')} in "
                                   f"{model_dir} (the {self.title} generator snapshots)")
        return os.path.join(model_dir, found[max(found)])

    def use_trained_text_encoder(self, cfg, net_g_path: str) -> None:
        """Point TRAIN.NET_E at the text encoder saved with `net_g_path` when the family fine-tunes its own."""
        if self.text_source(cfg) == "finetuned":
            epoch = epoch_from_name(net_g_path)
            cfg.TRAIN.NET_E = os.path.join(os.path.dirname(net_g_path), f"text_encoder{epoch}.pth")

    def open_generator(self, cfg, path: str, device):
        """(generator in eval mode on `device`, resolved path) of the snapshot `path`."""
        path = resolve_path(path)
        net = self.build_generator(cfg)
        self.load_generator(net, path)
        return net.to(device).eval(), path
