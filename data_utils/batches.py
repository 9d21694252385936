"""Collated batches sorted by caption length (AttnGAN `prepare_data`), and the seeded DataLoader."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from miscc.errors import InputError


@dataclass
class Batch:
    """A collated batch sorted by caption length, descending (AttnGAN `prepare_data`, needed by
    `pack_padded_sequence`). `order[k]` is the position in the collated batch of sorted row k."""
    imgs: list  # [B, 3, s, s] per branch, on device
    captions: torch.Tensor  # [B, T_max] on device, T_max = longest caption of the batch
    cap_lens: torch.Tensor  # [B] long, on device
    mask: torch.Tensor  # [B, T_max] bool, True at padding (captions == 0)
    class_ids: np.ndarray  # [B] int64
    keys: list
    indices: np.ndarray  # [B] image indices, int64
    caption_indices: np.ndarray  # [B] int64
    order: torch.Tensor  # [B] long, CPU

    def __len__(self) -> int:
        return len(self.keys)


def prepare_data(batch: dict, device) -> Batch:
    """Sort a collated batch by caption length (descending, stable), cut captions to the longest, move to device."""
    cap_lens = torch.as_tensor(batch["cap_len"], dtype=torch.long)
    sorted_lens, order = torch.sort(cap_lens, descending=True, stable=True)
    t_max = max(int(sorted_lens[0]), 1) if len(sorted_lens) else 1
    captions = torch.as_tensor(batch["caption"])[order, :t_max].to(device)
    return Batch(
        imgs=[img[order].to(device) for img in batch["imgs"]],
        captions=captions,
        cap_lens=sorted_lens.to(device),
        mask=captions == 0,
        class_ids=np.asarray(batch["class_id"], dtype=np.int64)[order.numpy()],
        keys=[batch["key"][k] for k in order.tolist()],
        indices=np.asarray(batch["index"], dtype=np.int64)[order.numpy()],
        caption_indices=np.asarray(batch["caption_index"], dtype=np.int64)[order.numpy()],
        order=order,
    )


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a DataLoader worker from its torch seed (which the main process's seed sets)."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def build_dataloader(dataset, batch_size, shuffle, drop_last, workers, sampler=None, generator=None) -> DataLoader:
    """A DataLoader with default collation (the dict items of `TextDataset`), seeded workers, and persistent
    workers so that each keeps its image cache between epochs. With a `sampler` (e.g. DistributedSampler), the
    sampler does the shuffling; a `generator` (torch.Generator) fixes the shuffling and the workers' seeds."""
    if drop_last and len(dataset) < batch_size and sampler is None:
        raise InputError(f"drop_last with batch_size {batch_size} > {len(dataset)} items gives no batch at all")
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=bool(shuffle) and sampler is None, sampler=sampler,
        drop_last=drop_last, num_workers=workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0, worker_init_fn=_seed_worker, generator=generator,
    )
