"""Train or sample a text-to-image GAN: `python main.py --cfg cfg/bird_attn2.yml`.

- TRAIN.FLAG True (and B_VALIDATION False): train the generator named by MODEL (`models.registry`) against the
  frozen DAMSM encoders of TRAIN.NET_E; the resolved config (`config.yml`), snapshots, logs and image grids go to
  the run folder; afterwards the example sentences are drawn and the EVAL.PROTOCOLS metrics (if any) are computed.
- B_VALIDATION True: sample the test set with the generator in TRAIN.NET_G (the 30,000 protocol, EVAL.SAMPLE_MODE)
  into `<NET_G without .pth>/valid/`, then run EVAL.PROTOCOLS on those images.
- TRAIN.FLAG False, B_VALIDATION False: AttnGAN's `gen_example` — images and attention maps for every entry of
  `<DATA_DIR>/example_filenames.txt`, into `<NET_G without .pth>/<entry>/`.
"""
from __future__ import annotations

import os
import sys

import torch

from datasets import build_dataset
from miscc.config import RUN_CONFIG, parse_training_args, resolve_path, save_config
from miscc.errors import InputError, run_cli
from models.registry import get_family
from trainers.common import load_damsm
from trainers.runtime import shutdown_runtime, start_runtime
from trainers.sampling import gen_example, sample_test_set


def default_output_dir(cfg) -> str:
    return os.path.join(cfg.OUTPUT_DIR, f"{cfg.DATASET_NAME}_{cfg.CONFIG_NAME or cfg.MODEL}")


def run_sampling(cfg, spec, rt, net_g_path: str) -> dict:
    """B_VALIDATION: the evaluation images of the test split under `<NET_G stem>/valid/`, then the metrics."""
    test_set = build_dataset(cfg, "test", every_caption=cfg.EVAL.SAMPLE_MODE == "every", augment=False)
    n_samples = cfg.EVAL.N_SAMPLES
    if cfg.EVAL.PROTOCOLS:  # enough images for the largest protocol (fid30k: 30,000)
        from eval.protocols import parse_protocols
        n_samples = max([n_samples] + [p.n for p in parse_protocols(cfg.EVAL.PROTOCOLS)])
    netG, path = spec.open_generator(cfg, net_g_path, rt.device)
    text_encoder, _ = load_damsm(cfg, test_set.n_words, rt.device, with_image_encoder=False)
    out_dir = os.path.join(os.path.splitext(path)[0], "valid")
    result = sample_test_set(
        lambda *a: spec.generate(netG, *a), text_encoder, test_set, out_dir, z_dim=cfg.GAN.Z_DIM,
        device=rt.device, n_samples=n_samples, mode=cfg.EVAL.SAMPLE_MODE, batch_size=cfg.EVAL.BATCH_SIZE,
        seed=cfg.EVAL.SEED, truncation=cfg.EVAL.TRUNC_RATE if cfg.EVAL.TRUNCATION else None,
        save_extras=spec.save_extras, workers=cfg.WORKERS)
    print(f"wrote {result['n']} images to {result['folder']} (captions: {result['captions']})", flush=True)
    if cfg.EVAL.PROTOCOLS:
        evaluate_samples(cfg, rt, result, path, test_set)
    return result


def evaluate_samples(cfg, rt, result: dict, net_g_path: str, test_set) -> list[dict]:
    """EVAL.PROTOCOLS on the sampled images: results appended to `valid/metrics.jsonl` with their provenance, and
    `valid/report.md` next to a captioned grid of samples (`valid/samples.png`)."""
    from eval.images import to_float
    from eval.protocols import build_eval_context, run_protocols
    from eval.report import write_report
    from models.damsm.trainer import sentence_codes
    from trainers.sampling import encode_sentences, records_source

    text_encoder, image_encoder = load_damsm(cfg, test_set.n_words, rt.device)

    def encode_texts(captions):
        ids, lens, _ = encode_sentences(captions, test_set, source="evaluation captions")
        return sentence_codes(text_encoder, ids, lens, rt.device)

    def encode_images(images):  # uint8 or [-1, 1] images -> the DAMSM global image code
        return image_encoder(to_float(images).to(rt.device))[1].float().cpu()

    out_dir = os.path.dirname(result["folder"])
    ctx = build_eval_context(
        cfg, real=resolve_path(cfg.EVAL.FID_STATS) or test_set.image_paths, real_split="test",
        real_resize=test_set.imsize,
        cache_dir=os.path.join(cfg.OUTPUT_DIR, "fid_cache"), image_encoder=encode_images, text_encoder=encode_texts,
        encoders_name=f"DAMSM {resolve_path(cfg.TRAIN.NET_E or cfg.TEXT.DAMSM_NAME)}", checkpoint=net_g_path,
        config=cfg.get("CONFIG_FILE"), jsonl=os.path.join(out_dir, "metrics.jsonl"),
        grid_png=os.path.join(out_dir, "samples.png"), device=str(rt.device))
    with torch.no_grad():
        results = run_protocols(cfg.EVAL.PROTOCOLS, records_source(result["captions"]), ctx)
    report = write_report(ctx.jsonl, os.path.join(out_dir, "report.md"), ctx.grid_png)
    for r in results:
        std = f" ± {r['std']:.4f}" if r.get("std") is not None else ""
        print(f"{r.get('protocol', r.get('metric'))}: {r['value']:.4f}{std}", flush=True)
    print(f"report: {report}", flush=True)
    return results


