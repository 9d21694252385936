"""A small dataset classifier: "IS with the dataset's classes" and, on `shapes`, caption-attribute accuracy.

StackGAN/AttnGAN's bird IS used an Inception fine-tuned on CUB (TF1, weights no longer downloadable); this is a
PyTorch stand-in any dataset with `class_info.pickle` can train in minutes (`python -m eval.train_classifier`). Its
IS is comparable only with itself (same checkpoint), never with published numbers.

On `shapes` the classifier also reads the scene: one head per 3x3 grid cell predicts "empty" or the "<color>
<shape>" of the object there. Two objects always occupy different cells, so this describes every scene exactly and,
unlike "first object" heads, does not depend on object order (captions mention objects in random order, and which
object is "first" in attributes.json cannot be seen in the image).

Checkpoints are plain dicts of tensors, ints, floats and strings (`weights_only=True`-loadable), written with
`miscc.checkpoint.atomic_save`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from eval.images import to_float
from miscc.checkpoint import atomic_save, load_checkpoint, load_state_dict_strict
from miscc.errors import InputError

FORMAT = "t2i-eval-classifier/1"
CLASS_HEAD = "class"
CELL_PREFIX = "cell:"  # cell heads are named "cell:<position>", e.g. "cell:top left"
EMPTY = "empty"


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """float [-1, 1] images at size x size: bicubic with antialias (close to PIL's bicubic), clamped."""
    x = to_float(images).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


class DatasetClassifier(nn.Module):
    """A stride-1 conv3x3-BN-ReLU stem (`width` channels), then `depth` stride-2 blocks (width * 2**i channels) on
    size x size images, flattened (position matters), dropout, and one linear head per entry of `heads` ({head name:
    label names}). Takes float [-1, 1] or uint8 images of any size (resized by `resize_images`).

    The full-resolution stem helps tell a 14-pixel circle from a square at 64px, where most errors are: on shapes
    (15 epochs, width 16) held-out cell accuracy 0.992 -> 0.995 and real-image attribute accuracy 0.929 -> 0.952."""

    def __init__(self, heads: dict[str, list[str]], image_size: int = 64, width: int = 16, depth: int = 4):
        super().__init__()
        if image_size % 2 ** depth:
            raise InputError(f"image_size {image_size} must be divisible by 2**depth = {2 ** depth}")
        if not heads or any(len(labels) < 2 for labels in heads.values()):
            raise InputError(f"every head needs at least 2 labels, got { {k: len(v) for k, v in heads.items()} }")
        self.heads = {name: list(labels) for name, labels in heads.items()}
        self.image_size, self.width, self.depth = image_size, width, depth
        layers = [nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c_in = width
        for i in range(depth):
            c_out = width * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        flat = c_in * (image_size // 2 ** depth) ** 2
        self.dropout = nn.Dropout(0.2)
        self.classifiers = nn.ModuleDict({_module_key(n): nn.Linear(flat, len(v)) for n, v in self.heads.items()})

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(last feature map [B, C, size/2**depth, size/2**depth], {head: logits})."""
        x = resize_images(images.to(next(self.parameters()).device), self.image_size)
        fmap = self.features(x)
        h = self.dropout(fmap.flatten(1))
        return fmap, {name: self.classifiers[_module_key(name)](h) for name in self.heads}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.embed(images)[1]

    @property
    def cell_heads(self) -> list[str]:
        return [n for n in self.heads if n.startswith(CELL_PREFIX)]


def classifier_sha256(classifier: DatasetClassifier) -> str:
    """sha256 of the checkpoint file it was loaded from, else of its serialised state dict."""
    import hashlib
    import io

    from eval.inception import file_sha256

    path = getattr(classifier, "info", {}).get("path")
    if path:
        return file_sha256(path)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in classifier.state_dict().items()}, buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()


class _FeaturesAndClasses(nn.Module):
    """uint8 images -> (globally average-pooled last feature map, class logits)."""

    def __init__(self, classifier: DatasetClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor):
        fmap, logits = self.classifier.embed(images)
        return fmap.mean(dim=(2, 3)), logits[CLASS_HEAD]


def classifier_extractor(classifier: DatasetClassifier, device=None, batch_size: int = 256):
    """The classifier as a `FeatureExtractor` with outputs "pooled" (FID/KID with the dataset's own classifier,
    e.g. where no Inception weights are at hand) and "class" (logits: IS).

    "pooled" is the last feature map averaged over space (width * 2**(depth-1) = 128 values by default), not the
    2048 flattened values the heads read: at N = 1,000 the flattened features' FID floor (real test vs real train
    shapes images: 294) dwarfs the change a blur causes (+27, 9%), while pooled it is 0.21 vs 0.60 for blurred and
    1.16 for shifted images (measured with a 64px shapes classifier)."""
    from eval.inception import FeatureExtractor

    if CLASS_HEAD not in classifier.heads:
        raise InputError(f"the classifier has no '{CLASS_HEAD}' head (heads: {sorted(classifier.heads)})")
    return FeatureExtractor(_FeaturesAndClasses(classifier), ("pooled", CLASS_HEAD), "dataset-classifier",
                            weights_path=getattr(classifier, "info", {}).get("path"),
                            weights_sha256=classifier_sha256(classifier),
                            resize_method=f"bicubic-antialias-{classifier.image_size}",
                            device=device or next(classifier.parameters()).device, batch_size=batch_size)


def _module_key(head: str) -> str:
    """ModuleDict keys may not contain '.'; spaces and ':' are fine in state-dict keys but keep them simple."""
    return head.replace(":", "_").replace(" ", "_")


def save_classifier(model: DatasetClassifier, path: str, **info) -> None:
    """Atomically save the classifier with its head definitions and `info` (plain ints/floats/strings/lists)."""
    atomic_save({
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "heads": model.heads,
        "image_size": model.image_size,
        "width": model.width,
        "depth": model.depth,
        "num_classes": len(model.heads.get(CLASS_HEAD, [])),
        **info,
    }, path)


def load_classifier(path: str, device: str | torch.device = "cpu") -> DatasetClassifier:
    """A classifier saved by `save_classifier` (data-only load), in eval mode on `device`; `.info` holds the rest."""
    ckpt = load_checkpoint(path, what="dataset classifier")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"{path}: not a classifier written by eval.train_classifier (expected format {FORMAT!r}, "
                         f"got {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r})")
    model = DatasetClassifier(ckpt["heads"], ckpt["image_size"], ckpt["width"], ckpt["depth"])
    load_state_dict_strict(model, ckpt["state_dict"], path)
    model.info = {k: v for k, v in ckpt.items() if k not in ("state_dict", "heads")}
    model.info["path"] = path
    return model.to(device).eval()


@torch.no_grad()
def predict_logits(model: DatasetClassifier, images, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Logits of every head for images [N, 3, H, W] (or an iterable of such batches), float32 on the CPU."""
    model.eval()
    batches = images.split(batch_size) if torch.is_tensor(images) else images
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in model.heads}
    for batch in batches:
        for start in range(0, batch.shape[0], batch_size):
            for name, logit in model(batch[start:start + batch_size]).items():
                parts[name].append(logit.float().cpu())
    return {name: torch.cat(p) for name, p in parts.items()}


def scene_from_cells(model: DatasetClassifier, logits: dict[str, torch.Tensor], i: int) -> list[dict]:
    """Predicted objects of image i: [{"shape", "color", "position"}] from the cell heads' argmax."""
    objects = []
    for head in model.cell_heads:
        label = model.heads[head][int(logits[head][i].argmax())]
        if label != EMPTY:
            color, shape = label.split(" ")
            objects.append({"shape": shape, "color": color, "position": head[len(CELL_PREFIX):]})
    return objects


def _share(hits: list[bool]) -> float | None:
    return float(sum(hits)) / len(hits) if hits else None


def attribute_accuracy(model: DatasetClassifier, images, captions: list[str], parse_caption=None,
                       batch_size: int = 256) -> dict:
    """Attribute accuracy of `images` against `captions` (see `score_attributes`)."""
    return score_attributes(model, predict_logits(model, images, batch_size), captions, parse_caption)


def score_attributes(model: DatasetClassifier, logits: dict[str, torch.Tensor], captions: list[str],
                     parse_caption=None) -> dict:
    """How often images show what their captions say, judged from a shapes classifier's cell-head `logits`.

    Captions are parsed with `parse_caption` (default `miscc.shapes_spec.parse_caption`) into objects with shape,
    colour and (when named) position. Per caption object: `color`/`shape` are right when the predicted object in
    the named cell (or, with no position named, any predicted object) has that colour/shape; `position` (objects
    with a named position only) when an object of the caption's colour (its shape, if no colour is named) is
    predicted in that cell; `object` when an object with the caption's colour and shape is predicted in the named
    cell (anywhere, with none named).
    The per-object measures of the project's `shapes` bar (objects anywhere in the image, not in the named cell):
    `color_any` = some object of the caption object's colour is predicted; `color_shape_any` = some object of its
    colour and shape; `color_at_position` (objects with a named position) = the named cell holds an object of its
    colour; `all_three` (likewise) = the named cell holds an object of its colour and shape.
    `value` (the headline) is the share of images whose every caption object is right; `count` the share whose
    predicted number of objects equals the caption's. Captions naming no shape are skipped (`n_unparsed`).
    The same four measures over the objects of one-object and of two-object captions only (`color_any_1obj`, ...,
    `all_three_2obj`): whether a generator draws a second object at all shows there. And `color_any` /
    `color_shape_any` over the objects whose caption names their place and those whose caption leaves it open
    (`color_any_placed`, `color_any_unplaced`, ...): a generator that cannot choose a place itself fails the latter.
    """
    if parse_caption is None:
        from miscc.shapes_spec import parse_caption
    if not model.cell_heads:
        raise InputError("attribute_accuracy needs a classifier trained on a shapes dataset (with cell heads); "
                         f"this one has heads {sorted(model.heads)}")
    n_images = next(iter(logits.values())).shape[0]
    if n_images != len(captions):
        raise InputError(f"attribute_accuracy: {n_images} images but {len(captions)} captions")
    bar = ("color_any", "color_shape_any", "color_at_position", "all_three")
    hits = {k: [] for k in ("color", "shape", "position", "object", *bar, *(f"{k}_{n}obj" for k in bar
                                                                              for n in (1, 2)),
                            *(f"{k}_{p}" for k in bar[:2] for p in ("placed", "unplaced")))}
    image_ok, count_ok, unparsed = [], [], 0
    for i, caption in enumerate(captions):
        wanted = [o for o in parse_caption(caption) if o.get("shape")]
        if not wanted:
            unparsed += 1
            continue
        predicted = scene_from_cells(model, logits, i)
        at = {o["position"]: o for o in predicted}
        all_ok = True
        for o in wanted:
            pos = o.get("position")
            pool = [at[pos]] if pos in at else ([] if pos else predicted)
            color_ok = o.get("color") is None or any(p["color"] == o["color"] for p in pool)
            shape_ok = any(p["shape"] == o["shape"] for p in pool)
            object_ok = any(p["shape"] == o["shape"] and (o.get("color") is None or p["color"] == o["color"])
                            for p in pool)
            if o.get("color") is not None:
                hits["color"].append(color_ok)
                found = {"color_any": any(p["color"] == o["color"] for p in predicted),
                         "color_shape_any": any(p["color"] == o["color"] and p["shape"] == o["shape"]
                                                for p in predicted)}
                if pos:
                    cell = at.get(pos)
                    found["color_at_position"] = cell is not None and cell["color"] == o["color"]
                    found["all_three"] = (cell is not None and cell["color"] == o["color"]
                                          and cell["shape"] == o["shape"])
                for k, ok in found.items():
                    hits[k].append(ok)
                    if len(wanted) in (1, 2):
                        hits[f"{k}_{len(wanted)}obj"].append(ok)
                    if k in bar[:2]:
                        hits[f"{k}_{'placed' if pos else 'unplaced'}"].append(ok)
            hits["shape"].append(shape_ok)
            hits["object"].append(object_ok)
            if pos:
                key = "color" if o.get("color") is not None else "shape"
                hits["position"].append(any(p[key] == o[key] for p in pool))
            all_ok &= object_ok
        image_ok.append(all_ok)
        count_ok.append(len(predicted) == len(wanted))
    return {"value": _share(image_ok), **{k: _share(v) for k, v in hits.items()}, "count": _share(count_ok),
            "n": len(image_ok), "n_objects": len(hits["object"]), "n_positions": len(hits["position"]),
            "n_unparsed": unparsed}
