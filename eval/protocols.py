"""Named evaluation protocols (like stylegan2-ada's `metric_main.py`) run over one stream of generated samples.

Naming rule: `<metric><count>[_cls]`, where count is an integer, optionally followed by `k` (x1000): `fid30k` is
FID on 30,000 samples, `fid500` on 500, `rprec2k` on 2,000. The suffix `_cls` (fid, kid, is only) swaps the
ImageNet Inception for the dataset classifier of eval.train_classifier (its pooled features for FID/KID, its
class logits for IS): `fid1k_cls` works without Inception weights, and its numbers compare only with the same
classifier checkpoint. `isc_cls<count>` is another name for `is<count>_cls`. Every metric accepts any count >= its
minimum; `PROTOCOLS` lists the standard ones. Metrics:

| metric      | value                                                                                  |
|-------------|----------------------------------------------------------------------------------------|
| `fid`       | FID, pool3 of torch-fidelity's Inception vs the real set (folder/files or stats .npz)   |
| `kid`       | KID (unbiased MMD^2, cubic kernel, 100 subsets of min(1000, N)); needs real features   |
| `is`        | Inception score (ImageNet Inception `logits_unbiased`, 10 splits)                      |
| `rprec`     | R-precision in % (1 true + 99 mismatched captions, top-1 cosine, 10 folds), DAMSM codes |
| `clip`      | CLIP score, mean of 100 * max(cos, 0)                                                  |
| `cliprprec` | CLIP-R-precision in %, mismatched captions drawn from the other samples                |
| `attracc`   | shapes attribute accuracy: share of images whose caption objects are all as described  |

Each metric is one function registered by name (`@register_metric`, at the end of this module): a new one is
that function and its registration line, plus an optional `collect` hook for what it needs from every batch.

Values are raw (KID is not scaled by 1000); `std` is the population std over IS splits, KID subsets or R-precision
folds, and the per-sample std for CLIP score. KID subsets hold min(1000, N, N_real) samples. Real images for FID/KID
are a folder, a list of files (e.g. the test split's) or a statistics .npz (FID only); `real_resize` first resizes
them with PIL bicubic (e.g. to the generator's output size), and their statistics/features are cached per (dataset,
split, N, resize, extractor sha256, dtype) under `cache_dir`.

Images are quantised to uint8 first (`clamp(round((x + 1) * 127.5))`, as saving a PNG would), for every metric that
looks at pixels, so evaluating a generator on the fly and evaluating its saved PNG files give the same numbers.

All protocols of one call share one pass over `sample(N_max, batch_size)`: each uses the first N samples, so
`fid1k` and `is1k` judge the same 1,000 images. A source that yields fewer samples than a protocol names is an error.

Sample source: a callable `sample(n, batch_size)` returning an iterable of `SampleBatch` (or tuples `(images,
captions, keys, extra)`): images float [-1, 1] or uint8 [B, 3, H, W], captions list[str], keys list[str], and
`extra` with optional `image_codes` [B, D], `text_codes` [B, D], `mismatched_text_codes` [B, K, D] and `class_ids`
[B]. For `rprec`, missing codes come from `EvalContext.image_encoder(images) -> [B, D]` and
`EvalContext.text_encoder(list[str]) -> [B, D]`; mismatched captions from `EvalContext.mismatched_captions(captions,
keys, extra) -> list of K-caption lists` (DM-GAN: other classes), or else from the other samples' captions (and
other classes, when `class_ids` are given). A folder of images is a source too (`folder_source`).

Every result is a dict with the value and its provenance, appended as one JSON line to `EvalContext.jsonl`.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from eval.images import list_image_files, load_image_uint8, to_uint8
from miscc.errors import InputError, MissingKeyError

NEEDS = ("captions", "clip", "heads")  # what the sample stream must give or the collector load (see `_Collector`)


@dataclass(frozen=True)
class Metric:
    """One registered metric: `compute(protocol, collector, context, real_cache) -> dict` (value, std, provenance),
    from what `collect(collector, batch)` stored per batch (`collector.store(name, tensor)`, read back with
    `collector.get(name, n)`); metrics on Inception / classifier features need no `collect`."""
    name: str
    description: str
    min_samples: int
    compute: Callable
    needs: frozenset = frozenset()  # of NEEDS: one caption per sample, the CLIP model, the classifier's heads
    classifier_description: str | None = None  # set for metrics on features (Inception, or `_cls` the classifier)
    collect: Callable | None = None

    @property
    def on_features(self) -> bool:
        return self.classifier_description is not None


METRICS: dict[str, Metric] = {}  # by name, in registration order


def register_metric(name: str, description: str, min_samples: int, needs=(), classifier_description=None,
                    collect=None):
    """Decorator: register `compute` as metric `name` (adding a metric = one function + this line)."""
    assert set(needs) <= set(NEEDS), needs

    def register(compute):
        METRICS[name] = Metric(name, description, min_samples, compute, frozenset(needs), classifier_description,
                               collect)
        return compute
    return register


_NAME = re.compile(r"^(?P<metric>[a-z_]+?)(?P<count>\d+)(?P<k>k?)(?P<cls>_cls)?$")


@dataclass(frozen=True)
class Protocol:
    name: str
    metric: str
    n: int
    extractor: str | None = None  # fid/kid/is: "inception" or "classifier"

    @property
    def description(self) -> str:
        metric = METRICS[self.metric]
        text = metric.classifier_description if self.extractor == "classifier" else metric.description
        return f"{text}, N = {self.n}"


def parse_protocol(name: str) -> Protocol:
    """`Protocol` for a name like `fid30k` (30,000) or `fid500` (500); a clear error for anything else."""
    if isinstance(name, Protocol):
        return name
    m = _NAME.match(name.strip().lower())
    metric = m.group("metric") if m else None
    classifier = bool(m and m.group("cls"))
    if metric == "isc_cls" and not classifier:
        metric, classifier = "is", True
    on_features = [k for k, v in METRICS.items() if v.on_features]
    if metric not in METRICS or (classifier and metric not in on_features):
        raise InputError(f"unknown protocol {name!r}: names are <metric><count>[k][_cls] with metric one of "
                         f"{', '.join(METRICS)} (_cls only for {', '.join(on_features)}; isc_cls<count> = "
                         "is<count>_cls), e.g. fid30k, is1k, kid500, fid1k_cls")
    n = int(m.group("count")) * (1000 if m.group("k") else 1)
    if n < METRICS[metric].min_samples:
        raise InputError(f"protocol {name!r}: {metric} needs at least {METRICS[metric].min_samples} samples, got {n}")
    extractor = ("classifier" if classifier else "inception") if METRICS[metric].on_features else None
    return Protocol(name.strip().lower(), metric, n, extractor)


def parse_protocols(names) -> list[Protocol]:
    """Protocols for a comma-separated string or a list of names, duplicates (same metric, N and extractor, e.g.
    isc_cls1k and is1k_cls) removed, order kept."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out, seen = [], set()
    for p in map(parse_protocol, names):
        if (p.metric, p.n, p.extractor) not in seen:
            seen.add((p.metric, p.n, p.extractor))
            out.append(p)
    if not out:
        raise InputError("no protocols given")
    return out


