"""Shared pieces of the benchmarks: synthetic batches, throughput timing, a printed table."""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np
import torch

from datasets import Batch


class _AnyWord(dict):
    """A synthetic vocabulary that holds every word: ids 1, 2, ... in the order asked for, so config word lists
    (DAMSM.SWAP_NEGATIVES) resolve to distinct ids that the random synthetic captions contain now and then."""

    def __init__(self, n_words: int):
        super().__init__()
        self.n_words = n_words

    def __contains__(self, word) -> bool:
        return True

    def __missing__(self, word):
        self[word] = 1 + len(self) % max(1, self.n_words - 1)
        return self[word]


class SyntheticText:
    """What a trainer reads from a dataset, without files: vocabulary size and the word maps."""

    def __init__(self, n_words: int):
        self.n_words = n_words
        self.ixtoword = {i: f"w{i}" for i in range(n_words)}
        self.wordtoix = _AnyWord(n_words)
        self.bert_tokenizer = None

    def __len__(self):
        return 1

    def __getitem__(self, i):
        raise IndexError("synthetic dataset: benchmarks feed batches directly")


def synthetic_batch(batch_size: int, imsizes: list[int], n_words: int, words: int, device,
                    n_classes: int = 50) -> Batch:
    g = torch.Generator().manual_seed(0)
    lens = torch.sort(torch.randint(5, words + 1, (batch_size,), generator=g), descending=True).values
    caps = torch.randint(1, n_words, (batch_size, int(lens[0])), generator=g)
    for i, n in enumerate(lens.tolist()):
        caps[i, n:] = 0
    caps = caps.to(device)
    return Batch(imgs=[torch.rand(batch_size, 3, s, s, generator=g).mul(2).sub(1).to(device) for s in imsizes],
                 captions=caps, cap_lens=lens.to(device), mask=caps == 0,
                 class_ids=np.random.default_rng(0).integers(0, n_classes, batch_size),
                 keys=[f"k{i}" for i in range(batch_size)], indices=np.arange(batch_size),
                 caption_indices=np.arange(batch_size), order=torch.arange(batch_size))


def save_random_encoders(text_encoder, image_encoder) -> str:
    """Save encoders as text_encoder0.pth / image_encoder0.pth in a temporary folder; returns NET_E."""
    folder = tempfile.mkdtemp(prefix="bench_damsm_")
    path = os.path.join(folder, "text_encoder0.pth")
    torch.save(text_encoder.state_dict(), path)
    torch.save(image_encoder.state_dict(), os.path.join(folder, "image_encoder0.pth"))
    return path


def use_random_encoders(cfg, n_words: int) -> None:
    """Point `cfg` (a generator config) at random DAMSM encoders of its sizes (TRAIN.NET_E, and TRAIN.PERCEPTUAL_EXTRA
    where set) and at no generator: timing needs their compute, not their weights."""
    from miscc.config import image_encoder_path
    from models.damsm import build_image_encoder, build_text_encoder

    cfg.TRAIN.NET_E = save_random_encoders(build_text_encoder(cfg, n_words), build_image_encoder(cfg))
    if cfg.TRAIN.PERCEPTUAL_EXTRA:
        cfg.TRAIN.PERCEPTUAL_EXTRA = image_encoder_path(cfg.TRAIN.NET_E)
    cfg.TRAIN.NET_G = ""


def time_steps(step, batch_size: int, device, warmup: int = 1, steps: int = 3) -> float:
    """Images per second of `step()` (one optimiser iteration on `batch_size` images)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch_size * steps / (time.perf_counter() - start)


def time_train_steps(trainer, batch, batch_size: int, device, steps: int = 3) -> float:
    """Images per second of `trainer.train_step(batch)` with the step counter advanced as the training loop advances
    it, over a whole number of the longest of TRAIN.ADV_INTERVAL and SSA.MAGP_INTERVAL (`steps` rounded up): with
    those, a step's work depends on its number. With TRAIN.PARALLEL_STEPS k > 1 the steps run in groups of k, as
    the loop runs them (`trainers.parallel`)."""
    n = max(1, trainer.cfg.TRAIN.ADV_INTERVAL, trainer.cfg.SSA.MAGP_INTERVAL)
    k = getattr(trainer, "parallel_steps", 1)
    unit = math.lcm(n, k)  # steps that cover whole intervals and whole groups
    calls = -(-steps // unit) * unit // k
    group = None
    if k > 1:
        from trainers.parallel import ParallelSteps
        group = ParallelSteps(trainer, k)

    def step():
        if group is None:
            trainer.train_step(batch)
        else:
            group.run([batch] * k)
        trainer.step += k

    try:
        return time_steps(step, batch_size * k, device, warmup=max(1, min(n, 2) // k), steps=calls)
    finally:
        if group is not None:
            group.close()


def devices() -> list[torch.device]:
    out = [torch.device("cpu")]
    if torch.cuda.is_available():
        out.append(torch.device("cuda", 0))
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |")


def run_cases(argv, description: str, cases: dict, bench_case, title: str, default_steps: int = 3) -> None:
    """Command line shared by the training benchmarks: every case × device × (fp32, bf16) → a table of images/s.
    `bench_case(name, device, amp, steps) -> (batch size, images/s)`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cases", default=",".join(cases), help="comma-separated case names")
    parser.add_argument("--steps", type=int, default=default_steps)
    args = parser.parse_args(argv)
    rows = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        for device in devices():
            for amp in ("none", "bf16"):
                bs, ips = bench_case(name, device, amp, args.steps)
                rows.append([name, device_name(device), amp, bs, f"{ips:.2f}"])
                print(rows[-1], flush=True)
    print_table(title, ["case", "device", "precision", "batch", "images/s"], rows)


