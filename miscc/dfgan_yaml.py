"""DF-GAN 2022's own YAML files (tobran/DF-GAN `code/cfg/bird.yml`, `coco.yml`), read unchanged.

`miscc.config.load_config` calls `map_dfgan_original` on any YAML file that has one of DF-GAN's lower-case top-level
keys (`imsize`, `z_dim`, `cond_dim`, `nf`, ...; see `is_dfgan_original`) and merges the result strictly, like any
config file; `--set` overrides apply after it. So `python main.py --cfg cfg/dfgan_original/bird.yml` trains DF-GAN
2022 with the original's hyper-parameters, and `--set B_VALIDATION=True TRAIN.NET_G=state_epoch_1220.pth` samples a
released model. What each key becomes:

| DF-GAN key | here |
|---|---|
| `CONFIG_NAME`, `dataset_name`, `data_dir` | CONFIG_NAME, DATASET_NAME, DATA_DIR |
| `gpu_id`, `manual_seed`, `cuda` | GPU_ID, SEED, CUDA |
| `imsize` | TREE.BASE_SIZE (TREE.BRANCH_NUM 1) |
| `z_dim`, `nf`, `batch_size` | GAN.Z_DIM, TRAIN.NF, TRAIN.BATCH_SIZE |
| `cond_dim` | must equal TEXT.EMBEDDING_DIM (the sentence is the condition; both are 256 in the originals) |
| `ch_size` | must be 3 (the datasets here are RGB) |
| `model: base` | MODEL dfgan, DFGAN.VERSION 2022 (`base` is the only model of that code) |
| `max_epoch` | TRAIN.MAX_EPOCH = max_epoch − 1: the original runs `range(1, max_epoch)`, 1300 epochs for 1301 |
| `save_interval` | TRAIN.SNAPSHOT_INTERVAL (epochs, as there) |
| `truncation`, `trunc_rate` | EVAL.TRUNCATION, EVAL.TRUNC_RATE (sampling for evaluation) |
| `TEXT.*` | TEXT.* (DAMSM_NAME is the text encoder, as TRAIN.NET_E) |

Accepted and ignored (no meaning here): `stamp` (run-name stamp; the run folder is --output_dir), `state_epoch`
(resume with `--resume`, or continue from a `state_epoch_*.pth` with TRAIN.NET_G), `gen_interval` / `test_interval`
(image grids every TRAIN.IMAGE_INTERVAL steps; FID is computed after training by EVAL.PROTOCOLS, not during it),
`sample_times` (the evaluation set size is EVAL.N_SAMPLES, 30,000 by default, about CUB's 2,928 × 10),
`npz_path` (its statistics come from torchvision's ImageNet Inception, which the fid protocols here do not use:
numbers from the two are not comparable; give EVAL.FID_STATS statistics written by `eval.evaluate --save_stats`),
`example_captions`, `samples_save_dir`, `checkpoint`, `save_image`, `val_save_dir` (sampling writes next to
TRAIN.NET_G; example sentences come from DATA_DIR's example_filenames.txt). DF-GAN has no EMA (TRAIN.EMA False).
Keys of this project's own format may be mixed in (e.g. `EVAL: {PROTOCOLS: [fid30k]}`) and merge as usual.
"""
from __future__ import annotations

# DF-GAN key -> dotted key here
RENAMED = {
    "CONFIG_NAME": "CONFIG_NAME", "dataset_name": "DATASET_NAME", "data_dir": "DATA_DIR", "gpu_id": "GPU_ID",
    "manual_seed": "SEED", "cuda": "CUDA", "z_dim": "GAN.Z_DIM", "nf": "TRAIN.NF", "batch_size": "TRAIN.BATCH_SIZE",
    "save_interval": "TRAIN.SNAPSHOT_INTERVAL", "truncation": "EVAL.TRUNCATION", "trunc_rate": "EVAL.TRUNC_RATE",
}
IGNORED = ("stamp", "state_epoch", "gen_interval", "test_interval", "sample_times", "npz_path", "example_captions",
           "samples_save_dir", "checkpoint", "save_image", "val_save_dir")
SPECIAL = ("imsize", "cond_dim", "ch_size", "model", "max_epoch")
# keys that only DF-GAN's format has at the top level (CONFIG_NAME and TEXT are shared with ours)
SIGNATURE = tuple(k for k in (*RENAMED, *IGNORED, *SPECIAL) if k != "CONFIG_NAME")


def is_dfgan_original(data) -> bool:
    """Whether a loaded YAML mapping is in DF-GAN 2022's format (has one of its lower-case top-level keys)."""
    return isinstance(data, dict) and any(k in data for k in SIGNATURE)


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def map_dfgan_original(data: dict, source: str) -> dict:
    """DF-GAN's YAML mapping → a mapping in this project's format (then merged strictly by `load_config`).
    A value that cannot be honoured is a `ConfigError` naming `source` and the key."""
    from miscc.config import ConfigError

    out: dict = {"MODEL": "dfgan", "DFGAN": {"VERSION": 2022}, "TRAIN": {"EMA": False}}
    text = data.get("TEXT") if isinstance(data.get("TEXT"), dict) else {}
    for key, value in data.items():
        if key in RENAMED:
            _set(out, RENAMED[key], value)
        elif key in IGNORED:
            continue
        elif key == "imsize":
            _set(out, "TREE.BASE_SIZE", value)
            _set(out, "TREE.BRANCH_NUM", 1)
        elif key == "max_epoch":
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ConfigError(f"{source}: DF-GAN key 'max_epoch' must be an int >= 2 (it trains epochs "
                                  f"1..max_epoch-1), got {value!r}")
            _set(out, "TRAIN.MAX_EPOCH", value - 1)
        elif key == "cond_dim":
            emb = text.get("EMBEDDING_DIM")
            if emb is not None and emb != value:
                raise ConfigError(f"{source}: DF-GAN key 'cond_dim' ({value!r}) must equal TEXT.EMBEDDING_DIM "
                                  f"({emb!r}): the condition is the sentence embedding")
            if emb is None:
                _set(out, "TEXT.EMBEDDING_DIM", value)
        elif key == "ch_size":
            if value != 3:
                raise ConfigError(f"{source}: DF-GAN key 'ch_size' must be 3 (the datasets here are RGB), "
                                  f"got {value!r}")
        elif key == "model":
            if value != "base":
                raise ConfigError(f"{source}: DF-GAN key 'model' must be 'base' (the only model of DF-GAN's code), "
                                  f"got {value!r}")
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:  # this project's own keys (and unknown ones, which the strict merge then names)
            out[key] = value
    return out