@dataclass
class SampleBatch:
    images: torch.Tensor
    captions: list[str] | None = None
    keys: list[str] | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class EvalContext:
    """What the protocols need besides the samples; only the parts the requested metrics use must be set.

    `run_protocols` stores the Inception extractor, classifier and CLIP model it builds back into `extractor`,
    `classifier` and `clip`, so a context reused across calls (e.g. every few epochs) loads them once."""
    inception_weights: str | None = None      # else $T2I_INCEPTION_WEIGHTS
    extractor: object | None = None           # a ready InceptionExtractor (tests, repeated calls)
    real: object | None = None                # folder, list of image files, or FID statistics .npz
    real_split: str = "custom"
    real_n: int | None = None                 # real images to use (default all)
    real_resize: int | None = None            # PIL bicubic pre-resize of real images (e.g. the generator size)
    dataset: str | None = None                # name in the real-statistics cache key (default: the folder)
    cache_dir: str | None = None              # real statistics/features cache
    classifier: object | None = None          # path or loaded DatasetClassifier
    clip_path: str | None = None
    clip: object | None = None                # a ready LocalCLIP
    image_encoder: Callable | None = None     # rprec: float [-1, 1] images -> [B, D]
    text_encoder: Callable | None = None      # rprec: list[str] -> [B, D]
    mismatched_captions: Callable | None = None
    encoders_name: str | None = None          # rprec provenance, e.g. the DAMSM checkpoint paths
    parse_caption: Callable | None = None     # attracc (default miscc.shapes_spec.parse_caption)
    device: str | None = None
    bf16: bool = False
    batch_size: int = 50
    seed: int = 0                             # R-precision folds and mismatched draws
    metric_seed: int = 2020                   # IS / KID shuffles (torch-fidelity's default rng_seed)
    is_splits: int = 10
    kid_subsets: int = 100
    rprec_folds: int = 10
    rprec_k: int = 99
    checkpoint: str | None = None
    config: str | None = None
    jsonl: str | None = None
    grid_png: str | None = None               # save a caption grid of `grid_n` samples here
    grid_n: int = 16