def run_examples(cfg, spec, rt, net_g_path: str) -> list[str]:
    """AttnGAN `gen_example`: every example_filenames.txt entry → `<NET_G stem>/<entry basename>/`."""
    dataset = build_dataset(cfg, "test")
    netG, path = spec.open_generator(cfg, net_g_path, rt.device)
    text_encoder, _ = load_damsm(cfg, dataset.n_words, rt.device, with_image_encoder=False)
    out_root = os.path.splitext(path)[0]
    written = gen_example(lambda *a: spec.generate_stages(netG, *a), text_encoder, dataset, out_root,
                          z_dim=cfg.GAN.Z_DIM, device=rt.device, seed=cfg.SEED)
    if spec.example_extras is not None:
        with torch.no_grad():
            spec.example_extras(netG, text_encoder, dataset, out_root, z_dim=cfg.GAN.Z_DIM, device=rt.device,
                                seed=cfg.SEED)
    print(f"wrote {len(written)} example images under {os.path.splitext(path)[0]}", flush=True)
    return written


def run_own_data_sampling(cfg, spec, rt, net_g_path: str) -> None:
    """A family without a text encoder (precomputed text embeddings in its own data file) samples that file's test
    split into `<NET_G stem>/valid/`."""
    netG, path = spec.open_generator(cfg, net_g_path, rt.device)
    out_dir = os.path.join(os.path.splitext(path)[0], "valid")
    result = spec.sample_own_data(cfg, netG, out_dir, rt.device)
    print(f"wrote {spec.text_source(cfg)} samples to {out_dir}: {result}", flush=True)


def main(argv=None) -> int:
    args, cfg = parse_training_args(__doc__.splitlines()[0], argv)
    spec = get_family(cfg.MODEL)
    rt = start_runtime(cfg)
    if cfg.TRAIN.FLAG and not cfg.B_VALIDATION:
        output_dir = args.output_dir or default_output_dir(cfg)
        if rt.is_main:  # what `tools.app --run` reads back
            save_config(cfg, os.path.join(output_dir, RUN_CONFIG))
        train_set = build_dataset(cfg, "train") if spec.uses_text_dataset(cfg) else None
        trainer = spec.trainer_class()(cfg, rt, output_dir, train_set)
        if args.resume is not None:
            trainer.resume(args.resume or None)
        if rt.is_main:
            print(f"{cfg.MODEL}: {len(trainer.train_set)} training items, device {rt.device}, output {output_dir}",
                  flush=True)
        trainer.fit()
        if rt.is_main:
            net_g = spec.latest_generator(trainer.model_dir)
            print(f"generator: {net_g}", flush=True)
            spec.use_trained_text_encoder(cfg, net_g)
            if not spec.uses_text_dataset(cfg):
                run_own_data_sampling(cfg, spec, rt, net_g)
            else:
                run_examples(cfg, spec, rt, net_g)
                if cfg.EVAL.PROTOCOLS:
                    run_sampling(cfg, spec, rt, net_g)
    elif not cfg.TRAIN.NET_G:
        raise InputError("sampling needs TRAIN.NET_G: the generator file (e.g. netG_epoch_600.pth)")
    elif not spec.uses_text_dataset(cfg):
        run_own_data_sampling(cfg, spec, rt, cfg.TRAIN.NET_G)
    elif cfg.B_VALIDATION:
        run_sampling(cfg, spec, rt, cfg.TRAIN.NET_G)
    else:
        run_examples(cfg, spec, rt, cfg.TRAIN.NET_G)
    shutdown_runtime(rt)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