def _timing_trainer(cfg, n_words: int, batch_size: int, device, epoch: int):
    """A trainer of `cfg` (MODEL, or the DAMSM trainer when cfg.CONFIG_NAME is 'DAMSM') with random encoders, at
    `epoch`, and a synthetic batch for it."""
    from trainers.runtime import Runtime

    rt = Runtime(device=device, amp=cfg.TRAIN.AMP)
    out = tempfile.mkdtemp(prefix="step_seconds_")
    if cfg.CONFIG_NAME == "DAMSM":
        from models.damsm.trainer import DAMSMTrainer
        trainer = DAMSMTrainer(cfg, rt, out, SyntheticText(n_words), None)
        sizes = [cfg.TREE.BASE_SIZE * 2 ** (cfg.TREE.BRANCH_NUM - 1)]
    else:
        from models.registry import get_family
        use_random_encoders(cfg, n_words)
        trainer = get_family(cfg.MODEL).trainer_class()(cfg, rt, out, SyntheticText(n_words))
        sizes = [cfg.TREE.BASE_SIZE * 2 ** i for i in range(cfg.TREE.BRANCH_NUM)]
    trainer.epoch = epoch
    return trainer, synthetic_batch(batch_size, sizes, n_words, cfg.TEXT.WORDS_NUM, device)


def step_seconds(cfg, n_words: int, batch_size: int, device=None, steps: int = 3, epoch: int = 0,
                 cold: bool = False) -> float:
    """Seconds per training iteration of the trainer `cfg` describes on a synthetic batch with random encoders, in
    `epoch` (the AttnGAN and SSA-GAN trainers' steps before TRAIN.ADV_START_EPOCH train G alone; those before
    TRAIN.PERCEPTUAL_EXTRA_EPOCHS run a second image encoder), the mean of `steps` (`time_train_steps`): what
    `tools.demo` prints as its plan. `cold`: without the real-feature cache (TRAIN.REAL_FEATURE_CACHE_MB), as a
    step whose images are all new to it (the first epochs)."""
    device = device or torch.device("cpu")
    trainer, batch = _timing_trainer(cfg, n_words, batch_size, device, epoch)
    if cold and hasattr(trainer, "real_cache"):
        trainer.real_cache = None
    return batch_size / time_train_steps(trainer, batch, batch_size, device, steps)


def forward_seconds(cfg, n_words: int, batch_size: int, device=None, repeats: int = 3) -> float:
    """Seconds of one sampling forward of the trainer's generator (`sampling_forward`, no gradients) on a batch:
    the unit of what a snapshot adds to training (TRAIN.EMA_BN_BATCHES of them for the EMA's BatchNorm statistics)
    and of an image grid."""
    device = device or torch.device("cpu")
    trainer, batch = _timing_trainer(cfg, n_words, batch_size, device, 0)
    net = trainer.sampling_generator()
    with torch.no_grad():
        trainer.sampling_forward(net, batch)
        start = time.perf_counter()
        for _ in range(repeats):
            trainer.sampling_forward(net, batch)
    return (time.perf_counter() - start) / repeats


def damsm_validation_seconds(cfg, valid_set, device=None, samples: int = 50) -> float:
    """Seconds of one DAMSM validation (`DAMSMTrainer.validate`: DAMSM.VALID_BATCHES loss batches and R-precision
    over DAMSM.RPREC_SAMPLES test images) with random encoders, timed on `samples` R-precision images and one
    loss batch and scaled up: what `tools.demo` adds to the DAMSM step of its plan."""
    import copy

    from models.damsm.trainer import DAMSMTrainer
    from trainers.runtime import Runtime

    device = device or torch.device("cpu")
    samples = min(samples, len(valid_set), cfg.DAMSM.RPREC_SAMPLES)
    small = copy.deepcopy(cfg)
    small.DAMSM.VALID_BATCHES, small.DAMSM.RPREC_SAMPLES = 1, samples
    trainer = DAMSMTrainer(small, Runtime(device=device, amp=cfg.TRAIN.AMP),
                           tempfile.mkdtemp(prefix="validation_seconds_"), valid_set, valid_set)
    start = time.perf_counter()
    trainer.validate()
    seconds = time.perf_counter() - start
    return seconds * max(1.0, cfg.DAMSM.RPREC_SAMPLES / samples)