def build_eval_context(cfg, **overrides) -> EvalContext:
    """An `EvalContext` from the config tree's `EVAL` keys (the only place here that reads a config), then
    `overrides` (any EvalContext field: e.g. `real=` a list of the test split's image files, encoders, jsonl)."""
    from miscc.config import resolve_path

    ev = cfg.EVAL
    ctx = EvalContext(inception_weights=resolve_path(ev.INCEPTION_WEIGHTS) or None,
                      classifier=resolve_path(ev.CLASSIFIER) or None, clip_path=resolve_path(ev.CLIP_PATH) or None,
                      real=resolve_path(ev.FID_STATS) or None, dataset=cfg.DATASET_NAME or None,
                      batch_size=int(ev.BATCH_SIZE), seed=int(ev.SEED))
    for key, value in overrides.items():
        if not hasattr(ctx, key):
            raise TypeError(f"build_eval_context: EvalContext has no field {key!r}")
        setattr(ctx, key, value)
    return ctx


def folder_source(folder: str, captions=None) -> Callable[[int, int], Iterable[SampleBatch]]:
    """A sample source over the images of `folder` (sorted); `captions` maps file name or stem -> caption, or is a
    list aligned with the sorted files, or a JSON file holding either."""
    files = list_image_files(folder)
    caps = None
    if isinstance(captions, (str, os.PathLike)):
        with open(captions, encoding="utf-8") as f:
            captions = json.load(f)
    if isinstance(captions, dict):
        caps = []
        for path in files:
            name = os.path.basename(path)
            stem = os.path.splitext(name)[0]
            if name not in captions and stem not in captions:
                raise MissingKeyError(f"captions: no entry for image {name!r} (keys are file names or stems)")
            caps.append(captions[name] if name in captions else captions[stem])
    elif captions is not None:
        caps = list(captions)
        if len(caps) != len(files):
            raise InputError(f"captions: {len(caps)} captions for {len(files)} images in {folder}")

    def sample(n: int, batch_size: int):
        if n > len(files):
            raise InputError(f"{folder}: {n} samples requested, the folder has {len(files)} images")
        for start in range(0, n, batch_size):
            chunk = files[start:min(n, start + batch_size)]
            images = [load_image_uint8(p) for p in chunk]
            if any(im.shape != images[0].shape for im in images):
                raise InputError(f"{folder}: images of different sizes in one batch ({chunk[0]} ...)")
            yield SampleBatch(torch.stack(images), caps[start:start + len(chunk)] if caps else None,
                              [os.path.splitext(os.path.basename(p))[0] for p in chunk], {})

    sample.source = os.path.abspath(folder)
    return sample


