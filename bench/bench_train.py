"""Generator training throughput (images/s): `python -m bench.bench_train [--cases "dfgan shapes 64px"] [--steps 3]`.

Full-size models with random weights on synthetic batches (the data pipeline is excluded): AttnGAN bird (256 px,
3 stages, Inception DAMSM), SSA-GAN and DF-GAN bird (256 px), and the CPU-sized shapes configs; fp32 and bf16; on
the CPU and on CUDA when present.
"""
from __future__ import annotations


from bench.common import SyntheticText, run_cases, synthetic_batch, time_train_steps, use_random_encoders
from miscc.config import load_config
from models.registry import get_family
from trainers.runtime import Runtime

CASES = {
    # name: (config, overrides, batch size on CPU, batch size on CUDA, vocabulary)
    "attngan bird 256px": ("cfg/bird_attn2.yml", {}, 4, 20, 5450),
    "attngan shapes 32px": ("cfg/shapes_attn.yml", {}, 20, 20, 47),  # the demo's model
    # without the real images' feature cache (the synthetic batch repeats, so above every image is a hit, as from
    # the second epoch of a run)
    "attngan shapes 32px, no feature cache": ("cfg/shapes_attn.yml", {"TRAIN.REAL_FEATURE_CACHE_MB": 0}, 20, 20, 47),
    "ssagan bird 256px": ("cfg/bird_ssa.yml", {}, 2, 24, 5450),
    "ssagan shapes 32px": ("cfg/shapes_ssa.yml", {}, 24, 24, 47),
    "ssagan shapes 32px, MA-GP every 4th step": ("cfg/shapes_ssa.yml", {"SSA.MAGP_INTERVAL": 4}, 24, 24, 47),
    "dfgan bird 256px": ("cfg/bird_dfgan.yml", {}, 2, 32, 5450),
    "dfgan shapes 64px": ("cfg/shapes_dfgan.yml", {}, 32, 32, 47),
}


def bench_case(name, device, amp, steps):
    path, overrides, cpu_bs, gpu_bs, n_words = CASES[name]
    cfg = load_config(path, {**overrides, "TRAIN.MAX_STEPS": 0, "WORKERS": 0})
    batch_size = gpu_bs if device.type == "cuda" else cpu_bs
    use_random_encoders(cfg, n_words)
    spec = get_family(cfg.MODEL)
    rt = Runtime(device=device, amp=amp)
    trainer = spec.trainer_class()(cfg, rt, "/tmp/bench_train_run", SyntheticText(n_words))
    imsizes = [cfg.TREE.BASE_SIZE * 2 ** i for i in range(cfg.TREE.BRANCH_NUM)]
    batch = synthetic_batch(batch_size, imsizes, n_words, cfg.TEXT.WORDS_NUM, device)
    return batch_size, time_train_steps(trainer, batch, batch_size, device, steps)


def main(argv=None):
    run_cases(argv, __doc__.splitlines()[0], CASES, bench_case,
              "Generator training throughput (one D+G iteration; synthetic batches)", default_steps=3)


if __name__ == "__main__":
    main()
