"""Train the dataset classifier used for "IS with the dataset's classes" and shapes attribute accuracy.

    python -m eval.train_classifier --data_dir data/shapes --out output/shapes_classifier.pth [--size 64 --epochs 15]

Reads an AttnGAN-layout dataset: `images/<key>.png|.jpg`, `{train,test}/filenames.pickle` and
`{train,test}/class_info.pickle` (class ids, one per key). When the test classes all occur in train, it fits on train
and reports accuracy on test. When they do not (CUB: 150 train / 50 test classes, disjoint), generated images come
from test captions, so it fits on a seeded 80% of the test split and reports on the other 20%, as the StackGAN
bird Inception was fine-tuned on the 50 test ("valid") classes. A folder holding `attributes.json` is a `shapes`
dataset: the classifier then also gets the per-cell scene heads (see eval/classifier.py) and the report includes
`attribute_accuracy` of the real held-out images against their own first caption (it should be close to 1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from eval.classifier import CELL_PREFIX, CLASS_HEAD, EMPTY, DatasetClassifier, attribute_accuracy, \
    predict_logits, save_classifier
from eval.images import load_image_uint8
from miscc.errors import InputError, MissingFileError, MissingKeyError, add_debug_argument, run_cli
from miscc.safe_pickle import safe_load_pickle
from miscc.text import read_text_lines

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def load_split(data_dir: str, split: str) -> tuple[list[str], list[int]]:
    """(keys, class ids) of one split; refuses datasets without `class_info.pickle`."""
    names_path = os.path.join(data_dir, split, "filenames.pickle")
    info_path = os.path.join(data_dir, split, "class_info.pickle")
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in safe_load_pickle(names_path)]
    if not os.path.isfile(info_path):
        raise MissingFileError(
            f"{info_path} not found: the dataset classifier needs one class id per image ({split}/class_info.pickle "
            f"next to {split}/filenames.pickle, as AttnGAN's birds data has); {data_dir} has no class labels, so "
            "IS with a dataset classifier is not available for it (use the ImageNet Inception IS instead)")
    class_ids = [int(c) for c in np.asarray(safe_load_pickle(info_path)).reshape(-1)]
    if len(class_ids) != len(keys):
        raise InputError(f"{info_path}: {len(class_ids)} class ids for {len(keys)} filenames in {names_path}")
    return keys, class_ids


def image_path(data_dir: str, key: str) -> str:
    for ext in IMAGE_EXTENSIONS:
        path = os.path.join(data_dir, "images", key + ext)
        if os.path.isfile(path):
            return path
    raise MissingFileError(f"image for key {key!r} not found: tried {os.path.join(data_dir, 'images', key)}"
                            f"{{{','.join(IMAGE_EXTENSIONS)}}}")


def load_images(data_dir: str, keys: list[str], size: int) -> torch.Tensor:
    """uint8 [N, 3, size, size], resized by PIL bicubic (the classifier's torch bicubic+antialias resize of other
    inputs differs from it by under 0.01 grey levels on average, at most a few)."""
    return torch.stack([load_image_uint8(image_path(data_dir, k), resize=size) for k in keys])


def first_captions(data_dir: str, keys: list[str]) -> list[str]:
    out = []
    for k in keys:
        path = os.path.join(data_dir, "text", k + ".txt")
        lines = [line.strip() for line in read_text_lines(path) if line.strip()]
        if not lines:
            raise InputError(f"{path}: no caption")
        out.append(lines[0])
    return out


def shapes_heads_and_labels(attributes: dict, keys: list[str], source: str):
    """Cell heads {"cell:<position>": ["empty", "<color> <shape>", ...]} and their labels [N, 9]."""
    from miscc.shapes_spec import COLORS, POSITIONS, SHAPES

    contents = [EMPTY] + [f"{c} {s}" for s in SHAPES for c in COLORS]
    heads = {CELL_PREFIX + p: contents for p in POSITIONS}
    labels = torch.zeros(len(keys), len(POSITIONS), dtype=torch.long)
    for i, key in enumerate(keys):
        if key not in attributes:
            raise MissingKeyError(f"{source}: no entry for image key {key!r}")
        for obj in attributes[key]["objects"]:
            name = f"{obj['color']} {obj['shape']}"
            if name not in contents or obj["position"] not in POSITIONS:
                raise InputError(f"{source}: {key!r} has an object {obj} outside the known colours/shapes/positions")
            labels[i, POSITIONS.index(obj["position"])] = contents.index(name)
    return heads, labels


def choose_fit_split(train: tuple[list, list], test: tuple[list, list], seed: int = 0):
    """(fit, held, fit name, held name) from the (keys, class ids) of train and test (see the module docstring)."""
    (train_keys, train_cls), (test_keys, test_cls) = train, test
    if set(test_cls) <= set(train_cls):
        return (train_keys, train_cls), (test_keys, test_cls), "train", "test"
    perm = np.random.RandomState(seed).permutation(len(test_keys))
    cut = int(round(0.8 * len(perm)))
    fit = ([test_keys[i] for i in perm[:cut]], [test_cls[i] for i in perm[:cut]])
    held = ([test_keys[i] for i in perm[cut:]], [test_cls[i] for i in perm[cut:]])
    return fit, held, "test (80%)", "test (other 20%)"


def _share_of(hits: torch.Tensor, mask: torch.Tensor) -> float | None:
    return float(hits[mask].float().mean()) if mask.any() else None


def _accuracy(logits: dict, labels: dict) -> dict[str, float]:
    return {name: float((logits[name].argmax(1) == y).float().mean()) for name, y in labels.items()}


def train_classifier(data_dir: str, out: str, size: int = 64, epochs: int = 15, batch_size: int = 64,
                     lr: float = 2e-3, width: int = 16, seed: int = 0, device: str = "cpu",
                     max_images: int | None = None, log=print) -> dict:
    """Train, evaluate and save the classifier; returns a summary (splits, sizes, per-head accuracies)."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    fit, held, fit_split, eval_split = choose_fit_split(load_split(data_dir, "train"), load_split(data_dir, "test"),
                                                        seed)
    if fit_split != "train":
        log("test classes are not all in train (class-disjoint splits): fitting on 80% of test, evaluating on 20%")
    if max_images:
        fit, held = (fit[0][:max_images], fit[1][:max_images]), (held[0][:max_images], held[1][:max_images])
    class_ids = sorted(set(fit[1]))
    missing = sorted(set(held[1]) - set(class_ids))
    if missing:
        raise InputError(f"{data_dir}: held-out classes {missing[:10]} never occur in the fitting images")
    heads = {CLASS_HEAD: [str(c) for c in class_ids]}
    labels = {}
    for part, (keys, cls) in (("fit", fit), ("held", held)):
        labels[part] = {CLASS_HEAD: torch.tensor([class_ids.index(c) for c in cls])}
    attr_path = os.path.join(data_dir, "attributes.json")
    shapes = os.path.isfile(attr_path)
    if shapes:
        with open(attr_path, encoding="utf-8") as f:
            attributes = json.load(f)
        for part, (keys, _) in (("fit", fit), ("held", held)):
            cell_heads, cell_labels = shapes_heads_and_labels(attributes, keys, attr_path)
            labels[part].update({h: cell_labels[:, j] for j, h in enumerate(cell_heads)})
        heads.update(cell_heads)

    log(f"loading {len(fit[0])} + {len(held[0])} images at {size}px from {data_dir}")
    x_fit, x_held = load_images(data_dir, fit[0], size), load_images(data_dir, held[0], size)
    model = DatasetClassifier(heads, size, width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x_fit) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        model.train()
        perm, total = torch.randperm(len(x_fit), generator=gen), 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            logits = model(x_fit[idx].to(device))
            loss = sum(F.cross_entropy(logits[h], labels["fit"][h][idx].to(device)) for h in heads)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x_fit))
        log(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")

    model.eval()
    acc_held = _accuracy(predict_logits(model, x_held), labels["held"])
    acc_fit = _accuracy(predict_logits(model, x_fit), labels["fit"])
    summary = {"dataset": os.path.abspath(data_dir), "fit_split": fit_split, "eval_split": eval_split,
               "n_fit": len(x_fit), "n_eval": len(x_held), "image_size": size, "epochs": epochs, "seed": seed,
               "class_ids": class_ids, "accuracy": acc_held, "fit_accuracy": acc_fit, "losses": losses}
    if shapes:
        cells = [h for h in heads if h.startswith(CELL_PREFIX)]
        summary["cell_accuracy"] = float(np.mean([acc_held[h] for h in cells]))
        single = torch.tensor([len(attributes[k]["objects"]) == 1 for k in held[0]])
        # The class is the first-listed object's; with two objects, which one that is cannot be seen.
        pred = predict_logits(model, x_held)[CLASS_HEAD].argmax(1)
        summary["class_accuracy_one_object"] = _share_of(pred == labels["held"][CLASS_HEAD], single)
        summary["attribute_accuracy_real"] = attribute_accuracy(model, x_held, first_captions(data_dir, held[0]))
    summary["train_seconds"] = round(time.perf_counter() - start, 1)
    save_classifier(model, out, **{k: v for k, v in summary.items() if k != "attribute_accuracy_real"},
                    attribute_accuracy_real=summary.get("attribute_accuracy_real", {}))
    summary["out"] = out
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="dataset folder (AttnGAN layout, with class_info.pickle)")
    parser.add_argument("--out", required=True, help="checkpoint to write, e.g. output/shapes_classifier.pth")
    parser.add_argument("--size", type=int, default=64, help="input resolution (default 64)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=16, help="channels of the first conv block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max_images", type=int, default=None, help="use at most this many images per part")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (on a CPU shared with other jobs, 1 can be several times faster)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train_classifier(args.data_dir, args.out, args.size, args.epochs, args.batch_size, args.lr,
                               args.width, args.seed, args.device, args.max_images)
    print(f"saved {summary['out']} ({summary['train_seconds']}s; fit on {summary['fit_split']} "
          f"[{summary['n_fit']}], evaluated on {summary['eval_split']} [{summary['n_eval']}])")
    print(f"  class accuracy: {summary['accuracy'][CLASS_HEAD]:.4f}")
    if "cell_accuracy" in summary:
        a = summary["attribute_accuracy_real"]
        if summary["class_accuracy_one_object"] is not None:
            print(f"  class accuracy on one-object images: {summary['class_accuracy_one_object']:.4f} (with two "
                  "objects the class is the first-listed object's, which the image does not show)")
        print(f"  mean cell accuracy: {summary['cell_accuracy']:.4f}")
        print(f"  attribute accuracy of real images vs their captions: images {a['value']:.4f}, colour "
              f"{a['color']:.4f}, shape {a['shape']:.4f}, position {a['position']:.4f}, count {a['count']:.4f}")
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