def _as_batch(item) -> SampleBatch:
    if isinstance(item, SampleBatch):
        return item
    if torch.is_tensor(item):
        return SampleBatch(item)
    if isinstance(item, (tuple, list)) and item and torch.is_tensor(item[0]):
        images, captions, keys, extra = (list(item) + [None, None, None])[:4]
        return SampleBatch(images, captions, keys, dict(extra or {}))
    raise TypeError(f"a sample source must yield SampleBatch or (images, captions, keys, extra), got "
                    f"{type(item).__name__}")


def _cut(batch: SampleBatch, m: int) -> SampleBatch:
    """The first m samples of a batch (extra entries with a batch dimension are cut too)."""
    b = batch.images.shape[0]
    extra = {k: (v[:m] if (torch.is_tensor(v) or isinstance(v, (list, np.ndarray))) and len(v) == b else v)
             for k, v in batch.extra.items()}
    return SampleBatch(batch.images[:m], batch.captions[:m] if batch.captions is not None else None,
                       batch.keys[:m] if batch.keys is not None else None, extra)


def _versions() -> dict:
    import torch_fidelity

    return {"torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__}


class _Collector:
    """Per-sample data the requested protocols need, accumulated over the sample stream.

    Features are stored under "<extractor>:<output>" ("inception:2048", "classifier:class"), the classifier's
    heads for attracc under "heads:<head>".
    """

    def __init__(self, protocols: list[Protocol], ctx: EvalContext, device):
        self.protocols, self.metrics = protocols, {p.metric for p in protocols}
        self.needs = set().union(*(METRICS[p.metric].needs for p in protocols))
        self.ctx, self.device = ctx, device
        self.classifier = self.clip = None
        self.extractors = {}
        tags = {p.extractor for p in protocols if p.extractor}
        if "inception" in tags:
            from eval.inception import InceptionExtractor

            if ctx.extractor is None:  # both outputs cost one forward pass; kept in the context for the next call
                ctx.extractor = InceptionExtractor(ctx.inception_weights, ("2048", "logits_unbiased"),
                                                   device=device, bf16=ctx.bf16, batch_size=ctx.batch_size)
            self.extractors["inception"] = ctx.extractor
        if "classifier" in tags or "heads" in self.needs:
            from eval.classifier import classifier_extractor, load_classifier

            if ctx.classifier is None:
                need = sorted({p.name for p in protocols
                               if p.extractor == "classifier" or "heads" in METRICS[p.metric].needs})
                raise InputError(f"{', '.join(need)} need a dataset classifier (EvalContext.classifier / "
                                 "--classifier; train one with python -m eval.train_classifier)")
            if isinstance(ctx.classifier, (str, os.PathLike)):
                ctx.classifier = load_classifier(os.fspath(ctx.classifier), device)
            self.classifier = ctx.classifier.eval()
            if "classifier" in tags:
                self.extractors["classifier"] = classifier_extractor(self.classifier, device, ctx.batch_size)
        if "clip" in self.needs:
            from eval.clip_score import LocalCLIP

            if ctx.clip is None:
                ctx.clip = LocalCLIP(ctx.clip_path, device, ctx.batch_size)
            self.clip = ctx.clip
        self.data: dict[str, list] = {}
        self.captions: list[str] = []
        self.class_ids: list = []
        self.grid_images: list[torch.Tensor] = []
        self.grid_captions: list[str] = []
        self.n = 0

    def store(self, name: str, value):
        """Keep one batch of per-sample values under `name` (concatenated by `get`)."""
        self.data.setdefault(name, []).append(value)

    def _need_captions(self, batch: SampleBatch):
        if batch.captions is None or len(batch.captions) != batch.images.shape[0]:
            need = sorted(m for m in self.metrics if "captions" in METRICS[m].needs)
            raise InputError(f"{', '.join(need)} need one caption per sample; the source gave "
                             f"{None if batch.captions is None else len(batch.captions)} for "
                             f"{batch.images.shape[0]} images")

    @torch.no_grad()
    def add(self, batch: SampleBatch):
        ctx = self.ctx
        if "captions" in self.needs:
            self._need_captions(batch)
        for tag, extractor in self.extractors.items():
            for name, f in extractor(batch.images).items():
                self.store(f"{tag}:{name}", f)
        for collect in dict.fromkeys(METRICS[m].collect for m in sorted(self.metrics) if METRICS[m].collect):
            collect(self, batch)
        if batch.captions is not None:
            self.captions += list(batch.captions)
        if "class_ids" in batch.extra:
            self.class_ids += [int(c) for c in torch.as_tensor(batch.extra["class_ids"]).reshape(-1)]
        if ctx.grid_png and len(self.grid_images) < 4 * ctx.grid_n:  # candidates; `grid` picks among them
            take = 4 * ctx.grid_n - len(self.grid_images)
            self.grid_images += list(to_uint8(batch.images[:take]).cpu())
            if batch.captions is not None:
                self.grid_captions += list(batch.captions[:take])
        self.n += batch.images.shape[0]

    def grid(self, n: int) -> tuple[list[torch.Tensor], list[str] | None]:
        """`n` of the first 4n samples, evenly spaced, with their captions: the trainers' batches are sorted by
        caption length, so the first n alone would all show the longest captions."""
        picks = torch.linspace(0, len(self.grid_images) - 1, min(n, len(self.grid_images))).round().long().tolist()
        captions = [self.grid_captions[i] for i in picks] if self.grid_captions else None
        return [self.grid_images[i] for i in picks], captions

    def get(self, name: str, n: int) -> torch.Tensor:
        return torch.cat(self.data[name])[:n]


def _real_set(ctx: EvalContext, extractor, feature: str, need_features: bool):
    """(features or None, FIDStatistics, provenance dict) of the real images."""
    from eval.fid_stats import load_statistics, real_features

    if ctx.real is None:
        raise InputError("fid/kid need real images: EvalContext.real / --real (a folder, a list of image files or, "
                         "for FID only, a statistics .npz with mu and sigma)")
    if isinstance(ctx.real, (str, os.PathLike)) and os.fspath(ctx.real).endswith(".npz"):
        if need_features:
            raise InputError(f"kid needs real features, not statistics: {ctx.real} is an .npz; pass the real image "
                             "folder instead")
        stats = load_statistics(os.fspath(ctx.real))
        sha = stats.meta.get("feature_extractor_sha256")
        if sha and sha != extractor.weights_sha256:
            raise InputError(f"{ctx.real} was computed with extractor weights sha256 {sha[:12]}..., these "
                             f"({extractor.name}) are {str(extractor.weights_sha256)[:12]}...; FID across different "
                             "extractors is meaningless")
        return None, stats, {"real": os.path.abspath(ctx.real), "real_statistics": os.path.abspath(ctx.real),
                             "real_split": stats.meta.get("split", ctx.real_split),
                             "real_n": stats.meta.get("n"), "real_resize": stats.meta.get("resize")}
    feats, stats = real_features(ctx.real, extractor, ctx.real_split, ctx.real_n, ctx.real_resize, ctx.cache_dir,
                                 ctx.dataset, feature)
    where = os.path.abspath(ctx.real) if isinstance(ctx.real, (str, os.PathLike)) else stats.meta.get("dataset")
    return feats, stats, {"real": where, "real_statistics": stats.path, "real_split": ctx.real_split,
                          "real_n": int(feats.shape[0]), "real_resize": ctx.real_resize}


def _compute(p: Protocol, col: _Collector, ctx: EvalContext, real_cache: dict) -> dict:
    """Value, std, details and metric-specific provenance of one protocol."""
    out = {}
    if p.extractor:
        out.update(col.extractors[p.extractor].describe())
    out.update(METRICS[p.metric].compute(p, col, ctx, real_cache))
    return out


def _feature_keys(p: Protocol, col: _Collector) -> tuple[str, str]:
    return col.extractors[p.extractor].features  # ("2048", "logits_unbiased") or ("pooled", "class")


def _fid_kid_real(p: Protocol, col: _Collector, ctx: EvalContext, real_cache: dict):
    if p.extractor not in real_cache:
        real_cache[p.extractor] = _real_set(ctx, col.extractors[p.extractor], _feature_keys(p, col)[0],
                                            need_features=any(q.metric == "kid" and q.extractor == p.extractor
                                                              for q in col.protocols))
    return real_cache[p.extractor]


@register_metric("fid", "Frechet Inception distance (pool3 features) to the real set", 2,
                 classifier_description="Frechet distance of the dataset classifier's features to the real set")
def _fid(p, col, ctx, real_cache) -> dict:
    from eval import metrics as M

    _, real_stats, prov = _fid_kid_real(p, col, ctx, real_cache)
    mu, sigma = M.feature_statistics(col.get(f"{p.extractor}:{_feature_keys(p, col)[0]}", p.n))
    return {**prov, "value": M.fid_from_statistics(mu, sigma, real_stats.mu, real_stats.sigma), "std": None}


@register_metric("kid", "kernel Inception distance (unbiased MMD^2, cubic polynomial kernel) to the real set", 2,
                 classifier_description="KID formula on the dataset classifier's features against the real set")
def _kid(p, col, ctx, real_cache) -> dict:
    from eval import metrics as M

    real_feats, _, prov = _fid_kid_real(p, col, ctx, real_cache)
    size = min(1000, p.n, real_feats.shape[0])
    value, std = M.kernel_inception_distance(col.get(f"{p.extractor}:{_feature_keys(p, col)[0]}", p.n), real_feats,
                                             ctx.kid_subsets, size, seed=ctx.metric_seed)
    return {**prov, "value": value, "std": std, "seed": ctx.metric_seed, "subsets": ctx.kid_subsets,
            "subset_size": size}


@register_metric("is", "Inception score (ImageNet Inception-v3 logits_unbiased)", 10,
                 classifier_description="IS formula over the dataset classifier's classes")
def _is(p, col, ctx, real_cache) -> dict:
    from eval import metrics as M

    value, std = M.inception_score(logits=col.get(f"{p.extractor}:{_feature_keys(p, col)[1]}", p.n),
                                   splits=ctx.is_splits, seed=ctx.metric_seed)
    return {"value": value, "std": std, "seed": ctx.metric_seed, "splits": ctx.is_splits}


def _collect_rprec(col: _Collector, batch: SampleBatch):
    ctx, extra = col.ctx, batch.extra
    if "image_codes" in extra:
        img = torch.as_tensor(extra["image_codes"])
    elif ctx.image_encoder is not None:
        img = ctx.image_encoder(batch.images)
    else:
        raise InputError("rprec needs image codes: extra['image_codes'] from the source or "
                         "EvalContext.image_encoder (the DAMSM image encoder)")
    if "text_codes" in extra:
        txt = torch.as_tensor(extra["text_codes"])
    elif ctx.text_encoder is not None:
        txt = ctx.text_encoder(list(batch.captions))
    else:
        raise InputError("rprec needs text codes: extra['text_codes'] from the source or "
                         "EvalContext.text_encoder (the DAMSM text encoder)")
    col.store("rprec_image", torch.as_tensor(img).float().cpu())
    col.store("rprec_text", torch.as_tensor(txt).float().cpu())
    if "mismatched_text_codes" in extra:
        col.store("rprec_mis", torch.as_tensor(extra["mismatched_text_codes"]).float().cpu())
    elif ctx.mismatched_captions is not None:
        if ctx.text_encoder is None:
            raise InputError("EvalContext.mismatched_captions needs EvalContext.text_encoder to encode them")
        lists = ctx.mismatched_captions(list(batch.captions), batch.keys, extra)
        if len(lists) != len(batch.captions) or any(len(x) != ctx.rprec_k for x in lists):
            raise InputError(f"mismatched_captions must return {len(batch.captions)} lists of "
                             f"{ctx.rprec_k} captions")
        flat = ctx.text_encoder([c for x in lists for c in x])
        col.store("rprec_mis", torch.as_tensor(flat).float().cpu().view(len(lists), ctx.rprec_k, -1))


@register_metric("rprec", "R-precision % (DAMSM codes; 1 true + 99 mismatched captions; top-1; folds)", 10,
                 needs=("captions",), collect=_collect_rprec)
def _rprec(p, col, ctx, real_cache) -> dict:
    from eval.rprecision import r_precision, r_precision_from_pool

    n, out = p.n, {}
    img, txt = col.get("rprec_image", n), col.get("rprec_text", n)
    if "rprec_mis" in col.data:
        out["value"], out["std"] = r_precision(img, txt, col.get("rprec_mis", n), ctx.rprec_folds, ctx.seed)
        out["mismatched"] = "caller-supplied captions/codes"
    else:
        out["value"], out["std"] = r_precision_from_pool(img, txt, col.captions[:n], ctx.rprec_k,
                                                         _class_ids(col, n), ctx.rprec_folds, ctx.seed)
        out["mismatched"] = "other samples' captions" + (" of other classes" if col.class_ids else "")
    out.update(seed=ctx.seed, folds=ctx.rprec_folds, k=ctx.rprec_k,
               feature_extractor=ctx.encoders_name or "caller-supplied image/text encoders")
    return out


def _collect_clip(col: _Collector, batch: SampleBatch):
    col.store("clip_image", col.clip.encode_images(batch.images))
    col.store("clip_text", col.clip.encode_texts(list(batch.captions)))


@register_metric("clip", "CLIP score (mean of 100 * max(cos, 0))", 1, needs=("captions", "clip"),
                 collect=_collect_clip)
def _clip(p, col, ctx, real_cache) -> dict:
    from eval.clip_score import clip_score

    value, std = clip_score(col.get("clip_image", p.n), col.get("clip_text", p.n))
    return {"value": value, "std": std, **_clip_prov(col.clip)}


@register_metric("cliprprec", "CLIP-R-precision % (mismatched captions from other samples)", 10,
                 needs=("captions", "clip"), collect=_collect_clip)
def _cliprprec(p, col, ctx, real_cache) -> dict:
    from eval.rprecision import r_precision_from_pool

    n = p.n
    value, std = r_precision_from_pool(col.get("clip_image", n), col.get("clip_text", n), col.captions[:n],
                                       ctx.rprec_k, _class_ids(col, n), ctx.rprec_folds, ctx.seed)
    return {"value": value, "std": std, "seed": ctx.seed, "folds": ctx.rprec_folds, "k": ctx.rprec_k,
            **_clip_prov(col.clip),
            "mismatched": "other samples' captions" + (" of other classes" if col.class_ids else "")}


def _collect_heads(col: _Collector, batch: SampleBatch):
    for name, logit in col.classifier(to_uint8(batch.images).to(col.device)).items():
        col.store("heads:" + name, logit.float().cpu())


@register_metric("attracc", "shapes attribute accuracy (share of images matching their caption)", 1,
                 needs=("captions", "heads"), collect=_collect_heads)
def _attracc(p, col, ctx, real_cache) -> dict:
    from eval.classifier import score_attributes

    logits = {k[len("heads:"):]: col.get(k, p.n) for k in col.data if k.startswith("heads:")}
    details = score_attributes(col.classifier, logits, col.captions[:p.n], ctx.parse_caption)
    if details["value"] is None:
        raise InputError("attracc: no caption names a shape, nothing to score")
    return {"value": details.pop("value"), "std": None, "details": details, **_classifier_prov(col.classifier)}


def _class_ids(col: _Collector, n: int):
    return col.class_ids[:n] if len(col.class_ids) >= n else None


def _classifier_prov(model) -> dict:
    from eval.classifier import classifier_sha256

    return {"feature_extractor": "dataset-classifier", "feature_extractor_weights": getattr(model, "info", {}).get(
        "path"), "feature_extractor_sha256": classifier_sha256(model)}


def _clip_prov(clip) -> dict:
    return {"feature_extractor": "clip", "feature_extractor_weights": clip.model_dir,
            "feature_extractor_sha256": clip.weights_sha256}


def append_jsonl(path: str, record: dict) -> None:
    """Append one JSON line (one write call, so concurrent appends do not interleave lines)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")


def run_protocols(names, sample, context: EvalContext | None = None) -> list[dict]:
    """Evaluate the named protocols on one pass of `sample` (a callable `sample(n, batch_size)` or an image folder).

    Returns one result dict per protocol (value, std, N, seeds, real set, extractor and its sha256, checkpoint,
    config, UTC time, device, versions, ...) and appends each to `context.jsonl` when set. With `context.grid_png`
    `grid_n` samples (evenly spaced among the first 4 x grid_n) are saved there as a captioned grid (`samples_grid`
    in every result).
    """
    ctx = context or EvalContext()
    protocols = parse_protocols(names)
    if isinstance(sample, (str, os.PathLike)):
        sample = folder_source(os.fspath(sample))
    device = torch.device(ctx.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_max = max(p.n for p in protocols)
    col = _Collector(protocols, ctx, device)
    t0 = time.perf_counter()
    for item in sample(n_max, ctx.batch_size):
        batch = _as_batch(item)
        if col.n + batch.images.shape[0] > n_max:
            batch = _cut(batch, n_max - col.n)
        if batch.images.shape[0]:
            col.add(batch)
        if col.n >= n_max:
            break
    sample_seconds = time.perf_counter() - t0
    short = [p.name for p in protocols if p.n > col.n]
    if short:
        raise InputError(f"protocols {', '.join(short)} need up to {n_max} samples; the source gave only {col.n}")
    common = {"checkpoint": ctx.checkpoint, "config": ctx.config, "device": str(device),
              "sample_seconds": round(sample_seconds, 3), "source": getattr(sample, "source", None), **_versions()}
    if ctx.grid_png and col.grid_images:
        from eval.report import save_caption_grid

        images, captions = col.grid(ctx.grid_n)
        save_caption_grid(torch.stack(images), captions, ctx.grid_png)
        common["samples_grid"] = os.path.abspath(ctx.grid_png)
    results, real_cache = [], {}
    for p in protocols:
        t1 = time.perf_counter()
        record = {"protocol": p.name, "metric": p.metric, "n": p.n, "description": p.description, "std": None,
                  "seed": None, "real": None, "real_statistics": None, "real_split": None, "real_n": None,
                  "feature_extractor": None, "feature_extractor_weights": None, "feature_extractor_sha256": None,
                  "resize": None, "dtype": None, **common}
        record.update(_compute(p, col, ctx, real_cache))
        record["metric_seconds"] = round(time.perf_counter() - t1, 3)
        record["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if ctx.jsonl:
            append_jsonl(ctx.jsonl, record)
        results.append(record)
    return results


PROTOCOLS = {p.name: p for p in map(parse_protocol, (
    "fid30k", "kid30k", "is30k", "isc_cls30k", "rprec30k", "clip30k", "cliprprec30k", "attracc1k",
    "fid1k", "kid1k", "is1k", "isc_cls1k", "rprec1k", "clip1k", "cliprprec1k", "fid50k",
    "fid1k_cls", "kid1k_cls", "is1k_cls", "fid30k_cls", "kid30k_cls"))}
